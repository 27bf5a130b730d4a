package bn

// Batch Renormalization (Ioffe 2017, "Batch Renormalization: Towards
// Reducing Minibatch Dependence in Batch-Normalized Models", NeurIPS;
// arXiv:1702.03275), Algorithm 1. In training each normalization set B
// (the batch, a ghost group, a domain's samples; over every rank with
// SyncBN) is normalized with its own statistics and then corrected towards
// the running statistics:
//
//	x̂ = (x − μ_B)/σ_B · r + d,   y = γ·x̂ + β
//	r = clip(σ_B/σ, 1/rmax, rmax),   d = clip((μ_B − μ)/σ, −dmax, dmax)
//
// with σ_B = √(var_B + ε) (the biased batch variance, as it normalizes),
// μ the running mean and σ = √(running var + ε) before this batch is folded
// in. r and d are constants of the backward (stop-gradient). Unclipped,
// y = γ·(x − μ)/σ + β: the training output is the inference output.
//
// In the pipeline this is only a change of the per-channel coefficients:
// the forward stays y = (x − μ_B)·scale + shift with scale = γ·r/σ_B and
// shift = β + γ·d, and the backward is plain BN's with γ·r in the place of
// γ for dx, dγ = Σdy·(r·x̂_B + d), dβ = Σdy. So every kernel (AVX-512,
// AVX2, portable, CUDA) serves unchanged; only the host steps differ
// (statistics, finishSums, renormLocked below).

import (
	"fmt"
	"math"
)

// RenormConfig configures Batch Renormalization (see WithRenorm): the final
// clipping limits and the schedule that relaxes them.
//
// The limits at training step t (t = the number of batches already folded
// into the running statistics that r and d compare with, NumBatchesTracked,
// per domain for domain layers) are
//
//	rmax(t) = 1 + (RMax − 1)·ramp(t, RMaxRamp),   dmax(t) = DMax·ramp(t, DMaxRamp)
//	ramp(t, n) = 0 for t < Warmup, min(1, (t − Warmup)/n) after (1 when n = 0)
//
// so the layer is plain batch normalization (r = 1, d = 0) for the first
// Warmup batches, then the limits grow linearly to RMax and DMax over
// RMaxRamp and DMaxRamp batches. The paper trains Inception with Warmup
// 5000, RMax 3 reached at step 40k (RMaxRamp 35000) and DMax 5 at step
// 25k (DMaxRamp 20000). Because t is the layer's counter, the schedule is
// saved with the layer's state (MarshalBinary) and restarts with
// ResetRunningStats.
type RenormConfig struct {
	// RMax bounds r to [1/RMax, RMax]; at least 1 (1: r = 1, no
	// correction of the scale).
	RMax float64
	// DMax bounds d to [−DMax, DMax]; at least 0 (0: d = 0, no correction
	// of the shift).
	DMax float64
	// Warmup is the number of training batches with rmax = 1 and dmax = 0
	// before the limits start to grow.
	Warmup int
	// RMaxRamp and DMaxRamp are the numbers of batches, after Warmup, over
	// which rmax grows linearly from 1 to RMax and dmax from 0 to DMax
	// (0: at once).
	RMaxRamp, DMaxRamp int
}

// Limits returns rmax and dmax after step batches (see RenormConfig).
func (c RenormConfig) Limits(step int64) (rmax, dmax float64) {
	return 1 + (c.RMax-1)*c.ramp(step, c.RMaxRamp), c.DMax * c.ramp(step, c.DMaxRamp)
}

func (c RenormConfig) ramp(t int64, n int) float64 {
	switch w := int64(c.Warmup); {
	case t < w:
		return 0
	case n == 0 || t-w >= int64(n):
		return 1
	default:
		return float64(t-w) / float64(n)
	}
}

func (c RenormConfig) check() error {
	switch {
	case !(c.RMax >= 1) || math.IsInf(c.RMax, 0):
		return fmt.Errorf("%w: Batch Renormalization's RMax must be finite and ≥ 1 (r is clipped to [1/RMax, RMax]), got %v", ErrOption, c.RMax)
	case !(c.DMax >= 0) || math.IsInf(c.DMax, 0):
		return fmt.Errorf("%w: Batch Renormalization's DMax must be finite and ≥ 0 (d is clipped to [−DMax, DMax]), got %v", ErrOption, c.DMax)
	case c.Warmup < 0 || c.RMaxRamp < 0 || c.DMaxRamp < 0:
		return fmt.Errorf("%w: Batch Renormalization's Warmup, RMaxRamp and DMaxRamp must be ≥ 0, got %d, %d, %d", ErrOption, c.Warmup, c.RMaxRamp, c.DMaxRamp)
	}
	return nil
}

