package bn

import "math"

// This file holds a deliberately plain float64 batch normalization, written
// from the textbook definitions and sharing no code with the package: the
// forward pass with two-pass statistics per (group, channel), the backward
// pass by the step-by-step chain rule (x̂ → var → mean → x, as in Ioffe &
// Szegedy 2015, Algorithm 1 and its derivatives), and PyTorch's running
// statistics update. The tests compare the layer against it.

// refConfig mirrors the options of a Layer.
type refConfig struct {
	eps        float64 // 0: 1e-5
	momentum   float64 // used when !defMomentum; default 0.1
	setMom     bool    // momentum was set explicitly
	cumulative bool
	noAffine   bool
	noTrack    bool
	ghost      int
	reuse      bool // WithOutputReuse: no effect on the numbers
}

func (c refConfig) epsilon() float64 {
	if c.eps == 0 {
		return 1e-5
	}
	return c.eps
}

func (c refConfig) mom() float64 {
	if c.setMom {
		return c.momentum
	}
	return 0.1
}

// options returns the layer options that correspond to c.
func (c refConfig) options() []Option {
	var o []Option
	if c.eps != 0 {
		o = append(o, WithEps(c.eps))
	}
	if c.setMom {
		o = append(o, WithMomentum(c.momentum))
	}
	if c.cumulative {
		o = append(o, WithCumulativeAverage())
	}
	if c.noAffine {
		o = append(o, WithAffine(false))
	}
	if c.noTrack {
		o = append(o, WithTrackRunningStats(false))
	}
	if c.ghost != 0 {
		o = append(o, WithGhostBatch(c.ghost))
	}
	if c.reuse {
		o = append(o, WithOutputReuse(true))
	}
	return o
}

// refLayer is the reference layer's state.
type refLayer struct {
	cfg          refConfig
	C            int
	gamma, beta  []float64
	rmean, rvar  []float64
	tracked      int64
	batchMeans   [][]float64 // every training batch's mean, for the cumulative check
	batchUnbVars [][]float64 // every training batch's unbiased variance
}

func newRef(cfg refConfig, C int) *refLayer {
	r := &refLayer{cfg: cfg, C: C}
	r.gamma, r.beta = make([]float64, C), make([]float64, C)
	r.rmean, r.rvar = make([]float64, C), make([]float64, C)
	for c := range C {
		r.gamma[c], r.rvar[c] = 1, 1
	}
	return r
}

// refCtx is what a reference forward keeps for its backward.
type refCtx struct {
	N, C, S int
	batch   bool
	groups  [][2]int    // sample ranges [n0, n1) of each normalization group
	mean    [][]float64 // per group, per channel
	vari    [][]float64 // biased variance per group, per channel (batch mode)
	x       []float64
}

func shapeNCS(shape []int) (N, C, S int) {
	S = 1
	for _, d := range shape[2:] {
		S *= d
	}
	return shape[0], shape[1], S
}

// at returns the index of element (n, c, s) of an N×C×S tensor.
func at(C, S, n, c, s int) int { return (n*C+c)*S + s }

