//go:build !mpi

package main

import (
	"context"
	"io"
	"math"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gorgonia-bn/bn/examples/internal/cnn"
	"github.com/gorgonia-bn/bn/examples/internal/mnist"
	"gorgonia.org/tensor"
)

// TestDeepSyncBNAndPrecise: with -depth 2 (4 BN layers, two of them at
// 7×7) and -precise, on real MNIST:
//
//   - SyncBN (4 × 2) still follows the one-worker run (1 × 8) to 1e-9,
//     parameters, losses and accuracies, and their population statistics
//     agree too (the 4 workers' shares merged by bn.Precise vs one pass);
//   - the population statistics of bn1 are the float64 two-pass mean and
//     unbiased variance of the first convolution's output over all the
//     training images, computed here from the trained W1 by direct loops
//     (independent of Gorgonia and of bn's moment merging);
//   - the population statistics of every layer are the same whether the
//     pass runs in batches of 50 or of 40 (exact statistics, layer by
//     layer, as at inference);
//   - the tables print a row per run and the per-layer columns.
func TestDeepSyncBNAndPrecise(t *testing.T) {
	d := loadSmall(t)
	ctx := context.Background()
	base := runConfig{workers: 4, batch: 2, steps: 20, lr: 0.02, mom: 0.9, evalEvery: 0, evalBatch: 50, seed: 5,
		dtype: tensor.Float64, depth: 2, precise: true}
	rl, rs, r1 := runThree(ctx, t, d, base)
	if want := 4; len(rs.layers) != want || len(rs.stats) != 2*(cnn.C1+3*cnn.C2) {
		t.Fatalf("layers %v, %d running statistics; want %d layers", rs.layers, len(rs.stats), want)
	}
	if dd := maxDiff(rs.params, r1.params); !(dd < 1e-9) {
		t.Errorf("depth 2: SyncBN vs one worker: max |Δθ| = %g", dd)
	}
	if dd := maxDiff(rs.loss, r1.loss); !(dd < 1e-9) {
		t.Errorf("depth 2: SyncBN vs one worker: max |Δloss| = %g", dd)
	}
	if dd := maxDiff(rs.stats, r1.stats); !(dd < 1e-9) {
		t.Errorf("depth 2: SyncBN vs one worker: running statistics differ by %g", dd)
	}
	if rs.finalAcc != r1.finalAcc || rs.popAcc != r1.popAcc {
		t.Errorf("accuracies %v, %v (SyncBN) vs %v, %v (one worker)", rs.finalAcc, rs.popAcc, r1.finalAcc, r1.popAcc)
	}
	if dd := maxDiff(rs.pop, r1.pop); !(dd < 1e-9) {
		t.Errorf("population statistics: SyncBN (4 shares merged) vs one worker differ by %g", dd)
	}
	// Exact population statistics do not depend on how the images are
	// batched in the pass, the later layers' included (layer by layer,
	// the layers before normalize with their population statistics): the
	// same training, evaluated in batches of 40 instead of 50. (One pass
	// over all layers at once, each normalizing with its batch's
	// statistics as during training, would differ here.)
	single40 := base
	single40.name, single40.workers, single40.batch, single40.evalBatch = "one worker", 1, base.workers*base.batch, 40
	r40, err := worker(ctx, nil, single40, d, func(string, ...any) {})
	if err != nil {
		t.Fatal(err)
	}
	if dd := maxDiff(r40.params, r1.params); dd != 0 {
		t.Fatalf("the evaluation batch changed the training: max |Δθ| = %g", dd)
	}
	if dd := maxDiff(r40.pop, r1.pop); !(dd < 1e-9) {
		t.Errorf("population statistics in batches of 40 vs 50 differ by %g", dd)
	}
	if dd := maxDiff(rl.params, r1.params); !(dd > 1e-4) {
		t.Errorf("depth 2: per-worker BN within %g of the one-worker model", dd)
	}
	for _, r := range []*runResult{rl, rs, r1} {
		if r.popImages != d.train.Len() {
			t.Errorf("%s: population over %d images, want all %d", r.cfg.name, r.popImages, d.train.Len())
		}
		if !(r.finalAcc > 0.2 && r.popAcc > 0.2) { // chance: 0.1; 20 steps of a deeper net
			t.Errorf("%s: accuracies %v (running), %v (population) after %d steps", r.cfg.name, r.finalAcc, r.popAcc, r.cfg.steps)
		}
		// bn1: the two-pass statistics of conv1(x) over the training set.
		mean, variance := conv1Stats(t, d.train, r.params[:cnn.C1*cnn.Kernel*cnn.Kernel])
		C := cnn.C1
		for c := range C {
			pm, pv := r.pop[c], r.pop[C+c]
			if math.Abs(pm-mean[c]) > 1e-9*(1+math.Abs(mean[c])) || math.Abs(pv-variance[c]) > 1e-9*variance[c] {
				t.Errorf("%s: bn1 channel %d: population (%.12g, %.12g), two-pass (%.12g, %.12g)", r.cfg.name, c, pm, pv, mean[c], variance[c])
			}
		}
		me, vb := layerErrors(r)
		if len(me) != 4 || len(vb) != 4 {
			t.Fatalf("%s: %d, %d layer errors", r.cfg.name, len(me), len(vb))
		}
		for l := range me {
			if !(me[l] > 0 && me[l] < 10 && math.Abs(vb[l]) < 10) {
				t.Errorf("%s: %s: errors %v, %v", r.cfg.name, r.layers[l], me[l], vb[l])
			}
		}
	}
	out := preciseTable([]*runResult{rl, rs, r1})
	if strings.Count(out, "\n| ") != 4 || !strings.Contains(out, " bn4 |") || !strings.Contains(out, "over 400 training images") {
		t.Errorf("precise table:\n%s", out)
	}
	out = preciseSeedTable([][]*runResult{{rl, rs}, {rl, rs}}, 7)
	for _, want := range []string{"over 2 seeds (7 … 8)", "per-worker BN minus SyncBN, both with population statistics: ", " bn4 (σ²) |", "| SyncBN | "} {
		if !strings.Contains(out, want) {
			t.Errorf("seed table lacks %q:\n%s", want, out)
		}
	}
}

