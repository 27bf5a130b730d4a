package main

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand"

	"github.com/gorgonia-bn/bn"
	"github.com/gorgonia-bn/bn/examples/internal/cnn"
	"github.com/gorgonia-bn/bn/examples/internal/mnist"
	"gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// layerStats are the per-channel mean and (unbiased) variance of one BN
// layer; modelStats those of every layer, in forward order.
type layerStats struct{ mean, variance []float64 }
type modelStats []layerStats

// config describes one experiment.
type config struct {
	steps      int     // training steps
	batch      int     // training mini-batch, also the batch of the PreciseBN passes
	evalBatch  int     // batch of the test evaluations and of the ground-truth passes
	lr         float64 // SGD learning rate
	bnMomentum float64 // weight of the new batch in the BN layers' EMA
	// otherMomenta are further EMA momenta, computed alongside from the
	// batch statistics of every training step (see trainModel).
	otherMomenta []float64
	seed         int64        // weights, data order, PreciseBN samples
	dtype        tensor.Dtype // float32 or float64
	samples      []int        // PreciseBN sample counts (rounded up to whole batches)
	repeats      int          // random draws of the PreciseBN samples per count
}

// errDiverged reports a training whose loss became NaN or infinite.
var errDiverged = errors.New("training diverged")

// bars creates the progress bars of the long phases; a nil bars or a nil
// function is silent.
type bars struct {
	// new returns a function to call with (done, total) and a function to
	// call when the phase ends.
	new func(desc string, total int) (update func(done int), finish func())
}

func (b *bars) start(desc string, total int) (func(int), func()) {
	if b == nil || b.new == nil {
		return func(int) {}, func() {}
	}
	return b.new(desc, total)
}

// model is the trained weights with its three graphs: the training graph,
// whose BN layers hold the EMA statistics; a graph of the training batch
// size for the PreciseBN passes; one of the evaluation batch size for the
// test accuracy and the ground truth. Every graph uses the same weights.
type model struct {
	w                   *cnn.Weights
	train, precise, val *cnn.Net
	stepLoss            []float64
	// others[i] is the EMA with momentum cfg.otherMomenta[i].
	others []modelStats
	// initial is the running statistics before training.
	initial modelStats
}

// Close releases the graphs' machines.
func (m *model) Close() {
	for _, n := range []*cnn.Net{m.train, m.precise, m.val} {
		if n != nil {
			n.Close()
		}
	}
}

// trainModel trains the network for cfg.steps SGD steps on random batches of
// set (reshuffled after every pass), the BN layers in training mode: they
// normalize with batch statistics and update their EMA. A non-finite loss is
// an error (the learning rate is too large).
func trainModel(ctx context.Context, cfg config, set *mnist.Set, b *bars) (*model, error) {
	if cfg.steps < 1 || cfg.batch < 2 || cfg.evalBatch < 1 || !(cfg.lr > 0) {
		return nil, fmt.Errorf("invalid configuration: steps %d, batch %d, eval batch %d, lr %v", cfg.steps, cfg.batch, cfg.evalBatch, cfg.lr)
	}
	if set.Len() < cfg.batch {
		return nil, fmt.Errorf("%d training images, fewer than one batch of %d", set.Len(), cfg.batch)
	}
	w, err := cnn.NewWeights(cfg.dtype, cfg.seed, cnn.ClassifierStd)
	if err != nil {
		return nil, err
	}
	m := &model{w: w}
	ok := false
	defer func() {
		if !ok {
			m.Close()
		}
	}()
	if m.train, err = newNet(w, cfg.batch, cfg.bnMomentum, true); err != nil {
		return nil, err
	}
	if m.precise, err = newNet(w, cfg.batch, cfg.bnMomentum, false); err != nil {
		return nil, err
	}
	if m.val, err = newNet(w, cfg.evalBatch, cfg.bnMomentum, false); err != nil {
		return nil, err
	}
	solver := gorgonia.NewVanillaSolver(gorgonia.WithLearnRate(cfg.lr))
	grads := gorgonia.NodesToValueGrads(m.train.Learnables)
	rng := rand.New(rand.NewSource(cfg.seed))
	update, finish := b.start("training", cfg.steps)
	defer finish()
	m.others = make([]modelStats, len(cfg.otherMomenta))
	for i := range m.others {
		m.others[i] = runningStats(m.train) // the initial running statistics
	}
	prev := runningStats(m.train)
	m.initial = runningStats(m.train)
	var batches [][]int
	for step := 0; step < cfg.steps; step++ {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if len(batches) == 0 {
			if batches, err = mnist.Batches(mnist.Shuffle(set.Len(), rng), cfg.batch, true); err != nil {
				return nil, err
			}
		}
		idx := batches[0]
		batches = batches[1:]
		if err := m.train.Run(set, idx); err != nil {
			return nil, fmt.Errorf("step %d: %w", step, err)
		}
		loss, err := m.train.LossValue()
		if err != nil {
			return nil, err
		}
		m.stepLoss = append(m.stepLoss, loss)
		if math.IsNaN(loss) || math.IsInf(loss, 0) {
			return nil, fmt.Errorf("%w: loss %v at step %d (lower -lr)", errDiverged, loss, step)
		}
		cur := runningStats(m.train)
		foldOthers(m.others, cfg.otherMomenta, prev, cur, cfg.bnMomentum)
		prev = cur
		if err := solver.Step(grads); err != nil {
			return nil, fmt.Errorf("solver: %w", err)
		}
		update(step + 1)
	}
	// γ and β live in each graph's layers: copy them once, the model is
	// frozen from here on.
	for _, n := range []*cnn.Net{m.precise, m.val} {
		if err := n.CopyBN(m.train); err != nil {
			return nil, err
		}
		if err := n.SetMode(bn.Eval); err != nil {
			return nil, err
		}
	}
	ok = true
	return m, nil
}

