// Command syncbn trains a small CNN with batch normalization on MNIST in
// data parallel with K workers of 2 samples each, and compares three runs
// that see exactly the same samples in the same order:
//
//   - per-worker BN: K workers, each BN layer normalizes over the worker's
//     own 2 samples (gradients averaged over the workers);
//   - SyncBN: K workers, each BN layer normalizes over all 2·K samples of
//     the step (bn.WithCommunicator), gradients averaged;
//   - one worker with batch 2·K and plain BN.
//
// SyncBN makes the K-worker run compute what the one-worker run computes:
// their parameters follow the same trajectory up to rounding. Per-worker BN
// normalizes with the statistics of 2 samples, a different and much noisier
// model.
//
// -depth adds BN blocks at 7×7 (98 values per channel at batch 2, against
// 1568 and 392 in the first two BN layers) and -act replaces ReLU; -precise
// also measures the train–test inconsistency directly: after training, the
// population statistics of every BN layer over the training images
// (bn.Precise, layer by layer), the test accuracy with them instead of the
// running statistics, and the running statistics' error against them.
//
// By default the workers are goroutines of this process (the in-process
// backend). Built with -tags mpi and started with mpirun, every MPI process
// is one worker (collective/mpi); the one-worker run then runs on rank 0.
//
// Every collective (the BN layers' and the data-parallel ones) is bounded
// by -sync-timeout: a rank that stopped, crashed or became unreachable makes
// the others fail with an error naming it instead of waiting forever. Rank 0
// can write the training state every -checkpoint-every steps (-checkpoint)
// and a later run resumes from it (-resume). The last lines print a hash of
// each run's parameters and running statistics: equal hashes, bitwise-equal
// states (README "Across hosts" runs it on 4 hosts and compares).
//
//	go run ./examples/syncbn
//	go build -tags mpi -o syncbn ./examples/syncbn && mpirun -np 4 ./syncbn
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/gorgonia-bn/bn"
	"github.com/gorgonia-bn/bn/collective"
	"github.com/gorgonia-bn/bn/examples/internal/cli"
	"github.com/gorgonia-bn/bn/examples/internal/cnn"
	"github.com/gorgonia-bn/bn/examples/internal/mnist"
	"github.com/gorgonia-bn/bn/examples/internal/plotutil"
	"github.com/gorgonia-bn/bn/examples/internal/stats"
	"gonum.org/v1/plot/vg"
)

type options struct {
	workers, batch, steps int
	trainN, testN, evalN  int
	evalEvery, evalBatch  int
	lr, mom               float64
	seed                  int64
	dtype                 string
	runs, plot, dataDir   string
	quiet                 bool
	syncTimeout           time.Duration
	checkpoint, resume    string
	ckptEvery, seeds      int
	act                   cnn.Activation
	depth                 int
	precise               bool
	profile               func() (func() error, error)
}

// quickFlags are the flag values of -quick (a small configuration for tests
// and a first look; flags given explicitly win).
var quickFlags = map[string]string{"steps": "300", "train": "2400", "test": "2000", "eval": "1000", "eval-every": "100"}

