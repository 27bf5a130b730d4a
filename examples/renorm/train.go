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

// config is the experiment's configuration (the flags).
type config struct {
	steps      int     // SGD steps per run
	batch      int     // training mini-batch size
	lr         float64 // SGD learning rate
	momentum   float64 // SGD momentum
	bnMomentum float64 // weight of the new batch in the running statistics (BN and BRN)
	renorm     bn.RenormConfig
	seeds      []int64
	evalEvery  int          // steps between the evaluations of the curve
	curveTest  int          // test images of the curve's evaluations (the final one uses all)
	evalBatch  int          // batch size of the evaluations
	dtype      tensor.Dtype // float32 or float64
	sampling   []string     // "iid", "pairs"
}

// runResult is one training run: its test-accuracy curve (running
// statistics, bn.Eval), the final test accuracy on the whole test set and the
// training loss of every step.
type runResult struct {
	sampling string
	renorm   bool
	seed     int64
	curveX   []float64 // steps
	curveAcc []float64
	finalAcc float64
	stepLoss []float64
}

// sampler draws the training batches of one run.
type sampler interface{ next() []int }

// iidSampler draws batches of a random permutation of the training set,
// reshuffled after every pass.
type iidSampler struct {
	rng     *rand.Rand
	n, size int
	batches [][]int
}

func (s *iidSampler) next() []int {
	if len(s.batches) == 0 {
		s.batches, _ = mnist.Batches(mnist.Shuffle(s.n, s.rng), s.size, true) // size ≤ n is checked by newSampler
	}
	b := s.batches[0]
	s.batches = s.batches[1:]
	return b
}

// pairSampler draws non-i.i.d. batches: size/2 distinct classes, two images
// of each (every class's images in a random order, reshuffled when used up).
type pairSampler struct {
	rng     *rand.Rand
	size    int
	byClass [mnist.Classes][]int
	queue   [mnist.Classes][]int
}

func (s *pairSampler) next() []int {
	b := make([]int, 0, s.size)
	for _, c := range s.rng.Perm(mnist.Classes)[:s.size/2] {
		for range 2 {
			if len(s.queue[c]) == 0 {
				s.queue[c] = append([]int(nil), s.byClass[c]...)
				s.rng.Shuffle(len(s.queue[c]), func(i, j int) { s.queue[c][i], s.queue[c][j] = s.queue[c][j], s.queue[c][i] })
			}
			b = append(b, s.queue[c][0])
			s.queue[c] = s.queue[c][1:]
		}
	}
	return b
}

func newSampler(kind string, set *mnist.Set, size int, rng *rand.Rand) (sampler, error) {
	if set.Len() < size {
		return nil, fmt.Errorf("%d training images, fewer than one batch of %d", set.Len(), size)
	}
	switch kind {
	case "iid":
		return &iidSampler{rng: rng, n: set.Len(), size: size}, nil
	case "pairs":
		if size%2 != 0 || size/2 > mnist.Classes {
			return nil, fmt.Errorf("pairs sampling needs an even batch of at most %d, got %d", 2*mnist.Classes, size)
		}
		s := &pairSampler{rng: rng, size: size}
		for i, l := range set.Labels {
			s.byClass[l] = append(s.byClass[l], i)
		}
		for c, idx := range s.byClass {
			if len(idx) < 2 {
				return nil, fmt.Errorf("pairs sampling: class %d has %d training images, want ≥ 2", c, len(idx))
			}
		}
		return s, nil
	}
	return nil, fmt.Errorf("unknown sampling %q (want iid or pairs)", kind)
}

// bnOptions are the options of the BN layers of a run: plain BN, or BRN
// with the configured schedule; both with the same running-statistics
// momentum.
func (c config) bnOptions(renorm bool) []bn.Option {
	o := []bn.Option{bn.WithMomentum(c.bnMomentum)}
	if renorm {
		o = append(o, bn.WithRenorm(c.renorm))
	}
	return o
}

// trainRun trains the network from the weights of seed, on batches drawn by
// sampling (order from seed too), with BN or BRN, and evaluates it every
// cfg.evalEvery steps on the first cfg.curveTest test images and at the end
// on the whole test set, in bn.Eval (running statistics). step is called
// after every training step; it may be nil. A non-finite loss ends the run
// with an error.
func trainRun(ctx context.Context, cfg config, sampling string, renorm bool, seed int64, train, test *mnist.Set, step func()) (*runResult, error) {
	name := fmt.Sprintf("%s/%s/seed %d", sampling, variantName(renorm), seed)
	w, err := cnn.NewWeights(cfg.dtype, seed, cnn.ClassifierStd)
	if err != nil {
		return nil, err
	}
	tn, err := cnn.New(w, cnn.Config{Batch: cfg.batch, Train: true, BN: cfg.bnOptions(renorm)})
	if err != nil {
		return nil, err
	}
	defer tn.Close()
	ev, err := cnn.New(w, cnn.Config{Batch: cfg.evalBatch, BN: cfg.bnOptions(renorm)})
	if err != nil {
		return nil, err
	}
	defer ev.Close()
	if err := ev.SetMode(bn.Eval); err != nil {
		return nil, err
	}
	rng := rand.New(rand.NewSource(seed))
	smp, err := newSampler(sampling, train, cfg.batch, rng)
	if err != nil {
		return nil, err
	}
	solver := gorgonia.NewMomentum(gorgonia.WithLearnRate(cfg.lr), gorgonia.WithMomentum(cfg.momentum))
	grads := gorgonia.NodesToValueGrads(tn.Learnables)
	curveSet := test.Head(cfg.curveTest)
	res := &runResult{sampling: sampling, renorm: renorm, seed: seed}
	evaluate := func(set *mnist.Set) (float64, error) {
		if err := ev.CopyBN(tn); err != nil {
			return 0, err
		}
		return cnn.Accuracy(ctx, ev, set, nil)
	}
	for s := 1; s <= cfg.steps; s++ {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if err := tn.Run(train, smp.next()); err != nil {
			return nil, fmt.Errorf("%s: step %d: %w", name, s, err)
		}
		loss, err := tn.LossValue()
		if err != nil {
			return nil, err
		}
		if math.IsNaN(loss) || math.IsInf(loss, 0) {
			return nil, fmt.Errorf("%s: loss %v at step %d (lower -lr)", name, loss, s)
		}
		res.stepLoss = append(res.stepLoss, loss)
		if err := solver.Step(grads); err != nil {
			return nil, fmt.Errorf("%s: solver: %w", name, err)
		}
		if s%cfg.evalEvery == 0 || s == cfg.steps {
			acc, err := evaluate(curveSet)
			if err != nil {
				return nil, fmt.Errorf("%s: evaluation: %w", name, err)
			}
			res.curveX, res.curveAcc = append(res.curveX, float64(s)), append(res.curveAcc, acc)
		}
		if step != nil {
			step()
		}
	}
	if res.finalAcc, err = evaluate(test); err != nil {
		return nil, fmt.Errorf("%s: evaluation: %w", name, err)
	}
	return res, nil
}

func variantName(renorm bool) string {
	if renorm {
		return "BRN"
	}
	return "BN"
}
