package main

import (
	"context"
	"fmt"
	"io"
	"math"
	"math/rand"
	"time"

	"github.com/gorgonia-bn/bn"
	"github.com/gorgonia-bn/bn/domainbn"
	"github.com/gorgonia-bn/bn/examples/internal/mnist"
)

// dataset is the data of the experiment.
type dataset struct {
	// train holds the original images [0, n) of the training file followed
	// by the inverted images [n, 2n): sample i < n is domain 0, sample
	// n+j is domain 1.
	train *mnist.Set
	n     int
	test  [numDomains]*mnist.Set // the 10 000 test images in each domain
	adapt *mnist.Set             // unlabeled faded training images for AdaBN
}

// prepare derives the domains from MNIST: n = subset images per training
// domain (originals from the first n images of the training file, inverted
// from the next n, so the two domains hold different digits), the test set
// in every domain, and adapt faded images from the end of the training file.
func prepare(trainSet, testSet *mnist.Set, subset, adapt int, seed int64) (*dataset, error) {
	if subset < 1 || 2*subset > trainSet.Len() {
		return nil, fmt.Errorf("subset %d images per domain, want 1…%d", subset, trainSet.Len()/2)
	}
	if adapt < 1 || adapt > trainSet.Len() {
		return nil, fmt.Errorf("adapt %d images, want 1…%d", adapt, trainSet.Len())
	}
	d := &dataset{n: subset}
	a, _ := trainSet.Slice(0, subset)
	b, _ := trainSet.Slice(subset, 2*subset)
	orig, err := shift(a, original, seed)
	if err != nil {
		return nil, err
	}
	inv, err := shift(b, inverted, seed)
	if err != nil {
		return nil, err
	}
	d.train = &mnist.Set{
		Pixels: append(orig.Pixels, inv.Pixels...),
		Labels: append(append([]uint8(nil), orig.Labels...), inv.Labels...),
	}
	for dom := range numDomains {
		if d.test[dom], err = shift(testSet, dom, seed+1); err != nil {
			return nil, err
		}
	}
	c, _ := trainSet.Slice(trainSet.Len()-adapt, trainSet.Len())
	if d.adapt, err = shift(c, faded, seed+2); err != nil {
		return nil, err
	}
	return d, nil
}

// result is what one variant measured.
type result struct {
	v         variant
	stepLoss  []float64           // the loss of every training step
	epochLoss []float64           // mean training loss of each epoch
	acc       [numDomains]float64 // test accuracy per domain; faded: before AdaBN, with the original domain's statistics and γ/β
	adapted   float64             // faded test accuracy after AdaBN
	adaptRep  bn.PreciseReport    // what AdaBN did
	train     time.Duration       // training time
	model     *model              // the trained model; the caller closes it
}

// trainVariant trains one variant on mixed batches (half original, half
// inverted; the same batches for every variant, given the seed), evaluates
// it on every domain, then adapts it to the faded domain with AdaBN. maxSteps
// > 0 stops training early (for tests); step, if set, is called after every
// training step.
func trainVariant(ctx context.Context, v variant, cfg netConfig, data *dataset, epochs, maxSteps int, step func()) (*result, error) {
	cfg.v = v
	m, err := newModel(cfg)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", v.name, err)
	}
	res := &result{v: v, model: m}
	half := cfg.batch / 2
	ids := make([]int, 2*half)
	for i := half; i < 2*half; i++ {
		ids[i] = inverted
	}
	idx := make([]int, 2*half)
	rng := rand.New(rand.NewSource(cfg.seed))
	start := time.Now()
	if err := m.setMode(bn.Train); err != nil {
		return nil, err
	}
	steps := 0
training:
	for range epochs {
		p0, p1 := rng.Perm(data.n), rng.Perm(data.n)
		sum, cnt := 0.0, 0
		for s := 0; (s+1)*half <= data.n; s++ {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			for k := range half {
				idx[k] = p0[s*half+k]
				idx[half+k] = data.n + p1[s*half+k]
			}
			loss, err := m.step(data.train, idx, ids)
			if err != nil {
				return nil, fmt.Errorf("%s: step %d: %w", v.name, steps, err)
			}
			if math.IsNaN(loss) || math.IsInf(loss, 0) {
				return nil, fmt.Errorf("%s: step %d: loss %v", v.name, steps, loss)
			}
			res.stepLoss = append(res.stepLoss, loss)
			sum += loss
			cnt++
			steps++
			if step != nil {
				step()
			}
			if maxSteps > 0 && steps >= maxSteps {
				res.epochLoss = append(res.epochLoss, sum/float64(cnt))
				break training
			}
		}
		res.epochLoss = append(res.epochLoss, sum/float64(cnt))
	}
	res.train = time.Since(start)

	// Before adaptation the faded domain uses the original domain's
	// statistics and γ/β (with shared BN: the shared ones).
	for _, l := range m.bns {
		if err := l.CopyDomain(faded, original); err != nil {
			return nil, err
		}
	}
	for dom := range numDomains {
		if res.acc[dom], err = m.accuracy(data.test[dom], dom, bn.Eval); err != nil {
			return nil, fmt.Errorf("%s: accuracy on %s: %w", v.name, domainNames[dom], err)
		}
	}
	// AdaBN: re-estimate the faded domain's statistics from unlabeled faded
	// images (with shared BN this replaces the shared statistics).
	batches, err := mnist.Batches(mnist.Range(data.adapt.Len()), cfg.evalBatch, true)
	if err != nil {
		return nil, err
	}
	res.adaptRep, err = domainbn.AdaBN(ctx, m.bns, faded, func(ctx context.Context, i int) (int, error) {
		if i >= len(batches) {
			return 0, io.EOF
		}
		return len(batches[i]), m.forward(data.adapt, batches[i])
	}, bn.PreciseOptions{Batches: len(batches)})
	if err != nil {
		return nil, fmt.Errorf("%s: AdaBN: %w", v.name, err)
	}
	if res.adapted, err = m.accuracy(data.test[faded], faded, bn.Eval); err != nil {
		return nil, fmt.Errorf("%s: accuracy after AdaBN: %w", v.name, err)
	}
	return res, nil
}
