//go:build cuda

package cudaops

import (
	"fmt"
	"math/rand"
	"testing"
	"unsafe"

	"gorgonia.org/cu"
)

// benchShapes are the shapes of the CPU baselines (DESIGN.md §8) and two
// larger ones; bench_torch.py times PyTorch (cuDNN) on the same.
var benchShapes = []struct {
	name    string
	n, c, s int
}{
	{"32x64x32x32", 32, 64, 32 * 32},
	{"8x256x14x14", 8, 256, 14 * 14},
	{"256x1024", 256, 1024, 1},
	{"64x64x56x56", 64, 64, 56 * 56},
	{"64x256x56x56", 64, 256, 56 * 56},
}

// BenchmarkForward times Plan.Forward (training mode, batch statistics, with
// γ, β, saved mean/invstd and a running-statistics update).
func BenchmarkForward(b *testing.B) { benchAll(b, false) }

// BenchmarkForwardBackward times Plan.Forward then Plan.Backward (dx, dγ, dβ).
func BenchmarkForwardBackward(b *testing.B) { benchAll(b, true) }

func benchAll(b *testing.B, bwd bool) {
	for _, sh := range benchShapes {
		for _, dt := range []Dtype{Float32, Float64} {
			b.Run(fmt.Sprintf("%s/%v", sh.name, dt), func(b *testing.B) {
				benchBN(b, Layout{N: sh.n, C: sh.c, S: sh.s}, dt, bwd)
			})
		}
	}
}

// benchBN reports, besides ns/op (wall time, launches included):
//
//	gpu-us/op  time between CUDA events around the b.N iterations, per op
//	GB/s       ideal traffic (forward 3×, forward+backward 8× the tensor
//	           bytes: x read twice and y written; then x, dy read twice and
//	           dx written) divided by gpu time
//	copy-GB/s  a device-to-device copy of the tensor (read + write) timed
//	           in the same run: the practical bandwidth ceiling
//	%copy      GB/s as a percentage of copy-GB/s
func benchBN(b *testing.B, l Layout, dt Dtype, bwd bool) {
	m := gpu(b)
	n := l.Len()
	bytes := n * dt.Size()
	p, err := NewPlan(m, l, dt)
	must(b, err)
	b.Cleanup(func() { must(b, p.Close()) })

	r := rand.New(rand.NewSource(1))
	x, dy := alloc(b, bytes), alloc(b, bytes)
	y, dx := alloc(b, bytes), alloc(b, bytes)
	fill(b, r, x, n, dt)
	fill(b, r, dy, n, dt)
	gamma, beta := alloc(b, l.C*dt.Size()), alloc(b, l.C*dt.Size())
	fill(b, r, gamma, l.C, dt)
	fill(b, r, beta, l.C, dt)
	K := p.K()
	mom, mean, invstd := alloc(b, 24*K), alloc(b, 8*K), alloc(b, 8*K)
	rm, rv := alloc(b, 8*K), alloc(b, 8*K)
	must(b, cu.MemsetD8(rm, 0, int64(8*K)))
	must(b, cu.MemsetD8(rv, 0, int64(8*K)))
	dg, db := alloc(b, l.C*dt.Size()), alloc(b, l.C*dt.Size())

	must(b, cu.Synchronize()) // the set-up ran on the legacy stream
	s, err := cu.MakeStream(cu.NonBlocking)
	must(b, err)
	b.Cleanup(func() { must(b, s.Destroy()) })
	start, err := cu.MakeEvent(cu.DefaultEvent)
	must(b, err)
	end, err := cu.MakeEvent(cu.DefaultEvent)
	must(b, err)
	b.Cleanup(func() {
		must(b, cu.DestroyEvent(&start))
		must(b, cu.DestroyEvent(&end))
	})

	fa := FwdArgs{X: x, Y: y, Gamma: gamma, Beta: beta, Eps: 1e-5, Moments: mom, Mean: mean, InvStd: invstd,
		RunMean: rm, RunVar: rv, Momentum: 0.1}
	ba := BwdArgs{X: x, Dy: dy, Dx: dx, Gamma: gamma, Moments: mom, Mean: mean, InvStd: invstd, DGamma: dg, DBeta: db}
	step := func() error {
		if err := p.Forward(s, fa); err != nil {
			return err
		}
		if bwd {
			return p.Backward(s, ba)
		}
		return nil
	}
	timed := func(iters int, f func() error) float64 { // seconds per iteration
		must(b, start.Record(s))
		for range iters {
			must(b, f())
		}
		must(b, end.Record(s))
		must(b, end.Synchronize())
		ms, err := start.Elapsed(end)
		must(b, err)
		return ms / 1e3 / float64(iters)
	}

	// Warm-up (module JIT, caches), and the copy ceiling of this size.
	for range 3 {
		must(b, step())
	}
	copyOnce := func() error { return cu.MemcpyDtoDAsync(dx, x, int64(bytes), s) }
	timed(2, copyOnce)
	copyIters := max(5, min(200, (1<<31)/max(bytes, 1)))
	copyGBs := 2 * float64(bytes) / timed(copyIters, copyOnce) / 1e9

	b.ResetTimer()
	sec := timed(b.N, step)
	b.StopTimer()

	traffic := 3.0
	if bwd {
		traffic = 8
	}
	gbs := traffic * float64(bytes) / sec / 1e9
	b.ReportMetric(sec*1e6, "gpu-us/op")
	b.ReportMetric(gbs, "GB/s")
	b.ReportMetric(copyGBs, "copy-GB/s")
	b.ReportMetric(100*gbs/copyGBs, "%copy")
}

// BenchmarkCopy times a device-to-device copy of each shape alone.
func BenchmarkCopy(b *testing.B) {
	for _, sh := range benchShapes {
		for _, dt := range []Dtype{Float32, Float64} {
			b.Run(fmt.Sprintf("%s/%v", sh.name, dt), func(b *testing.B) {
				gpu(b)
				bytes := sh.n * sh.c * sh.s * dt.Size()
				src, dst := alloc(b, bytes), alloc(b, bytes)
				must(b, cu.MemsetD8(src, 0, int64(bytes)))
				b.SetBytes(int64(2 * bytes))
				b.ResetTimer()
				for range b.N {
					must(b, cu.MemcpyDtoDAsync(dst, src, int64(bytes), cu.NoStream))
				}
				must(b, cu.Synchronize())
			})
		}
	}
}

// hostData caches random host data across the repeated runs of a benchmark.
var hostData = map[[2]int][]byte{}

// fill uploads n random values of dtype dt to p.
func fill(b *testing.B, r *rand.Rand, p cu.DevicePtr, n int, dt Dtype) {
	b.Helper()
	if n == 0 {
		return
	}
	key := [2]int{n, int(dt)}
	buf, ok := hostData[key]
	if !ok {
		if dt == Float32 {
			xs := randSlice[float32](r, n, 0.5, 1)
			buf = unsafe.Slice((*byte)(unsafe.Pointer(&xs[0])), 4*n)
		} else {
			xs := randSlice[float64](r, n, 0.5, 1)
			buf = unsafe.Slice((*byte)(unsafe.Pointer(&xs[0])), 8*n)
		}
		hostData[key] = buf
	}
	must(b, cu.MemcpyHtoD(p, unsafe.Pointer(&buf[0]), int64(len(buf))))
}
