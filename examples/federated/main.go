// Command federated shows seed 000's warning about batch normalization in
// federated learning on real MNIST, and its fix.
//
// K nodes hold shards of the training set — label-skewed (about two classes
// per node) or i.i.d. — and train the small CNN of examples/internal/cnn
// with FedAvg: every round each node starts from the server's weights,
// takes a few SGD steps on its shard, and the server averages the weights.
// The server then needs BN statistics for the averaged model, three ways:
//
//	(a) the average of the nodes' running mean and variance (what FedAvg
//	    does with a model's state; seed 000: "taking the weighted average of
//	    the variances of each small dataset is not equivalent to the variance
//	    of the entire dataset");
//	(b) the exact merge of the nodes' population statistics: each node runs
//	    a PreciseBN pass of the averaged model over its shard and sends its
//	    bn.Population (count, mean, M2 per channel); the server merges them
//	    offline with bn.MergePopulations — layer by layer, so each layer's
//	    statistics are those of the inputs it sees at inference;
//	(c) PreciseBN over the union of the data, as if the server held it all
//	    (the truth).
//
// It reports the test accuracy per round with each, and the error of (a)
// and (b) against (c) per layer, over several seeds.
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
	"github.com/gorgonia-bn/bn/examples/internal/cnn"
	"github.com/gorgonia-bn/bn/examples/internal/mnist"
	"github.com/gorgonia-bn/bn/examples/internal/plotutil"
	"github.com/gorgonia-bn/bn/examples/internal/stats"
	"gonum.org/v1/plot/vg"
)

type options struct {
	cfg              config
	seeds            int
	splits           []split
	trainN, testN    int
	out, data, split string
	profile          func() (func() error, error)
}

func parseFlags(args []string, stderr io.Writer) (*options, error) {
	o := &options{}
	c := &o.cfg
	fs := cli.NewFlagSet("federated", "FedAvg on MNIST shards: BN statistics from averaged running stats vs merged populations vs PreciseBN over the union.", stderr)
	fs.IntVar(&c.nodes, "nodes", 5, "nodes (4 … 8 in the claim); the label-skewed split gives each about two classes")
	fs.IntVar(&c.rounds, "rounds", 4, "FedAvg rounds")
	fs.IntVar(&c.localSteps, "local-steps", 30, "SGD steps of every node per round")
	fs.IntVar(&c.batch, "batch", 32, "training batch size")
	fs.IntVar(&c.popBatch, "pop-batch", 200, "batch of the population passes and the test evaluation")
	fs.Float64Var(&c.lr, "lr", 0.05, "SGD learning rate")
	fs.BoolVar(&c.truthEveryRound, "truth-every-round", false, "compute (c), PreciseBN over the union, every round (default: the last round only; the other rounds measure (a) against (b))")
	fs.IntVar(&o.seeds, "seeds", 3, "seeds (1 … N) per split: the weights, the shards and the data order")
	fs.IntVar(&o.trainN, "train", 4000, "training images shared among the nodes (the first N of the 60000)")
	fs.IntVar(&o.testN, "test", 2000, "test images (the first N of the 10000)")
	fs.StringVar(&o.split, "split", "label,feature,iid", "comma-separated splits: label (label-skewed: about two classes per node), feature (each node's images with its own contrast and brightness), iid")
	fs.StringVar(&o.out, "out", filepath.Join("out", "federated"), "output folder")
	fs.StringVar(&o.data, "data", "", "folder of the MNIST idx .gz files (default: the GoMNIST module's)")
	dtype := fs.String("dtype", "float32", "element type: float32 or float64")
	quick := cli.Quick(fs, map[string]string{"nodes": "4", "rounds": "3", "local-steps": "30", "train": "2000", "test": "1000", "seeds": "1"})
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
	for _, s := range cli.Items(o.split) {
		i := slices.Index(splitFlags[:], s)
		if i < 0 {
			return nil, fmt.Errorf("-split: %q is not one of %s", s, strings.Join(splitFlags[:], ", "))
		}
		o.splits = append(o.splits, split(i))
	}
	switch {
	case len(o.splits) == 0:
		return nil, fmt.Errorf("-split %q names no split", o.split)
	case c.nodes < 2:
		return nil, fmt.Errorf("-nodes %d, want ≥ 2", c.nodes)
	case c.rounds < 1 || c.localSteps < 1:
		return nil, fmt.Errorf("-rounds %d and -local-steps %d must be ≥ 1", c.rounds, c.localSteps)
	case c.batch < 2:
		return nil, fmt.Errorf("-batch %d, want ≥ 2 (BN needs two samples)", c.batch)
	case c.popBatch < 2:
		return nil, fmt.Errorf("-pop-batch %d, want ≥ 2", c.popBatch)
	case !(c.lr > 0):
		return nil, fmt.Errorf("-lr %v, want > 0", c.lr)
	case o.seeds < 1:
		return nil, fmt.Errorf("-seeds %d, want ≥ 1", o.seeds)
	case o.trainN < 0 || o.testN < 0:
		return nil, fmt.Errorf("-train %d and -test %d must be ≥ 0", o.trainN, o.testN)
	}
	return o, nil
}

func main() {
	cli.Main("federated", parseFlags, func(ctx context.Context, o *options) error {
		_, err := run(ctx, o, os.Stdout)
		return err
	})
}

