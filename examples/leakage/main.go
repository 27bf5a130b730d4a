// Command leakage shows information leakage within a batch (seed 003) on
// real MNIST: when the samples a BN layer normalizes together are
// correlated — here each of 4 data-parallel workers holds a batch of one
// class (or a few) — the network learns to use the batch statistics:
// accuracy on the training batches, with their batch statistics, looks
// good, while the test accuracy with population statistics collapses.
// SyncBN (statistics of the global batch) and shuffle BN (a random global
// permutation of the samples before BN) remove most of it; i.i.d. batches
// are the reference. It reports both accuracies per epoch, over seeds, and
// the communication each variant needs.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/gorgonia-bn/bn/examples/internal/cli"
	"github.com/gorgonia-bn/bn/examples/internal/mnist"
	"github.com/gorgonia-bn/bn/examples/internal/plotutil"
	"github.com/gorgonia-bn/bn/examples/internal/stats"
	"gonum.org/v1/plot/vg"
)

type options struct {
	cfg           config
	seeds         int
	variants      []variant
	trainN, testN int
	out, data     string
	profile       func() (func() error, error)
}

func parseFlags(args []string, stderr io.Writer) (*options, error) {
	o := &options{}
	c := &o.cfg
	fs := cli.NewFlagSet("leakage", "Information leakage within class-homogeneous per-worker batches: per-worker BN vs SyncBN vs shuffle BN vs i.i.d. batches.", stderr)
	fs.IntVar(&c.workers, "workers", 4, "data-parallel workers (simulated in one process)")
	fs.IntVar(&c.batch, "batch", 16, "samples per worker and step")
	fs.IntVar(&c.classesPerWorker, "classes-per-worker", 1, "classes in each worker's batch (1: class-homogeneous)")
	fs.IntVar(&c.epochs, "epochs", 4, "epochs (an evaluation after each)")
	fs.IntVar(&c.steps, "steps", 100, "training steps per epoch")
	fs.Float64Var(&c.lr, "lr", 0.05, "SGD learning rate")
	fs.IntVar(&c.popSamples, "pop-samples", 2000, "i.i.d. training samples of the PreciseBN pass that gives the population statistics")
	fs.IntVar(&c.evalBatch, "eval-batch", 200, "batch of the evaluation and the PreciseBN pass")
	fs.IntVar(&o.seeds, "seeds", 3, "seeds (1 … N): the weights and the batches")
	fs.IntVar(&o.trainN, "train", 20000, "training images (the first N of the 60000)")
	fs.IntVar(&o.testN, "test", 2000, "test images (the first N of the 10000)")
	fs.StringVar(&o.out, "out", filepath.Join("out", "leakage"), "output folder")
	fs.StringVar(&o.data, "data", "", "folder of the MNIST idx .gz files (default: the GoMNIST module's)")
	vs := fs.String("variants", strings.Join(variantFlags[:], ","), "comma-separated variants: local (per-worker BN), sync (SyncBN), shuffle (shuffle BN), iid (per-worker BN on i.i.d. batches)")
	dtype := fs.String("dtype", "float32", "element type: float32 or float64")
	quick := cli.Quick(fs, map[string]string{"epochs": "2", "steps": "40", "train": "4000", "test": "1000", "pop-samples": "1000", "seeds": "1"})
	o.profile = cli.CPUProfile(fs)
	if err := cli.Parse(fs, args); err != nil {
		return nil, err
	}
	if err := quick(); err != nil {
		return nil, err
	}
	var err error
	if c.dtype, err = cli.Dtype(*dtype); err != nil {
		return nil, err
	}
	for _, s := range cli.Items(*vs) {
		i := slices.Index(variantFlags[:], s)
		if i < 0 {
			return nil, fmt.Errorf("-variants: %q is not one of %s", s, strings.Join(variantFlags[:], ", "))
		}
		o.variants = append(o.variants, variant(i))
	}
	switch {
	case len(o.variants) == 0:
		return nil, fmt.Errorf("-variants %q names no variant", *vs)
	case c.workers < 2:
		return nil, fmt.Errorf("-workers %d, want ≥ 2", c.workers)
	case c.batch < 2:
		return nil, fmt.Errorf("-batch %d, want ≥ 2 (BN needs two samples)", c.batch)
	case c.classesPerWorker < 1 || c.classesPerWorker > mnist.Classes:
		return nil, fmt.Errorf("-classes-per-worker %d, want 1 … %d", c.classesPerWorker, mnist.Classes)
	case c.epochs < 1 || c.steps < 1:
		return nil, fmt.Errorf("-epochs %d and -steps %d must be ≥ 1", c.epochs, c.steps)
	case !(c.lr > 0):
		return nil, fmt.Errorf("-lr %v, want > 0", c.lr)
	case c.evalBatch < 2 || c.popSamples < 1:
		return nil, fmt.Errorf("-eval-batch %d (want ≥ 2) and -pop-samples %d (want ≥ 1)", c.evalBatch, c.popSamples)
	case o.seeds < 1:
		return nil, fmt.Errorf("-seeds %d, want ≥ 1", o.seeds)
	case o.trainN < 0 || o.testN < 0:
		return nil, fmt.Errorf("-train %d and -test %d must be ≥ 0", o.trainN, o.testN)
	}
	return o, nil
}

