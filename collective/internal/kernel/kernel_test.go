package kernel

import (
	"math"
	"testing"
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
