//go:build cuda

package bn

// The thin part of the CUDA path that needs Gorgonia's own cuda build
// (CUDA 11.x, cuDNN 8 and cuBLAS to build and run; see README.md):
// registering the kernels with Gorgonia's CUDA machines and finding them,
// with the engine's context, in CUDADo.

import (
	"fmt"
	"sync"

	"github.com/gorgonia-bn/bn/cudaops"
	"gorgonia.org/cu"
	"gorgonia.org/gorgonia"
)

func init() {
	// Gorgonia's CUDA machines load these kernels into every device
	// context they create.
	gorgonia.AddToStdLib(cudaops.StdLib())
}

// CallsExtern reports that the op runs on a CUDA device in this build, so
// Gorgonia's machines place its output there.
func (op *fwdOp) CallsExtern() bool { return true }

// CallsExtern reports that the op runs on a CUDA device in this build.
func (op *sumsOp) CallsExtern() bool { return true }

// CallsExtern reports that the op runs on a CUDA device in this build.
func (op *dxOp) CallsExtern() bool { return true }

// cudaDevs caches a cudaDev per engine context (*cu.BatchedContext).
var cudaDevs sync.Map

// cudaDevice returns the context and kernels of device dev of a Gorgonia
// CUDA machine.
func cudaDevice(extern gorgonia.External, dev gorgonia.Device) (*cudaDev, error) {
	m, ok := extern.(gorgonia.CUDAMachine)
	if !ok {
		return nil, fmt.Errorf("%w: %T is not a Gorgonia CUDA machine", ErrDevice, extern)
	}
	engines := m.Engines()
	if int(dev) < 0 || int(dev) >= len(engines) {
		return nil, fmt.Errorf("%w: device %v of a machine with %d", ErrDevice, dev, len(engines))
	}
	e := &engines[int(dev)]
	ctx := e.Context()
	if d, ok := cudaDevs.Load(ctx); ok {
		return d.(*cudaDev), nil
	}
	mod, err := cudaops.FromQualified(e.Functions(), cudaops.GorgoniaModule)
	if err != nil {
		return nil, devErr("kernels registered with gorgonia.AddToStdLib", err)
	}
	d := &cudaDev{mod: mod, run: func(f func() error) error {
		// The engine's thread holds the context. It stops for good when a
		// function returns an error, so f's error comes back another way.
		var ferr error
		err := ctx.Do(func() error {
			ctx.DoWork() // Gorgonia's batched calls queued before this op
			if err := ctx.Errors(); err != nil {
				ferr = devErr("queued CUDA calls", err)
				return nil
			}
			// The engine's thread makes its context current only when it
			// processes a batch; cudaops calls the driver directly.
			if err := cu.SetCurrentContext(ctx.CUDAContext()); err != nil {
				ferr = devErr("set context", err)
				return nil
			}
			ferr = f()
			return nil
		})
		if err != nil {
			return devErr("engine", err)
		}
		return ferr
	}}
	v, _ := cudaDevs.LoadOrStore(ctx, d)
	return v.(*cudaDev), nil
}
