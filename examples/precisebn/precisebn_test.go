package main

import (
	"context"
	"io"
	"math"
	"math/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gorgonia-bn/bn/examples/internal/cnn"
	"github.com/gorgonia-bn/bn/examples/internal/mnist"
	"github.com/gorgonia-bn/bn/examples/internal/mnist/mnisttest"
	"gorgonia.org/tensor"
)

// smallConfig trains for 60 steps of 32 images at a large learning rate.
func smallConfig() config {
	return config{steps: 60, batch: 32, evalBatch: 256, lr: 0.4, bnMomentum: 0.1, seed: 3,
		dtype: tensor.Float32, otherMomenta: []float64{0.1, 0.01}, repeats: 1}
}

// trained trains a model with cfg on set; it is closed when the test ends.
func trained(t *testing.T, cfg config, set *mnist.Set) *model {
	t.Helper()
	m, err := trainModel(context.Background(), cfg, set, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Close)
	return m
}

// TestPreciseBeatsEMA trains the network for a few steps at a large
// learning rate and compares, against the population statistics of the
// 2 048 training images:
//
//   - PreciseBN over 1 024 random training images: its error is less than
//     half the EMA's for the variance of both layers and for the mean of
//     the second layer, whose input moves with two layers of weights (the
//     mean of the first layer is dominated by sampling noise in both, and
//     only logged);
//   - PreciseBN over the whole 2 048 images: the first layer's statistics
//     are the population's (the same inputs), the second layer's differ
//     only by the effect of normalizing the first layer with batch
//     statistics during the pass, far less than the EMA's error.
//
// It also checks that the test accuracy with them is a real accuracy.
func TestPreciseBeatsEMA(t *testing.T) {
	ctx := context.Background()
	trainSet, test := mnisttest.Load(t, 2048, 512)
	cfg := smallConfig()
	m := trained(t, cfg, trainSet)
	truth, err := m.trueStats(ctx, trainSet, nil)
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewSource(cfg.seed))
	precise, err := m.preciseStats(ctx, trainSet, rng.Perm(trainSet.Len())[:1024], "", nil)
	if err != nil {
		t.Fatal(err)
	}
	whole, err := m.preciseStats(ctx, trainSet, rng.Perm(trainSet.Len()), "", nil)
	if err != nil {
		t.Fatal(err)
	}
	ema := m.emaStats()
	for l, name := range layerNames {
		pm, pv := statError(precise[l], truth[l])
		em, ev := statError(ema[l], truth[l])
		wm, wv := statError(whole[l], truth[l])
		t.Logf("%s: error of the mean: PreciseBN 1024 %.5f, whole %.2g, EMA %.5f; of the variance: PreciseBN 1024 %.5f, whole %.2g, EMA %.5f", name, pm, wm, em, pv, wv, ev)
		if !(pv < ev/2) {
			t.Errorf("%s: error of the variance: PreciseBN %.5f, not below half the EMA's %.5f", name, pv, ev)
		}
		if l > 0 && !(pm < em/2) {
			t.Errorf("%s: error of the mean: PreciseBN %.5f, not below half the EMA's %.5f", name, pm, em)
		}
		limit := 1e-6 // the same inputs: rounding only
		if l > 0 {
			limit = min(em, ev) / 10
		}
		if !(wm < limit) || !(wv < limit) {
			t.Errorf("%s: PreciseBN over the whole set: errors %.2g, %.2g, want < %.2g", name, wm, wv, limit)
		}
	}
	acc, err := m.accuracy(ctx, test, precise)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("test accuracy with PreciseBN statistics: %.3f", acc)
	if acc < 0.5 {
		t.Errorf("test accuracy %.3f with PreciseBN statistics after %d steps", acc, cfg.steps)
	}
}

// TestRecomputedEMA checks that the EMA recomputed from the recovered batch
// statistics with the layers' own momentum equals the layers' EMA, and that
// a smaller momentum gives a different one.
func TestRecomputedEMA(t *testing.T) {
	trainSet, _ := mnisttest.Load(t, 640, 0)
	cfg := smallConfig()
	cfg.steps = 20
	m := trained(t, cfg, trainSet)
	ema, same, other := m.emaStats(), m.others[0], m.others[1]
	differs := false
	for l := range ema {
		for c := range ema[l].mean {
			for _, p := range [][2]float64{{ema[l].mean[c], same[l].mean[c]}, {ema[l].variance[c], same[l].variance[c]}} {
				if math.Abs(p[0]-p[1]) > 1e-9*(1+math.Abs(p[0])) {
					t.Fatalf("layer %d channel %d: layer EMA %v, recomputed %v", l, c, p[0], p[1])
				}
			}
			differs = differs || math.Abs(other[l].mean[c]-ema[l].mean[c]) > 1e-3
		}
	}
	if !differs {
		t.Error("the EMA with momentum 0.01 equals the one with 0.1")
	}
}

