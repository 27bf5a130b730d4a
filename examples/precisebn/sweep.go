package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand"
	"strings"

	"github.com/gorgonia-bn/bn/examples/internal/cli"
	"github.com/gorgonia-bn/bn/examples/internal/mnist"
	"github.com/gorgonia-bn/bn/examples/internal/plotutil"
	"github.com/gorgonia-bn/bn/examples/internal/stats"
	"gonum.org/v1/plot/vg"
)

// The sweep mode (-sweep) trains one model per (batch size, learning rate)
// point and seed, for the same number of epochs over the same training
// images, and compares the EMA statistics the training kept with PreciseBN
// statistics over those images (the whole set, in batches of the training
// batch). Along the batch axis the learning rate follows the linear
// scaling rule lr(B) = baseLR·B/baseBatch (Goyal et al., 2017): fewer,
// larger steps. The learning-rate axis keeps one batch and varies lr.

// sweepConfig describes a sweep.
type sweepConfig struct {
	base      config // dtype, BN momentum, eval batch; steps, batch, lr, seed are set per point
	batches   []int  // batch sizes of the batch axis
	baseLR    float64
	baseBatch int
	lrBatch   int       // batch of the learning-rate axis
	lrs       []float64 // learning rates of the learning-rate axis
	epochs    int
	seeds     []int64
}

// point is one training configuration of a sweep.
type point struct {
	batch int
	lr    float64
	axis  string // "batch" or "lr"
}

// points returns the sweep's configurations: the batch axis, then the
// learning-rate axis.
func (s sweepConfig) points() []point {
	var ps []point
	for _, b := range s.batches {
		ps = append(ps, point{batch: b, lr: s.baseLR * float64(b) / float64(s.baseBatch), axis: "batch"})
	}
	for _, lr := range s.lrs {
		ps = append(ps, point{batch: s.lrBatch, lr: lr, axis: "lr"})
	}
	return ps
}

// pointResult is what one point measured with one seed.
type pointResult struct {
	point
	seed    int64
	steps   int
	startup float64 // weight (1−m)^steps the EMA still gives its initial statistics
	loss    float64 // mean training loss of the last tenth of the steps
	// emaAcc, preciseAcc: test accuracy with the EMA and PreciseBN statistics.
	emaAcc, preciseAcc float64
	// meanErr[l], varErr[l]: error of the EMA against PreciseBN in layer l
	// (statError with PreciseBN as the reference).
	meanErr, varErr []float64
	// corrMeanErr, corrVarErr, corrAcc: the same for the EMA with its
	// start-up removed (see unbiased).
	corrMeanErr, corrVarErr []float64
	corrAcc                 float64
	// ema, corrected and precise are the statistics themselves.
	ema, corrected, precise modelStats
}

// unbiased removes from the EMA r after t steps of momentum m the weight
// w = (1−m)^t it still gives to the initial statistics r0, and renormalizes
// the weights of the batches to 1 (as Adam's bias correction does):
// (r − w·r0)/(1 − w). What remains of the EMA's error is its lag behind the
// weights, not its start.
func unbiased(r, r0 modelStats, w float64) modelStats {
	out := make(modelStats, len(r))
	for l := range r {
		out[l].mean = make([]float64, len(r[l].mean))
		out[l].variance = make([]float64, len(r[l].variance))
		for c := range r[l].mean {
			out[l].mean[c] = (r[l].mean[c] - w*r0[l].mean[c]) / (1 - w)
			out[l].variance[c] = (r[l].variance[c] - w*r0[l].variance[c]) / (1 - w)
		}
	}
	return out
}

// runPoint trains one model for epochs passes over trainSet at point p and
// measures it. stage, if set, is called with a line per stage.
func runPoint(ctx context.Context, base config, p point, epochs int, seed int64, trainSet, test *mnist.Set, stage func(string, ...any)) (*pointResult, error) {
	m, cfg, err := trainPoint(ctx, base, p, epochs, seed, trainSet, test, stage)
	if err != nil {
		return nil, err
	}
	defer m.Close()
	return measurePoint(ctx, m, cfg, p, trainSet, test, stage)
}

// orQuiet returns stage, or a function that prints nothing if it is nil.
func orQuiet(stage func(string, ...any)) func(string, ...any) {
	if stage == nil {
		return func(string, ...any) {}
	}
	return stage
}

