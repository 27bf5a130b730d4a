//go:build bncuda

package bn

// Tests of the CUDA path of the ops (op_cuda.go) against their CPU path:
// the same layer state, the same inputs, every mode, ghost batches,
// segments (domains), affine off, float32 and float64, two steps (running
// statistics) and the backward. They need a GPU (cu's init exits without
// one) or the CPU emulation of cudaops: cudaops/testdata/emu/run.sh bn.
// In CI this file is only compiled.

import (
	"errors"
	"fmt"
	"math"
	"math/rand"
	"runtime"
	"sync"
	"testing"
	"unsafe"

	"github.com/gorgonia-bn/bn/collective"
	"github.com/gorgonia-bn/bn/cudaops"
	"gorgonia.org/cu"
	"gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

var cudaEnv struct {
	once sync.Once
	err  error
	ctx  cu.CUContext
	mod  *cudaops.Module
	mu   sync.Mutex
}

// testDev locks the test's goroutine to its OS thread, makes device 0's
// primary context current there and returns a cudaDev that runs on it.
// CUDA's current context belongs to an OS thread: every test and subtest
// (each its own goroutine) that touches the device calls testDev first.
func testDev(t testing.TB) *cudaDev {
	t.Helper()
	runtime.LockOSThread()
	t.Cleanup(runtime.UnlockOSThread)
	cudaEnv.once.Do(func() {
		dev, err := cu.GetDevice(0)
		if err != nil {
			cudaEnv.err = err
			return
		}
		if cudaEnv.ctx, err = dev.RetainPrimaryCtx(); err != nil {
			cudaEnv.err = err
			return
		}
		if cudaEnv.err = cu.SetCurrentContext(cudaEnv.ctx); cudaEnv.err != nil {
			return
		}
		cudaEnv.mod, cudaEnv.err = cudaops.Load()
	})
	if cudaEnv.err != nil {
		t.Fatalf("CUDA set-up: %v", cudaEnv.err)
	}
	if err := cu.SetCurrentContext(cudaEnv.ctx); err != nil {
		t.Fatal(err)
	}
	// Device work is serialized, as on Gorgonia's engine thread (and the
	// CPU emulation of the kernels is not thread-safe).
	return &cudaDev{mod: cudaEnv.mod, run: func(f func() error) error {
		cudaEnv.mu.Lock()
		defer cudaEnv.mu.Unlock()
		return f()
	}}
}

// devTensor copies a host tensor into fresh device memory (freed at the
// end of the test), poisoned first when src is nil.
func devTensor(t testing.TB, dt tensor.Dtype, shape tensor.Shape, src []float64) tensor.Tensor {
	t.Helper()
	n := shape.TotalSize()
	size := int64(n) * int64(dt.Size())
	p, err := cu.MemAlloc(max(size, 8))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cu.MemFree(p) })
	h := make([]byte, size)
	for i := range n {
		v := math.NaN()
		if src != nil {
			v = src[i]
		}
		if dt == tensor.Float32 {
			*(*float32)(unsafe.Pointer(&h[4*i])) = float32(v)
		} else {
			*(*float64)(unsafe.Pointer(&h[8*i])) = v
		}
	}
	if n > 0 {
		if err := cu.MemcpyHtoD(p, unsafe.Pointer(&h[0]), size); err != nil {
			t.Fatal(err)
		}
	}
	return tensor.New(tensor.Of(dt), tensor.WithShape(shape.Clone()...), tensor.FromMemory(uintptr(p), uintptr(size)))
}

// hostOf returns a device tensor's elements as float64.
func hostOf(t testing.TB, v tensor.Tensor) []float64 {
	t.Helper()
	if err := cu.Synchronize(); err != nil {
		t.Fatal(err)
	}
	n := v.Shape().TotalSize()
	out := make([]float64, n)
	if n == 0 {
		return out
	}
	h := make([]byte, n*int(v.Dtype().Size()))
	if err := cu.MemcpyDtoH(unsafe.Pointer(&h[0]), cu.DevicePtr(v.Uintptr()), int64(len(h))); err != nil {
		t.Fatal(err)
	}
	for i := range out {
		if v.Dtype() == tensor.Float32 {
			out[i] = float64(*(*float32)(unsafe.Pointer(&h[4*i])))
		} else {
			out[i] = *(*float64)(unsafe.Pointer(&h[8*i]))
		}
	}
	return out
}