func main() {
	cli.Main("leakage", parseFlags, func(ctx context.Context, o *options) error {
		_, err := run(ctx, o, os.Stdout)
		return err
	})
}

// variantResult is every seed's epochs of one variant.
type variantResult struct {
	variant variant
	runs    [][]epochResult // [seed][epoch]
}

func run(ctx context.Context, o *options, w io.Writer) ([]variantResult, error) {
	stop, err := o.profile()
	if err != nil {
		return nil, err
	}
	defer stop()
	start := time.Now()
	trainAll, testAll, err := mnist.Load(o.data)
	if err != nil {
		return nil, err
	}
	cfg := o.cfg
	cfg.trainSet, cfg.testSet = trainAll.Head(o.trainN), testAll.Head(o.testN)
	cfg.evalBatch = min(cfg.evalBatch, cfg.testSet.Len())
	cfg.stage = cli.Stage(w)
	seeds, err := cli.Seeds(o.seeds)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(o.out, 0o755); err != nil {
		return nil, err
	}
	fmt.Fprintf(w, "MNIST: %d training, %d test images; %d workers × %d samples, %d class(es) per worker's batch; %d epochs of %d SGD steps at lr %g; %v; seeds %v\n",
		cfg.trainSet.Len(), cfg.testSet.Len(), cfg.workers, cfg.batch, cfg.classesPerWorker, cfg.epochs, cfg.steps, cfg.lr, cfg.dtype, seeds)
	var res []variantResult
	for _, v := range o.variants {
		vr := variantResult{variant: v}
		for _, seed := range seeds {
			c := cfg
			c.variant, c.seed = v, seed
			ep, err := train(ctx, c)
			if err != nil {
				return nil, fmt.Errorf("%v, seed %d: %w", v, seed, err)
			}
			vr.runs = append(vr.runs, ep)
		}
		res = append(res, vr)
	}
	var sb strings.Builder
	report(&sb, cfg, res)
	fmt.Fprintf(&sb, "\nTotal time: %v (GOMAXPROCS %d).\n", time.Since(start).Round(time.Second), runtime.GOMAXPROCS(0))
	fmt.Fprint(w, "\n"+sb.String())
	md := filepath.Join(o.out, "results.md")
	if err := os.WriteFile(md, []byte(sb.String()), 0o644); err != nil {
		return nil, err
	}
	png := filepath.Join(o.out, "leakage.png")
	if err := plot(png, res); err != nil {
		return nil, err
	}
	fmt.Fprintf(w, "wrote %s, %s\n", md, png)
	return res, nil
}

// final summarises f of the last epoch over the seeds.
func final(vr variantResult, f func(epochResult) float64) stats.Summary {
	v := make([]float64, len(vr.runs))
	for i, r := range vr.runs {
		v[i] = f(r[len(r)-1])
	}
	return stats.Of(v)
}

func report(w io.Writer, cfg config, res []variantResult) {
	es := cfg.dtype.Size()
	fmt.Fprintf(w, "After %d epochs, mean ± standard deviation over %d seed(s); communication per worker and step for BN, besides the gradient all-reduce of %.0f bytes every variant needs:\n\n",
		cfg.epochs, len(res[0].runs), gradientBytes(int(es)))
	fmt.Fprintln(w, "| variant | training batches, batch statistics | test, population statistics | gap | BN collectives / step | BN bytes sent / step |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|")
	for _, vr := range res {
		tr := final(vr, func(e epochResult) float64 { return e.trainAcc })
		te := final(vr, func(e epochResult) float64 { return e.testAcc })
		gap := final(vr, func(e epochResult) float64 { return e.trainAcc - e.testAcc })
		c := commPerStep(vr.variant, cfg.workers, cfg.batch, int(es))
		fmt.Fprintf(w, "| %v | %s %% | %s %% | %s points | %d | %.0f |\n", vr.variant, tr.Format("%.2f", 100), te.Format("%.2f", 100), gap.Format("%.1f", 100), c.collectives, c.bytes)
	}
}

// plot draws both accuracies per epoch with the spread over seeds.
func plot(path string, res []variantResult) error {
	panels := []plotutil.Panel{
		{Title: "training batches, batch statistics", XLabel: "epoch", YLabel: "accuracy (%)", IntegerXTicks: true, YMax: plotutil.Float(100)},
		{Title: "test set, population statistics", XLabel: "epoch", YLabel: "accuracy (%)", IntegerXTicks: true, YMax: plotutil.Float(100), NoLegend: true},
	}
	for i, vr := range res {
		for p, f := range []func(epochResult) float64{
			func(e epochResult) float64 { return 100 * e.trainAcc },
			func(e epochResult) float64 { return 100 * e.testAcc },
		} {
			runs := make([][]float64, len(vr.runs))
			for s, r := range vr.runs {
				for _, e := range r {
					runs[s] = append(runs[s], f(e))
				}
			}
			col := stats.Column(runs)
			x := make([]float64, len(col))
			for j := range x {
				x[j] = float64(j + 1)
			}
			panels[p].Series = append(panels[p].Series, plotutil.Series{Name: vr.variant.String(), X: x, Y: stats.Means(col), Err: stats.SDs(col), Color: i, Points: true, Dashed: vr.variant == iidBatches})
		}
	}
	return plotutil.SavePNG(path, 24*vg.Centimeter, 9*vg.Centimeter, panels...)
}
