// Package kern holds the CPU kernels of bn: per-channel moments, their
// merge, and the fused element-wise passes of the forward and backward
// computations. It knows nothing of Gorgonia, graphs or communicators.
//
// Every variant of batch normalization is the same pipeline (see DESIGN.md):
//
//	forward:  x ─▶ partial Moments per block ─▶ Chan merge per (segment, channel) ─▶ y = (x−μ)·scale + shift
//	backward: (x, dy) ─▶ Σdy, Σdy·(x−μ) per (segment, channel) ─▶ dx = a·dy + b·(x−μ) + c
//
// A tensor is viewed as N×C×S (samples, channels, product of the spatial
// sizes) in row-major (NCHW) order. Samples are partitioned into segments:
// one segment for plain batch norm, groups of G samples for ghost batch norm,
// the domain of each sample for domain-specific batch norm.
package kern

import "math"

// Float is the set of element types the kernels accept.
type Float interface{ ~float32 | ~float64 }

// Moments summarise a set of values: their count N, mean and M2, the sum of
// squared deviations from the mean. All fields are float64 whatever the
// element type of the data.
type Moments struct {
	N, Mean, M2 float64
}

// Merge returns the moments of the union of the two sets (Chan, Golub and
// LeVeque 1979):
//
//	n = na+nb; d = mb−ma; mean = ma + d·nb/n; M2 = M2a + M2b + d²·na·nb/n
//
// An empty operand returns the other one unchanged, bit for bit.
func (a Moments) Merge(b Moments) Moments {
	if b.N == 0 {
		return a
	}
	if a.N == 0 {
		return b
	}
	n := a.N + b.N
	d := b.Mean - a.Mean
	return Moments{N: n, Mean: a.Mean + d*(b.N/n), M2: a.M2 + b.M2 + d*d*(a.N*(b.N/n))}
}

// Var returns the biased variance M2/N, the one used to normalize.
// It is NaN for an empty set.
func (a Moments) Var() float64 {
	if a.N == 0 {
		return math.NaN()
	}
	return a.M2 / a.N
}

// UnbiasedVar returns M2/(N−1), the variance running statistics track.
// It is NaN when N ≤ 1.
func (a Moments) UnbiasedVar() float64 {
	if a.N <= 1 {
		return math.NaN()
	}
	return a.M2 / (a.N - 1)
}

// corrected returns the moments of cnt values from the two passes of the
// corrected two-pass algorithm around an approximate mean m: sq = Σ(x−m)²
// and lin = Σ(x−m). The lin terms remove the rounding error of m (Björck;
// Chan, Golub, LeVeque), whatever m is.
func corrected(cnt, m, sq, lin float64) Moments {
	return Moments{N: cnt, Mean: m + lin/cnt, M2: sq - lin*lin/cnt}
}

// MergeAll merges ms in order into one Moments.
func MergeAll(ms []Moments) Moments {
	var r Moments
	for _, m := range ms {
		r = r.Merge(m)
	}
	return r
}

// Layout is an N×C×S tensor and the partition of its samples into segments.
type Layout struct {
	N, C, S int
	// Seg, when non-nil, holds the segment of each of the N samples, each in
	// [0, NSeg). When nil, all samples form segment 0.
	Seg []int
	// NSeg is the number of segments; 0 is taken as 1.
	NSeg int
}

// Segments returns the number of segments, at least 1.
func (l Layout) Segments() int {
	if l.NSeg < 1 {
		return 1
	}
	return l.NSeg
}

// Len returns N·C·S.
func (l Layout) Len() int { return l.N * l.C * l.S }

func (l Layout) seg(n int) int {
	if l.Seg == nil {
		return 0
	}
	return l.Seg[n]
}

// GhostSegments places the len(seg) samples that start at offset off of a
// batch of total samples into ghost groups of g: seg[i] = (off+i)/g. It
// returns the number of groups of the whole batch, ⌈total/g⌉. g must be
// positive.
func GhostSegments(seg []int, g, off, total int) int {
	for i := range seg {
		seg[i] = (off + i) / g
	}
	return (total + g - 1) / g
}
