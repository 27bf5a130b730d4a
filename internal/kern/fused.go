package kern

// Batch normalization fused with a ReLU (and a residual add): the forward
// y = max(0, (x−μ)·scale + shift [+ z]) and, in the backward, the gradient
// masked by y > 0 in the pass that reads it. The passes are the block
// loops of Apply and BackwardSums; each block, right after the affine
// kernel wrote it (forward) or before the dot kernel reads it (backward),
// is swept once more by an element-wise kernel (reluTo, maskTo) while it is
// still in the core's cache (a block is at most blockElems elements): the
// tensors cross memory as often as in the unfused passes, the ReLU's own
// pass over memory is gone.

// reluGo sets every negative element of xs to zero (NaN and −0 stay):
//
//	for i, v := range xs { if v < 0 { xs[i] = 0 } }
func reluGo[T Float](xs []T) {
	for i, v := range xs {
		if v < 0 {
			xs[i] = 0
		}
	}
}

// maskGo writes dy where y is positive and zero elsewhere (NaN y: zero),
// len(y), len(g) ≥ len(dy):
//
//	for i := range dy { g[i] = 0; if y[i] > 0 { g[i] = dy[i] } }
func maskGo[T Float](dy, y, g []T) {
	y, g = y[:len(dy)], g[:len(dy)]
	for i, d := range dy {
		if y[i] > 0 {
			g[i] = d
		} else {
			g[i] = 0
		}
	}
}

// reluJob runs the fused passes of a Plan over its blocks.
type reluJob[T Float] struct {
	p     *Plan[T]
	back  bool
	y, dy []T       // backward: the forward's output and the unmasked gradient
	ones  []float64 // a = 1 for the forward with z
}

func (j *reluJob[T]) run(i int) {
	p := j.p
	if !j.back {
		p.blockApply(i)
		p.eachRun(p.ablocks[i], func(o, n int) { relu(p.out[o : o+n]) })
		return
	}
	// p.dy is g here: mask the block of the caller's dy into it first.
	p.eachRun(p.blocks[i], func(o, n int) { maskTo(j.dy[o:o+n], j.y[o:o+n], p.dy[o:o+n]) })
	p.blockSums(i)
}

// eachRun calls f(o, n) on the contiguous runs [o, o+n) of the elements of
// block bl.
func (p *Plan[T]) eachRun(bl block, f func(o, n int)) {
	C, S := p.l.C, p.l.S
	if S == 1 {
		if bl.c0 == 0 && bl.c1 == C {
			f(bl.n0*C, (bl.n1-bl.n0)*C)
			return
		}
		for n := bl.n0; n < bl.n1; n++ {
			f(n*C+bl.c0, bl.c1-bl.c0)
		}
		return
	}
	L := bl.s1 - bl.s0
	for n := bl.n0; n < bl.n1; n++ {
		if L == S {
			f((n*C+bl.c0)*S, (bl.c1-bl.c0)*S)
			continue
		}
		for c := bl.c0; c < bl.c1; c++ {
			f((n*C+c)*S+bl.s0, L)
		}
	}
}

// ApplyReLU computes, element-wise with the coefficients of the element's
// (segment, channel) k, in float64 before the rounding to T:
//
//	out = max(0, (x − mean[k])·b[k] + c[k] + z)
//
// z may be nil (no z term). It is Apply(x, z, out, mean, 1, b, c) followed
// by a ReLU on each block while it is in cache, bit for bit. out may alias
// x or z. NaN stays NaN.
func (p *Plan[T]) ApplyReLU(x, z, out []T, mean, b, c []float64) {
	j := &p.relu
	j.p, j.back = p, false
	var a []float64
	if z != nil {
		k := p.l.Segments() * p.l.C
		if len(j.ones) != k {
			j.ones = make([]float64, k)
			for i := range j.ones {
				j.ones[i] = 1
			}
		}
		a = j.ones
	}
	p.x, p.dy, p.out, p.mean, p.a, p.b, p.c = x, z, out, mean, a, b, c
	p.stream = false // the ReLU sweep reads the block back from cache
	p.phase = phaseApply
	p.f.do(len(p.ablocks), p.threads, j)
	p.release()
}

// BackwardSumsReLU is BackwardSums of the gradient masked by the forward's
// output y: it writes g = dy where y > 0, else 0 (see maskGo), and
// computes, for every (segment, channel), Σg and Σg·(x−μ) into
// sums[seg·C+c]. g must not alias x, dy or y.
func (p *Plan[T]) BackwardSumsReLU(x, dy, y, g []T, mean []float64, sums [][2]float64) {
	j := &p.relu
	j.p, j.back, j.y, j.dy = p, true, y, dy
	p.x, p.dy, p.mean, p.sums = x, g, mean, sums
	p.phase = phaseSums
	p.f.do(len(p.blocks), p.threads, j)
	j.y, j.dy = nil, nil
	p.reduce(phaseReduceSums)
}

// ReLU writes max(0, src) into dst (len(dst) ≥ len(src)), in chunks that
// stay in cache between the copy and the vector ReLU. It is the stand-alone
// ReLU the benchmarks compare the fused passes with; it runs on the calling
// goroutine.
func ReLU[T Float](dst, src []T) {
	dst = dst[:len(src)]
	for o := 0; o < len(src); o += blockElems {
		e := min(o+blockElems, len(src))
		copy(dst[o:e], src[o:e])
		relu(dst[o:e])
	}
}

// Mask writes dy where y > 0, else 0, into g (the backward of ReLU; len(y),
// len(g) ≥ len(dy)), on the calling goroutine.
func Mask[T Float](dy, y, g []T) { maskTo(dy, y, g) }
