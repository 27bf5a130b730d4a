package main

import (
	"context"
	"fmt"
	"math"
	"math/rand"

	"github.com/gorgonia-bn/bn"
	"github.com/gorgonia-bn/bn/examples/internal/mnist"
	"gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// runConfig describes one training run.
type runConfig struct {
	name      string       // label in tables and plots
	withBN    bool         // conv → BN → ReLU, else conv + bias → ReLU
	lr        float64      // learning rate of SGD
	momentum  float64      // momentum of SGD (0: plain SGD)
	epochs    int          // passes over the training set
	batch     int          // training mini-batch size
	evalBatch int          // batch size of the test-set evaluation
	seed      int64        // weights and data order
	dtype     tensor.Dtype // float32 or float64
}

// runResult is what one run measured.
type runResult struct {
	cfg runConfig
	// stepLoss[i] is the training loss of step i (NaN or Inf once diverged).
	stepLoss []float64
	// epochLoss[e] is the mean training loss of epoch e, testAcc[e] the
	// test accuracy after it (running statistics for BN).
	epochLoss, testAcc []float64
	// diverged reports a non-finite loss at step divergedAt; training
	// stopped there.
	diverged   bool
	divergedAt int
	// model is the trained model, for further evaluation.
	model *model
}

// model is the trained weights and BN state of one run, with the graphs
// that use them.
type model struct {
	p      *params
	withBN bool
	train  *net
}

// train trains one model on train and evaluates it on test after every
// epoch. step is called after every training step (for a progress bar); it
// may be nil. Training stops early, without error, at the first non-finite
// loss: that is a result (divergence), not a failure.
func train(ctx context.Context, cfg runConfig, trainSet, testSet *mnist.Set, step func()) (*runResult, error) {
	if cfg.epochs < 1 || cfg.batch < 1 || cfg.evalBatch < 1 || !(cfg.lr > 0) {
		return nil, fmt.Errorf("%s: invalid configuration: epochs %d, batch %d, eval batch %d, lr %v", cfg.name, cfg.epochs, cfg.batch, cfg.evalBatch, cfg.lr)
	}
	if trainSet.Len() < cfg.batch {
		return nil, fmt.Errorf("%s: %d training images, fewer than one batch of %d", cfg.name, trainSet.Len(), cfg.batch)
	}
	p, err := newParams(cfg.dtype, cfg.seed)
	if err != nil {
		return nil, err
	}
	tn, err := newNet(p, cfg.batch, cfg.withBN, true)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", cfg.name, err)
	}
	m := &model{p: p, withBN: cfg.withBN, train: tn}
	res := &runResult{cfg: cfg, model: m}
	solver := gorgonia.NewMomentum(gorgonia.WithLearnRate(cfg.lr), gorgonia.WithMomentum(cfg.momentum))
	grads := gorgonia.NodesToValueGrads(tn.learnable)
	// The data order depends only on the seed: the same for every run.
	rng := rand.New(rand.NewSource(cfg.seed))

	for epoch := 0; epoch < cfg.epochs; epoch++ {
		if err := tn.setMode(bn.Train); err != nil {
			return nil, err
		}
		batches, err := mnist.Batches(mnist.Shuffle(trainSet.Len(), rng), cfg.batch, true)
		if err != nil {
			return nil, err
		}
		sum := 0.0
		for _, idx := range batches {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			if err := tn.run(trainSet, idx); err != nil {
				return nil, fmt.Errorf("%s: step %d: %w", cfg.name, len(res.stepLoss), err)
			}
			loss, err := tn.lossValue()
			if err != nil {
				return nil, err
			}
			res.stepLoss = append(res.stepLoss, loss)
			if step != nil {
				step()
			}
			if math.IsNaN(loss) || math.IsInf(loss, 0) {
				res.diverged, res.divergedAt = true, len(res.stepLoss)-1
				return res, nil
			}
			sum += loss
			if err := solver.Step(grads); err != nil {
				return nil, fmt.Errorf("%s: solver: %w", cfg.name, err)
			}
		}
		res.epochLoss = append(res.epochLoss, sum/float64(len(batches)))
		acc, err := m.accuracy(testSet, cfg.evalBatch, bn.Eval, nil)
		if err != nil {
			return nil, fmt.Errorf("%s: evaluation: %w", cfg.name, err)
		}
		res.testAcc = append(res.testAcc, acc)
	}
	return res, nil
}

// accuracy returns the fraction of set classified correctly, in batches of
// the given size (the remainder of set.Len()/batch is left out), with every
// BN layer in mode (bn.Eval: running statistics; bn.EvalBatchStats: the
// statistics of each evaluation batch). The mode is ignored without BN. step,
// if not nil, is called after every batch.
func (m *model) accuracy(set *mnist.Set, batch int, mode bn.Mode, step func()) (float64, error) {
	if set.Len() < batch {
		return 0, fmt.Errorf("%d images, fewer than one batch of %d", set.Len(), batch)
	}
	en, err := newNet(m.p, batch, m.withBN, false)
	if err != nil {
		return 0, err
	}
	defer en.Close()
	if m.withBN {
		if err := en.syncBN(m.train); err != nil {
			return 0, err
		}
		if err := en.setMode(mode); err != nil {
			return 0, err
		}
	}
	batches, err := mnist.Batches(mnist.Range(set.Len()), batch, true)
	if err != nil {
		return 0, err
	}
	ok, total := 0, 0
	for _, idx := range batches {
		if err := en.run(set, idx); err != nil {
			return 0, err
		}
		c, err := en.correct(set, idx)
		if err != nil {
			return 0, err
		}
		ok += c
		total += len(idx)
		if step != nil {
			step()
		}
	}
	return float64(ok) / float64(total), nil
}
