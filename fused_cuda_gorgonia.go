//go:build cuda

package bn

// CallsExtern reports that the op runs on a CUDA device in this build.
func (op *reluOp) CallsExtern() bool { return true }

// CallsExtern reports that the op runs on a CUDA device in this build.
func (op *maskOp) CallsExtern() bool { return true }

// CallsExtern reports that the op runs on a CUDA device in this build.
func (op *maskSumsOp) CallsExtern() bool { return true }
