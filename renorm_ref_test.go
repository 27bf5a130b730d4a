package bn

import "math"

// A deliberately plain float64 Batch Renormalization, written from the paper
// (Ioffe 2017, "Batch Renormalization", Algorithm 1 and the gradients of its
// section 3) and sharing no code with the package: two-pass statistics per
// normalization set and channel, r and d from the running statistics before
// the update, the backward by the chain rule with r and d constant, and
// PyTorch's running-statistics update (the package's documented choice of
// moving statistics: μ = running mean, σ = √(running var + ε)).
//
// Samples are assigned to normalization sets (the batch, ghost groups,
// domains), statistics groups (sets of running statistics) and affine groups
// (sets of γ/β), which covers plain, ghost and domain layers. Where a
// normalization set spans several statistics groups, each (set, group) pair
// has its own r and d, so the paper's ∂ℓ/∂x̂ = ∂ℓ/∂y·γ is taken per sample
// with that sample's r and γ.

type brnRef struct {
	C           int
	eps, mom    float64
	rc          RenormConfig
	gamma, beta [][]float64 // per affine group
	rmean, rvar [][]float64 // per statistics group
	tracked     []int64     // per statistics group
	// r and d of the Train steps so far: inside their limits or clipped
	// (counted only where the limit allows r ≠ 1, d ≠ 0).
	rIn, rClipped, dIn, dClipped int
	// r and d per channel of normalization set 0, statistics group 0 in
	// the last step.
	lastR, lastD []float64
}

// brnAssign gives every sample its normalization set, statistics group and
// affine group.
type brnAssign struct{ norm, stat, aff []int }

func plainAssign(n int) brnAssign {
	return brnAssign{make([]int, n), make([]int, n), make([]int, n)}
}

func ghostAssign(n, size int) brnAssign {
	a := plainAssign(n)
	for i := range n {
		a.norm[i] = i / size
	}
	return a
}

// brnOut is one step's y, dx and dγ, dβ (per affine group·C).
type brnOut struct{ y, dx, dg, db []float64 }

func newBRNRef(C, statGroups, affGroups int, eps, mom float64, rc RenormConfig) *brnRef {
	r := &brnRef{C: C, eps: eps, mom: mom, rc: rc, tracked: make([]int64, statGroups)}
	for range affGroups {
		g, b := make([]float64, C), make([]float64, C)
		for c := range g {
			g[c] = 1
		}
		r.gamma, r.beta = append(r.gamma, g), append(r.beta, b)
	}
	for range statGroups {
		m, v := make([]float64, C), make([]float64, C)
		for c := range v {
			v[c] = 1
		}
		r.rmean, r.rvar = append(r.rmean, m), append(r.rvar, v)
	}
	return r
}

// limits is the schedule of RenormConfig, written out.
func (r *brnRef) limits(t int64) (rmax, dmax float64) {
	frac := func(n int) float64 {
		if t < int64(r.rc.Warmup) {
			return 0
		}
		if n == 0 {
			return 1
		}
		return math.Min(1, float64(t-int64(r.rc.Warmup))/float64(n))
	}
	return 1 + (r.rc.RMax-1)*frac(r.rc.RMaxRamp), r.rc.DMax * frac(r.rc.DMaxRamp)
}

