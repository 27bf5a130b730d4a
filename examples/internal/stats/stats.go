// Package stats summarises what the examples measure over several seeds:
// the mean and the spread of a quantity.
package stats

import (
	"fmt"
	"math"
	"strings"
)

// Summary is the mean, sample standard deviation (0 for one value), least
// and largest of a set of measurements.
type Summary struct {
	N                  int
	Mean, SD, Min, Max float64
}

// Of summarises v (NaN fields when v is empty).
func Of(v []float64) Summary {
	s := Summary{N: len(v), Mean: math.NaN(), SD: math.NaN(), Min: math.NaN(), Max: math.NaN()}
	if len(v) == 0 {
		return s
	}
	s.Min, s.Max = math.Inf(1), math.Inf(-1)
	var sum float64
	for _, x := range v {
		sum += x
		s.Min, s.Max = math.Min(s.Min, x), math.Max(s.Max, x)
	}
	s.Mean = sum / float64(len(v))
	s.SD = 0
	if len(v) > 1 {
		var m2 float64
		for _, x := range v {
			m2 += (x - s.Mean) * (x - s.Mean)
		}
		s.SD = math.Sqrt(m2 / float64(len(v)-1))
	}
	return s
}

// Format writes the summary as "mean ± sd" with the verb of format for
// both (e.g. "%.2f"; a + flag applies to the mean only), scaled by scale
// (100 for percent); one value is written alone.
func (s Summary) Format(format string, scale float64) string {
	if s.N <= 1 {
		return fmt.Sprintf(format, s.Mean*scale)
	}
	return fmt.Sprintf(format+" ± "+strings.Replace(format, "+", "", 1), s.Mean*scale, s.SD*scale)
}

// Column returns, for runs[i][j] (run i, point j), the summary of every
// point j over the runs; runs of different lengths are cut to the shortest.
func Column(runs [][]float64) []Summary {
	if len(runs) == 0 {
		return nil
	}
	n := len(runs[0])
	for _, r := range runs {
		n = min(n, len(r))
	}
	out := make([]Summary, n)
	col := make([]float64, len(runs))
	for j := range n {
		for i, r := range runs {
			col[i] = r[j]
		}
		out[j] = Of(col)
	}
	return out
}

// Means and SDs return the means and standard deviations of ss.
func Means(ss []Summary) []float64 {
	out := make([]float64, len(ss))
	for i, s := range ss {
		out[i] = s.Mean
	}
	return out
}

// SDs returns the standard deviations of ss.
func SDs(ss []Summary) []float64 {
	out := make([]float64, len(ss))
	for i, s := range ss {
		out[i] = s.SD
	}
	return out
}
