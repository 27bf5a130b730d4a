package kern

import (
	"math"
	"math/rand"
	"testing"
)

func naiveMoments(x []float64, l Layout) []Moments {
	ns := l.Segments()
	out := make([]Moments, ns*l.C)
	for s := range ns {
		for c := range l.C {
			var sum, cnt float64
			for n := range l.N {
				if l.seg(n) != s {
					continue
				}
				for i := range l.S {
					sum += x[(n*l.C+c)*l.S+i]
					cnt++
				}
			}
			if cnt == 0 {
				continue
			}
			m := sum / cnt
			var m2 float64
			for n := range l.N {
				if l.seg(n) != s {
					continue
				}
				for i := range l.S {
					d := x[(n*l.C+c)*l.S+i] - m
					m2 += d * d
				}
			}
			out[s*l.C+c] = Moments{N: cnt, Mean: m, M2: m2}
		}
	}
	return out
}

func TestStatsQuick(t *testing.T) {
	r := rand.New(rand.NewSource(1))
	for _, l := range []Layout{{N: 3, C: 2, S: 5}, {N: 64, C: 300, S: 1}, {N: 7, C: 3, S: 40000}, {N: 9, C: 5, S: 17, Seg: []int{0, 0, 1, 1, 1, 0, 2, 2, 0}, NSeg: 4}, {N: 40, C: 64, S: 3}} {
		x := make([]float64, l.Len())
		for i := range x {
			x[i] = 3 + 2*r.NormFloat64()
		}
		want := naiveMoments(x, l)
		got := make([]Moments, len(want))
		NewPlan[float64](l, 3).Stats(x, got)
		for i := range want {
			if want[i].N != got[i].N || math.Abs(want[i].Mean-got[i].Mean) > 1e-12 || math.Abs(want[i].M2-got[i].M2) > 1e-9*math.Max(1, want[i].M2) {
				t.Fatalf("%+v: %d: got %+v want %+v", l, i, got[i], want[i])
			}
		}
	}
}