// foldOthers updates the EMAs others (momenta ms) with the batch statistics
// of the last training step. The layers keep only their own EMA r, with
// momentum m0: r_t = (1−m0)·r_{t−1} + m0·s_t, so the batch statistics are
// s_t = (r_t − (1−m0)·r_{t−1})/m0, recovered from two consecutive running
// statistics (exactly up to rounding, in float64), and folded in as the
// layers would: e_t = (1−m)·e_{t−1} + m·s_t.
func foldOthers(others []modelStats, ms []float64, prev, cur modelStats, m0 float64) {
	for i, e := range others {
		m := ms[i]
		for l := range e {
			for c := range e[l].mean {
				s := (cur[l].mean[c] - (1-m0)*prev[l].mean[c]) / m0
				v := (cur[l].variance[c] - (1-m0)*prev[l].variance[c]) / m0
				e[l].mean[c] = (1-m)*e[l].mean[c] + m*s
				e[l].variance[c] = (1-m)*e[l].variance[c] + m*max(v, 0)
			}
		}
	}
}

// emaStats returns the running statistics the training kept (the EMA).
func (m *model) emaStats() modelStats { return runningStats(m.train) }

// preciseStats runs bn.Precise on the PreciseBN graph over the samples idx
// of set (a whole number of training batches, in that order) and returns
// the statistics it computed. As in fvcore, every layer normalizes with the
// statistics of its batch during the pass.
func (m *model) preciseStats(ctx context.Context, set *mnist.Set, idx []int, desc string, b *bars) (modelStats, error) {
	B := m.precise.Batch
	if len(idx) == 0 || len(idx)%B != 0 {
		return nil, fmt.Errorf("PreciseBN over %d samples: want a positive multiple of the batch %d", len(idx), B)
	}
	update, finish := b.start(desc, len(idx)/B)
	defer finish()
	_, err := bn.Precise(ctx, m.precise.Normalizers(), func(ctx context.Context, i int) (int, error) {
		return B, m.precise.Run(set, idx[i*B:(i+1)*B])
	}, bn.PreciseOptions{
		Batches:  len(idx) / B,
		Progress: func(batches, _, _ int) { update(batches) },
	})
	if err != nil {
		return nil, err
	}
	return runningStats(m.precise), nil
}

