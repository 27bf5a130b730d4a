package cnn

import (
	"context"
	"math"
	"math/rand"
	"testing"

	"github.com/gorgonia-bn/bn"
	"github.com/gorgonia-bn/bn/examples/internal/mnist"
	"gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// randomSet returns n images of random pixels with random labels.
func randomSet(n int, seed int64) *mnist.Set {
	rng := rand.New(rand.NewSource(seed))
	s := &mnist.Set{Pixels: make([]uint8, n*mnist.Pixels), Labels: make([]uint8, n)}
	for i := range s.Pixels {
		s.Pixels[i] = uint8(rng.Intn(256))
	}
	for i := range s.Labels {
		s.Labels[i] = uint8(rng.Intn(mnist.Classes))
	}
	return s
}

func TestNewWeights(t *testing.T) {
	if _, err := NewWeights(tensor.Int, 1, ClassifierStd); err == nil {
		t.Error("int weights: no error")
	}
	a, err := NewWeights(tensor.Float64, 5, ClassifierStd)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := NewWeights(tensor.Float64, 5, ClassifierStd)
	c, _ := NewWeights(tensor.Float32, 5, ClassifierStd)
	// The draws in order: W1, then W2, then WF, from one source.
	rng := rand.New(rand.NewSource(5))
	for _, w := range []struct {
		d   *tensor.Dense
		std float64
	}{{a.W1, math.Sqrt(2.0 / 9)}, {a.W2, math.Sqrt(2.0 / 72)}, {a.WF, 0.01}} {
		for i, x := range w.d.Data().([]float64) {
			if want := rng.NormFloat64() * w.std; x != want {
				t.Fatalf("%v value %d: %v, want %v", w.d.Shape(), i, x, want)
			}
		}
	}
	for i, x := range a.WF.Data().([]float64) {
		if b.WF.Data().([]float64)[i] != x || c.WF.Data().([]float32)[i] != float32(x) {
			t.Fatalf("WF[%d]: the same seed gives different weights", i)
		}
	}
	for _, z := range []*tensor.Dense{a.BF, a.B1, a.B2} {
		for _, x := range z.Data().([]float64) {
			if x != 0 {
				t.Fatalf("bias %v not zero", z.Shape())
			}
		}
	}
	if !a.W2.Shape().Eq(tensor.Shape{C2, C1, Kernel, Kernel}) || !a.WF.Shape().Eq(tensor.Shape{Flat, mnist.Classes}) {
		t.Errorf("shapes %v, %v", a.W2.Shape(), a.WF.Shape())
	}
}

func TestNet(t *testing.T) {
	set := randomSet(10, 1)
	w, err := NewWeights(tensor.Float64, 1, ClassifierStd)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := New(w, Config{Batch: 0}); err == nil {
		t.Error("batch 0: no error")
	}
	for _, noBN := range []bool{false, true} {
		n, err := New(w, Config{Batch: 4, NoBN: noBN, Train: true, BN: []bn.Option{bn.WithMomentum(0.5)}})
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, l := range n.Learnables {
			names = append(names, l.Name())
		}
		wantLayers, wantParams := 2, 8
		if noBN {
			wantLayers, wantParams = 0, 6
		}
		if len(n.BNs) != wantLayers || len(n.Learnables) != wantParams || names[0] != "w1" || names[3] != "bf" {
			t.Fatalf("NoBN %v: %d BN layers, learnables %v", noBN, len(n.BNs), names)
		}
		if err := n.Run(set, []int{0, 1, 2}); err == nil {
			t.Error("3 samples for a batch of 4: no error")
		}
		ok, err := n.Classify(set, []int{0, 1, 2, 3})
		if err != nil || ok < 0 || ok > 4 {
			t.Fatalf("NoBN %v: Classify = %d, %v", noBN, ok, err)
		}
		// The small classifier starts near the uniform prediction.
		loss, err := n.LossValue()
		if err != nil || math.Abs(loss-math.Log(10)) > 0.2 {
			t.Errorf("NoBN %v: initial loss %v, %v; want ≈ ln 10", noBN, loss, err)
		}
		if !noBN && n.BNs[0].NumBatchesTracked() != 1 {
			t.Errorf("bn1 tracked %d batches", n.BNs[0].NumBatchesTracked())
		}
		// w1, w2, wf, bf, then γ and β (2·(C1+C2)) or b1 and b2 (C1+C2).
		want := C1*Kernel*Kernel + C2*C1*Kernel*Kernel + Flat*mnist.Classes + mnist.Classes + 2*(C1+C2)
		if noBN {
			want -= C1 + C2
		}
		if got := len(n.Values()); got != want {
			t.Errorf("NoBN %v: %d values", noBN, got)
		}
		n.Close()
	}
}

func TestCopyBNAndAccuracy(t *testing.T) {
	ctx := context.Background()
	set := randomSet(7, 2)
	w, _ := NewWeights(tensor.Float32, 3, ClassifierStd)
	src, err := New(w, Config{Batch: 7})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	en, err := New(w, Config{Batch: 3})
	if err != nil {
		t.Fatal(err)
	}
	defer en.Close()
	mean, variance := []float64{1, 2, 3, 4, 5, 6, 7, 8}, []float64{2, 2, 2, 2, 3, 3, 3, 3}
	if err := src.BNs[0].SetRunningStats(mean, variance); err != nil {
		t.Fatal(err)
	}
	g := tensor.New(tensor.WithShape(C1), tensor.WithBacking([]float32{2, 2, 2, 2, 2, 2, 2, 2}))
	if err := gorgonia.Let(src.BNs[0].Gamma(), g); err != nil {
		t.Fatal(err)
	}
	if err := en.CopyBN(src); err != nil {
		t.Fatal(err)
	}
	m, v := en.BNs[0].RunningStats()
	if m[7] != 8 || v[7] != 3 || en.BNs[0].Gamma().Value().Data().([]float32)[0] != 2 {
		t.Errorf("copied statistics %v, %v, γ %v", m, v, en.BNs[0].Gamma().Value())
	}
	if len(en.Normalizers()) != 2 {
		t.Errorf("%d normalizers", len(en.Normalizers()))
	}
	if err := en.SetMode(bn.Eval); err != nil {
		t.Fatal(err)
	}
	// Two whole batches of 3; the seventh image is left out.
	acc, err := Accuracy(ctx, en, set, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := 0
	for _, idx := range [][]int{{0, 1, 2}, {3, 4, 5}} {
		c, err := en.Classify(set, idx)
		if err != nil {
			t.Fatal(err)
		}
		want += c
	}
	if acc != float64(want)/6 {
		t.Errorf("accuracy %v, want %d/6", acc, want)
	}
	if _, err := Accuracy(ctx, en, randomSet(2, 3), nil); err == nil {
		t.Error("2 images for a batch of 3: no error")
	}
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := Accuracy(cancelled, en, set, nil); err == nil {
		t.Error("cancelled context: no error")
	}
	noBN, _ := New(w, Config{Batch: 3, NoBN: true})
	defer noBN.Close()
	if err := noBN.CopyBN(src); err == nil {
		t.Error("copy between nets with different BN layers: no error")
	}
}

func TestCorrect(t *testing.T) {
	set := &mnist.Set{Labels: []uint8{0, 3, 9}}
	logits := make([]float32, 3*mnist.Classes)
	logits[0*10+0], logits[0*10+5] = 1, 1 // a tie: the first wins, 0, right
	logits[1*10+2] = 2                    // 2, wrong
	logits[2*10+9] = 0.5                  // 9, right
	ok, err := Correct(tensor.New(tensor.WithShape(3, 10), tensor.WithBacking(logits)), set, []int{0, 1, 2})
	if err != nil || ok != 2 {
		t.Errorf("Correct = %d, %v; want 2", ok, err)
	}
	if _, err := Correct(tensor.New(tensor.WithShape(1, 10), tensor.WithBacking(make([]float64, 10))), set, []int{0, 1}); err == nil {
		t.Error("too few logits: no error")
	}
	if _, err := Correct(tensor.New(tensor.WithShape(10), tensor.WithBacking(make([]int, 10))), set, []int{0}); err == nil {
		t.Error("int logits: no error")
	}
}

func TestCrossEntropy(t *testing.T) {
	g := gorgonia.NewGraph()
	lv := []float64{1, 2, 3, 0, 0, 0}
	// Named: Gorgonia would merge two unnamed inputs of the same type.
	logits := gorgonia.NewMatrix(g, tensor.Float64, gorgonia.WithName("logits"), gorgonia.WithValue(tensor.New(tensor.WithShape(2, 3), tensor.WithBacking(lv))))
	y := gorgonia.NewMatrix(g, tensor.Float64, gorgonia.WithName("y"), gorgonia.WithValue(tensor.New(tensor.WithShape(2, 3), tensor.WithBacking([]float64{0, 0, 1, 1, 0, 0}))))
	loss, err := CrossEntropy(logits, y)
	if err != nil {
		t.Fatal(err)
	}
	vm := gorgonia.NewTapeMachine(g)
	defer vm.Close()
	if err := vm.RunAll(); err != nil {
		t.Fatal(err)
	}
	got, err := Scalar(loss.Value())
	if err != nil {
		t.Fatal(err)
	}
	want := (-(3 - math.Log(math.Exp(1)+math.Exp(2)+math.Exp(3))) + math.Log(3)) / 2
	if math.Abs(got-want) > 1e-12 {
		t.Errorf("cross-entropy %v, want %v", got, want)
	}
	if _, err := Scalar(tensor.New(tensor.WithShape(2), tensor.WithBacking([]float64{1, 2}))); err == nil {
		t.Error("Scalar of a vector: no error")
	}
}

// TestSGDAndSetValues: a step changes most weights; SetValues restores
// them exactly; bad input is an error.
func TestSGDAndSetValues(t *testing.T) {
	set := randomSet(8, 2)
	for _, dt := range []tensor.Dtype{tensor.Float32, tensor.Float64} {
		w, _ := NewWeights(dt, 4, ClassifierStd)
		n, err := New(w, Config{Batch: 4, Train: true})
		if err != nil {
			t.Fatal(err)
		}
		defer n.Close()
		if _, err := NewSGD(n, 0); err == nil {
			t.Error("lr 0: no error")
		}
		sgd, err := NewSGD(n, 0.5)
		if err != nil {
			t.Fatal(err)
		}
		before := n.Values()
		if _, err := sgd.Step(set, []int{0, 1, 2, 3}); err != nil {
			t.Fatal(err)
		}
		after := n.Values()
		changed := 0
		for i := range before {
			if before[i] != after[i] {
				changed++
			}
		}
		if changed < len(before)/2 {
			t.Errorf("%v: a step changed %d of %d values", dt, changed, len(before))
		}
		if err := n.SetValues(before); err != nil {
			t.Fatal(err)
		}
		for i, v := range n.Values() {
			if v != before[i] {
				t.Fatalf("%v: SetValues: value %d is %v, want %v", dt, i, v, before[i])
			}
		}
		if err := n.SetValues(before[1:]); err == nil {
			t.Error("short vector: no error")
		}
		if _, err := sgd.Step(set, []int{0, 1}); err == nil {
			t.Error("batch of the wrong size: no error")
		}
	}
}