// fixedSegs is a segmenter with a fixed segment per sample: segment
// i % nseg, normalized alone, statistics group and affine group seg % 2.
type fixedSegs struct{ nseg int }

func (f fixedSegs) Segments(n int, seg []int, m *segMap) (int, error) {
	for i := range n {
		seg[i] = i % f.nseg
	}
	m.Resize(f.nseg)
	for s := range f.nseg {
		m.Norm[s], m.Stat[s], m.Aff[s] = s, s%2, s%2
	}
	return f.nseg, nil
}

type cudaCase struct {
	name  string
	shape tensor.Shape
	opts  []Option
	mode  Mode
	segs  int  // > 0: a grouped layer (2 groups, per-group affine) with fixedSegs
	last  bool // WithChannelsLast: shape is (N, …, C)
}

func cudaCases() []cudaCase {
	shapes := []tensor.Shape{{6, 3}, {5, 4, 7}, {3, 2, 4, 5}, {2, 3, 2, 2, 3}, {4, 5, 8, 8}}
	var cs []cudaCase
	for _, sh := range shapes {
		for _, m := range []Mode{Train, Eval, EvalBatchStats, Frozen} {
			cs = append(cs, cudaCase{name: fmt.Sprintf("%v/%v", sh, m), shape: sh, mode: m})
		}
	}
	return append(cs,
		cudaCase{name: "ghost2", shape: tensor.Shape{5, 3, 4}, opts: []Option{WithGhostBatch(2)}, mode: Train},
		cudaCase{name: "ghost3/4d", shape: tensor.Shape{7, 2, 3, 3}, opts: []Option{WithGhostBatch(3)}, mode: Train},
		cudaCase{name: "affine-off", shape: tensor.Shape{4, 3, 5}, opts: []Option{WithAffine(false)}, mode: Train},
		cudaCase{name: "cumulative", shape: tensor.Shape{4, 3, 5}, opts: []Option{WithCumulativeAverage()}, mode: Train},
		cudaCase{name: "untracked/eval", shape: tensor.Shape{4, 3, 5}, opts: []Option{WithTrackRunningStats(false)}, mode: Eval},
		cudaCase{name: "segments", shape: tensor.Shape{9, 3, 4}, mode: Train, segs: 3},
		cudaCase{name: "segments/eval", shape: tensor.Shape{9, 3, 4}, mode: Eval, segs: 3},
		cudaCase{name: "renorm", shape: tensor.Shape{6, 3, 4}, opts: []Option{WithMomentum(0.5), WithRenorm(RenormConfig{RMax: 1.5, DMax: 0.5})}, mode: Train},
		cudaCase{name: "renorm/ghost", shape: tensor.Shape{7, 2, 3, 3}, opts: []Option{WithGhostBatch(3), WithRenorm(RenormConfig{RMax: 1.5, DMax: 0.5})}, mode: Train},
		cudaCase{name: "renorm/segments", shape: tensor.Shape{9, 3, 4}, opts: []Option{WithRenorm(RenormConfig{RMax: 1.5, DMax: 0.5})}, mode: Train, segs: 3},
		cudaCase{name: "channels-last/NLC", shape: tensor.Shape{5, 7, 4}, mode: Train, last: true},
		cudaCase{name: "channels-last/NHWC/eval", shape: tensor.Shape{3, 4, 5, 6}, mode: Eval, last: true},
		cudaCase{name: "channels-last/C1", shape: tensor.Shape{4, 3, 5, 1}, mode: Train, last: true},
		cudaCase{name: "channels-last/ghost", shape: tensor.Shape{5, 3, 4}, opts: []Option{WithGhostBatch(2)}, mode: Train, last: true},
		cudaCase{name: "channels-last/segments", shape: tensor.Shape{9, 2, 3}, mode: Train, segs: 3, last: true},
	)
}

