package main

import (
	"context"
	"fmt"
	"math/rand"

	"github.com/gorgonia-bn/bn"
	"github.com/gorgonia-bn/bn/examples/internal/cnn"
	"github.com/gorgonia-bn/bn/examples/internal/mnist"
	"gorgonia.org/tensor"
)

// variant is how the BN layers of the data-parallel workers normalize.
type variant int

const (
	perWorker  variant = iota // each worker's batch statistics (plain DDP)
	syncBN                    // statistics of the global batch (SyncBN)
	shuffleBN                 // the global batch shuffled across workers, then per-worker statistics
	iidBatches                // per-worker BN, but every worker's batch drawn i.i.d. (no correlation)
	numVariants
)

var variantNames = [numVariants]string{"per-worker BN", "SyncBN", "shuffle BN", "per-worker BN, i.i.d. batches"}
var variantFlags = [numVariants]string{"local", "sync", "shuffle", "iid"}

func (v variant) String() string { return variantNames[v] }

// config is one training run.
type config struct {
	workers, batch    int // workers, samples per worker and step
	classesPerWorker  int // classes in each worker's batch (1: class-homogeneous)
	epochs, steps     int // epochs, steps per epoch
	lr                float64
	popSamples        int // samples of the PreciseBN pass (population statistics)
	evalBatch         int
	seed              int64
	dtype             tensor.Dtype
	variant           variant
	stage             func(string, ...any)
	trainSet, testSet *mnist.Set
}

// epochResult is what one epoch measured.
type epochResult struct {
	trainAcc float64 // on the training batches, with the batch statistics they were trained with
	testAcc  float64 // on the test set, with population statistics (PreciseBN)
}

// The workers are simulated in one graph over the global batch, with the
// equivalences the library tests: per-worker BN over workers × batch
// samples is ghost BN with groups of batch (worker k's samples are the k-th
// group); SyncBN is plain BN over the global batch (SyncBN K×B equals one
// worker × K·B, examples/syncbn); shuffle BN of the whole network permutes
// the global batch before the per-worker groups (every layer but BN acts
// on each sample alone, and the loss is a mean over samples, so shuffling
// at the input and unshuffling at the output is the same as shuffling the
// global batch). The communication each would need is counted in comm.go.

// byClass returns the indices of set per label.
func byClass(set *mnist.Set) [][]int {
	out := make([][]int, mnist.Classes)
	for i, l := range set.Labels {
		out[l] = append(out[l], i)
	}
	return out
}

// globalBatch draws the samples of one step: worker k's batch holds
// classesPerWorker classes (distinct across workers where possible), or,
// for iidBatches, samples drawn uniformly. For shuffleBN the global batch
// is then permuted.
func globalBatch(cfg config, classes [][]int, rng *rand.Rand) []int {
	K, B := cfg.workers, cfg.batch
	idx := make([]int, 0, K*B)
	if cfg.variant == iidBatches {
		for range K * B {
			idx = append(idx, rng.Intn(cfg.trainSet.Len()))
		}
		return idx
	}
	perm := rng.Perm(mnist.Classes)
	for k := range K {
		for j := range B {
			c := perm[(k*cfg.classesPerWorker+j%cfg.classesPerWorker)%mnist.Classes]
			idx = append(idx, classes[c][rng.Intn(len(classes[c]))])
		}
	}
	if cfg.variant == shuffleBN {
		rng.Shuffle(len(idx), func(i, j int) { idx[i], idx[j] = idx[j], idx[i] })
	}
	return idx
}

// train runs cfg and measures every epoch.
func train(ctx context.Context, cfg config) ([]epochResult, error) {
	w, err := cnn.NewWeights(cfg.dtype, cfg.seed, cnn.ClassifierStd)
	if err != nil {
		return nil, err
	}
	var opts []bn.Option
	if cfg.variant != syncBN {
		opts = append(opts, bn.WithGhostBatch(cfg.batch))
	}
	tn, err := cnn.New(w, cnn.Config{Batch: cfg.workers * cfg.batch, Train: true, BN: opts})
	if err != nil {
		return nil, err
	}
	defer tn.Close()
	ev, err := cnn.New(w, cnn.Config{Batch: cfg.evalBatch})
	if err != nil {
		return nil, err
	}
	defer ev.Close()
	sgd, err := cnn.NewSGD(tn, cfg.lr)
	if err != nil {
		return nil, err
	}
	rng := rand.New(rand.NewSource(cfg.seed))
	classes := byClass(cfg.trainSet)
	var out []epochResult
	for e := range cfg.epochs {
		if err := tn.SetMode(bn.Train); err != nil {
			return nil, err
		}
		correct, total := 0, 0
		for s := range cfg.steps {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			idx := globalBatch(cfg, classes, rng)
			if _, err := sgd.Step(cfg.trainSet, idx); err != nil {
				return nil, fmt.Errorf("%v, epoch %d, step %d: %w", cfg.variant, e+1, s, err)
			}
			c, err := cnn.Correct(tn.Logits.Value(), cfg.trainSet, idx)
			if err != nil {
				return nil, err
			}
			correct += c
			total += len(idx)
		}
		test, err := populationAccuracy(ctx, ev, tn, cfg, rng)
		if err != nil {
			return nil, err
		}
		r := epochResult{trainAcc: float64(correct) / float64(total), testAcc: test}
		out = append(out, r)
		if cfg.stage != nil {
			cfg.stage("%v, seed %d, epoch %d/%d: training batches (batch statistics) %.2f %%, test (population statistics) %.2f %%",
				cfg.variant, cfg.seed, e+1, cfg.epochs, 100*r.trainAcc, 100*r.testAcc)
		}
	}
	return out, nil
}

// populationAccuracy sets the evaluation net's BN statistics to the
// population statistics of the current model over i.i.d. training samples
// (PreciseBN) and returns its test accuracy.
func populationAccuracy(ctx context.Context, ev, tn *cnn.Net, cfg config, rng *rand.Rand) (float64, error) {
	if err := ev.CopyAffine(tn); err != nil {
		return 0, err
	}
	B := ev.Batch
	order := mnist.Shuffle(cfg.trainSet.Len(), rng)
	batches := max(cfg.popSamples/B, 1)
	if batches*B > len(order) {
		return 0, fmt.Errorf("%d population samples: more than the %d training images", batches*B, len(order))
	}
	if _, err := bn.Precise(ctx, ev.Normalizers(), func(ctx context.Context, i int) (int, error) {
		return B, ev.Run(cfg.trainSet, order[i*B:(i+1)*B])
	}, bn.PreciseOptions{Batches: batches}); err != nil {
		return 0, err
	}
	if err := ev.SetMode(bn.Eval); err != nil {
		return 0, err
	}
	return cnn.Accuracy(ctx, ev, cfg.testSet, nil)
}
