package bn_test

import (
	"fmt"
	"log"

	"github.com/gorgonia-bn/bn"
	"gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// input returns a float64 input node of the given shape and values.
func input(g *gorgonia.ExprGraph, name string, shape tensor.Shape, v []float64) *gorgonia.Node {
	return gorgonia.NewTensor(g, tensor.Float64, len(shape), gorgonia.WithShape(shape...), gorgonia.WithName(name),
		gorgonia.WithValue(tensor.New(tensor.WithShape(shape...), tensor.WithBacking(v))))
}

// A layer for 2 channels, applied to a batch of 4 samples (N, C) = (4, 2):
// each channel is normalized to zero mean and unit variance, and the
// running statistics move 10% (the default momentum) towards the batch's
// mean and unbiased variance.
func Example() {
	g := gorgonia.NewGraph()
	x := input(g, "x", tensor.Shape{4, 2}, []float64{1, 10, 2, 20, 3, 30, 4, 40})
	l, err := bn.New(g, 2, tensor.Float64)
	if err != nil {
		log.Fatal(err)
	}
	y, err := l.Apply(x)
	if err != nil {
		log.Fatal(err)
	}
	m := gorgonia.NewTapeMachine(g)
	defer m.Close()
	if err := m.RunAll(); err != nil {
		log.Fatal(err)
	}
	fmt.Printf("y = %.3f\n", y.Value().Data())
	mean, variance := l.RunningStats()
	fmt.Printf("running mean %.3f, running var %.3f, batches %d\n", mean, variance, l.NumBatchesTracked())
	// Output:
	// y = [-1.342 -1.342 -0.447 -0.447 0.447 0.447 1.342 1.342]
	// running mean [0.250 2.500], running var [1.067 17.567], batches 1
}

// Modes are switched between runs of the same compiled graph; only Train
// updates the running statistics.
func ExampleLayer_SetMode() {
	g := gorgonia.NewGraph()
	x := input(g, "x", tensor.Shape{4, 1}, []float64{1, 2, 3, 4})
	l, err := bn.New(g, 1, tensor.Float64, bn.WithMomentum(1)) // running stats = last batch
	if err != nil {
		log.Fatal(err)
	}
	y, err := l.Apply(x)
	if err != nil {
		log.Fatal(err)
	}
	m := gorgonia.NewTapeMachine(g)
	defer m.Close()
	for _, mode := range []bn.Mode{bn.Train, bn.Eval, bn.EvalBatchStats, bn.Frozen} {
		if err := l.SetMode(mode); err != nil {
			log.Fatal(err)
		}
		m.Reset()
		if err := m.RunAll(); err != nil {
			log.Fatal(err)
		}
		mean, variance := l.RunningStats()
		fmt.Printf("%-16v y = %.3f  running mean %.2f var %.3f\n", mode, y.Value().Data(), mean[0], variance[0])
	}
	// Output:
	// train            y = [-1.342 -0.447 0.447 1.342]  running mean 2.50 var 1.667
	// eval             y = [-1.162 -0.387 0.387 1.162]  running mean 2.50 var 1.667
	// eval-batch-stats y = [-1.342 -0.447 0.447 1.342]  running mean 2.50 var 1.667
	// frozen           y = [-1.162 -0.387 0.387 1.162]  running mean 2.50 var 1.667
}

// Ghost batch normalization: statistics per group of 3 samples, while the
// running statistics are those of the whole batch.
func ExampleWithGhostBatch() {
	g := gorgonia.NewGraph()
	x := input(g, "x", tensor.Shape{6, 1}, []float64{1, 2, 3, 10, 20, 30})
	l, err := bn.New(g, 1, tensor.Float64, bn.WithGhostBatch(3), bn.WithMomentum(1))
	if err != nil {
		log.Fatal(err)
	}
	y, err := l.Apply(x)
	if err != nil {
		log.Fatal(err)
	}
	m := gorgonia.NewTapeMachine(g)
	defer m.Close()
	if err := m.RunAll(); err != nil {
		log.Fatal(err)
	}
	mean, variance := l.RunningStats()
	fmt.Printf("y = %.3f\nrunning mean %.1f var %.1f\n", y.Value().Data(), mean[0], variance[0])
	// Output:
	// y = [-1.225 0.000 1.225 -1.225 0.000 1.225]
	// running mean 11.0 var 137.6
}

// The running statistics as the plain average over all training batches
// (PyTorch's momentum=None).
func ExampleWithCumulativeAverage() {
	g := gorgonia.NewGraph()
	x := input(g, "x", tensor.Shape{2, 1}, []float64{0, 2})
	l, err := bn.New(g, 1, tensor.Float64, bn.WithCumulativeAverage())
	if err != nil {
		log.Fatal(err)
	}
	if _, err := l.Apply(x); err != nil {
		log.Fatal(err)
	}
	m := gorgonia.NewTapeMachine(g)
	defer m.Close()
	for _, batch := range [][]float64{{0, 2}, {4, 8}, {-1, 1}} {
		if err := gorgonia.Let(x, tensor.New(tensor.WithShape(2, 1), tensor.WithBacking(batch))); err != nil {
			log.Fatal(err)
		}
		m.Reset()
		if err := m.RunAll(); err != nil {
			log.Fatal(err)
		}
	}
	mean, variance := l.RunningStats()
	// batch means 1, 6, 0 → 7/3; unbiased variances 2, 8, 2 → 4
	fmt.Printf("mean %.4f var %.4f after %d batches\n", mean[0], variance[0], l.NumBatchesTracked())
	// Output:
	// mean 2.3333 var 4.0000 after 3 batches
}

// Saving a trained layer and loading it into a fresh layer of the same
// configuration (in another graph) restores γ, β and the running
// statistics, so the eval output is the same.
func ExampleLayer_MarshalBinary() {
	build := func() (*gorgonia.ExprGraph, *bn.Layer, *gorgonia.Node) {
		g := gorgonia.NewGraph()
		x := input(g, "x", tensor.Shape{3, 2}, []float64{1, -1, 2, 0, 6, 4})
		l, err := bn.New(g, 2, tensor.Float64)
		if err != nil {
			log.Fatal(err)
		}
		y, err := l.Apply(x)
		if err != nil {
			log.Fatal(err)
		}
		return g, l, y
	}
	run := func(g *gorgonia.ExprGraph) {
		m := gorgonia.NewTapeMachine(g)
		defer m.Close()
		if err := m.RunAll(); err != nil {
			log.Fatal(err)
		}
	}

	g1, trained, y1 := build()
	run(g1) // one training step moves the running statistics
	if err := gorgonia.Let(trained.Gamma(), tensor.New(tensor.WithShape(2), tensor.WithBacking([]float64{2, 0.5}))); err != nil {
		log.Fatal(err)
	}
	state, err := trained.MarshalBinary()
	if err != nil {
		log.Fatal(err)
	}

	g2, loaded, y2 := build()
	if err := loaded.UnmarshalBinary(state); err != nil {
		log.Fatal(err)
	}
	for _, l := range []*bn.Layer{trained, loaded} {
		if err := l.SetMode(bn.Eval); err != nil {
			log.Fatal(err)
		}
	}
	run(g1)
	run(g2)
	fmt.Printf("%d bytes, batches %d\n", len(state), loaded.NumBatchesTracked())
	fmt.Printf("trained %.3f\nloaded  %.3f\n", y1.Value().Data(), y2.Value().Data())
	// Output:
	// 100 bytes, batches 1
	// trained [1.107 -0.435 2.688 -0.040 9.012 1.542]
	// loaded  [1.107 -0.435 2.688 -0.040 9.012 1.542]
}

// With output reuse every run writes y into the same tensor: a value kept
// from an earlier run changes with the next run unless it was copied.
func ExampleWithOutputReuse() {
	g := gorgonia.NewGraph()
	x := input(g, "x", tensor.Shape{2, 1}, []float64{1, 3})
	l, err := bn.New(g, 1, tensor.Float64, bn.WithOutputReuse(true))
	if err != nil {
		log.Fatal(err)
	}
	y, err := l.Apply(x)
	if err != nil {
		log.Fatal(err)
	}
	m := gorgonia.NewTapeMachine(g)
	defer m.Close()
	if err := m.RunAll(); err != nil {
		log.Fatal(err)
	}
	held := y.Value()                                          // the op's tensor
	kept := append([]float64(nil), held.Data().([]float64)...) // a copy
	if err := gorgonia.Let(x, tensor.New(tensor.WithShape(2, 1), tensor.WithBacking([]float64{3, 1}))); err != nil {
		log.Fatal(err)
	}
	m.Reset()
	if err := m.RunAll(); err != nil {
		log.Fatal(err)
	}
	fmt.Printf("held %.0f, copy %.0f, same tensor: %v\n", held.Data(), kept, y.Value() == held)
	// Output:
	// held [1 -1], copy [-1 1], same tensor: true
}