func parseFlags(args []string, stderr io.Writer) (*options, error) {
	var o options
	fs := cli.NewFlagSet("syncbn", "Data-parallel training at 2 samples per worker: per-worker BN vs SyncBN vs one worker with the whole batch (in-process workers; MPI processes with -tags mpi).", stderr)
	fs.IntVar(&o.workers, "workers", 4, "data-parallel workers (in-process; under MPI the number of processes)")
	fs.IntVar(&o.batch, "batch", 2, "samples per worker and step")
	fs.IntVar(&o.steps, "steps", 3000, "training steps")
	fs.IntVar(&o.trainN, "train", 24000, "training images used (the first N of the 60000; 0: all)")
	fs.IntVar(&o.testN, "test", 10000, "test images for the final accuracy (the first N; 0: all)")
	fs.IntVar(&o.evalN, "eval", 2000, "test images for the accuracy during training")
	fs.IntVar(&o.evalEvery, "eval-every", 500, "steps between accuracy measurements (0: at the end only)")
	fs.IntVar(&o.evalBatch, "eval-batch", 100, "batch size of the evaluation (each worker holds one evaluation graph of this batch)")
	fs.Float64Var(&o.lr, "lr", 0.02, "learning rate (SGD with momentum)")
	fs.Float64Var(&o.mom, "momentum", 0.9, "momentum")
	fs.Int64Var(&o.seed, "seed", 1, "seed of the weights and the data order (the first, with -seeds)")
	fs.IntVar(&o.seeds, "seeds", 1, "runs with the seeds -seed, -seed+1, …: a table per seed, then the final accuracies' mean ± standard deviation and per-worker BN minus SyncBN (plot: the last seed)")
	fs.StringVar(&o.dtype, "dtype", "float64", "float64 or float32")
	fs.StringVar(&o.runs, "runs", "local,sync,single", "runs to make: local (per-worker BN), sync (SyncBN), single (one worker, whole batch)")
	fs.StringVar(&o.plot, "plot", filepath.Join("out", "syncbn", "syncbn.png"), "PNG file of the curves (empty: none); its folder is created")
	fs.StringVar(&o.dataDir, "data", "", "folder of the MNIST idx files (default: the GoMNIST module's)")
	fs.BoolVar(&o.quiet, "q", false, "no progress output")
	fs.DurationVar(&o.syncTimeout, "sync-timeout", bn.DefaultSyncTimeout, "bound on each collective (SyncBN's and the data-parallel ones): past it a rank fails with an error naming it")
	fs.StringVar(&o.checkpoint, "checkpoint", "", "file rank 0 writes the training state to every -checkpoint-every steps (one run in -runs)")
	fs.IntVar(&o.ckptEvery, "checkpoint-every", 100, "steps between checkpoints")
	fs.StringVar(&o.resume, "resume", "", "checkpoint file to resume from (rank 0 reads it; one run in -runs; the solver's momentum restarts from zero)")
	act := fs.String("act", "relu", "activation after every convolution and its BN: relu, sigmoid or tanh")
	fs.IntVar(&o.depth, "depth", 0, fmt.Sprintf("extra blocks conv 3×3 (%d) → BN → activation at 7×7 after the second pool (0 … %d)", cnn.C2, cnn.MaxDepth))
	fs.BoolVar(&o.precise, "precise", false, "after training, also compute each BN layer's population statistics over the training images (bn.Precise, layer by layer, forward only) and report the test accuracy with them and the error of the running statistics")
	o.profile = cli.CPUProfile(fs)
	quick := cli.Quick(fs, quickFlags)
	if err := cli.Parse(fs, args); err != nil {
		return nil, err
	}
	if err := quick(); err != nil {
		return nil, err
	}
	var err error
	if o.act, err = cnn.ParseActivation(*act); err != nil {
		return nil, fmt.Errorf("-act: %w", err)
	}
	if o.depth < 0 || o.depth > cnn.MaxDepth {
		return nil, fmt.Errorf("-depth %d, want 0 … %d", o.depth, cnn.MaxDepth)
	}
	if _, err := cli.Dtype(o.dtype); err != nil {
		return nil, err
	}
	if o.workers < 1 || o.batch < 1 || o.steps < 1 || o.evalBatch < 1 || o.ckptEvery < 1 {
		return nil, errors.New("-workers, -batch, -steps, -eval-batch and -checkpoint-every must be ≥ 1")
	}
	if o.trainN < 0 || o.testN < 0 || o.evalN < 0 || o.evalEvery < 0 {
		return nil, errors.New("-train, -test, -eval and -eval-every must be ≥ 0")
	}
	for _, name := range strings.Split(o.runs, ",") {
		switch strings.TrimSpace(name) {
		case "local", "sync", "single":
		default:
			return nil, fmt.Errorf("-runs: unknown run %q (want local, sync, single)", name)
		}
	}
	if o.seeds < 1 {
		return nil, fmt.Errorf("-seeds %d, want ≥ 1", o.seeds)
	}
	if (o.checkpoint != "" || o.resume != "") && (strings.Contains(o.runs, ",") || o.seeds > 1) {
		return nil, errors.New("-checkpoint and -resume need a single run in -runs and one seed")
	}
	if o.syncTimeout <= 0 {
		return nil, errors.New("-sync-timeout must be positive")
	}
	return &o, nil
}

func main() {
	cli.Main("syncbn", parseFlags, func(ctx context.Context, o *options) error {
		stop, err := o.profile()
		if err != nil {
			return err
		}
		defer stop()
		return launch(func(w *world) error { return run(ctx, w, *o) })
	})
}

