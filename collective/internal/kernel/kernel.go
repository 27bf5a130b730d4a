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
