package main

import (
	"context"
	"io"
	"math/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gorgonia-bn/bn/examples/internal/mnist/mnisttest"
)

// TestQuick runs the program with -quick, shortened further (2 seeds, 30
// steps, 2000 training and 200 test images), and checks the table and the
// files.
func TestQuick(t *testing.T) {
	mnisttest.Load(t, 1, 1) // skips without MNIST
	out := t.TempDir()
	o, err := parseFlags([]string{"-quick", "-steps", "30", "-test-subset", "200", "-curve-test", "200", "-eval-batch", "100", "-out", out}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	var sb strings.Builder
	if err := run(context.Background(), o, &sb, nil); err != nil {
		t.Fatal(err)
	}
	t.Log(sb.String())
	for _, want := range []string{"| i.i.d. batches | ", "| pairs (batch/2 classes × 2 images) | ", "over 2 seeds"} {
		if !strings.Contains(sb.String(), want) {
			t.Errorf("output lacks %q", want)
		}
	}
	for _, f := range []string{"renorm.png", "results.md", "results.csv"} {
		if st, err := os.Stat(filepath.Join(out, f)); err != nil || st.Size() == 0 {
			t.Errorf("%s: %v", f, err)
		}
	}
	csv, err := os.ReadFile(filepath.Join(out, "results.csv"))
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(csv), "\n"); n != 1+2*2*2 {
		t.Errorf("results.csv has %d lines, want a header and 8 runs", n)
	}
}

// TestRunsLearnAndBRNDiffers: after 40 steps on 1000 images both variants
// classify far better than chance, the same seed gives the same losses, and
// BRN's losses differ from BN's once its warm-up is over (not before).
func TestRunsLearnAndBRNDiffers(t *testing.T) {
	train, test := mnisttest.Load(t, 1000, 300)
	o, err := parseFlags([]string{"-quick", "-steps", "40", "-warmup", "10"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	cfg := o.cfg
	cfg.evalBatch, cfg.curveTest = 100, 300
	var res [2]*runResult
	for i, renorm := range []bool{false, true} {
		if res[i], err = trainRun(context.Background(), cfg, "iid", renorm, 1, train, test, nil); err != nil {
			t.Fatal(err)
		}
		if res[i].finalAcc < 0.3 {
			t.Errorf("%s: test accuracy %.3f after 40 steps", variantName(renorm), res[i].finalAcc)
		}
	}
	again, err := trainRun(context.Background(), cfg, "iid", true, 1, train, test, nil)
	if err != nil {
		t.Fatal(err)
	}
	for s := range res[1].stepLoss {
		if again.stepLoss[s] != res[1].stepLoss[s] {
			t.Fatalf("step %d: loss %v then %v with the same seed", s, res[1].stepLoss[s], again.stepLoss[s])
		}
	}
	for s := range 11 { // steps 0–10: rmax = 1, dmax = 0 (the limits start to grow after step Warmup = 10)
		if res[0].stepLoss[s] != res[1].stepLoss[s] {
			t.Fatalf("step %d (warm-up): BN loss %v, BRN loss %v", s, res[0].stepLoss[s], res[1].stepLoss[s])
		}
	}
	if res[0].stepLoss[39] == res[1].stepLoss[39] {
		t.Error("BRN's loss equals BN's after the warm-up")
	}
}

// TestPairSampler: every pairs batch holds batch/2 distinct classes, two
// images of each.
func TestPairSampler(t *testing.T) {
	train, _ := mnisttest.Load(t, 500, 1)
	s, err := newSampler("pairs", train, 6, rand.New(rand.NewSource(1)))
	if err != nil {
		t.Fatal(err)
	}
	for range 200 {
		count := map[uint8]int{}
		for _, i := range s.next() {
			count[train.Labels[i]]++
		}
		if len(count) != 3 {
			t.Fatalf("batch of %d classes, want 3", len(count))
		}
		for c, n := range count {
			if n != 2 {
				t.Fatalf("class %d: %d images, want 2", c, n)
			}
		}
	}
	if _, err := newSampler("pairs", train, 5, rand.New(rand.NewSource(1))); err == nil {
		t.Error("odd batch accepted for pairs")
	}
}

func TestParseFlags(t *testing.T) {
	for _, args := range [][]string{
		{"-steps", "0"}, {"-batch", "1"}, {"-lr", "-1"}, {"-dtype", "int"}, {"-seeds", "0"},
		{"-rmax", "0.5"}, {"-dmax", "-1"}, {"-warmup", "-3"}, {"-sampling", "mixed"}, {"-bn-momentum", "0"}, {"extra"},
	} {
		if _, err := parseFlags(args, io.Discard); err == nil {
			t.Errorf("%q: no error", args)
		}
	}
	o, err := parseFlags([]string{"-quick", "-steps", "7"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if o.cfg.steps != 7 || o.trainSubset != 2000 || len(o.cfg.seeds) != 2 {
		t.Errorf("-quick with -steps 7: steps %d, train subset %d, %d seeds", o.cfg.steps, o.trainSubset, len(o.cfg.seeds))
	}
}