// trueStats computes the population statistics of every BN layer over the
// whole batches of set (the evaluation batch): layer by layer, each with the
// layers before it normalizing with their own population statistics — the
// inputs every layer sees at inference. For the first layer this is the
// plain mean and variance of its input over set; for later layers it is
// what PreciseBN converges to, minus the small effect of normalizing the
// earlier layers with batch statistics during the pass.
func (m *model) trueStats(ctx context.Context, set *mnist.Set, b *bars) (modelStats, error) {
	n := m.val
	E := n.Batch
	batches := set.Len() / E
	if batches == 0 {
		return nil, fmt.Errorf("%d images, fewer than one evaluation batch of %d", set.Len(), E)
	}
	if err := n.SetMode(bn.Eval); err != nil {
		return nil, err
	}
	idx := mnist.Range(batches * E)
	for k, l := range n.BNs {
		update, finish := b.start(fmt.Sprintf("ground truth, %s", l.Name()), batches)
		_, err := bn.Precise(ctx, []bn.Normalizer{l}, func(ctx context.Context, i int) (int, error) {
			return E, n.Run(set, idx[i*E:(i+1)*E])
		}, bn.PreciseOptions{Batches: batches, Progress: func(done, _, _ int) { update(done) }})
		finish()
		if err != nil {
			return nil, fmt.Errorf("ground truth, layer %d: %w", k+1, err)
		}
	}
	return runningStats(n), nil
}

// accuracy returns the fraction of set classified correctly by the
// evaluation graph with its BN layers normalizing with stats (bn.Eval). A
// remainder smaller than a batch is left out.
func (m *model) accuracy(ctx context.Context, set *mnist.Set, stats modelStats) (float64, error) {
	if err := setRunningStats(m.val, stats); err != nil {
		return 0, err
	}
	if err := m.val.SetMode(bn.Eval); err != nil {
		return 0, err
	}
	return cnn.Accuracy(ctx, m.val, set, nil)
}

// batchStatsAccuracy returns the accuracy on set with every BN layer
// normalizing with the statistics of its test batch, of the training batch
// size (bn.EvalBatchStats).
func (m *model) batchStatsAccuracy(ctx context.Context, set *mnist.Set) (float64, error) {
	if err := m.precise.SetMode(bn.EvalBatchStats); err != nil {
		return 0, err
	}
	defer m.precise.SetMode(bn.Eval)
	return cnn.Accuracy(ctx, m.precise, set, nil)
}

// statError measures how far est is from truth for one layer, in units that
// matter to the normalization: the mean error of channel c is
// (μ̂_c − μ_c)/σ_c, the variance error σ̂²_c/σ²_c − 1; each is the root mean
// square over the channels.
func statError(est, truth layerStats) (meanErr, varErr float64) {
	C := len(truth.mean)
	for c := range C {
		dm := (est.mean[c] - truth.mean[c]) / math.Sqrt(truth.variance[c])
		dv := est.variance[c]/truth.variance[c] - 1
		meanErr += dm * dm
		varErr += dv * dv
	}
	return math.Sqrt(meanErr / float64(C)), math.Sqrt(varErr / float64(C))
}

// estimate is one way of estimating the population statistics, measured:
// the error of each layer's statistics against the ground truth (mean over
// the draws) and the test accuracy with them.
type estimate struct {
	name    string
	samples int // samples a PreciseBN estimate used; 0 for the others
	draws   int
	// meanErr[l], varErr[l]: errors of layer l, averaged over the draws;
	// meanSpread, varSpread: their smallest and largest over the draws.
	meanErr, varErr       []float64
	meanSpread, varSpread [][2]float64
	acc                   float64 // test accuracy, averaged over the draws; NaN: not measured
	accSpread             [2]float64
}

// result is everything one run measured.
type result struct {
	cfg        config
	trainLen   int // training images
	truthLen   int // images of the ground truth
	testLen    int // test images
	stepLoss   []float64
	ema        estimate
	others     []estimate // EMAs of cfg.otherMomenta
	precise    []estimate // by sample count, the last over the whole training set
	truthAcc   float64    // test accuracy with the true population statistics
	batchAcc   float64    // test accuracy with the statistics of each test batch
	population modelStats
}