func run(ctx context.Context, w *world, o options) error {
	o.workers = w.workers(o.workers)
	dt, err := cli.Dtype(o.dtype)
	if err != nil {
		return err
	}
	logf := func(format string, args ...any) {
		if !o.quiet && w.root() {
			fmt.Printf(format+"\n", args...)
		}
	}
	t0 := time.Now()
	train, test, err := mnist.Load(o.dataDir)
	if err != nil {
		return err
	}
	d := &data{train: train.Head(o.trainN), test: test.Head(o.testN)}
	d.evalSet = d.test.Head(o.evalN)
	logf("MNIST: %d training images used, %d test images (%d during training), loaded in %.1f s; backend %s",
		d.train.Len(), d.test.Len(), d.evalSet.Len(), time.Since(t0).Seconds(), w.name(o.workers))

	base := runConfig{workers: o.workers, batch: o.batch, steps: o.steps, lr: o.lr, mom: o.mom,
		evalEvery: o.evalEvery, evalBatch: o.evalBatch, seed: o.seed, dtype: dt,
		syncTimeout: o.syncTimeout, checkpoint: o.checkpoint, ckptEvery: o.ckptEvery, resume: o.resume,
		act: o.act, depth: o.depth, precise: o.precise}
	var results []*runResult
	final := map[string][]float64{} // final test accuracy per run, over the seeds
	var names []string
	var perSeed [][]*runResult
	for i := range o.seeds {
		base.seed = o.seed + int64(i)
		if o.seeds > 1 {
			logf("seed %d (%d of %d)", base.seed, i+1, o.seeds)
		}
		if results, err = runAll(ctx, w, o, base, d, logf); err != nil {
			return err
		}
		perSeed = append(perSeed, results)
		for _, r := range results {
			if _, ok := final[r.cfg.name]; !ok {
				names = append(names, r.cfg.name)
			}
			final[r.cfg.name] = append(final[r.cfg.name], r.finalAcc)
		}
		if o.seeds > 1 && i < o.seeds-1 && w.root() {
			fmt.Print(table(results))
			fmt.Print(preciseTable(results))
		}
	}
	if !w.root() {
		return nil
	}
	fmt.Println()
	fmt.Print(table(results))
	fmt.Print(preciseTable(results))
	if o.seeds > 1 {
		fmt.Print(seedTable(names, final, o.seed))
		fmt.Print(preciseSeedTable(perSeed, o.seed))
	}
	// One line per run that identifies its final state bit for bit: equal
	// hashes mean bitwise-equal parameters and running statistics.
	for _, r := range results {
		fmt.Printf("state %s: %s (%d parameters, %d running statistics, test accuracy %.4f)\n",
			r.cfg.name, stateHash(r.params, r.stats), len(r.params), len(r.stats), r.finalAcc)
	}
	if o.plot != "" {
		if err := os.MkdirAll(filepath.Dir(o.plot), 0o755); err != nil {
			return err
		}
		if err := plotResults(o.plot, d.evalSet.Len(), results); err != nil {
			return err
		}
		fmt.Printf("plot: %s\n", o.plot)
	}
	fmt.Printf("total time %.1f s\n", time.Since(t0).Seconds())
	return nil
}

// seedTable summarises the final test accuracy of every run over the
// seeds, and per-worker BN's difference to SyncBN seed by seed.
func seedTable(names []string, final map[string][]float64, first int64) string {
	var b strings.Builder
	n := len(final[names[0]])
	fmt.Fprintf(&b, "\nFinal test accuracy over %d seeds (%d … %d), mean ± standard deviation [each seed]:\n\n| run | test accuracy %% |\n|---|---|\n", n, first, first+int64(n)-1)
	for _, name := range names {
		fmt.Fprintf(&b, "| %s | %s %v |\n", name, stats.Of(final[name]).Format("%.2f", 100), percents(final[name]))
	}
	if l, s := final["per-worker BN"], final["SyncBN"]; l != nil && s != nil {
		d := make([]float64, len(l))
		for i := range l {
			d[i] = l[i] - s[i]
		}
		fmt.Fprintf(&b, "\nper-worker BN minus SyncBN: %s points %v\n", stats.Of(d).Format("%+.2f", 100), percents(d))
	}
	return b.String()
}

func percents(v []float64) []string {
	out := make([]string, len(v))
	for i, x := range v {
		out[i] = fmt.Sprintf("%.2f", 100*x)
	}
	return out
}

