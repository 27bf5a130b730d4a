package kernel

import (
	"math"
	"testing"

	"github.com/gorgonia-bn/bn/internal/kern"
)

func TestApply(t *testing.T) {
	nan := math.NaN()
	negz := math.Copysign(0, -1)
	a := []float64{1, 5, nan, 2, negz, 0, -3}
	b := []float64{4, 2, 1, nan, 0, negz, -7}
	for _, tc := range []struct {
		op   Op
		want []float64
	}{
		{1, []float64{5, 7, nan, nan, 0, 0, -10}},
		{2, []float64{4, 5, nan, nan, 0, 0, -3}},
		{3, []float64{1, 2, nan, nan, negz, negz, -7}},
	} {
		for _, f32 := range []bool{false, true} {
			if f32 {
				d := make([]float32, len(a))
				s := make([]float32, len(b))
				for i := range a {
					d[i], s[i] = float32(a[i]), float32(b[i])
				}
				Apply(tc.op, d, s)
				for i := range d {
					if !same(float64(d[i]), tc.want[i]) {
						t.Errorf("float32 op %d element %d: %v, want %v", tc.op, i, d[i], tc.want[i])
					}
				}
				continue
			}
			d := append([]float64(nil), a...)
			Apply(tc.op, d, b)
			for i := range d {
				if !same(d[i], tc.want[i]) {
					t.Errorf("float64 op %d element %d: %v, want %v", tc.op, i, d[i], tc.want[i])
				}
			}
		}
	}
	if Apply(0, a, b) || Apply(4, a, b) {
		t.Error("Apply accepted an invalid op")
	}
}

// same compares values including the sign of zero, NaN equal to NaN.
func same(x, y float64) bool {
	if math.IsNaN(x) || math.IsNaN(y) {
		return math.IsNaN(x) && math.IsNaN(y)
	}
	return x == y && math.Signbit(x) == math.Signbit(y)
}

// TestMergeMomentsMatchesKern: MergeMoments computes bn's
// kern.Moments.Merge bit for bit (including empty operands), and
// MomentsTree merges in the documented order.
func TestMergeMomentsMatchesKern(t *testing.T) {
	ms := []kern.Moments{{}, {N: 1, Mean: 1e4 + 0.25}, {N: 3, Mean: 9999.5, M2: 2.75}, {}, {N: 7, Mean: -3, M2: 1e-3}, {N: 2, Mean: 1e4, M2: 0.5}}
	for _, a := range ms {
		for _, b := range ms {
			d, s := []float64{a.N, a.Mean, a.M2}, []float64{b.N, b.Mean, b.M2}
			MergeMoments(d, s)
			w := a.Merge(b)
			if math.Float64bits(d[0]) != math.Float64bits(w.N) || math.Float64bits(d[1]) != math.Float64bits(w.Mean) || math.Float64bits(d[2]) != math.Float64bits(w.M2) {
				t.Errorf("%v ⊕ %v = %v, kern.Merge %v", a, b, d, w)
			}
		}
	}
	// p = 6: T(0,6) = T(0,4) ⊕ T(4,6) = ((x0⊕x1)⊕(x2⊕x3))⊕(x4⊕x5).
	want := ms[0].Merge(ms[1]).Merge(ms[2].Merge(ms[3])).Merge(ms[4].Merge(ms[5]))
	got := make([]float64, 3)
	MomentsTree(got, len(ms), func(r int) []float64 { return []float64{ms[r].N, ms[r].Mean, ms[r].M2} }, make([]float64, 3*TreeDepth(len(ms))))
	if got[0] != want.N || got[1] != want.Mean || got[2] != want.M2 {
		t.Errorf("tree of 6: %v, want %v", got, want)
	}
}