// TestTrueStatsFirstLayer checks the ground truth of the first layer
// against a direct float64 computation: the mean and variance over every
// image and pixel of the convolution of the input with w1.
func TestTrueStatsFirstLayer(t *testing.T) {
	ctx := context.Background()
	trainSet, _ := mnisttest.Load(t, 512, 0)
	cfg := smallConfig()
	cfg.steps = 5
	m := trained(t, cfg, trainSet)
	truth, err := m.trueStats(ctx, trainSet, nil)
	if err != nil {
		t.Fatal(err)
	}
	x, err := trainSet.Images(tensor.Float64, mnist.Range(trainSet.Len()))
	if err != nil {
		t.Fatal(err)
	}
	xs := x.Data().([]float64)
	w := m.w.W1.Data().([]float32)
	const R = mnist.Rows
	for o := range cnn.C1 {
		var sum, sumsq float64
		for n := range trainSet.Len() {
			img := xs[n*mnist.Pixels : (n+1)*mnist.Pixels]
			for i := range R {
				for j := range R {
					v := 0.0
					for di := range cnn.Kernel {
						for dj := range cnn.Kernel {
							ii, jj := i+di-1, j+dj-1
							if ii >= 0 && ii < R && jj >= 0 && jj < R {
								v += float64(w[o*cnn.Kernel*cnn.Kernel+di*cnn.Kernel+dj]) * img[ii*R+jj]
							}
						}
					}
					sum += v
					sumsq += v * v
				}
			}
		}
		N := float64(trainSet.Len() * mnist.Pixels)
		mean := sum / N
		vr := (sumsq - N*mean*mean) / (N - 1)
		got := truth[0]
		if d := math.Abs(got.mean[o]-mean) / math.Sqrt(vr); d > 1e-4 {
			t.Errorf("channel %d: mean %v, direct %v", o, got.mean[o], mean)
		}
		if d := math.Abs(got.variance[o]/vr - 1); d > 1e-4 {
			t.Errorf("channel %d: variance %v, direct %v", o, got.variance[o], vr)
		}
	}
}

// TestRunSmall runs the whole program on a tiny configuration and checks
// its outputs.
func TestRunSmall(t *testing.T) {
	out := t.TempDir()
	o, err := parseFlags([]string{"-steps", "10", "-batch", "32", "-train-subset", "640", "-test-subset", "200",
		"-eval-batch", "100", "-samples", "32,100", "-repeats", "2", "-out", out}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	var sb strings.Builder
	if err := run(context.Background(), o, &sb, nil); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"| EMA (momentum 0.1) |", "| EMA (momentum 0.01, recomputed) |", "| PreciseBN | 32 |", "| PreciseBN | 128 |",
		"| PreciseBN, whole training set | 640 |", "| population (ground truth) | 600 |", "| batch statistics of each test batch of 32 |"} {
		if !strings.Contains(sb.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, sb.String())
		}
	}
	for _, f := range []string{"precisebn.png", "results.md", "results.csv"} {
		if st, err := os.Stat(filepath.Join(out, f)); err != nil || st.Size() == 0 {
			t.Errorf("%s: %v", f, err)
		}
	}
}

func TestParseFlags(t *testing.T) {
	for _, args := range [][]string{
		{"-steps", "0"}, {"-batch", "1"}, {"-lr", "0"}, {"-dtype", "int"}, {"-samples", "0"},
		{"-bn-momentum", "0"}, {"-other-momenta", "2"}, {"-repeats", "0"}, {"-train-subset", "-1"}, {"extra"},
	} {
		if _, err := parseFlags(args, io.Discard); err == nil {
			t.Errorf("%q: no error", args)
		}
	}
	o, err := parseFlags([]string{"-samples", "1000,64"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if len(o.cfg.samples) != 2 || o.cfg.samples[0] != 64 || len(o.cfg.otherMomenta) != 1 {
		t.Errorf("samples %v, other momenta %v", o.cfg.samples, o.cfg.otherMomenta)
	}
}

func TestSeedSummary(t *testing.T) {
	mk := func(ema, precise float64) *result {
		e := estimate{name: "EMA (momentum 0.1)", acc: ema, meanErr: []float64{0.01, 0.04}, varErr: []float64{0.1, 0.2}}
		p := estimate{name: "PreciseBN, whole training set", acc: precise, meanErr: []float64{0, 0.001}, varErr: []float64{0, 0.002}}
		return &result{cfg: smallConfig(), ema: e, precise: []estimate{p}, truthAcc: precise, batchAcc: 0.9}
	}
	var sb strings.Builder
	writeSeedSummary(&sb, []*result{mk(0.90, 0.92), mk(0.94, 0.93)})
	for _, want := range []string{"Over 2 seeds", "| EMA (momentum 0.1) | 92.00 ± 2.83 | 0.0400 ± 0.0000 |", "minus EMA, test accuracy: +0.50 ± 2.12 points"} {
		if !strings.Contains(sb.String(), want) {
			t.Errorf("summary lacks %q:\n%s", want, sb.String())
		}
	}
}
