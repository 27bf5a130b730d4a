package main

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gorgonia-bn/bn/examples/internal/mnist/mnisttest"
)

// TestSweepPreciseBeatsEMAAtLargeBatch trains the largest batch of a tiny
// sweep (1 024 MNIST images, batch 256 at the linearly scaled learning rate
// 0.0125·256/32 = 0.1, 4 epochs: 16 steps) and checks, against the
// population statistics of the training images (layer by layer, as at
// inference: an estimate independent of both), that the PreciseBN
// statistics of the sweep are closer than the EMA's in every layer, for the
// mean and for the variance. It checks nothing about the smaller batches
// or the accuracy (not robust at this size; see the README).
func TestSweepPreciseBeatsEMAAtLargeBatch(t *testing.T) {
	ctx := context.Background()
	trainSet, test := mnisttest.Load(t, 1024, 500)
	base := smallConfig()
	base.evalBatch = 256
	s := sweepConfig{base: base, batches: []int{16, 256}, baseLR: 0.0125, baseBatch: 32}
	ps := s.points()
	p := ps[len(ps)-1]
	if p.batch != 256 || p.lr != 0.1 {
		t.Fatalf("largest point %+v, want batch 256 at lr 0.1", p)
	}
	m, cfg, err := trainPoint(ctx, base, p, 4, 3, trainSet, test, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	r, err := measurePoint(ctx, m, cfg, p, trainSet, test, nil)
	if err != nil {
		t.Fatal(err)
	}
	truth, err := m.trueStats(ctx, trainSet, nil)
	if err != nil {
		t.Fatal(err)
	}
	for l, name := range layerNames {
		pm, pv := statError(r.precise[l], truth[l])
		em, ev := statError(r.ema[l], truth[l])
		t.Logf("%s: error against the population: mean PreciseBN %.2g, EMA %.4f; variance PreciseBN %.2g, EMA %.4f (EMA vs PreciseBN as reported: %.4f, %.4f)",
			name, pm, em, pv, ev, r.meanErr[l], r.varErr[l])
		if !(pm < em) || !(pv < ev) {
			t.Errorf("%s: PreciseBN errors (%.3g, %.3g) not below the EMA's (%.3g, %.3g)", name, pm, pv, em, ev)
		}
	}
	t.Logf("steps %d, start-up weight %.3f, accuracy EMA %.3f, PreciseBN %.3f, EMA without start-up %.3f", r.steps, r.startup, r.emaAcc, r.preciseAcc, r.corrAcc)
}

// TestUnbiased checks the start-up correction on an EMA built by hand: the
// EMA of constant batch statistics s from r0 is w·r0 + (1−w)·s, and the
// correction recovers s.
func TestUnbiased(t *testing.T) {
	const m, steps = 0.1, 7
	r0 := modelStats{{mean: []float64{0, 0}, variance: []float64{1, 1}}}
	s := layerStats{mean: []float64{3, -2}, variance: []float64{0.5, 4}}
	r := modelStats{{mean: []float64{0, 0}, variance: []float64{1, 1}}}
	for range steps {
		for c := range 2 {
			r[0].mean[c] = (1-m)*r[0].mean[c] + m*s.mean[c]
			r[0].variance[c] = (1-m)*r[0].variance[c] + m*s.variance[c]
		}
	}
	w := 1.0
	for range steps {
		w *= 1 - m
	}
	got := unbiased(r, r0, w)
	for c := range 2 {
		if d := got[0].mean[c] - s.mean[c]; d*d > 1e-24 {
			t.Errorf("mean %d: %v, want %v", c, got[0].mean[c], s.mean[c])
		}
		if d := got[0].variance[c] - s.variance[c]; d*d > 1e-24 {
			t.Errorf("variance %d: %v, want %v", c, got[0].variance[c], s.variance[c])
		}
	}
}

// TestRunSweepSmall runs the sweep mode on a tiny configuration with two
// seeds and checks its outputs; one learning rate (1000) diverges, which
// gives NaN cells, not the end of the sweep.
func TestRunSweepSmall(t *testing.T) {
	out := t.TempDir()
	o, err := parseFlags([]string{"-sweep", "32,64", "-sweep-lrs", "0.05,0.2,1000", "-lr-batch", "32", "-epochs", "1", "-sweep-images", "256",
		"-test-subset", "200", "-eval-batch", "100", "-seeds", "2", "-out", out}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	var sb strings.Builder
	if err := run(context.Background(), o, &sb, nil); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"seeds [1 2]", "| 32 | 0.0125 | 8 |", "| 64 | 0.025 | 4 |", "Learning rate at a fixed batch of 32", "| 32 | 0.2 | 8 |",
		"seed 2, batch 64, lr 0.025: training, 4 steps", "start-up removed",
		"seed 2: batch 32, lr 1000: training diverged", "| 32 | 1000 | 8 | 0.43 | NaN ± NaN [NaN NaN] |"} {
		if !strings.Contains(sb.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, sb.String())
		}
	}
	for _, f := range []string{"sweep.png", "sweep.md"} {
		if st, err := os.Stat(filepath.Join(out, f)); err != nil || st.Size() == 0 {
			t.Errorf("%s: %v", f, err)
		}
	}
}

func TestParseSweepFlags(t *testing.T) {
	for _, args := range [][]string{
		{"-sweep", "0"}, {"-sweep", "1"}, {"-sweep", "32,x"}, {"-sweep", "32", "-sweep-lrs", "0"}, {"-sweep", "32", "-sweep-lrs", "-1"},
		{"-sweep", "32", "-base-lr", "0"}, {"-sweep", "32", "-base-batch", "0"}, {"-sweep", "32", "-epochs", "0"},
		{"-sweep", "32", "-sweep-images", "16"}, {"-sweep", "32", "-lr-batch", "1"}, {"-sweep-images", "1"},
	} {
		if _, err := parseFlags(args, io.Discard); err == nil {
			t.Errorf("%q: no error", args)
		}
	}
	o, err := parseFlags([]string{"-sweep", "32,1024", "-seeds", "3", "-seed", "5"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	ps := o.sweep.points()
	if len(ps) != 5 || ps[1].batch != 1024 || ps[1].lr != 0.4 || ps[2].batch != 256 || ps[4].lr != 0.4 || len(o.sweep.seeds) != 3 || o.sweep.seeds[2] != 7 {
		t.Errorf("points %+v, seeds %v", ps, o.sweep.seeds)
	}
}
