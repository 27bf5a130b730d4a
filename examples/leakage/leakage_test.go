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

// TestLeakage trains per-worker BN, SyncBN and shuffle BN on
// class-homogeneous per-worker batches (one seed, 3 epochs of 100 steps)
// and checks the claim's direction: with population statistics on the
// test set, SyncBN and shuffle BN score above per-worker BN, whose batch
// statistics leaked the class of the batch. (At this size the margins were
// 1.9–2.8 points on seeds 1 and 2; with fewer steps the leakage has not
// set in yet.)
func TestLeakage(t *testing.T) {
	if testing.Short() {
		t.Skip("trains three models for 300 steps each")
	}
	mnisttest.Load(t, 1, 1) // skips when MNIST is not available
	out := t.TempDir()
	o, err := parseFlags([]string{"-variants", "local,sync,shuffle", "-epochs", "3", "-steps", "100", "-train", "10000", "-test", "1000",
		"-pop-samples", "1000", "-seeds", "1", "-out", out}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	var sb strings.Builder
	res, err := run(context.Background(), o, &sb)
	if err != nil {
		t.Fatal(err)
	}
	last := func(v variant) epochResult {
		for _, vr := range res {
			if vr.variant == v {
				r := vr.runs[0]
				return r[len(r)-1]
			}
		}
		t.Fatalf("no result for %v", v)
		return epochResult{}
	}
	local, sync, shuffle := last(perWorker), last(syncBN), last(shuffleBN)
	t.Logf("test accuracy with population statistics: per-worker %.3f, SyncBN %.3f, shuffle %.3f", local.testAcc, sync.testAcc, shuffle.testAcc)
	if !(sync.testAcc > local.testAcc) || !(shuffle.testAcc > local.testAcc) {
		t.Errorf("population accuracy: per-worker BN %.3f, SyncBN %.3f, shuffle BN %.3f: want SyncBN and shuffle BN above per-worker BN", local.testAcc, sync.testAcc, shuffle.testAcc)
	}
	for _, want := range []string{"| per-worker BN |", "| SyncBN |", "| shuffle BN |"} {
		if !strings.Contains(sb.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, sb.String())
		}
	}
	for _, f := range []string{"leakage.png", "results.md"} {
		if st, err := os.Stat(filepath.Join(out, f)); err != nil || st.Size() == 0 {
			t.Errorf("%s: %v", f, err)
		}
	}
}

func TestCommunication(t *testing.T) {
	if c := commPerStep(perWorker, 4, 16, 4); c.collectives != 0 || c.bytes != 0 {
		t.Errorf("per-worker BN communicates: %+v", c)
	}
	// SyncBN: 2 layers × (all-gather of 10+3C, all-reduce of 5+2C) float64.
	if c := commPerStep(syncBN, 4, 16, 4); c.collectives != 4 || c.bytes != 8*(10+24+5+16+10+48+5+32) {
		t.Errorf("SyncBN: %+v", c)
	}
	// Shuffle BN: 3/4 of 16 images and logits, forward and backward.
	if c := commPerStep(shuffleBN, 4, 16, 4); c.collectives != 5 || c.bytes != 40+2*0.75*16*4*(784+10) {
		t.Errorf("shuffle BN: %+v", c)
	}
}

func TestParseFlags(t *testing.T) {
	for _, args := range [][]string{
		{"-workers", "1"}, {"-batch", "1"}, {"-classes-per-worker", "0"}, {"-classes-per-worker", "11"}, {"-epochs", "0"},
		{"-steps", "0"}, {"-lr", "0"}, {"-eval-batch", "1"}, {"-seeds", "0"}, {"-variants", "x"}, {"-variants", ","},
		{"-dtype", "int"}, {"-train", "-1"}, {"extra"},
	} {
		if _, err := parseFlags(args, io.Discard); err == nil {
			t.Errorf("%q: no error", args)
		}
	}
	o, err := parseFlags([]string{"-quick", "-variants", "sync,iid"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if o.seeds != 1 || o.cfg.epochs != 2 || len(o.variants) != 2 || o.variants[1] != iidBatches {
		t.Errorf("%+v", o)
	}
}