// WithRenorm turns on Batch Renormalization (Ioffe 2017): in Train mode
// each normalization set (batch, ghost group, domain; global with SyncBN)
// is normalized with its batch statistics μ_B, σ_B = √(var_B+ε) and then
// corrected towards the running statistics μ, σ = √(running var + ε):
//
//	y = ((x − μ_B)/σ_B · r + d)·γ + β
//	r = clip(σ_B/σ, 1/rmax, rmax),   d = clip((μ_B − μ)/σ, −dmax, dmax)
//
// r and d are treated as constants in the backward (stop-gradient), and μ,
// σ are the running statistics before this batch updates them. Without
// clipping the training output equals the Eval output, so a model trained
// with small or non-i.i.d. batches sees at training time what it will see
// at inference. rmax and dmax follow cfg's schedule (see RenormConfig).
//
// The moving statistics r and d compare with are the layer's own running
// statistics (RunningStats; per domain for domain layers), updated with the
// layer's momentum (WithMomentum, WithCumulativeAverage). This is the
// paper's Algorithm 1, which uses one set of moving averages for both; Keras
// 2 (renorm=True) kept a second set with its own renorm_momentum — here
// WithMomentum plays that part, and there is no second state to save or
// synchronize. The running variance is averaged (unbiased, as PyTorch)
// where the paper averages σ.
//
// Only Train mode renormalizes. Eval and Frozen normalize with the running
// statistics (as in every BN), EvalBatchStats with the batch statistics
// alone (r = 1, d = 0). Invalid values (RMax < 1, DMax < 0, NaN or
// infinite, negative steps) and WithTrackRunningStats(false) — without
// running statistics there is nothing to renormalize towards — are
// ErrOption at New.
func WithRenorm(cfg RenormConfig) Option {
	return func(c *config) error {
		if err := cfg.check(); err != nil {
			return err
		}
		c.renorm = &cfg
		return nil
	}
}

// checkRenorm checks the combination of WithRenorm with the other options,
// after all of them were applied (their order does not matter).
func (c *config) checkRenorm() error {
	if c.renorm != nil && !c.track {
		return fmt.Errorf("%w: WithRenorm and WithTrackRunningStats(false) contradict each other: Batch Renormalization corrects the batch statistics towards the running statistics, which the layer would not keep", ErrOption)
	}
	return nil
}

// Renorm returns the layer's Batch Renormalization configuration and
// whether it is on (WithRenorm).
func (l *Layer) Renorm() (RenormConfig, bool) {
	if l.cfg.renorm == nil {
		return RenormConfig{}, false
	}
	return *l.cfg.renorm, true
}

// renormLocked sets s.ren, the (r, d) of every segment·C, when the layer
// renormalizes in mode; otherwise it leaves s.ren empty (plain BN). It runs
// after s.nm, s.mean and s.inv hold the batch statistics of each segment's
// normalization set and before the batch is folded into the running
// statistics, under l.mu.
func (l *Layer) renormLocked(s *saved, mode Mode) {
	s.ren = s.ren[:0]
	rc := l.cfg.renorm
	if rc == nil || mode != Train {
		return
	}
	C := l.c
	s.ren = grow(s.ren, s.nseg*C)
	for sg := range s.nseg {
		g := s.sm.Stat[sg]
		rmax, dmax := rc.Limits(l.tracked[g])
		for c := range C {
			i := sg*C + c
			if s.nm[i].N == 0 { // an empty set: nothing to correct
				s.ren[i] = [2]float64{1, 0}
				continue
			}
			sigma := math.Sqrt(l.rvar[g*C+c] + l.cfg.eps)
			r := clip(1/(s.inv[i]*sigma), 1/rmax, rmax)
			d := clip((s.mean[i]-l.rmean[g*C+c])/sigma, 0-dmax, dmax) // 0−dmax: +0 when dmax = 0
			s.ren[i] = [2]float64{r, d}
		}
	}
}

// clip returns v limited to [lo, hi]; NaN stays NaN (it propagates to the
// channel's output, as NaN inputs do).
func clip(v, lo, hi float64) float64 {
	if v < lo {
		return lo
	}
	if v > hi {
		return hi
	}
	return v
}
