//go:build !mpi

package main

import (
	"context"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gorgonia-bn/bn/collective"
	"github.com/gorgonia-bn/bn/examples/internal/mnist/mnisttest"
	"gorgonia.org/tensor"
)

func loadSmall(t *testing.T) *data {
	t.Helper()
	train, test := mnisttest.Load(t, 400, 100)
	d := &data{train: train, test: test}
	d.evalSet = d.test.Head(50)
	return d
}

// TestSyncBNMatchesOneWorker: on real MNIST, 4 workers × 2 samples with
// SyncBN follow the parameter trajectory of one worker with 8 samples and
// plain BN (float64, up to rounding); per-worker BN does not.
func TestSyncBNMatchesOneWorker(t *testing.T) {
	d := loadSmall(t)
	ctx := context.Background()
	base := runConfig{workers: 4, batch: 2, steps: 20, lr: 0.02, mom: 0.9, evalEvery: 10, evalBatch: 50, seed: 3, dtype: tensor.Float64}
	rl, rs, r1 := runThree(ctx, t, d, base)
	if len(rs.loss) != base.steps || len(rs.testAcc) != 2 {
		t.Fatalf("%d losses, %d accuracies; want %d, 2", len(rs.loss), len(rs.testAcc), base.steps)
	}
	if dd := maxDiff(rs.params, r1.params); !(dd < 1e-9) {
		t.Errorf("SyncBN vs one worker: max |Δθ| = %g", dd)
	}
	if dd := maxDiff(rs.loss, r1.loss); !(dd < 1e-9) {
		t.Errorf("SyncBN vs one worker: max |Δloss| = %g", dd)
	}
	if rs.finalAcc != r1.finalAcc {
		t.Errorf("accuracy %v (SyncBN) vs %v (one worker)", rs.finalAcc, r1.finalAcc)
	}
	if dd := maxDiff(rl.params, r1.params); !(dd > 1e-4) {
		t.Errorf("per-worker BN within %g of the one-worker model", dd)
	}
	for _, r := range []*runResult{rl, rs, r1} {
		if !(r.finalAcc > 0.3) {
			t.Errorf("%s: accuracy %v after %d steps", r.cfg.name, r.finalAcc, r.cfg.steps)
		}
	}
	out := table([]*runResult{rl, rs, r1})
	if !strings.Contains(out, "SyncBN vs one worker") || strings.Count(out, "\n| ") != 3 {
		t.Errorf("table:\n%s", out)
	}
	png := filepath.Join(t.TempDir(), "p.png")
	if err := plotResults(png, d.evalSet.Len(), []*runResult{rl, rs, r1}); err != nil {
		t.Fatal(err)
	}
	if st, err := os.Stat(png); err != nil || st.Size() < 1000 {
		t.Fatalf("plot: %v, %v", st, err)
	}
}

func TestParseFlags(t *testing.T) {
	for _, args := range [][]string{
		{"-workers", "0"}, {"-eval-batch", "0"}, {"-runs", "foo"}, {"-dtype", "int"}, {"-sync-timeout", "0s"},
		{"-checkpoint", "x", "-runs", "local,sync"}, {"-train", "-1"}, {"extra"}, {"-steps", "x"},
	} {
		if _, err := parseFlags(args, io.Discard); err == nil {
			t.Errorf("%q: no error", args)
		}
	}
	o, err := parseFlags([]string{"-runs", "sync", "-plot", ""}, io.Discard)
	if err != nil || o.runs != "sync" || o.plot != "" {
		t.Errorf("%+v, %v", o, err)
	}
}

func TestSeedTable(t *testing.T) {
	got := seedTable([]string{"per-worker BN", "SyncBN"}, map[string][]float64{"per-worker BN": {0.95, 0.97}, "SyncBN": {0.96, 0.96}}, 3)
	for _, want := range []string{"over 2 seeds (3 … 4)", "| per-worker BN | 96.00 ± 1.41 [95.00 97.00] |", "per-worker BN minus SyncBN: +0.00 ± 1.41 points [-1.00 1.00]"} {
		if !strings.Contains(got, want) {
			t.Errorf("table lacks %q:\n%s", want, got)
		}
	}
}

// runThree runs base as per-worker BN and as SyncBN on base.workers
// in-process workers, and as one worker with the whole batch (workers ×
// batch samples): the three runs of the example.
func runThree(ctx context.Context, t *testing.T, d *data, base runConfig) (local, sync, single *runResult) {
	t.Helper()
	quiet := func(string, ...any) {}
	w := &world{}
	group := func(cfg runConfig) *runResult {
		t.Helper()
		res, err := w.group(ctx, cfg.workers, func(ctx context.Context, c collective.Communicator) (*runResult, error) {
			return worker(ctx, c, cfg, d, quiet)
		})
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	lc, sc, oc := base, base, base
	lc.name = "per-worker BN"
	sc.name, sc.syncBN = "SyncBN", true
	oc.name, oc.workers, oc.batch = "one worker", 1, base.workers*base.batch
	local, sync = group(lc), group(sc)
	single, err := worker(ctx, nil, oc, d, quiet)
	if err != nil {
		t.Fatal(err)
	}
	return local, sync, single
}

// maxDiff is max |a[i] − b[i]|, +Inf when the lengths differ.
func maxDiff(a, b []float64) float64 {
	if len(a) != len(b) {
		return math.Inf(1)
	}
	m := 0.0
	for i := range a {
		m = max(m, math.Abs(a[i]-b[i]))
	}
	return m
}