// newCaseOp builds a layer for c and returns its forward op, with random
// γ, β and running statistics from r.
func newCaseOp(t testing.TB, c cudaCase, dt tensor.Dtype, r *rand.Rand) (*fwdOp, []float64, []float64) {
	t.Helper()
	g := gorgonia.NewGraph()
	C := c.shape[1]
	if c.last {
		C = c.shape[len(c.shape)-1]
		c.opts = append(c.opts[:len(c.opts):len(c.opts)], WithChannelsLast())
	}
	var l *Layer
	var err error
	if c.segs > 0 {
		l, err = newGrouped(g, C, dt, 2, true, c.opts...)
	} else {
		l, err = New(g, C, dt, c.opts...)
	}
	if err != nil {
		t.Fatal(err)
	}
	x := gorgonia.NewTensor(g, dt, len(c.shape), gorgonia.WithShape(c.shape...), gorgonia.WithName("x"))
	var y *gorgonia.Node
	if c.segs > 0 {
		y, err = l.applySegmented(x, fixedSegs{c.segs})
	} else {
		y, err = l.Apply(x)
	}
	if err != nil {
		t.Fatal(err)
	}
	if err := l.SetMode(c.mode); err != nil {
		t.Fatal(err)
	}
	G := l.Groups()
	rm, rv := make([]float64, G*C), make([]float64, G*C)
	for i := range rm {
		rm[i], rv[i] = r.NormFloat64(), 0.5+r.Float64()
	}
	if l.cfg.track {
		if err := l.SetRunningStats(rm, rv); err != nil {
			t.Fatal(err)
		}
	}
	var gb, bb []float64
	if l.Gamma() != nil {
		n := l.Gamma().Shape().TotalSize()
		gb, bb = make([]float64, n), make([]float64, n)
		for i := range gb {
			gb[i], bb[i] = 0.5+r.Float64(), r.NormFloat64()
		}
	}
	return y.Op().(*fwdOp), gb, bb
}

func TestCUDAOpsMatchCPU(t *testing.T) {
	for _, dt := range []tensor.Dtype{tensor.Float32, tensor.Float64} {
		tol := 1e-12
		if dt == tensor.Float32 {
			tol = 2e-5
		}
		for _, c := range cudaCases() {
			t.Run(fmt.Sprintf("%v/%s", dt, c.name), func(t *testing.T) {
				d := testDev(t)
				seed := int64(len(c.name)*131 + c.shape.TotalSize())
				cpu, gb, bb := newCaseOp(t, c, dt, rand.New(rand.NewSource(seed)))
				gpu, _, _ := newCaseOp(t, c, dt, rand.New(rand.NewSource(seed)))
				r := rand.New(rand.NewSource(seed + 1))
				pshape := tensor.Shape{len(gb)}
				if cpu.l.affGroups > 1 {
					pshape = tensor.Shape{cpu.l.affGroups, cpu.l.c}
				}
				for step := range 2 {
					xs := randn(r, c.shape.TotalSize(), 3, 2)
					dys := randn(r, c.shape.TotalSize(), 0, 1)
					hin := []gorgonia.Value{tensorOf(dt, c.shape, xs)}
					din := []gorgonia.Value{devTensor(t, dt, c.shape, xs)}
					if gb != nil {
						hin = append(hin, tensorOf(dt, pshape, gb), tensorOf(dt, pshape, bb))
						din = append(din, devTensor(t, dt, pshape, gb), devTensor(t, dt, pshape, bb))
					}
					want, err := cpu.Do(hin...)
					if err != nil {
						t.Fatal(err)
					}
					y := devTensor(t, dt, c.shape, nil)
					if err := gpu.cudaRun(d, y, din); err != nil {
						t.Fatal(err)
					}
					compare(t, fmt.Sprintf("step %d: y", step), hostOf(t, y), valuesOf(t, want), tol)
					wm, wv := cpu.l.RunningStats()
					gm, gv := gpu.l.RunningStats()
					compare(t, "running mean", gm, wm, tol)
					compare(t, "running var", gv, wv, tol)
					if w, g := cpu.l.NumBatchesTracked(), gpu.l.NumBatchesTracked(); w != g {
						t.Errorf("tracked %d, want %d", g, w)
					}

					hdy, ddy := tensorOf(dt, c.shape, dys), devTensor(t, dt, c.shape, dys)
					sums := &sumsOp{f: cpu}
					wantSums, err := sums.Do(hin[0], hdy, want)
					if err != nil {
						t.Fatal(err)
					}
					gsums := &sumsOp{f: gpu}
					gotSums := devTensor(t, dt, gsums.outShape(), nil)
					if err := gsums.cudaRun(d, gotSums, []gorgonia.Value{din[0], ddy, y}); err != nil {
						t.Fatal(err)
					}
					compare(t, "dγ, dβ", hostOf(t, gotSums), valuesOf(t, wantSums), tol)
					wantDx, err := (&dxOp{f: cpu}).Do(hin[0], hdy, wantSums)
					if err != nil {
						t.Fatal(err)
					}
					dx := devTensor(t, dt, c.shape, nil)
					if err := (&dxOp{f: gpu}).cudaRun(d, dx, []gorgonia.Value{din[0], ddy, gotSums}); err != nil {
						t.Fatal(err)
					}
					compare(t, "dx", hostOf(t, dx), valuesOf(t, wantDx), tol)
				}
			})
		}
	}
}

