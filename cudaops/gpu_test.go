//go:build cuda

package cudaops

// Helpers shared by the tests and benchmarks. They need a GPU: cu's init
// exits the process without one, so this binary is only built (go test -c)
// on machines without a GPU, never run.

import (
	"math"
	"math/rand"
	"runtime"
	"sync"
	"testing"
	"time"
	"unsafe"

	"github.com/gorgonia-bn/bn/internal/kern"
	"gorgonia.org/cu"
)

var env struct {
	once sync.Once
	err  error
	ctx  cu.CUContext
	mod  *Module
}

// gpu locks the calling goroutine to its OS thread for the rest of the test,
// makes the primary context of device 0 current on it and returns the
// module loaded there.
func gpu(tb testing.TB) *Module {
	tb.Helper()
	runtime.LockOSThread()
	tb.Cleanup(runtime.UnlockOSThread)
	env.once.Do(func() {
		n, err := cu.NumDevices()
		if err != nil {
			env.err = err
			return
		}
		if n == 0 {
			env.err = cu.NoDevice
			return
		}
		dev, err := cu.GetDevice(0)
		if err != nil {
			env.err = err
			return
		}
		if env.ctx, err = dev.RetainPrimaryCtx(); err != nil {
			env.err = err
			return
		}
		if err = cu.SetCurrentContext(env.ctx); err != nil {
			env.err = err
			return
		}
		name, _ := dev.Name()
		major, minor, _ := dev.ComputeCapability()
		tb.Logf("device 0: %s, compute capability %d.%d, driver %d", name, major, minor, cu.Version())
		env.mod, env.err = Load()
	})
	if env.err != nil {
		tb.Fatalf("CUDA set-up: %v", env.err)
	}
	if err := cu.SetCurrentContext(env.ctx); err != nil {
		tb.Fatalf("set current context: %v", err)
	}
	return env.mod
}

func must(tb testing.TB, err error) {
	tb.Helper()
	if err != nil {
		tb.Fatal(err)
	}
}

// alloc allocates n bytes of device memory, freed at the end of the test.
func alloc(tb testing.TB, n int) cu.DevicePtr {
	tb.Helper()
	p, err := cu.MemAlloc(int64(max(n, 8)))
	must(tb, err)
	tb.Cleanup(func() {
		if err := cu.MemFree(p); err != nil {
			tb.Errorf("free: %v", err)
		}
	})
	return p
}

func sizeOf[T any]() int {
	var z T
	return int(unsafe.Sizeof(z))
}

// upload copies xs into fresh device memory.
func upload[T any](tb testing.TB, xs []T) cu.DevicePtr {
	tb.Helper()
	n := len(xs) * sizeOf[T]()
	p := alloc(tb, n)
	if n > 0 {
		must(tb, cu.MemcpyHtoD(p, unsafe.Pointer(&xs[0]), int64(n)))
	}
	return p
}

// download synchronizes the context and copies n elements back.
func download[T any](tb testing.TB, p cu.DevicePtr, n int) []T {
	tb.Helper()
	must(tb, cu.Synchronize())
	out := make([]T, n)
	if n > 0 {
		must(tb, cu.MemcpyDtoH(unsafe.Pointer(&out[0]), p, int64(n*sizeOf[T]())))
	}
	return out
}

// poison fills n bytes with 0xFF: a NaN as float32 and as float64, so an
// output element a kernel forgets to write is caught.
func poison(tb testing.TB, p cu.DevicePtr, n int) {
	tb.Helper()
	if n > 0 {
		must(tb, cu.MemsetD8(p, 0xFF, int64(n)))
	}
}

// buffer allocates a poisoned device buffer of n elements of type T.
func buffer[T any](tb testing.TB, n int) cu.DevicePtr {
	p := alloc(tb, n*sizeOf[T]())
	poison(tb, p, n*sizeOf[T]())
	return p
}

func dtypeOf[T kern.Float]() Dtype {
	if sizeOf[T]() == 4 {
		return Float32
	}
	return Float64
}

// tolOf is the relative tolerance of outputs of type T.
func tolOf[T kern.Float]() float64 {
	if sizeOf[T]() == 4 {
		return 1e-5
	}
	return 1e-12
}

func newRand(tb testing.TB) *rand.Rand {
	seed := time.Now().UnixNano()
	tb.Logf("seed %d", seed)
	return rand.New(rand.NewSource(seed))
}

func randSlice[T kern.Float](r *rand.Rand, n int, off, sc float64) []T {
	xs := make([]T, n)
	for i := range xs {
		xs[i] = T(off + sc*r.NormFloat64())
	}
	return xs
}

func f64s[T kern.Float](xs []T) []float64 {
	out := make([]float64, len(xs))
	for i, v := range xs {
		out[i] = float64(v)
	}
	return out
}

func momFloats(ms []kern.Moments) []float64 {
	out := make([]float64, 0, 3*len(ms))
	for _, m := range ms {
		out = append(out, m.N, m.Mean, m.M2)
	}
	return out
}

func sumFloats(ss [][2]float64) []float64 {
	out := make([]float64, 0, 2*len(ss))
	for _, s := range ss {
		out = append(out, s[0], s[1])
	}
	return out
}

// checkElems compares element-wise: |got−want| ≤ tol·max(1, |want|); a NaN
// is expected exactly where want has one. Every element of got was
// poisoned before the launch, so a missed element fails here.
func checkElems(tb testing.TB, what string, got, want []float64, tol float64) {
	tb.Helper()
	check(tb, what, got, want, tol, func(w float64) float64 { return math.Max(1, math.Abs(w)) })
}

// checkNorm compares against the largest |want| (sums, whose terms cancel).
func checkNorm(tb testing.TB, what string, got, want []float64, tol float64) {
	tb.Helper()
	scale := 1.0
	for _, w := range want {
		if !math.IsNaN(w) {
			scale = math.Max(scale, math.Abs(w))
		}
	}
	check(tb, what, got, want, tol, func(float64) float64 { return scale })
}

func check(tb testing.TB, what string, got, want []float64, tol float64, scale func(float64) float64) {
	tb.Helper()
	if len(got) != len(want) {
		tb.Fatalf("%s: %d values, want %d", what, len(got), len(want))
	}
	bad := 0
	worst := 0.0
	for i := range want {
		g, w := got[i], want[i]
		var ok bool
		if math.IsNaN(w) {
			ok = math.IsNaN(g)
		} else {
			e := math.Abs(g-w) / scale(w)
			ok = e <= tol // false for NaN
			if !math.IsNaN(e) {
				worst = math.Max(worst, e)
			}
		}
		if !ok {
			if bad < 5 {
				tb.Errorf("%s[%d] = %v, want %v", what, i, g, w)
			}
			bad++
		}
	}
	if bad > 0 {
		tb.Errorf("%s: %d of %d values wrong (tolerance %g, worst finite error %.3g)", what, bad, len(want), tol, worst)
	}
}
