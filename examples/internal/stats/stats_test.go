package stats

import (
	"math"
	"testing"
)

func TestOf(t *testing.T) {
	s := Of([]float64{1, 2, 3, 6})
	if s.N != 4 || s.Mean != 3 || math.Abs(s.SD-math.Sqrt(14.0/3)) > 1e-15 || s.Min != 1 || s.Max != 6 {
		t.Errorf("%+v", s)
	}
	if got := s.Format("%.1f", 10); got != "30.0 ± 21.6" {
		t.Errorf("format %q", got)
	}
	if got := Of([]float64{-1, -3}).Format("%+.1f", 1); got != "-2.0 ± 1.4" {
		t.Errorf("format with +: %q", got)
	}
	if one := Of([]float64{0.5}); one.SD != 0 || one.Format("%.1f", 100) != "50.0" {
		t.Errorf("one value: %+v", one)
	}
	if e := Of(nil); !math.IsNaN(e.Mean) {
		t.Errorf("empty: %+v", e)
	}
	cols := Column([][]float64{{1, 2, 9}, {3, 4}})
	if len(cols) != 2 || cols[0].Mean != 2 || cols[1].Mean != 3 || Means(cols)[1] != 3 || SDs(cols)[0] != math.Sqrt2 {
		t.Errorf("columns %+v", cols)
	}
}
