package kern

import (
	"math/rand"
	"testing"
)

// BenchmarkInner times the inner loops on one goroutine, on L1-resident
// data, with the vector loops on and off (setSIMD).
func BenchmarkInner(b *testing.B) {
	for _, simd := range []bool{false, true} {
		if setSIMD(simd) != simd {
			continue
		}
		name := "go"
		if simd {
			name = simdPath()
		}
		b.Run(name+"/f32", func(b *testing.B) { benchInner[float32](b) })
		b.Run(name+"/f64", func(b *testing.B) { benchInner[float64](b) })
	}
	setSIMD(true)
}

func benchInner[T Float](b *testing.B) {
	const n = 2048
	r := rand.New(rand.NewSource(1))
	x, dy, y := make([]T, n), make([]T, n), make([]T, n)
	for i := range x {
		x[i], dy[i] = T(r.NormFloat64()), T(r.NormFloat64())
	}
	var z T
	sz := int64(n * sizeof(z))
	var sink float64
	run := func(name string, bytes int64, f func()) {
		b.Run(name, func(b *testing.B) {
			b.SetBytes(bytes)
			c0 := cpuTime()
			for b.Loop() {
				f()
			}
			if c1 := cpuTime(); c1 > c0 {
				b.ReportMetric(float64(c1-c0)/float64(b.N), "cpu-ns/op")
			}
		})
	}
	run("sum", sz, func() { sink += sum(x) })
	run("dev", sz, func() { q, l := dev(x, 0.1); sink += q + l })
	run("dot", 2*sz, func() { q, l := dot(x, dy, 0.1); sink += q + l })
	run("affine", 2*sz, func() { affine(x, y, 0.1, 2, 3, false) })
	run("affine2", 3*sz, func() { affine2(x, dy, y, 0.1, 1.5, 2, 3, false) })
	run("affineStream", 2*sz, func() { affine(x, y, 0.1, 2, 3, true); streamFence() })
	run("affine2Stream", 3*sz, func() { affine2(x, dy, y, 0.1, 1.5, 2, 3, true); streamFence() })
	part := make([]Moments, 256)
	ms := make([]float64, 256)
	run("rowStats", sz, func() { rowStats(x, 256, n/256, part, n/256) })
	run("rowDot", 2*sz, func() { rowDot(x, dy, 256, n/256, ms, part) })
	run("rowAffine", 2*sz, func() { rowAffine(x, y, 256, n/256, ms, ms, ms) })
	run("rowAffine2", 3*sz, func() { rowAffine2(x, dy, y, 256, n/256, ms, ms, ms, ms) })
	_ = sink
}