// runAll makes the runs -runs names with base's configuration.
func runAll(ctx context.Context, w *world, o options, base runConfig, d *data, logf func(string, ...any)) ([]*runResult, error) {
	var results []*runResult
	var err error
	for _, name := range strings.Split(o.runs, ",") {
		cfg := base
		switch strings.TrimSpace(name) {
		case "local":
			cfg.name = "per-worker BN"
		case "sync":
			cfg.name, cfg.syncBN = "SyncBN", true
		case "single":
			cfg.name, cfg.workers, cfg.batch = "one worker", 1, o.workers*o.batch
		default:
			return nil, fmt.Errorf("-runs: unknown run %q (want local, sync, single)", name)
		}
		var res *runResult
		if cfg.workers == 1 {
			res, err = w.single(ctx, func() (*runResult, error) { return worker(ctx, nil, cfg, d, logf) })
		} else {
			res, err = w.group(ctx, cfg.workers, func(ctx context.Context, c collective.Communicator) (*runResult, error) {
				return worker(ctx, c, cfg, d, logf)
			})
		}
		if err != nil {
			return nil, err
		}
		results = append(results, res)
	}
	return results, nil
}

// table formats the results as a Markdown table, with the distance between
// the SyncBN and one-worker parameters when both ran.
func table(rs []*runResult) string {
	var b strings.Builder
	fmt.Fprintf(&b, "| run | workers × batch | BN normalizes over | train loss (last 10%% of steps) | test accuracy | training time | ms/step |\n")
	fmt.Fprintf(&b, "|---|---|---|---|---|---|---|\n")
	var syncP, singleP []float64
	for _, r := range rs {
		c := r.cfg
		over := fmt.Sprintf("%d samples", c.batch)
		if c.syncBN {
			over = fmt.Sprintf("%d samples (all workers)", c.batch*c.workers)
			syncP = r.params
		} else if c.workers == 1 {
			singleP = r.params
		}
		tail := r.loss[len(r.loss)-max(1, len(r.loss)/10):]
		fmt.Fprintf(&b, "| %s | %d × %d | %s | %.4f | %.2f%% | %.1f s | %.2f |\n", c.name, c.workers, c.batch, over,
			mean(tail), 100*r.finalAcc, r.train.Seconds(), 1e3*r.train.Seconds()/float64(c.steps))
	}
	if syncP != nil && singleP != nil && len(syncP) == len(singleP) {
		d, m := 0.0, 0.0
		for i := range syncP {
			d = max(d, math.Abs(syncP[i]-singleP[i]))
			m = max(m, math.Abs(singleP[i]))
		}
		fmt.Fprintf(&b, "\nSyncBN vs one worker after training: max |Δθ| = %.3g (max |θ| = %.3g)\n", d, m)
	}
	return b.String()
}

// plotResults draws the training loss (moving average) and the test
// accuracy of each run.
func plotResults(path string, evalN int, rs []*runResult) error {
	var loss, acc []plotutil.Series
	lo, hi := 100.0, 0.0
	both := 0
	for _, r := range rs {
		if r.cfg.syncBN || r.cfg.workers == 1 {
			both++
		}
	}
	for i, r := range rs {
		name := r.cfg.name
		if both == 2 && r.cfg.workers == 1 {
			// Its curves lie on SyncBN's (equal up to rounding).
			name += " (on top of SyncBN: equal up to rounding)"
		}
		x := make([]float64, len(r.loss))
		for s := range x {
			x[s] = float64(s + 1)
		}
		win := max(1, len(r.loss)/30)
		loss = append(loss, plotutil.Series{Name: name, X: x, Y: plotutil.MovingAverage(r.loss, win), Color: i, Dashed: r.cfg.workers == 1})
		ax, ay := make([]float64, len(r.testAcc)), make([]float64, len(r.testAcc))
		for k := range ax {
			ax[k], ay[k] = float64(r.evalStep[k]), 100*r.testAcc[k]
			lo, hi = min(lo, ay[k]), max(hi, ay[k])
		}
		acc = append(acc, plotutil.Series{Name: name, X: ax, Y: ay, Color: i, Dashed: r.cfg.workers == 1, Points: true})
	}
	// Head room for the legend above the curves.
	top := plotutil.Float(min(100, hi+0.6*(hi-lo)+0.5))
	return plotutil.SavePNG(path, 26*vg.Centimeter, 10*vg.Centimeter,
		plotutil.Panel{Title: "training loss (moving average)", XLabel: "step", YLabel: "cross-entropy", Series: loss, LogY: true},
		plotutil.Panel{Title: fmt.Sprintf("test accuracy, %d images (running statistics)", evalN), XLabel: "step", YLabel: "%", Series: acc, YMax: top})
}