// compare checks got against want element-wise, relative to want's scale.
func compare(t *testing.T, what string, got, want []float64, tol float64) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d values, want %d", what, len(got), len(want))
	}
	scale := 0.0
	for _, w := range want {
		scale = max(scale, math.Abs(w))
	}
	for i := range got {
		if math.IsNaN(got[i]) != math.IsNaN(want[i]) || math.Abs(got[i]-want[i]) > tol*max(scale, 1) {
			t.Fatalf("%s[%d] = %v, want %v (max |want| %v)", what, i, got[i], want[i], scale)
		}
	}
}

func TestCUDAErrors(t *testing.T) {
	d := testDev(t)
	r := rand.New(rand.NewSource(1))
	c := cudaCase{shape: tensor.Shape{4, 3, 5}, mode: Train}
	op, gb, bb := newCaseOp(t, c, tensor.Float32, r)
	x := devTensor(t, tensor.Float32, c.shape, randn(r, 60, 0, 1))
	g, b := devTensor(t, tensor.Float32, tensor.Shape{3}, gb), devTensor(t, tensor.Float32, tensor.Shape{3}, bb)

	// Backward before a forward.
	dx := devTensor(t, tensor.Float32, c.shape, nil)
	if err := (&dxOp{f: op}).cudaRun(d, dx, []gorgonia.Value{x, x, x}); !errors.Is(err, ErrState) {
		t.Errorf("backward before forward: %v, want ErrState", err)
	}
	// Output of the wrong shape or type.
	bad := devTensor(t, tensor.Float64, c.shape, nil)
	if err := op.cudaRun(d, bad, []gorgonia.Value{x, g, b}); !errors.Is(err, ErrShape) {
		t.Errorf("float64 output: %v, want ErrShape", err)
	}
	// One value per channel in training.
	one := devTensor(t, tensor.Float32, tensor.Shape{1, 3}, []float64{1, 2, 3})
	c1 := cudaCase{shape: tensor.Shape{1, 3}, mode: Train}
	op1, gb1, bb1 := newCaseOp(t, c1, tensor.Float32, r)
	err := op1.cudaRun(d, devTensor(t, tensor.Float32, c1.shape, nil), []gorgonia.Value{one,
		devTensor(t, tensor.Float32, tensor.Shape{3}, gb1), devTensor(t, tensor.Float32, tensor.Shape{3}, bb1)})
	if !errors.Is(err, ErrTooFewValues) {
		t.Errorf("N=1: %v, want ErrTooFewValues", err)
	}
	// Without Gorgonia's cuda build there is no CUDA machine.
	if _, err := cudaDevice(nil, 0); !errors.Is(err, ErrDevice) {
		t.Errorf("cudaDevice(nil): %v, want ErrDevice", err)
	}
	// A failing device run is reported.
	boom := errors.New("boom")
	failing := &cudaDev{mod: d.mod, run: func(func() error) error { return boom }}
	y := devTensor(t, tensor.Float32, c.shape, nil)
	if err := op.cudaRun(failing, y, []gorgonia.Value{x, g, b}); !errors.Is(err, boom) {
		t.Errorf("failing device: %v, want boom", err)
	}
	if err := op.cudaRun(d, y, []gorgonia.Value{x, g, b}); err != nil {
		t.Errorf("after a failure: %v", err)
	}
	// The backward on another device than its forward.
	if err := (&dxOp{f: op}).cudaRun(failing, dx, []gorgonia.Value{x, x, y}); !errors.Is(err, ErrShape) {
		t.Errorf("backward on another device: %v, want ErrShape", err)
	}
	// CUDADo on the CPU is Do; on a device without a CUDA machine, ErrDevice.
	hx := tensorOf(tensor.Float32, c.shape, hostOf(t, x))
	hg, hb := tensorOf(tensor.Float32, tensor.Shape{3}, gb), tensorOf(tensor.Float32, tensor.Shape{3}, bb)
	if v, err := op.CUDADo(nil, gorgonia.CPU, nil, hx, hg, hb); err != nil {
		t.Errorf("CUDADo on the CPU: %v", err)
	} else {
		compare(t, "CUDADo on the CPU", valuesOf(t, v), hostOf(t, y), 1e-6)
	}
	if _, err := op.CUDADo(nil, gorgonia.CPU+1, nil, x, g, b); !errors.Is(err, ErrDevice) {
		t.Errorf("CUDADo without a CUDA machine: %v, want ErrDevice", err)
	}
}

