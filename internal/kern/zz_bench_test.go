package kern

import (
	"fmt"
	"math"
	"math/rand"
	"testing"
)

// benchShapes are the four shapes of DESIGN.md §8 as N×C×S.
var benchShapes = []Layout{
	{N: 32, C: 64, S: 32 * 32},
	{N: 8, C: 256, S: 14 * 14},
	{N: 256, C: 1024, S: 1},
	{N: 64, C: 64, S: 56 * 56},
}

// BenchmarkKern times, for each shape and element type, the copy of the
// tensor (the bandwidth ceiling: SetBytes counts read + write), each kernel,
// and the forward (Stats + Apply) and forward+backward (Stats + Apply +
// BackwardSums + Apply with dy) sequences. SetBytes is the ideal traffic:
// 3× the tensor bytes for fwd, 8× for fwdbwd, so that
// %floor = (fwd MB/s) / (copy MB/s).
func BenchmarkKern(b *testing.B) {
	for _, l := range benchShapes {
		b.Run(fmt.Sprintf("f32/%dx%dx%d", l.N, l.C, l.S), func(b *testing.B) { benchKern[float32](b, l) })
		b.Run(fmt.Sprintf("f64/%dx%dx%d", l.N, l.C, l.S), func(b *testing.B) { benchKern[float64](b, l) })
	}
}

func benchKern[T Float](b *testing.B, l Layout) {
	r := rand.New(rand.NewSource(1))
	n := l.Len()
	x, dy, y, dx := make([]T, n), make([]T, n), make([]T, n), make([]T, n)
	for i := range x {
		x[i] = T(3 + 2*r.NormFloat64())
		dy[i] = T(r.NormFloat64())
	}
	var z T
	sz := int64(n) * int64(sizeof(z))
	p, q := NewPlan[T](l, 0), NewPlan[T](l, 0)
	ms := make([]Moments, l.C)
	mean, sc, sh := make([]float64, l.C), make([]float64, l.C), make([]float64, l.C)
	ca, cb, cc := make([]float64, l.C), make([]float64, l.C), make([]float64, l.C)
	sums := make([][2]float64, l.C)
	p.Stats(x, ms)
	for c := range ms {
		mean[c], sc[c], sh[c] = ms[c].Mean, 1/ms[c].Var(), 0.5
		ca[c], cb[c], cc[c] = 1.5, -0.25, 0.1
	}
	run := func(name string, bytes int64, f func()) {
		b.Run(name, func(b *testing.B) {
			b.SetBytes(bytes)
			b.ReportAllocs()
			c0 := cpuTime()
			for b.Loop() {
				f()
			}
			if c1 := cpuTime(); c1 > c0 {
				b.ReportMetric(float64(c1-c0)/float64(b.N), "cpu-ns/op")
			}
		})
	}
	run("copy", 2*sz, func() { copy(y, x) })
	run("stats", sz, func() { p.Stats(x, ms) })
	run("sums", 2*sz, func() { p.BackwardSums(x, dy, mean, sums) })
	// The passes that write a tensor, with the default choice of stores
	// and, where there are streaming stores, with each kind forced.
	type storeKind struct {
		name string
		min  int // streamMin
	}
	stores := []storeKind{{"", streamMin}}
	if simdPath() != "go" {
		stores = append(stores, storeKind{"/cached", math.MaxInt}, storeKind{"/stream", 0})
	}
	for _, st := range stores {
		old := setStreamMin(st.min)
		run("apply"+st.name, 2*sz, func() { p.Apply(x, nil, y, mean, nil, sc, sh) })
		run("dx"+st.name, 3*sz, func() { p.Apply(x, dy, dx, mean, ca, cb, cc) })
		run("fwd"+st.name, 3*sz, func() {
			p.Stats(x, ms)
			p.Apply(x, nil, y, mean, nil, sc, sh)
		})
		// fwd followed by what a next layer does first: read y (its
		// statistics pass). Streamed stores send y to memory; this shows
		// what that costs its reader (it sets streamMin).
		run("fwdnext"+st.name, 4*sz, func() {
			p.Stats(x, ms)
			p.Apply(x, nil, y, mean, nil, sc, sh)
			q.Stats(y, ms)
		})
		run("fwdbwd"+st.name, 8*sz, func() {
			p.Stats(x, ms)
			p.Apply(x, nil, y, mean, nil, sc, sh)
			p.BackwardSums(x, dy, mean, sums)
			p.Apply(x, dy, dx, mean, ca, cb, cc)
		})
		setStreamMin(old)
	}
}

func sizeof[T Float](T) int {
	var z T
	switch any(z).(type) {
	case float32:
		return 4
	}
	return 8
}