// experiment trains the model and compares the EMA and PreciseBN statistics
// with the population statistics over trainSet, and their test accuracy.
func experiment(ctx context.Context, cfg config, trainSet, test *mnist.Set, b *bars) (*result, error) {
	if cfg.repeats < 1 {
		return nil, fmt.Errorf("repeats %d, want ≥ 1", cfg.repeats)
	}
	m, err := trainModel(ctx, cfg, trainSet, b)
	if err != nil {
		return nil, err
	}
	defer m.Close()
	res := &result{cfg: cfg, trainLen: trainSet.Len(), testLen: test.Len(), stepLoss: m.stepLoss}
	res.truthLen = trainSet.Len() / cfg.evalBatch * cfg.evalBatch

	truth, err := m.trueStats(ctx, trainSet, b)
	if err != nil {
		return nil, err
	}
	res.population = truth
	if res.truthAcc, err = m.accuracy(ctx, test, truth); err != nil {
		return nil, err
	}
	if res.batchAcc, err = m.batchStatsAccuracy(ctx, test); err != nil {
		return nil, err
	}

	measure := func(e *estimate, stats []modelStats, accs []float64) {
		L := len(truth)
		e.draws = len(stats)
		e.meanErr, e.varErr = make([]float64, L), make([]float64, L)
		e.meanSpread, e.varSpread = make([][2]float64, L), make([][2]float64, L)
		for l := range L {
			e.meanSpread[l] = [2]float64{math.Inf(1), math.Inf(-1)}
			e.varSpread[l] = e.meanSpread[l]
			for _, s := range stats {
				me, ve := statError(s[l], truth[l])
				e.meanErr[l] += me / float64(len(stats))
				e.varErr[l] += ve / float64(len(stats))
				e.meanSpread[l] = [2]float64{min(e.meanSpread[l][0], me), max(e.meanSpread[l][1], me)}
				e.varSpread[l] = [2]float64{min(e.varSpread[l][0], ve), max(e.varSpread[l][1], ve)}
			}
		}
		e.acc, e.accSpread = 0, [2]float64{math.Inf(1), math.Inf(-1)}
		for _, a := range accs {
			e.acc += a / float64(len(accs))
			e.accSpread = [2]float64{min(e.accSpread[0], a), max(e.accSpread[1], a)}
		}
	}

	ema := m.emaStats()
	emaAcc, err := m.accuracy(ctx, test, ema)
	if err != nil {
		return nil, err
	}
	res.ema.name = fmt.Sprintf("EMA (momentum %g)", cfg.bnMomentum)
	measure(&res.ema, []modelStats{ema}, []float64{emaAcc})
	for i, mo := range cfg.otherMomenta {
		a, err := m.accuracy(ctx, test, m.others[i])
		if err != nil {
			return nil, err
		}
		e := estimate{name: fmt.Sprintf("EMA (momentum %g, recomputed)", mo)}
		measure(&e, []modelStats{m.others[i]}, []float64{a})
		res.others = append(res.others, e)
	}

	// PreciseBN over random samples of the training set: for each count,
	// cfg.repeats independent draws (without replacement within a draw).
	B := cfg.batch
	rng := rand.New(rand.NewSource(cfg.seed + 1))
	whole := trainSet.Len() / B * B
	for _, k := range cfg.samples {
		n := (k + B - 1) / B * B
		if n >= whole {
			continue // the pass over the whole set below covers it
		}
		var stats []modelStats
		var accs []float64
		for r := range cfg.repeats {
			idx := rng.Perm(trainSet.Len())[:n]
			s, err := m.preciseStats(ctx, trainSet, idx, fmt.Sprintf("PreciseBN, %d samples, draw %d/%d", n, r+1, cfg.repeats), b)
			if err != nil {
				return nil, err
			}
			a, err := m.accuracy(ctx, test, s)
			if err != nil {
				return nil, err
			}
			stats, accs = append(stats, s), append(accs, a)
		}
		e := estimate{name: "PreciseBN", samples: n}
		measure(&e, stats, accs)
		res.precise = append(res.precise, e)
	}
	// Once over the whole training set, in random batches.
	s, err := m.preciseStats(ctx, trainSet, rng.Perm(trainSet.Len())[:whole], fmt.Sprintf("PreciseBN, all %d samples", whole), b)
	if err != nil {
		return nil, err
	}
	a, err := m.accuracy(ctx, test, s)
	if err != nil {
		return nil, err
	}
	e := estimate{name: "PreciseBN, whole training set", samples: whole}
	measure(&e, []modelStats{s}, []float64{a})
	res.precise = append(res.precise, e)
	return res, nil
}