// TestCUDASyncBN: SyncBN ranks on the CUDA path give what the same ranks
// give on the CPU (which TestSyncEqualsConcatenated checks against one
// layer over the concatenated batch).
func TestCUDASyncBN(t *testing.T) {
	const C = 3
	sizes := []int{3, 5}
	shape := func(n int) tensor.Shape { return tensor.Shape{n, C, 4} }
	for _, tc := range []struct {
		name string
		opts []Option
	}{{"plain", nil}, {"ghost2", []Option{WithGhostBatch(2)}}, {"renorm", []Option{WithRenorm(RenormConfig{RMax: 1.5, DMax: 0.5})}}} {
		t.Run(tc.name, func(t *testing.T) {
			d := testDev(t)
			r := rand.New(rand.NewSource(11))
			xs, dys := make([][]float64, len(sizes)), make([][]float64, len(sizes))
			for i, n := range sizes {
				xs[i], dys[i] = randn(r, n*C*4, 2, 3), randn(r, n*C*4, 0, 1)
			}
			gb, bb := randn(r, C, 1, 0.2), randn(r, C, 0, 1)
			// run runs one forward and backward on every rank, on the
			// device (dev != nil) or the CPU, and returns y, [dγ;dβ], dx.
			run := func(dev *cudaDev) [][3][]float64 {
				comms, err := collective.NewInProcess(len(sizes))
				if err != nil {
					t.Fatal(err)
				}
				out := make([][3]tensor.Tensor, len(sizes))
				errs := make([]error, len(sizes))
				var wg sync.WaitGroup
				for i, n := range sizes {
					c := cudaCase{shape: shape(n), mode: Train, opts: append([]Option{WithName("l"), WithCommunicator(comms[i])}, tc.opts...)}
					op, _, _ := newCaseOp(t, c, tensor.Float64, rand.New(rand.NewSource(1)))
					mk := func(sh tensor.Shape, v []float64) tensor.Tensor {
						if dev != nil {
							return devTensor(t, tensor.Float64, sh, v)
						}
						if v == nil {
							v = make([]float64, sh.TotalSize())
						}
						return tensorOf(tensor.Float64, sh, v)
					}
					x, g, b, dy := mk(shape(n), xs[i]), mk(tensor.Shape{C}, gb), mk(tensor.Shape{C}, bb), mk(shape(n), dys[i])
					y, sums, dx := mk(shape(n), nil), mk(tensor.Shape{2, C}, nil), mk(shape(n), nil)
					out[i] = [3]tensor.Tensor{y, sums, dx}
					wg.Go(func() {
						if dev == nil {
							if _, errs[i] = op.UsePreallocDo(y, x, g, b); errs[i] == nil {
								if _, errs[i] = (&sumsOp{f: op}).UsePreallocDo(sums, x, dy, y); errs[i] == nil {
									_, errs[i] = (&dxOp{f: op}).UsePreallocDo(dx, x, dy, sums)
								}
							}
							return
						}
						runtime.LockOSThread()
						defer runtime.UnlockOSThread()
						if errs[i] = cu.SetCurrentContext(cudaEnv.ctx); errs[i] != nil {
							return
						}
						if errs[i] = op.cudaRun(dev, y, []gorgonia.Value{x, g, b}); errs[i] == nil {
							if errs[i] = (&sumsOp{f: op}).cudaRun(dev, sums, []gorgonia.Value{x, dy, y}); errs[i] == nil {
								errs[i] = (&dxOp{f: op}).cudaRun(dev, dx, []gorgonia.Value{x, dy, sums})
							}
						}
					})
				}
				wg.Wait()
				res := make([][3][]float64, len(sizes))
				for i, err := range errs {
					if err != nil {
						t.Fatalf("rank %d: %v", i, err)
					}
					for k, v := range out[i] {
						if dev != nil {
							res[i][k] = hostOf(t, v)
						} else {
							res[i][k] = valuesOf(t, v)
						}
					}
				}
				return res
			}
			want, got := run(nil), run(d)
			for i := range sizes {
				for k, what := range []string{"y", "dγ, dβ", "dx"} {
					compare(t, fmt.Sprintf("rank %d: %s", i, what), got[i][k], want[i][k], 1e-12)
				}
			}
		})
	}
}