// step runs one forward and backward (upstream gradient dy) of x (shape
// N, C, …) in mode m and updates the running statistics in Train.
func (r *brnRef) step(x, dy []float64, shape []int, as brnAssign, m Mode) brnOut {
	N, C, S := shapeNCS(shape)
	A := len(r.gamma)
	o := brnOut{y: make([]float64, len(x)), dx: make([]float64, len(x)), dg: make([]float64, A*C), db: make([]float64, A*C)}
	if m == Eval || m == Frozen {
		for n := range N {
			g, a := as.stat[n], as.aff[n]
			for c := range C {
				sig := math.Sqrt(r.rvar[g][c] + r.eps)
				for s := range S {
					i := at(C, S, n, c, s)
					z := (x[i] - r.rmean[g][c]) / sig
					o.y[i] = r.gamma[a][c]*z + r.beta[a][c]
					o.dx[i] = r.gamma[a][c] * dy[i] / sig
					o.dg[a*C+c] += dy[i] * z
					o.db[a*C+c] += dy[i]
				}
			}
		}
		return o
	}
	renorm := m == Train
	sets := map[int][]int{}
	for n := range N {
		sets[as.norm[n]] = append(sets[as.norm[n]], n)
	}
	r.lastR, r.lastD = make([]float64, C), make([]float64, C)
	for key, members := range sets {
		for c := range C {
			// Algorithm 1: μ_B, σ_B = √(ε + mean (x − μ_B)²).
			cnt := float64(len(members) * S)
			mu := 0.0
			for _, n := range members {
				for s := range S {
					mu += x[at(C, S, n, c, s)]
				}
			}
			mu /= cnt
			v := 0.0
			for _, n := range members {
				for s := range S {
					d := x[at(C, S, n, c, s)] - mu
					v += d * d
				}
			}
			sigB := math.Sqrt(v/cnt + r.eps)
			// r and d of each statistics group among the members.
			rd := map[int][2]float64{}
			for _, n := range members {
				g := as.stat[n]
				if _, ok := rd[g]; ok {
					continue
				}
				if !renorm {
					rd[g] = [2]float64{1, 0}
					continue
				}
				rmax, dmax := r.limits(r.tracked[g])
				sig := math.Sqrt(r.rvar[g][c] + r.eps)
				rr, dd := sigB/sig, (mu-r.rmean[g][c])/sig
				if rmax > 1 {
					if rr < 1/rmax || rr > rmax {
						r.rClipped++
					} else {
						r.rIn++
					}
				}
				if dmax > 0 {
					if math.Abs(dd) > dmax {
						r.dClipped++
					} else {
						r.dIn++
					}
				}
				rr = math.Min(math.Max(rr, 1/rmax), rmax)
				dd = math.Min(math.Max(dd, -dmax), dmax)
				rd[g] = [2]float64{rr, dd}
				if key == 0 && g == 0 {
					r.lastR[c], r.lastD[c] = rr, dd
				}
			}
			// Forward: x̂ = (x − μ_B)/σ_B·r + d, y = γ·x̂ + β. Backward with r,
			// d constant: ∂ℓ/∂x̂ = ∂ℓ/∂y·γ, then through (x − μ_B)/σ_B·r.
			dz := map[int]float64{} // ∂ℓ/∂((x−μ_B)/σ_B) per element index
			var dSig, dMu float64
			for _, n := range members {
				g, a := as.stat[n], as.aff[n]
				rr, dd := rd[g][0], rd[g][1]
				for s := range S {
					i := at(C, S, n, c, s)
					xh := (x[i]-mu)/sigB*rr + dd
					o.y[i] = r.gamma[a][c]*xh + r.beta[a][c]
					o.dg[a*C+c] += dy[i] * xh
					o.db[a*C+c] += dy[i]
					dz[i] = dy[i] * r.gamma[a][c] * rr
					dSig += dz[i] * (x[i] - mu) * (-1 / (sigB * sigB))
					dMu += dz[i] * (-1 / sigB)
				}
			}
			for _, n := range members {
				for s := range S {
					i := at(C, S, n, c, s)
					o.dx[i] = dz[i]/sigB + dSig*(x[i]-mu)/(cnt*sigB) + dMu/cnt
				}
			}
		}
	}
	if m != Train {
		return o
	}
	// The running statistics of each statistics group, from all its samples.
	groups := map[int][]int{}
	for n := range N {
		groups[as.stat[n]] = append(groups[as.stat[n]], n)
	}
	for g, members := range groups {
		cnt := float64(len(members) * S)
		if cnt <= 1 {
			continue
		}
		for c := range C {
			mu := 0.0
			for _, n := range members {
				for s := range S {
					mu += x[at(C, S, n, c, s)]
				}
			}
			mu /= cnt
			v := 0.0
			for _, n := range members {
				for s := range S {
					d := x[at(C, S, n, c, s)] - mu
					v += d * d
				}
			}
			r.rmean[g][c] = (1-r.mom)*r.rmean[g][c] + r.mom*mu
			r.rvar[g][c] = (1-r.mom)*r.rvar[g][c] + r.mom*v/(cnt-1)
		}
		r.tracked[g]++
	}
	return o
}

// frozenRD is the forward of one normalization set (the whole batch) with
// r and d given per channel: the function whose finite differences are the
// gradients with r and d held constant. It returns Σ y⊙w.
func frozenRD(x, w, gamma, beta, r, d []float64, shape []int, eps float64) float64 {
	N, C, S := shapeNCS(shape)
	cost := 0.0
	for c := range C {
		cnt := float64(N * S)
		mu, v := 0.0, 0.0
		for n := range N {
			for s := range S {
				mu += x[at(C, S, n, c, s)]
			}
		}
		mu /= cnt
		for n := range N {
			for s := range S {
				dd := x[at(C, S, n, c, s)] - mu
				v += dd * dd
			}
		}
		sigB := math.Sqrt(v/cnt + eps)
		for n := range N {
			for s := range S {
				i := at(C, S, n, c, s)
				cost += w[i] * (gamma[c]*((x[i]-mu)/sigB*r[c]+d[c]) + beta[c])
			}
		}
	}
	return cost
}
