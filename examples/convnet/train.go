package main

import (
	"context"
	"fmt"
	"math"
	"math/rand"

	"github.com/gorgonia-bn/bn"
	"github.com/gorgonia-bn/bn/examples/internal/cnn"
	"github.com/gorgonia-bn/bn/examples/internal/mnist"
	"gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// runConfig describes one training run.
type runConfig struct {
	name      string // label in tables and plots
	withBN    bool   // conv → BN → act, else conv + bias → act
	act       cnn.Activation
	depth     int          // extra conv blocks (cnn.Config.Depth)
	evalEvery int          // steps between the evaluations of the curve (0: none)
	lr        float64      // learning rate of SGD
	momentum  float64      // momentum of SGD (0: plain SGD)
	epochs    int          // passes over the training set
	batch     int          // training mini-batch size
	evalBatch int          // batch size of the test-set evaluation
	seed      int64        // weights and data order
	dtype     tensor.Dtype // float32 or float64
	fused     bool         // BN + ReLU as one op (cnn.Config.Fused)
}

// runResult is what one run measured.
type runResult struct {
	cfg runConfig
	// stepLoss[i] is the training loss of step i (NaN or Inf once diverged).
	stepLoss []float64
	// epochLoss[e] is the mean training loss of epoch e, testAcc[e] the
	// test accuracy after it (running statistics for BN).
	epochLoss, testAcc []float64
	// curveStep[i] is the number of steps after which the test accuracy
	// curveAcc[i] (running statistics, on the curve set) was measured.
	curveStep []int
	curveAcc  []float64
	// diverged reports a non-finite loss at step divergedAt; training
	// stopped there.
	diverged   bool
	divergedAt int
	// model is the trained model, for further evaluation.
	model *model
}

// train trains one model on train and evaluates it on test after every
// epoch, and on curve (if not nil) every cfg.evalEvery steps. step is
// called after every training step (for a progress bar); it may be nil.
// Training stops early, without error, at the first non-finite loss: that
// is a result (divergence), not a failure.
func train(ctx context.Context, cfg runConfig, trainSet, testSet, curve *mnist.Set, step func()) (*runResult, error) {
	if cfg.epochs < 1 || cfg.batch < 1 || cfg.evalBatch < 1 || !(cfg.lr > 0) {
		return nil, fmt.Errorf("%s: invalid configuration: epochs %d, batch %d, eval batch %d, lr %v", cfg.name, cfg.epochs, cfg.batch, cfg.evalBatch, cfg.lr)
	}
	if trainSet.Len() < cfg.batch {
		return nil, fmt.Errorf("%s: %d training images, fewer than one batch of %d", cfg.name, trainSet.Len(), cfg.batch)
	}
	w, err := cnn.NewDeepWeights(cfg.dtype, cfg.seed, cnn.ClassifierStd, cfg.depth)
	if err != nil {
		return nil, err
	}
	tn, err := cnn.New(w, cnn.Config{Batch: cfg.batch, NoBN: !cfg.withBN, Train: true, Fused: cfg.fused, Act: cfg.act, Depth: cfg.depth})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", cfg.name, err)
	}
	m := &model{w: w, withBN: cfg.withBN, fused: cfg.fused, act: cfg.act, depth: cfg.depth, train: tn}
	var cn *cnn.Net // the evaluation net of the curve
	if curve != nil && cfg.evalEvery > 0 {
		if cn, err = m.evalNet(min(cfg.evalBatch, curve.Len()), bn.Eval); err != nil {
			return nil, err
		}
		defer cn.Close()
	}
	res := &runResult{cfg: cfg, model: m}
	solver := gorgonia.NewMomentum(gorgonia.WithLearnRate(cfg.lr), gorgonia.WithMomentum(cfg.momentum))
	grads := gorgonia.NodesToValueGrads(tn.Learnables)
	// The data order depends only on the seed: the same for every run.
	rng := rand.New(rand.NewSource(cfg.seed))

	for epoch := 0; epoch < cfg.epochs; epoch++ {
		if err := tn.SetMode(bn.Train); err != nil {
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
			if err := tn.Run(trainSet, idx); err != nil {
				return nil, fmt.Errorf("%s: step %d: %w", cfg.name, len(res.stepLoss), err)
			}
			loss, err := tn.LossValue()
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
			if cn != nil && len(res.stepLoss)%cfg.evalEvery == 0 {
				if err := m.sync(cn, bn.Eval); err != nil {
					return nil, err
				}
				acc, err := cnn.Accuracy(ctx, cn, curve, nil)
				if err != nil {
					return nil, fmt.Errorf("%s: evaluation: %w", cfg.name, err)
				}
				res.curveStep = append(res.curveStep, len(res.stepLoss))
				res.curveAcc = append(res.curveAcc, acc)
			}
		}
		res.epochLoss = append(res.epochLoss, sum/float64(len(batches)))
		acc, err := m.accuracy(ctx, testSet, cfg.evalBatch, bn.Eval, nil)
		if err != nil {
			return nil, fmt.Errorf("%s: evaluation: %w", cfg.name, err)
		}
		res.testAcc = append(res.testAcc, acc)
	}
	return res, nil
}

// stepsTo returns the number of training steps after which the curve first
// reached the accuracy target (a fraction), or -1 if it never did.
func (r *runResult) stepsTo(target float64) int {
	for i, a := range r.curveAcc {
		if a >= target {
			return r.curveStep[i]
		}
	}
	return -1
}
