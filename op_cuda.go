//go:build cuda || bncuda

package bn

// The CUDA execution path of the ops: Gorgonia's CUDA machines (its cuda
// build) call CUDADo with device memory; the ops run the passes over x and
// dy with cudaops' kernels on that device and the small per-channel host
// steps of the CPU path (begin, statistics, finishSums, dxCoeffs) on the
// host, so every mode, ghost batches, domains and SyncBN behave exactly as
// on the CPU. Per pass, one short synchronous copy each way of per-channel
// values (moments, γ and β or sums down; mean and coefficients up) joins
// the two; nothing else waits for the device.
//
// The part that needs Gorgonia's own cuda build (its CUDAMachine, the
// registration of the PTX) is in op_cuda_gorgonia.go. The tag bncuda builds
// this file against Gorgonia without cuda, for the tests of this path on a
// GPU or in the CPU emulation of cudaops (op_cuda_test.go;
// cudaops/testdata/emu/run.sh bn).

import (
	"fmt"
	"unsafe"

	"github.com/gorgonia-bn/bn/cudaops"
	"github.com/gorgonia-bn/bn/internal/kern"
	"gorgonia.org/cu"
	"gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// cudaDev is one CUDA context as the ops see it.
type cudaDev struct {
	// run calls f on an OS thread where the context is current, after the
	// work queued on the context before it, and returns f's error.
	run func(f func() error) error
	mod *cudaops.Module
}

// cudaState is a forward op's device plan and scratch space on one device.
// The scratch is laid out so that a pass needs one copy each way: the
// statistics pass downloads the moments with γ and β (copied beside them on
// the device) at once, and the apply steps upload the mean and the
// coefficients at once. Each copy is a round trip to the device: on an H200
// a forward with three downloads, three uploads and a final synchronize
// took ~30 µs more than with one copy each way, more than the device
// passes themselves on small tensors (cudaops/README.md).
type cudaState struct {
	dev   *cudaDev
	plan  *cudaops.Plan
	buf   cu.DevicePtr // float64 words: γ, β 2A | moments 3K | mean K | a K | b K | c K | sums 2K
	k, na int          // K and A (affine parameters) the buffer was sized for
	down  []float64    // host staging of γ | β | moments
	up    []float64    // host staging of mean | a | b | c
	host  []float32    // staging for dγ, dβ of a float32 op
}

func (st *cudaState) at(w int) cu.DevicePtr { return st.buf + cu.DevicePtr(8*w) }
func (st *cudaState) mom() cu.DevicePtr     { return st.at(2 * st.na) }
func (st *cudaState) mean() cu.DevicePtr    { return st.at(3*st.k + 2*st.na) }
func (st *cudaState) a() cu.DevicePtr       { return st.at(4*st.k + 2*st.na) }
func (st *cudaState) sums() cu.DevicePtr    { return st.at(7*st.k + 2*st.na) }

// aff returns where n γ and n β of size bytes each go: packed, ending where
// the moments begin, so that one download of exactly the bytes written
// reads both and the moments (2n·4 bytes, a whole number of words, for
// float32).
func (st *cudaState) aff(n, size int) cu.DevicePtr { return st.mom() - cu.DevicePtr(2*n*size) }

func cudaDtype(dt tensor.Dtype) (cudaops.Dtype, error) {
	switch dt {
	case tensor.Float32:
		return cudaops.Float32, nil
	case tensor.Float64:
		return cudaops.Float64, nil
	}
	return 0, fmt.Errorf("%w: %v", ErrDtype, dt)
}

func devErr(what string, err error) error {
	return fmt.Errorf("%w: %s: %w", ErrDevice, what, err)
}

// prepare returns the op's state on d with a plan for lay and scratch for
// na affine parameters, building or updating it. It runs where d's context
// is current.
func (op *fwdOp) prepare(d *cudaDev, lay kern.Layout, na int) (*cudaState, error) {
	dt, err := cudaDtype(op.l.dt)
	if err != nil {
		return nil, err
	}
	st, _ := op.dev.(*cudaState)
	if st != nil && st.dev != d {
		// Another context (a new machine): the old one's memory went with
		// it, or belongs to a context that is not current here.
		st = nil
	}
	if st == nil {
		st = &cudaState{dev: d}
		op.dev = st
	}
	if st.plan != nil {
		pl := st.plan.Layout()
		if pl.N != lay.N || pl.C != lay.C || pl.S != lay.S {
			_ = st.plan.Close()
			st.plan = nil
		} else if pl.Segments() != lay.Segments() || !equalInts(pl.Seg, lay.Seg) {
			if err := st.plan.SetSegments(cu.NoStream, lay.Seg, lay.NSeg); err != nil {
				return nil, devErr("segments", err)
			}
		}
	}
	if st.plan == nil {
		if st.plan, err = cudaops.NewPlan(d.mod, lay, dt); err != nil {
			return nil, devErr("plan", err)
		}
	}
	if k := st.plan.K(); k > st.k || na > st.na {
		if st.buf != 0 {
			if err := cu.MemFree(st.buf); err != nil {
				return nil, devErr("free", err)
			}
			st.buf, st.k, st.na = 0, 0, 0
		}
		k, na = max(k, st.k), max(na, st.na)
		if st.buf, err = cu.MemAlloc(int64(8 * (9*k + 2*na))); err != nil {
			return nil, devErr("alloc", err)
		}
		st.k, st.na = k, na
	}
	return st, nil
}

// upload copies src to dst as len(src) elements of type dt.
func (st *cudaState) upload(dst cu.DevicePtr, src []float64, dt tensor.Dtype) error {
	if dt == tensor.Float64 {
		return cudaCopyHtoD(dst, src)
	}
	st.host = grow(st.host, len(src))
	for i, v := range src {
		st.host[i] = float32(v)
	}
	return cudaCopyHtoD(dst, st.host)
}

// apply is the CPU path's Plan.Apply on the device: it uploads, in one
// copy, the mean (forward; the backward keeps the forward's) or a (dx, with
// dy), and b and c, and enqueues out = a·dy + b·(x−μ) + c. It does not wait
// for it: later work on the context (Gorgonia's next op, a copy to the
// host) is ordered after it, and the host staging is free again once the
// copy returned.
func (st *cudaState) apply(x, dy, out cu.DevicePtr, mean, a, b, c []float64) error {
	k := st.k
	st.up = grow(st.up, 4*k)
	copy(st.up, mean)
	copy(st.up[k:], a)
	copy(st.up[2*k:], b)
	copy(st.up[3*k:], c)
	lo := 0
	if mean == nil {
		lo = k
	}
	if err := cudaCopyHtoD(st.mean()+cu.DevicePtr(8*lo), st.up[lo:3*k+len(c)]); err != nil {
		return err
	}
	var ap cu.DevicePtr
	if dy != 0 {
		ap = st.a()
	}
	pb, pc := st.a()+cu.DevicePtr(8*k), st.a()+cu.DevicePtr(16*k)
	if err := st.plan.Apply(cu.NoStream, x, dy, out, st.mean(), ap, pb, pc); err != nil {
		return devErr("apply", err)
	}
	return nil
}

func cudaCopyDtoH[E any](dst []E, src cu.DevicePtr) error {
	if len(dst) == 0 {
		return nil
	}
	if err := cu.MemcpyDtoH(unsafe.Pointer(&dst[0]), src, int64(len(dst))*int64(unsafe.Sizeof(dst[0]))); err != nil {
		return devErr("copy to host", err)
	}
	return nil
}

func cudaCopyHtoD[E any](dst cu.DevicePtr, src []E) error {
	if len(src) == 0 {
		return nil
	}
	if err := cu.MemcpyHtoD(dst, unsafe.Pointer(&src[0]), int64(len(src))*int64(unsafe.Sizeof(src[0]))); err != nil {
		return devErr("copy to device", err)
	}
	return nil
}

func devPtr(v gorgonia.Value) cu.DevicePtr { return cu.DevicePtr(v.Uintptr()) }

// cudaOutput returns prealloc, checked against shape and dt, or a new
// tensor in device memory from extern's arena.
func cudaOutput(extern gorgonia.External, dev gorgonia.Device, prealloc gorgonia.Value, shape tensor.Shape, dt tensor.Dtype) (tensor.Tensor, error) {
	if prealloc != nil {
		if err := checkOut(prealloc, shape, dt, "preallocated output"); err != nil {
			return nil, err
		}
		return prealloc.(tensor.Tensor), nil
	}
	size := int64(shape.TotalSize()) * int64(dt.Size())
	mem, err := extern.Get(dev, size)
	if err != nil || mem == nil {
		if mem, err = dev.Alloc(extern, size); err != nil {
			return nil, devErr("alloc", err)
		}
		if mem == nil {
			return nil, fmt.Errorf("%w: %v cannot allocate device memory", ErrDevice, extern)
		}
	}
	return tensor.New(tensor.Of(dt), tensor.WithShape(shape.Clone()...), tensor.FromMemory(mem.Uintptr(), uintptr(size))), nil
}

// cudaOp is what the ops' CUDADo share.
type cudaOp interface {
	gorgonia.Op
	gorgonia.UsePreallocDoer
	dtype() tensor.Dtype
	// cudaShape checks the inputs and returns the output's shape.
	cudaShape(in []gorgonia.Value) (tensor.Shape, error)
	// cudaRun computes the output into out on d.
	cudaRun(d *cudaDev, out tensor.Tensor, in []gorgonia.Value) error
}

// cudaDo is the ops' CUDADo: the CPU path on the CPU, else the CUDA path
// into prealloc or a new tensor in the device's memory.
func cudaDo(op cudaOp, extern gorgonia.External, dev gorgonia.Device, prealloc gorgonia.Value, in []gorgonia.Value) (gorgonia.Value, error) {
	if dev == gorgonia.CPU {
		if prealloc != nil {
			return op.UsePreallocDo(prealloc, in...)
		}
		return op.Do(in...)
	}
	shape, err := op.cudaShape(in)
	if err != nil {
		return nil, err
	}
	d, err := cudaDevice(extern, dev)
	if err != nil {
		return nil, err
	}
	out, err := cudaOutput(extern, dev, prealloc, shape, op.dtype())
	if err != nil {
		return nil, err
	}
	if err := op.cudaRun(d, out, in); err != nil {
		return nil, err
	}
	return out, nil
}

// CUDADo computes y = BN(x) on dev (gorgonia.CUDADoer).
func (op *fwdOp) CUDADo(extern gorgonia.External, dev gorgonia.Device, prealloc gorgonia.Value, in ...gorgonia.Value) (gorgonia.Value, error) {
	return cudaDo(op, extern, dev, prealloc, in)
}

// CUDADo computes [dγ ; dβ] on dev (gorgonia.CUDADoer).
func (op *sumsOp) CUDADo(extern gorgonia.External, dev gorgonia.Device, prealloc gorgonia.Value, in ...gorgonia.Value) (gorgonia.Value, error) {
	return cudaDo(op, extern, dev, prealloc, in)
}

// CUDADo computes dx on dev (gorgonia.CUDADoer).
func (op *dxOp) CUDADo(extern gorgonia.External, dev gorgonia.Device, prealloc gorgonia.Value, in ...gorgonia.Value) (gorgonia.Value, error) {
	return cudaDo(op, extern, dev, prealloc, in)
}

func (op *fwdOp) dtype() tensor.Dtype  { return op.l.dt }
func (op *sumsOp) dtype() tensor.Dtype { return op.f.l.dt }
func (op *dxOp) dtype() tensor.Dtype   { return op.f.l.dt }

func (op *fwdOp) cudaShape(in []gorgonia.Value) (tensor.Shape, error) {
	x, err := op.checkInputs(in)
	if err != nil {
		return nil, err
	}
	return x.Shape().Clone(), nil
}

func (op *sumsOp) cudaShape(in []gorgonia.Value) (tensor.Shape, error) {
	if err := op.f.checkBackward(in, 3); err != nil {
		return nil, err
	}
	return op.outShape(), nil
}

func (op *dxOp) cudaShape(in []gorgonia.Value) (tensor.Shape, error) {
	if err := op.f.checkBackward(in, 3); err != nil {
		return nil, err
	}
	return in[0].Shape().Clone(), nil
}

// cudaRun is forward (op_batchnorm.go) on device memory.
func (op *fwdOp) cudaRun(d *cudaDev, y tensor.Tensor, in []gorgonia.Value) error {
	return op.cudaForward(d, y, in, func(st *cudaState, x, y cu.DevicePtr) error {
		return st.apply(x, 0, y, op.s.mean, nil, op.s.scale, op.s.shift)
	})
}

// cudaForward runs the forward's host steps and statistics pass on d, then
// apply (the apply pass: plain, or fused with a ReLU by reluOp).
func (op *fwdOp) cudaForward(d *cudaDev, y tensor.Tensor, in []gorgonia.Value, apply func(st *cudaState, x, y cu.DevicePtr) error) error {
	x, err := op.checkInputs(in)
	if err != nil {
		return err
	}
	if err := checkLike(y, x, "output"); err != nil {
		return err
	}
	lay, err := op.begin(x.Shape())
	if err != nil {
		return err
	}
	s, dt := &op.s, op.l.dt
	na := 0 // affine parameters
	if len(in) == 3 {
		na = in[1].Shape().TotalSize()
	}
	var st *cudaState
	err = d.run(func() error {
		var err error
		if st, err = op.prepare(d, lay, na); err != nil {
			return err
		}
		// One download of [γ | β | moments (batch statistics)].
		size := int(dt.Size())
		from, to := st.aff(na, size), st.mom()
		for i := range 2 * min(na, 1) {
			if err := cu.MemcpyDtoDAsync(from+cu.DevicePtr(i*na*size), devPtr(in[1+i]), int64(na*size), cu.NoStream); err != nil {
				return devErr("copy", err)
			}
		}
		if s.batch {
			if err := st.plan.Stats(cu.NoStream, devPtr(x), st.mom()); err != nil {
				return devErr("stats", err)
			}
			to += cu.DevicePtr(24 * len(s.moms))
		}
		st.down = grow(st.down, int(to-from)/8)
		return cudaCopyDtoH(st.down, from)
	})
	if err != nil {
		return err
	}
	s.aff = grow(s.aff, 2*na)
	naw := 2 * na * int(dt.Size()) / 8 // words of γ and β
	if dt == tensor.Float64 {
		copy(s.aff, st.down[:naw])
	} else if na > 0 {
		for i, e := range unsafe.Slice((*float32)(unsafe.Pointer(&st.down[0])), 2*na) {
			s.aff[i] = float64(e)
		}
	}
	if s.batch && len(s.moms) > 0 {
		copy(s.moms, unsafe.Slice((*kern.Moments)(unsafe.Pointer(&st.down[naw])), len(s.moms)))
	}
	if err := op.statistics(x.Shape()); err != nil {
		return err
	}
	err = d.run(func() error { return apply(st, devPtr(x), devPtr(y)) })
	if err != nil {
		return err
	}
	op.done = true
	return nil
}

// cudaBackwardState checks that the forward ran on d and returns its
// state.
func (f *fwdOp) cudaBackwardState(d *cudaDev, in []gorgonia.Value) (*cudaState, error) {
	if err := f.checkBackward(in, 3); err != nil {
		return nil, err
	}
	st, _ := f.dev.(*cudaState)
	if st == nil || st.dev != d || st.plan == nil || st.plan.Layout().Len() != in[0].Shape().TotalSize() {
		return nil, fmt.Errorf("%w: backward of %v on a device without a forward of that shape there", ErrShape, f)
	}
	return st, nil
}

// cudaRun is backwardSums (op_backward.go) on device memory.
func (op *sumsOp) cudaRun(d *cudaDev, out tensor.Tensor, in []gorgonia.Value) error {
	f := op.f
	st, err := f.cudaBackwardState(d, in)
	if err != nil {
		return err
	}
	if err := checkOut(out, op.outShape(), f.l.dt, "sums output"); err != nil {
		return err
	}
	s := &f.s
	s.sums = grow(s.sums, s.nseg*f.l.c)
	err = st.dev.run(func() error {
		if err := st.plan.BackwardSums(cu.NoStream, devPtr(in[0]), devPtr(in[1]), st.mean(), st.sums()); err != nil {
			return devErr("backward sums", err)
		}
		return cudaCopyDtoH(s.sums, st.sums())
	})
	if err != nil {
		return err
	}
	dgb, err := f.finishSums()
	if err != nil {
		return err
	}
	return st.dev.run(func() error { return st.upload(devPtr(out), dgb, f.l.dt) })
}

// cudaRun is backwardDx (op_backward.go) on device memory.
func (op *dxOp) cudaRun(d *cudaDev, dx tensor.Tensor, in []gorgonia.Value) error {
	f := op.f
	st, err := f.cudaBackwardState(d, in)
	if err != nil {
		return err
	}
	if err := checkLike(dx, in[0].(tensor.Tensor), "dx"); err != nil {
		return err
	}
	f.dxCoeffs()
	s := &f.s
	return st.dev.run(func() error {
		return st.apply(devPtr(in[0]), devPtr(in[1]), devPtr(dx), nil, s.a, s.b, s.c)
	})
}