// trainPoint trains the model of point p (epochs passes over trainSet,
// whole batches) and returns it with its configuration; the caller closes
// it.
func trainPoint(ctx context.Context, base config, p point, epochs int, seed int64, trainSet, test *mnist.Set, stage func(string, ...any)) (*model, config, error) {
	stage = orQuiet(stage)
	perEpoch := trainSet.Len() / p.batch
	if perEpoch < 1 {
		return nil, config{}, fmt.Errorf("batch %d: fewer than %d training images", p.batch, p.batch)
	}
	cfg := base
	cfg.batch, cfg.lr, cfg.seed, cfg.steps = p.batch, p.lr, seed, epochs*perEpoch
	cfg.otherMomenta = nil
	cfg.evalBatch = min(cfg.evalBatch, test.Len(), trainSet.Len())
	stage("seed %d, batch %d, lr %g: training, %d steps", seed, p.batch, p.lr, cfg.steps)
	m, err := trainModel(ctx, cfg, trainSet, nil)
	if err != nil {
		return nil, config{}, fmt.Errorf("batch %d, lr %g: %w", p.batch, p.lr, err)
	}
	return m, cfg, nil
}

// measurePoint computes the PreciseBN statistics of the trained model m
// over the whole batches of trainSet and compares them with the EMA.
func measurePoint(ctx context.Context, m *model, cfg config, p point, trainSet, test *mnist.Set, stage func(string, ...any)) (*pointResult, error) {
	stage = orQuiet(stage)
	seed := cfg.seed
	perEpoch := trainSet.Len() / p.batch
	var err error
	r := &pointResult{point: p, seed: seed, steps: cfg.steps, startup: math.Pow(1-cfg.bnMomentum, float64(cfg.steps))}
	k := max(1, cfg.steps/10)
	r.loss = meanOf(m.stepLoss[cfg.steps-k:])
	whole := perEpoch * p.batch
	stage("seed %d, batch %d, lr %g: PreciseBN over %d images", seed, p.batch, p.lr, whole)
	rng := rand.New(rand.NewSource(seed + 1))
	if r.precise, err = m.preciseStats(ctx, trainSet, rng.Perm(trainSet.Len())[:whole], "", nil); err != nil {
		return nil, err
	}
	r.ema = m.emaStats()
	r.corrected = unbiased(r.ema, m.initial, r.startup)
	stage("seed %d, batch %d, lr %g: test accuracy", seed, p.batch, p.lr)
	if r.emaAcc, err = m.accuracy(ctx, test, r.ema); err != nil {
		return nil, err
	}
	if r.preciseAcc, err = m.accuracy(ctx, test, r.precise); err != nil {
		return nil, err
	}
	if r.corrAcc, err = m.accuracy(ctx, test, r.corrected); err != nil {
		return nil, err
	}
	for l := range r.precise {
		me, ve := statError(r.ema[l], r.precise[l])
		r.meanErr, r.varErr = append(r.meanErr, me), append(r.varErr, ve)
		me, ve = statError(r.corrected[l], r.precise[l])
		r.corrMeanErr, r.corrVarErr = append(r.corrMeanErr, me), append(r.corrVarErr, ve)
	}
	return r, nil
}

// diverged is the result of a point whose training diverged: every
// measurement NaN.
func diverged(p point, seed int64, layers int) *pointResult {
	nan := math.NaN()
	r := &pointResult{point: p, seed: seed, steps: -1, startup: nan, loss: nan, emaAcc: nan, preciseAcc: nan, corrAcc: nan}
	for range layers {
		r.meanErr, r.varErr = append(r.meanErr, nan), append(r.varErr, nan)
		r.corrMeanErr, r.corrVarErr = append(r.corrMeanErr, nan), append(r.corrVarErr, nan)
	}
	return r
}

// sweepResult is a whole sweep: runs[i][j] is point i with seed j.
type sweepResult struct {
	cfg      sweepConfig
	points   []point
	runs     [][]*pointResult
	trainLen int
	testLen  int
}

// runSweep runs every point with every seed, printing a line per stage to
// w.
func runSweep(ctx context.Context, s sweepConfig, trainSet, test *mnist.Set, w io.Writer) (*sweepResult, error) {
	stage := cli.Stage(w)
	res := &sweepResult{cfg: s, points: s.points(), trainLen: trainSet.Len(), testLen: test.Len()}
	for _, p := range res.points {
		var runs []*pointResult
		for _, seed := range s.seeds {
			r, err := runPoint(ctx, s.base, p, s.epochs, seed, trainSet, test, stage)
			if errors.Is(err, errDiverged) {
				// One diverged point does not end the sweep: its cells
				// are NaN (the plot leaves them out).
				stage("seed %d: %v", seed, err)
				runs = append(runs, diverged(p, seed, len(layerNames)))
				continue
			}
			if err != nil {
				return nil, fmt.Errorf("seed %d: %w", seed, err)
			}
			stage("seed %d, batch %d, lr %g: accuracy EMA %.2f %%, PreciseBN %.2f %%; EMA error bn2 mean %.4f, var %.4f",
				seed, p.batch, p.lr, 100*r.emaAcc, 100*r.preciseAcc, r.meanErr[len(r.meanErr)-1], r.varErr[len(r.varErr)-1])
			runs = append(runs, r)
		}
		res.runs = append(res.runs, runs)
	}
	return res, nil
}