// conv1Stats returns, per channel, the mean and the unbiased variance of
// the first convolution's output (3×3, padding 1, no bias; weights w1 of
// shape (C1, 1, 3, 3)) over every image of set, by two passes in float64.
func conv1Stats(t *testing.T, set *mnist.Set, w1 []float64) (mean, variance []float64) {
	t.Helper()
	x, err := set.Images(tensor.Float64, mnist.Range(set.Len()))
	if err != nil {
		t.Fatal(err)
	}
	pix := x.Data().([]float64)
	R, Cc, K := mnist.Rows, mnist.Cols, cnn.Kernel
	out := func(img []float64, c, i, j int) float64 {
		s := 0.0
		for a := range K {
			for b := range K {
				ii, jj := i+a-1, j+b-1
				if ii >= 0 && ii < R && jj >= 0 && jj < Cc {
					s += w1[(c*K+a)*K+b] * img[ii*Cc+jj]
				}
			}
		}
		return s
	}
	n := float64(set.Len() * R * Cc)
	for c := range cnn.C1 {
		var sum float64
		for k := range set.Len() {
			img := pix[k*R*Cc : (k+1)*R*Cc]
			for i := range R {
				for j := range Cc {
					sum += out(img, c, i, j)
				}
			}
		}
		m := sum / n
		var m2 float64
		for k := range set.Len() {
			img := pix[k*R*Cc : (k+1)*R*Cc]
			for i := range R {
				for j := range Cc {
					dv := out(img, c, i, j) - m
					m2 += dv * dv
				}
			}
		}
		mean, variance = append(mean, m), append(variance, m2/(n-1))
	}
	return mean, variance
}

// TestCheckpointDepth: a depth-1 tanh run writes a checkpoint; resuming it
// with another depth or activation is refused, with the same ones it
// finishes with the state of the uninterrupted run's parameters' length.
func TestCheckpointDepth(t *testing.T) {
	d := loadSmall(t)
	ctx := context.Background()
	ck := filepath.Join(t.TempDir(), "ck.json")
	cfg := runConfig{name: "one worker", workers: 1, batch: 8, steps: 10, lr: 0.02, mom: 0.9, evalBatch: 50, seed: 2,
		dtype: tensor.Float64, depth: 1, act: cnn.Tanh, checkpoint: ck, ckptEvery: 5}
	quiet := func(string, ...any) {}
	full, err := worker(ctx, nil, cfg, d, quiet)
	if err != nil {
		t.Fatal(err)
	}
	cfg.checkpoint = ""
	cfg.resume = ck
	cfg.steps = 12 // the checkpoint holds step 10; run 2 more
	for _, bad := range []runConfig{{depth: 0, act: cnn.Tanh}, {depth: 1, act: cnn.ReLU}} {
		c := cfg
		c.depth, c.act = bad.depth, bad.act
		if _, err := worker(ctx, nil, c, d, quiet); err == nil || !strings.Contains(err.Error(), "depth") {
			t.Errorf("resume with depth %d, %v: %v", bad.depth, bad.act, err)
		}
	}
	res, err := worker(ctx, nil, cfg, d, quiet)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.params) != len(full.params) || len(res.stats) != 2*(cnn.C1+2*cnn.C2) {
		t.Errorf("resumed: %d parameters (want %d), %d running statistics", len(res.params), len(full.params), len(res.stats))
	}
}

func TestParseFlagsDeep(t *testing.T) {
	for _, args := range [][]string{
		{"-act", "gelu"}, {"-act", ""}, {"-depth", "-1"}, {"-depth", "33"}, {"-depth", "x"}, {"-precise=maybe"},
	} {
		if _, err := parseFlags(args, io.Discard); err == nil {
			t.Errorf("%q: no error", args)
		}
	}
	o, err := parseFlags(nil, io.Discard)
	if err != nil || o.act != cnn.ReLU || o.depth != 0 || o.precise {
		t.Errorf("defaults: %+v, %v", o, err)
	}
	o, err = parseFlags([]string{"-act", "sigmoid", "-depth", "3", "-precise"}, io.Discard)
	if err != nil || o.act != cnn.Sigmoid || o.depth != 3 || !o.precise {
		t.Errorf("%+v, %v", o, err)
	}
}

func TestLayerError(t *testing.T) {
	m, v := []float64{1, -2}, []float64{4, 0.25}
	if me, vb := layerError(m, v, m, v); me != 0 || vb != 0 {
		t.Errorf("equal statistics: %v, %v", me, vb)
	}
	// Channel 0: mean off by one σ (2), variance ×0.5; channel 1: exact.
	me, vb := layerError([]float64{3, -2}, []float64{2, 0.25}, m, v)
	if math.Abs(me-math.Sqrt(0.5)) > 1e-15 || math.Abs(vb+0.25) > 1e-15 {
		t.Errorf("got %v, %v; want %v, -0.25", me, vb, math.Sqrt(0.5))
	}
}
