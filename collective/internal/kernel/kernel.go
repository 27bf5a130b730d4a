// Package kernel holds the element-wise reduction loops shared by the host
// backends of package collective, so that every backend reduces with the
// same arithmetic (in particular the same NaN and signed-zero behaviour).
package kernel

// Float is the set of element types the kernels accept.
type Float interface{ ~float32 | ~float64 }

// Sum computes, for i in [0, len(dst)),
//
//	dst[i] = dst[i] + src[i]
//
// src must be at least as long as dst.
func Sum[T Float](dst, src []T) {
	src = src[:len(dst)]
	for i := range dst {
		dst[i] += src[i]
	}
}

// Max computes, for i in [0, len(dst)),
//
//	dst[i] = max(dst[i], src[i])
//
// with Go's max: a NaN in either operand gives NaN, and max(-0, +0) = +0.
func Max[T Float](dst, src []T) {
	src = src[:len(dst)]
	for i := range dst {
		dst[i] = max(dst[i], src[i])
	}
}

// Min computes, for i in [0, len(dst)),
//
//	dst[i] = min(dst[i], src[i])
//
// with Go's min: a NaN in either operand gives NaN, and min(-0, +0) = -0.
func Min[T Float](dst, src []T) {
	src = src[:len(dst)]
	for i := range dst {
		dst[i] = min(dst[i], src[i])
	}
}

// Op is a reduction code: 1 sum, 2 max, 3 min (the values of
// collective.ReduceOp).
type Op int

// Apply computes dst[i] = dst[i] op src[i]. It reports false for an unknown
// op.
func Apply[T Float](op Op, dst, src []T) bool {
	switch op {
	case 1:
		Sum(dst, src)
	case 2:
		Max(dst, src)
	case 3:
		Min(dst, src)
	default:
		return false
	}
	return true
}

// MomentsOp is the Op code of the moments reduction (collective.Moments):
// the elements are float64 triples (n, mean, M2) merged with Chan's rule.
const MomentsOp Op = 4

// MergeMoments merges, triple by triple, the moments of src into those of
// dst, dst holding the lower ranks (the left operand):
//
//	n = na+nb; d = mb−ma; mean = ma + d·(nb/n); M2 = M2a + M2b + d²·(na·(nb/n))
//
// (Chan, Golub and LeVeque 1979; the same float64 operations, in the same
// order, as bn's kern.Moments.Merge). An empty operand (n = 0) leaves the
// other one unchanged, bit for bit. len(dst) must be a multiple of 3 and
// src at least as long.
func MergeMoments(dst, src []float64) {
	src = src[:len(dst)]
	for i := 0; i+2 < len(dst); i += 3 {
		nb := src[i]
		if nb == 0 {
			continue
		}
		na := dst[i]
		if na == 0 {
			dst[i], dst[i+1], dst[i+2] = nb, src[i+1], src[i+2]
			continue
		}
		n := na + nb
		d := src[i+1] - dst[i+1]
		dst[i] = n
		dst[i+1] = dst[i+1] + float64(d*float64(nb/n))
		dst[i+2] = dst[i+2] + src[i+2] + float64(float64(d*d)*float64(na*float64(nb/n)))
	}
}

// TreeDepth returns the number of levels of scratch MomentsTree needs for
// p inputs: ⌈log₂ p⌉.
func TreeDepth(p int) int {
	d := 0
	for 1<<d < p {
		d++
	}
	return d
}

// MomentsTree sets dst to the merge of the inputs of p ranks (in(r) is
// rank r's, at least len(dst) long) over the fixed binary tree
//
//	T(lo, hi) = T(lo, mid) ⊕ T(mid, hi), mid = lo + 2^(⌈log₂(hi−lo)⌉−1)
//
// (for p = 8: ((x0⊕x1)⊕(x2⊕x3))⊕((x4⊕x5)⊕(x6⊕x7))): the order of the
// merges depends on p only, so that every rank and every backend that
// evaluates it gets the same bits. tmp must hold TreeDepth(p)·len(dst)
// values.
func MomentsTree(dst []float64, p int, in func(r int) []float64, tmp []float64) {
	momentsTree(dst, 0, p, in, tmp)
}

func momentsTree(dst []float64, lo, hi int, in func(r int) []float64, tmp []float64) {
	n := len(dst)
	if hi-lo == 1 {
		copy(dst, in(lo)[:n])
		return
	}
	mid := lo + 1<<(TreeDepth(hi-lo)-1)
	momentsTree(dst, lo, mid, in, tmp[n:])
	momentsTree(tmp[:n], mid, hi, in, tmp[n:])
	MergeMoments(dst, tmp[:n])
}
