package main

import (
	"context"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gorgonia-bn/bn/examples/internal/mnist"
	"github.com/gorgonia-bn/bn/examples/internal/mnist/mnisttest"
	"gorgonia.org/tensor"
)

// TestTrainingLoop trains the domain-specific and the shared variant for a
// few dozen steps on real MNIST: the loss decreases, the accuracies are
// those of a network that learned something, and AdaBN sees every
// adaptation image.
func TestTrainingLoop(t *testing.T) {
	start := time.Now()
	trainSet, testSet := mnisttest.Load(t, 0, 0)
	test, err := testSet.Slice(0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	data, err := prepare(trainSet, test, 2000, 1000, 1)
	if err != nil {
		t.Fatal(err)
	}
	cfg := netConfig{hidden1: 64, hidden2: 32, batch: 32, evalBatch: 250, lr: 0.05, momentum: 0.9, seed: 1, dt: tensor.Float32}
	for _, v := range variants[:2] {
		r, err := trainVariant(context.Background(), v, cfg, data, 1, 60, nil)
		if err != nil {
			t.Fatal(err)
		}
		r.model.Close()
		if len(r.stepLoss) != 60 {
			t.Fatalf("%s: %d steps, want 60", v.name, len(r.stepLoss))
		}
		mean := func(s []float64) float64 {
			var m float64
			for _, x := range s {
				m += x
			}
			return m / float64(len(s))
		}
		first, last := mean(r.stepLoss[:10]), mean(r.stepLoss[50:])
		t.Logf("%s: loss %.3f → %.3f, accuracy %.3f, faded %.3f → %.3f", v.name, first, last, r.acc, r.acc[faded], r.adapted)
		if !(last < 0.7*first) {
			t.Errorf("%s: loss did not decrease: first 10 steps %.4f, last 10 %.4f", v.name, first, last)
		}
		for d := range 2 {
			if !(r.acc[d] > 0.5) {
				t.Errorf("%s: accuracy on %s %.3f after 60 steps", v.name, domainNames[d], r.acc[d])
			}
		}
		if r.adaptRep.Samples != 1000 || len(r.adaptRep.Updated) != 2 {
			t.Errorf("%s: AdaBN report %+v", v.name, r.adaptRep)
		}
		if math.IsNaN(r.adapted) {
			t.Errorf("%s: accuracy after AdaBN is NaN", v.name)
		}
	}
	if d := time.Since(start); d > 60*time.Second {
		t.Errorf("took %v, want < 60 s", d)
	}
}

func TestShift(t *testing.T) {
	s := &mnist.Set{Pixels: make([]uint8, 2*mnist.Pixels), Labels: []uint8{3, 7}}
	for i := range s.Pixels {
		s.Pixels[i] = uint8(i % 256)
	}
	inv, err := shift(s, inverted, 1)
	if err != nil {
		t.Fatal(err)
	}
	for i, p := range inv.Pixels {
		if p != 255-s.Pixels[i] {
			t.Fatalf("inverted pixel %d = %d", i, p)
		}
	}
	f1, _ := shift(s, faded, 1)
	f2, _ := shift(s, faded, 1)
	var sum float64
	for i := range f1.Pixels {
		if f1.Pixels[i] != f2.Pixels[i] {
			t.Fatal("faded domain depends on more than the seed")
		}
		sum += float64(f1.Pixels[i]) - (0.4*float64(s.Pixels[i]) + 80)
	}
	if m := sum / float64(len(f1.Pixels)); math.Abs(m) > 2 {
		t.Fatalf("faded noise has mean %v", m)
	}
	if _, err := shift(s, 7, 1); err == nil {
		t.Fatal("unknown domain accepted")
	}
}

func TestFlags(t *testing.T) {
	o, err := parseFlags(nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if len(o.variants) != len(variants) {
		t.Fatalf("default variants %v", o.variants)
	}
	o, err = parseFlags([]string{"-variants", "domain,shared", "-epochs", "2"}, io.Discard)
	if err != nil || len(o.variants) != 2 || o.variants[0].name != "domain" || o.epochs != 2 {
		t.Fatalf("%+v, %v", o, err)
	}
	for _, args := range [][]string{
		{"-variants", "nope"}, {"-epochs", "0"}, {"-batch", "5"}, {"-subset", "40000"},
		{"-dtype", "int"}, {"-lr", "0"}, {"-momentum", "1"}, {"extra"}, {"-seeds", "0"},
	} {
		if _, err := parseFlags(args, io.Discard); err == nil {
			t.Errorf("%v accepted", args)
		}
	}
}

func TestMarkdown(t *testing.T) {
	o, _ := parseFlags([]string{"-variants", "shared"}, io.Discard)
	r := &result{v: variants[0], epochLoss: []float64{0.5, 0.25}, acc: [numDomains]float64{0.9, 0.8, 0.1}, adapted: 0.7, train: 3 * time.Second}
	md := markdown(o, [][]*result{{r, r, r}}, 10*time.Second)
	r2 := *r
	r2.acc[original] = 0.8
	md2 := markdown(o, [][]*result{{r, &r2}}, 10*time.Second)
	for _, want := range []string{"| shared BN | 90.00 ± 0.00 [90.00 90.00 90.00] | 80.00 ± 0.00 [80.00 80.00 80.00] | 10.00 ± 0.00 [10.00 10.00 10.00] | 70.00 ± 0.00 [70.00 70.00 70.00] | 0.2500 ± 0.0000 [0.2500 0.2500 0.2500] | 3s |",
		"seeds 1–3 (mean ± standard deviation [per seed])", "Total run time 10s"} {
		if !strings.Contains(md, want) {
			t.Errorf("table lacks %q:\n%s", want, md)
		}
	}
	if want := "| shared BN | 85.00 ± 7.07 [90.00 80.00] |"; !strings.Contains(md2, want) {
		t.Errorf("table lacks %q:\n%s", want, md2)
	}
}

func TestPlot(t *testing.T) {
	r := &result{v: variants[0], stepLoss: []float64{2, 1, 0.5, 0.4}, acc: [numDomains]float64{0.9, 0.8, 0.1}, adapted: 0.7}
	path := filepath.Join(t.TempDir(), "domainbn.png")
	if err := plotResults(path, [][]*result{{r, r}, {r}}); err != nil {
		t.Fatal(err)
	}
	if st, err := os.Stat(path); err != nil || st.Size() == 0 {
		t.Errorf("plot: %v", err)
	}
}