// summary is the summary over the seeds of f at point i, and its
// per-seed values.
func (r *sweepResult) summary(i int, f func(*pointResult) float64) (stats.Summary, []float64) {
	v := make([]float64, len(r.runs[i]))
	for j, pr := range r.runs[i] {
		v[j] = f(pr)
	}
	return stats.Of(v), v
}

// cell formats the summary of f at point i with its per-seed values.
func (r *sweepResult) cell(i int, format string, scale float64, f func(*pointResult) float64) string {
	s, v := r.summary(i, f)
	if len(v) == 1 {
		return s.Format(format, scale)
	}
	vs := make([]string, len(v))
	for j, x := range v {
		vs[j] = fmt.Sprintf(format, x*scale)
	}
	return s.Format(format, scale) + " [" + strings.Join(vs, " ") + "]"
}

// writeSweep writes the sweep's tables: per point, mean ± standard
// deviation over the seeds, with the per-seed values in brackets.
func writeSweep(w io.Writer, r *sweepResult) {
	s := r.cfg
	fmt.Fprintf(w, "Sweep: %d epochs over %d training images, test on %d; learning rate %g·B/%d along the batch axis; "+
		"BN momentum %g; %v; seeds %v. Errors: the EMA's statistics against PreciseBN's over the whole training set "+
		"(per channel (μ̂−μ)/σ and σ̂²/σ²−1, root mean square over the channels). Each cell: mean ± standard deviation over the seeds [per seed].\n\n",
		s.epochs, r.trainLen, r.testLen, s.baseLR, s.baseBatch, s.base.bnMomentum, s.base.dtype, s.seeds)
	for _, axis := range []string{"batch", "lr"} {
		var idx []int
		for i, p := range r.points {
			if p.axis == axis {
				idx = append(idx, i)
			}
		}
		if len(idx) == 0 {
			continue
		}
		if axis == "lr" {
			fmt.Fprintf(w, "\nLearning rate at a fixed batch of %d:\n\n", s.lrBatch)
		}
		fmt.Fprint(w, "| batch | lr | steps | EMA start-up weight | last loss |")
		for _, n := range layerNames {
			fmt.Fprintf(w, " %s mean err | %s var err |", n, n)
		}
		fmt.Fprintln(w, " test acc % EMA | test acc % PreciseBN | PreciseBN − EMA (points) |")
		fmt.Fprint(w, "|---|---|---|---|---|")
		for range layerNames {
			fmt.Fprint(w, "---|---|")
		}
		fmt.Fprintln(w, "---|---|---|")
		for _, i := range idx {
			p := r.points[i]
			steps := s.epochs * (r.trainLen / p.batch)
			fmt.Fprintf(w, "| %d | %g | %d | %.2g | %s |", p.batch, p.lr, steps, math.Pow(1-s.base.bnMomentum, float64(steps)),
				r.cell(i, "%.3f", 1, func(x *pointResult) float64 { return x.loss }))
			for l := range layerNames {
				fmt.Fprintf(w, " %s | %s |", r.cell(i, "%.4f", 1, func(x *pointResult) float64 { return x.meanErr[l] }),
					r.cell(i, "%.4f", 1, func(x *pointResult) float64 { return x.varErr[l] }))
			}
			fmt.Fprintf(w, " %s | %s | %s |\n", r.cell(i, "%.2f", 100, func(x *pointResult) float64 { return x.emaAcc }),
				r.cell(i, "%.2f", 100, func(x *pointResult) float64 { return x.preciseAcc }),
				r.cell(i, "%+.2f", 100, func(x *pointResult) float64 { return x.preciseAcc - x.emaAcc }))
		}
		fmt.Fprint(w, "\nThe same EMA with its start-up removed ((r − w·r₀)/(1 − w), w the start-up weight, r₀ the initial statistics): what is left is its lag.\n\n")
		fmt.Fprint(w, "| batch | lr |")
		for _, n := range layerNames {
			fmt.Fprintf(w, " %s mean err | %s var err |", n, n)
		}
		fmt.Fprintln(w, " test acc % | PreciseBN − it (points) |")
		fmt.Fprint(w, "|---|---|")
		for range layerNames {
			fmt.Fprint(w, "---|---|")
		}
		fmt.Fprintln(w, "---|---|")
		for _, i := range idx {
			p := r.points[i]
			fmt.Fprintf(w, "| %d | %g |", p.batch, p.lr)
			for l := range layerNames {
				fmt.Fprintf(w, " %s | %s |", r.cell(i, "%.4f", 1, func(x *pointResult) float64 { return x.corrMeanErr[l] }),
					r.cell(i, "%.4f", 1, func(x *pointResult) float64 { return x.corrVarErr[l] }))
			}
			fmt.Fprintf(w, " %s | %s |\n", r.cell(i, "%.2f", 100, func(x *pointResult) float64 { return x.corrAcc }),
				r.cell(i, "%+.2f", 100, func(x *pointResult) float64 { return x.preciseAcc - x.corrAcc }))
		}
	}
}