// forward computes y = BN(x) for x of the given shape in mode m, and
// updates the running statistics when the mode asks for it.
func (r *refLayer) forward(x []float64, shape []int, m Mode) ([]float64, *refCtx) {
	N, C, S := shapeNCS(shape)
	eps := r.cfg.epsilon()
	ctx := &refCtx{N: N, C: C, S: S, x: append([]float64(nil), x...)}
	ctx.batch = m == Train || m == EvalBatchStats || r.cfg.noTrack
	if ctx.batch && r.cfg.ghost > 0 {
		for n0 := 0; n0 < N; n0 += r.cfg.ghost {
			ctx.groups = append(ctx.groups, [2]int{n0, min(n0+r.cfg.ghost, N)})
		}
	} else {
		ctx.groups = [][2]int{{0, N}}
	}
	for _, g := range ctx.groups {
		mean, vari := make([]float64, C), make([]float64, C)
		for c := range C {
			if !ctx.batch {
				mean[c], vari[c] = r.rmean[c], r.rvar[c]
				continue
			}
			mean[c], vari[c] = twoPass(x, C, S, g[0], g[1], c)
		}
		ctx.mean = append(ctx.mean, mean)
		ctx.vari = append(ctx.vari, vari)
	}
	y := make([]float64, len(x))
	for gi, g := range ctx.groups {
		for n := g[0]; n < g[1]; n++ {
			for c := range C {
				for s := range S {
					i := at(C, S, n, c, s)
					xh := (x[i] - ctx.mean[gi][c]) / math.Sqrt(ctx.vari[gi][c]+eps)
					y[i] = r.gamma[c]*xh + r.beta[c]
				}
			}
		}
	}
	if m == Train && !r.cfg.noTrack {
		bm, bv := make([]float64, C), make([]float64, C)
		for c := range C {
			mu, v := twoPass(x, C, S, 0, N, c)
			cnt := float64(N * S)
			bm[c], bv[c] = mu, v*cnt/(cnt-1)
		}
		r.tracked++
		w := r.cfg.mom()
		if r.cfg.cumulative {
			w = 1 / float64(r.tracked)
		}
		for c := range C {
			r.rmean[c] = (1-w)*r.rmean[c] + w*bm[c]
			r.rvar[c] = (1-w)*r.rvar[c] + w*bv[c]
		}
		r.batchMeans = append(r.batchMeans, bm)
		r.batchUnbVars = append(r.batchUnbVars, bv)
	}
	return y, ctx
}

// twoPass returns the mean and biased variance of channel c over samples
// [n0, n1).
func twoPass(x []float64, C, S, n0, n1, c int) (mean, variance float64) {
	var sum float64
	cnt := float64((n1 - n0) * S)
	for n := n0; n < n1; n++ {
		for s := range S {
			sum += x[at(C, S, n, c, s)]
		}
	}
	mean = sum / cnt
	for n := n0; n < n1; n++ {
		for s := range S {
			d := x[at(C, S, n, c, s)] - mean
			variance += d * d
		}
	}
	return mean, variance / cnt
}

// backward returns dx, dγ, dβ for the upstream gradient dy.
//
// With batch statistics, per group and channel (m values, μ, σ² biased):
//
//	dx̂  = dy·γ
//	dσ² = Σ dx̂·(x−μ)·(−½)(σ²+ε)^(−3/2)
//	dμ  = Σ dx̂·(−1/√(σ²+ε)) + dσ²·Σ(−2(x−μ))/m
//	dx  = dx̂/√(σ²+ε) + dσ²·2(x−μ)/m + dμ/m
//
// With running statistics μ and σ² are constants: dx = dx̂/√(σ²+ε).
func (r *refLayer) backward(ctx *refCtx, dy []float64) (dx, dgamma, dbeta []float64) {
	C, S := ctx.C, ctx.S
	eps := r.cfg.epsilon()
	x := ctx.x
	dx = make([]float64, len(x))
	dgamma, dbeta = make([]float64, C), make([]float64, C)
	for gi, g := range ctx.groups {
		m := float64((g[1] - g[0]) * S)
		for c := range C {
			mu, v := ctx.mean[gi][c], ctx.vari[gi][c]
			sd := math.Sqrt(v + eps)
			var dvar, dmean, sumDev float64
			for n := g[0]; n < g[1]; n++ {
				for s := range S {
					i := at(C, S, n, c, s)
					dxh := dy[i] * r.gamma[c]
					dgamma[c] += dy[i] * (x[i] - mu) / sd
					dbeta[c] += dy[i]
					dvar += dxh * (x[i] - mu) * -0.5 * math.Pow(v+eps, -1.5)
					dmean += -dxh / sd
					sumDev += -2 * (x[i] - mu)
				}
			}
			dmean += dvar * sumDev / m
			for n := g[0]; n < g[1]; n++ {
				for s := range S {
					i := at(C, S, n, c, s)
					dxh := dy[i] * r.gamma[c]
					if !ctx.batch {
						dx[i] = dxh / sd
						continue
					}
					dx[i] = dxh/sd + dvar*2*(x[i]-mu)/m + dmean/m
				}
			}
		}
	}
	return dx, dgamma, dbeta
}