// BenchmarkCUDAOps times the ops' CUDA path (what Gorgonia's CUDA machines
// run per node: device passes plus the per-channel host steps and their
// synchronous copies) on the shapes of BenchmarkKernels and 64×256×56×56;
// compare with cudaops' BenchmarkForward/BenchmarkForwardBackward (the bare
// device pipeline) run on the same machine. GB/s counts the same ideal
// traffic as those: forward 3× the tensor bytes, forward+backward 8×.
func BenchmarkCUDAOps(b *testing.B) {
	shapes := append(append([]tensor.Shape{}, benchShapes...), tensor.Shape{64, 256, 56, 56})
	for _, back := range []bool{false, true} {
		name, traffic := "fwd", 3.0
		if back {
			name, traffic = "fwd+bwd", 8
		}
		for _, s := range shapes {
			for _, dt := range benchDtypes {
				b.Run(name+"/"+shapeName(s, dt), func(b *testing.B) {
					d := testDev(b)
					r := rand.New(rand.NewSource(1))
					op, gb, bb := newCaseOp(b, cudaCase{shape: s, mode: Train}, dt, r)
					n := s.TotalSize()
					x, dy := devTensor(b, dt, s, randn(r, n, 1, 2)), devTensor(b, dt, s, randn(r, n, 0, 1))
					g, be := devTensor(b, dt, tensor.Shape{len(gb)}, gb), devTensor(b, dt, tensor.Shape{len(bb)}, bb)
					sums := &sumsOp{f: op}
					y, ds, dx := devTensor(b, dt, s, nil), devTensor(b, dt, sums.outShape(), nil), devTensor(b, dt, s, nil)
					step := func() error {
						if err := op.cudaRun(d, y, []gorgonia.Value{x, g, be}); err != nil || !back {
							return err
						}
						if err := sums.cudaRun(d, ds, []gorgonia.Value{x, dy, y}); err != nil {
							return err
						}
						return (&dxOp{f: op}).cudaRun(d, dx, []gorgonia.Value{x, dy, ds})
					}
					if err := step(); err != nil { // plan, scratch
						b.Fatal(err)
					}
					b.ResetTimer()
					for b.Loop() {
						if err := step(); err != nil {
							b.Fatal(err)
						}
					}
					sec := b.Elapsed().Seconds() / float64(b.N)
					b.ReportMetric(traffic*float64(tensorBytes(s, dt))/sec/1e9, "GB/s")
				})
			}
		}
	}
}