// plotSweep draws, against the batch size (log scale): each layer's EMA
// error of the mean and of the variance, and the test accuracy with EMA
// and PreciseBN statistics; then the EMA errors against the learning rate
// at the fixed batch. Points are means over the seeds, bars ± one standard
// deviation.
func plotSweep(path string, r *sweepResult) error {
	series := func(axis string, f func(*pointResult) float64, name string, color int, dashed bool) plotutil.Series {
		sr := plotutil.Series{Name: name, Color: color, Dashed: dashed, Points: true}
		for i, p := range r.points {
			if p.axis != axis {
				continue
			}
			s, _ := r.summary(i, f)
			x := float64(p.batch)
			if axis == "lr" {
				x = p.lr
			}
			sr.X, sr.Y, sr.Err = append(sr.X, x), append(sr.Y, s.Mean), append(sr.Err, s.SD)
		}
		return sr
	}
	errSeries := func(axis string) []plotutil.Series {
		var out []plotutil.Series
		for l, n := range layerNames {
			out = append(out,
				series(axis, func(x *pointResult) float64 { return x.meanErr[l] }, n+" mean", 2*l, false),
				series(axis, func(x *pointResult) float64 { return x.varErr[l] }, n+" variance", 2*l+1, true))
		}
		return out
	}
	// A logarithmic axis needs two distinct values (gonum's log ticks
	// reject the padded range of a single one).
	spans := func(axis string) bool {
		seen := map[float64]bool{}
		for _, p := range r.points {
			switch {
			case p.axis != axis:
			case axis == "lr":
				seen[p.lr] = true
			default:
				seen[float64(p.batch)] = true
			}
		}
		return len(seen) > 1
	}
	ticks := func(axis string) []float64 {
		var xs []float64
		for _, p := range r.points {
			switch {
			case p.axis != axis:
			case axis == "lr":
				xs = append(xs, p.lr)
			default:
				xs = append(xs, float64(p.batch))
			}
		}
		return xs
	}
	// top leaves room above the curves for the legend (log scale: a factor).
	top := func(ss []plotutil.Series, factor float64) *float64 {
		y := 0.0
		for _, sr := range ss {
			for i, v := range sr.Y {
				if v+sr.Err[i] > y { // false for NaN (a diverged point)
					y = v + sr.Err[i]
				}
			}
		}
		return plotutil.Float(y * factor)
	}
	errs := errSeries("batch")
	acc := []plotutil.Series{
		series("batch", func(x *pointResult) float64 { return 100 * x.emaAcc }, "EMA statistics", 1, true),
		series("batch", func(x *pointResult) float64 { return 100 * x.preciseAcc }, "PreciseBN statistics", 0, false)}
	panels := []plotutil.Panel{
		{Title: fmt.Sprintf("EMA vs PreciseBN statistics, lr = %g·B/%d", r.cfg.baseLR, r.cfg.baseBatch), XLabel: "batch B",
			YLabel: "RMS error (mean: /σ; variance: relative)", Series: errs, LogX: spans("batch"), LogY: true, XTicks: ticks("batch"), YMax: top(errs, 10)},
		{Title: "test accuracy (mean ± sd over seeds)", XLabel: "batch B", YLabel: "%", LogX: spans("batch"), Series: acc, XTicks: ticks("batch"), YMax: top(acc, 1.03)},
	}
	if len(r.cfg.lrs) > 0 {
		lr := errSeries("lr")
		panels = append(panels, plotutil.Panel{Title: fmt.Sprintf("EMA vs PreciseBN statistics, batch %d", r.cfg.lrBatch), XLabel: "learning rate",
			YLabel: "RMS error", Series: lr, LogX: spans("lr"), LogY: true, NoLegend: true, XTicks: ticks("lr"), YMax: top(lr, 10)})
	}
	return plotutil.SavePNG(path, vg.Length(12*len(panels))*vg.Centimeter, 11*vg.Centimeter, panels...)
}
