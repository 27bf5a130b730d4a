//go:build cuda || bncuda

package bn

// The CUDA path of the fused ops (fused.go): the host steps of the plain
// op (op_cuda.go) with the apply pass fused with the ReLU and the residual
// (cudaops.Plan.ApplyReLU), and the backward's first pass masking dy
// (cudaops.Plan.BackwardSumsReLU); the dx pass is the plain op's on g.

import (
	"fmt"

	"gorgonia.org/cu"
	"gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// CUDADo computes y = max(0, BN(x) [+ z]) on dev (gorgonia.CUDADoer).
func (op *reluOp) CUDADo(extern gorgonia.External, dev gorgonia.Device, prealloc gorgonia.Value, in ...gorgonia.Value) (gorgonia.Value, error) {
	return cudaDo(op, extern, dev, prealloc, in)
}

// CUDADo computes the masked gradient and the sums on dev.
func (op *maskOp) CUDADo(extern gorgonia.External, dev gorgonia.Device, prealloc gorgonia.Value, in ...gorgonia.Value) (gorgonia.Value, error) {
	return cudaDo(op, extern, dev, prealloc, in)
}

// CUDADo writes [dγ ; dβ] on dev.
func (op *maskSumsOp) CUDADo(extern gorgonia.External, dev gorgonia.Device, prealloc gorgonia.Value, in ...gorgonia.Value) (gorgonia.Value, error) {
	return cudaDo(op, extern, dev, prealloc, in)
}

func (op *reluOp) dtype() tensor.Dtype     { return op.f.l.dt }
func (op *maskOp) dtype() tensor.Dtype     { return op.f.l.dt }
func (op *maskSumsOp) dtype() tensor.Dtype { return op.f.l.dt }

func (op *reluOp) cudaShape(in []gorgonia.Value) (tensor.Shape, error) {
	x, _, err := op.checkInputs(in)
	if err != nil {
		return nil, err
	}
	return x.Shape().Clone(), nil
}

func (op *maskOp) cudaShape(in []gorgonia.Value) (tensor.Shape, error) {
	if err := op.check(in); err != nil {
		return nil, err
	}
	return in[0].Shape().Clone(), nil
}

func (op *maskSumsOp) cudaShape(in []gorgonia.Value) (tensor.Shape, error) {
	if len(in) != 1 {
		return nil, op.check(in)
	}
	return op.shape(), nil
}

// cudaRun is forwardReLU on device memory.
func (op *reluOp) cudaRun(d *cudaDev, y tensor.Tensor, in []gorgonia.Value) error {
	_, z, err := op.checkInputs(in)
	if err != nil {
		return err
	}
	var zp cu.DevicePtr
	if z != nil {
		zp = devPtr(z)
	}
	s := &op.f.s
	return op.f.cudaForward(d, y, op.engine(in), func(st *cudaState, x, y cu.DevicePtr) error {
		// One upload of mean | · | b | c, as st.apply.
		k := st.k
		st.up = grow(st.up, 4*k)
		copy(st.up, s.mean)
		copy(st.up[2*k:], s.scale)
		copy(st.up[3*k:], s.shift)
		if err := cudaCopyHtoD(st.mean(), st.up[:3*k+len(s.shift)]); err != nil {
			return err
		}
		pb, pc := st.a()+cu.DevicePtr(8*k), st.a()+cu.DevicePtr(16*k)
		if err := st.plan.ApplyReLU(cu.NoStream, x, zp, y, st.mean(), pb, pc); err != nil {
			return devErr("apply relu", err)
		}
		return nil
	})
}

// cudaRun is backwardMask on device memory.
func (op *maskOp) cudaRun(d *cudaDev, g tensor.Tensor, in []gorgonia.Value) error {
	f := op.f
	if err := op.check(in); err != nil {
		return err
	}
	st, err := f.cudaBackwardState(d, in)
	if err != nil {
		return err
	}
	if err := checkLike(g, in[0].(tensor.Tensor), "masked gradient"); err != nil {
		return err
	}
	s := &f.s
	s.sums = grow(s.sums, s.nseg*f.l.c)
	err = st.dev.run(func() error {
		if err := st.plan.BackwardSumsReLU(cu.NoStream, devPtr(in[0]), devPtr(in[1]), devPtr(in[2]), devPtr(g), st.mean(), st.sums()); err != nil {
			return devErr("backward sums relu", err)
		}
		return cudaCopyDtoH(s.sums, st.sums())
	})
	if err != nil {
		return err
	}
	_, err = f.finishSums()
	return err
}

// cudaRun copies the sums maskOp computed to out, on the device.
func (op *maskSumsOp) cudaRun(d *cudaDev, out tensor.Tensor, in []gorgonia.Value) error {
	if err := op.check(in); err != nil {
		return err
	}
	st, _ := op.f.dev.(*cudaState)
	if st == nil || st.dev != d {
		return fmt.Errorf("%w: %v on a device without a forward there", ErrState, op)
	}
	if err := checkOut(out, op.shape(), op.f.l.dt, "sums output"); err != nil {
		return err
	}
	return st.dev.run(func() error { return st.upload(devPtr(out), op.f.s.dgb, op.f.l.dt) })
}
