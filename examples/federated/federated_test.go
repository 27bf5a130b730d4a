package main

import (
	"context"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gorgonia-bn/bn/examples/internal/mnist/mnisttest"
)

// TestRunSmall runs a small federation on label-skewed and i.i.d. shards and
// checks the claims that hold at any size: the merged populations (b)
// equal PreciseBN over the union (c) to rounding, layer by layer, and so
// give the same test accuracy; the average of the nodes' running
// statistics (a) does not.
func TestRunSmall(t *testing.T) {
	mnisttest.Load(t, 1, 1) // skips when MNIST is not available
	out := t.TempDir()
	o, err := parseFlags([]string{"-nodes", "4", "-rounds", "2", "-local-steps", "8", "-train", "800", "-test", "400",
		"-pop-batch", "100", "-seeds", "1", "-truth-every-round", "-out", out}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	var sb strings.Builder
	res, err := run(context.Background(), o, &sb)
	if err != nil {
		t.Fatal(err)
	}
	if len(res) != 3 || len(res[0].runs) != 1 || len(res[0].runs[0]) != 2 {
		t.Fatalf("results %+v", res)
	}
	for _, sr := range res {
		for _, rr := range sr.runs[0] {
			if !rr.truth || rr.maxRel > 1e-12 {
				t.Errorf("%s: (b) differs from (c) by %g (relative)", sr.split, rr.maxRel)
			}
			if rr.acc[merged] != rr.acc[union] || !(rr.acc[merged] > 0.2) {
				t.Errorf("%s: accuracy (b) %v, (c) %v", sr.split, rr.acc[merged], rr.acc[union])
			}
			for l := range rr.meanErr[0] {
				if rr.meanErr[1][l] > 1e-12 || rr.varErr[1][l] > 1e-12 {
					t.Errorf("%s layer %d: errors of (b) %g %g", sr.split, l, rr.meanErr[1][l], rr.varErr[1][l])
				}
				if !(rr.varErr[0][l] > 1e-4) || math.IsNaN(rr.meanErr[0][l]) {
					t.Errorf("%s layer %d: errors of (a) %g %g: averaged running statistics should not be exact", sr.split, l, rr.meanErr[0][l], rr.varErr[0][l])
				}
			}
		}
	}
	for _, want := range []string{"| label-skewed |", "| feature-skewed |", "| i.i.d. |", "| label-skewed | bn2 |"} {
		if !strings.Contains(sb.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, sb.String())
		}
	}
	for _, f := range []string{"federated.png", "results.md"} {
		if st, err := os.Stat(filepath.Join(out, f)); err != nil || st.Size() == 0 {
			t.Errorf("%s: %v", f, err)
		}
	}
}

func TestParseFlags(t *testing.T) {
	for _, args := range [][]string{
		{"-nodes", "1"}, {"-rounds", "0"}, {"-local-steps", "0"}, {"-batch", "1"}, {"-pop-batch", "1"}, {"-lr", "0"},
		{"-seeds", "0"}, {"-split", "skew"}, {"-split", ","}, {"-dtype", "int"}, {"-train", "-1"}, {"extra"}, {"-nodes", "x"},
	} {
		if _, err := parseFlags(args, io.Discard); err == nil {
			t.Errorf("%q: no error", args)
		}
	}
	o, err := parseFlags([]string{"-quick", "-split", "iid"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if o.cfg.nodes != 4 || o.seeds != 1 || len(o.splits) != 1 || o.splits[0] != iid {
		t.Errorf("quick: %+v", o)
	}
}