// splitResult is every seed's rounds for one split.
type splitResult struct {
	split split
	runs  [][]roundResult // [seed][round]
}

func run(ctx context.Context, o *options, w io.Writer) ([]splitResult, error) {
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
	trainSet, test := trainAll.Head(o.trainN), testAll.Head(o.testN)
	cfg := o.cfg
	cfg.popBatch = min(cfg.popBatch, test.Len())
	seeds, err := cli.Seeds(o.seeds)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(o.out, 0o755); err != nil {
		return nil, err
	}
	fmt.Fprintf(w, "MNIST: %d training images over %d nodes, %d test images; %d rounds of %d local SGD steps (batch %d, lr %g), %v, seeds %v\n",
		trainSet.Len(), cfg.nodes, test.Len(), cfg.rounds, cfg.localSteps, cfg.batch, cfg.lr, cfg.dtype, seeds)
	stage := cli.Stage(w)
	var res []splitResult
	for _, sp := range o.splits {
		sr := splitResult{split: sp}
		for _, seed := range seeds {
			c := cfg
			c.split, c.seed = sp, seed
			rounds, err := federate(ctx, c, trainSet, test, stage)
			if err != nil {
				return nil, fmt.Errorf("%s, seed %d: %w", sp, seed, err)
			}
			sr.runs = append(sr.runs, rounds)
		}
		res = append(res, sr)
	}
	var sb strings.Builder
	report(&sb, cfg, res)
	fmt.Fprintf(&sb, "\nTotal time: %v (GOMAXPROCS %d).\n", time.Since(start).Round(time.Second), runtime.GOMAXPROCS(0))
	fmt.Fprint(w, "\n"+sb.String())
	md := filepath.Join(o.out, "results.md")
	if err := os.WriteFile(md, []byte(sb.String()), 0o644); err != nil {
		return nil, err
	}
	png := filepath.Join(o.out, "federated.png")
	if err := plot(png, res); err != nil {
		return nil, err
	}
	fmt.Fprintf(w, "wrote %s, %s\n", md, png)
	return res, nil
}

// final returns f of the last round of every seed.
func final(sr splitResult, f func(roundResult) float64) stats.Summary {
	v := make([]float64, len(sr.runs))
	for i, r := range sr.runs {
		v[i] = f(r[len(r)-1])
	}
	return stats.Of(v)
}

func report(w io.Writer, cfg config, res []splitResult) {
	fmt.Fprintf(w, "Final round (%d), mean ± standard deviation over %d seed(s):\n\n", cfg.rounds, len(res[0].runs))
	fmt.Fprintln(w, "| shards | test acc. (a) averaged running stats | (b) merged populations | (c) PreciseBN on the union | (b) − (a) | max rel. \\|(b) − (c)\\| |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|")
	for _, sr := range res {
		acc := func(way int) stats.Summary { return final(sr, func(r roundResult) float64 { return r.acc[way] }) }
		gain := final(sr, func(r roundResult) float64 { return r.acc[merged] - r.acc[avgRunning] })
		rel := final(sr, func(r roundResult) float64 { return r.maxRel })
		fmt.Fprintf(w, "| %s | %s %% | %s %% | %s %% | %s points | %.1e (largest %.1e) |\n", sr.split,
			acc(avgRunning).Format("%.2f", 100), acc(merged).Format("%.2f", 100), acc(union).Format("%.2f", 100),
			gain.Format("%+.2f", 100), rel.Mean, rel.Max)
	}
	fmt.Fprintln(w, "\nError of the statistics against (c), final round (RMS over channels of (μ−μc)/σc and σ²/σc² − 1):")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| shards | layer | mean error (a) | mean error (b) | variance error (a) | variance error (b) |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|")
	for _, sr := range res {
		for l, name := range cnn.LayerNames {
			e := func(way int, mean bool) stats.Summary {
				return final(sr, func(r roundResult) float64 {
					if mean {
						return r.meanErr[way][l]
					}
					return r.varErr[way][l]
				})
			}
			fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s |\n", sr.split, name,
				e(0, true).Format("%.3f", 1), e(1, true).Format("%.1e", 1), e(0, false).Format("%.3f", 1), e(1, false).Format("%.1e", 1))
		}
	}
}

// plot draws the test accuracy per round of (a), (b) and (c) with the
// spread over seeds, one panel per split.
func plot(path string, res []splitResult) error {
	var panels []plotutil.Panel
	for i, sr := range res {
		p := plotutil.Panel{Title: sr.split.String() + " shards", XLabel: "round", YLabel: "test accuracy (%)", IntegerXTicks: true, NoLegend: i > 0}
		for way := range ways {
			runs := make([][]float64, len(sr.runs))
			for s, r := range sr.runs {
				for _, rr := range r {
					runs[s] = append(runs[s], 100*rr.acc[way])
				}
			}
			col := stats.Column(runs)
			x := make([]float64, len(col))
			for j := range x {
				x[j] = float64(j + 1)
			}
			p.Series = append(p.Series, plotutil.Series{Name: wayNames[way], X: x, Y: stats.Means(col), Err: stats.SDs(col), Color: way, Dashed: way == union, Points: true})
		}
		panels = append(panels, p)
	}
	return plotutil.SavePNG(path, vg.Length(len(panels))*12*vg.Centimeter, 9*vg.Centimeter, panels...)
}
