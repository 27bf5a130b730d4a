package bn_test

import (
	"context"
	"fmt"
	"io"
	"log"
	"sync"

	"github.com/gorgonia-bn/bn"
	"github.com/gorgonia-bn/bn/collective"
	"gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// trainOnce runs one training forward of l over x.
func trainOnce(g *gorgonia.ExprGraph) {
	m := gorgonia.NewTapeMachine(g)
	defer m.Close()
	if err := m.RunAll(); err != nil {
		log.Fatal(err)
	}
}

// A model's BN layers and weights saved under PyTorch's keys in
// safetensors, and loaded into another model (another graph, another batch
// size). PyTorch reads the file with safetensors.torch.load_file and
// load_state_dict; its own files load the same way.
func ExampleStateDict() {
	g := gorgonia.NewGraph()
	x := input(g, "x", tensor.Shape{4, 2}, []float64{1, 10, 2, 20, 3, 30, 4, 40})
	l, _ := bn.New(g, 2, tensor.Float64)
	if _, err := l.Apply(x); err != nil {
		log.Fatal(err)
	}
	trainOnce(g)
	w := tensor.New(tensor.WithShape(2, 2), tensor.WithBacking([]float64{1, 2, 3, 4})) // a linear layer's weight

	save := bn.NewStateDict()
	save.AddLayer("features.1", l)
	save.AddTensor("features.0.weight", w)
	file, err := save.Save() // or WriteFile(path)
	if err != nil {
		log.Fatal(err)
	}

	g2 := gorgonia.NewGraph()
	l2, _ := bn.New(g2, 2, tensor.Float64)
	w2 := tensor.New(tensor.Of(tensor.Float64), tensor.WithShape(2, 2))
	load := bn.NewStateDict()
	load.AddLayer("features.1", l2)
	load.AddTensor("features.0.weight", w2)
	if err := load.Load(file); err != nil { // or ReadFile(path)
		log.Fatal(err)
	}
	mean, variance := l2.RunningStats()
	fmt.Println(load.Keys())
	fmt.Printf("running mean %.3f, var %.3f, batches %d, weight %v\n", mean, variance, l2.NumBatchesTracked(), w2.Data())

	// A model with other layers: every problem at once, nothing changed.
	g3 := gorgonia.NewGraph()
	l3, _ := bn.New(g3, 3, tensor.Float64)
	bad := bn.NewStateDict()
	bad.AddLayer("features.1", l3)
	fmt.Println(bad.Load(file))
	// Output:
	// [features.0.weight features.1.bias features.1.num_batches_tracked features.1.running_mean features.1.running_var features.1.weight]
	// running mean [0.250 2.500], var [1.067 17.567], batches 1, weight [1 2 3 4]
	// bn: invalid state: state dict: unexpected keys ["features.0.weight"]; mismatches: features.1.weight: shape [2] in the file, the model has [3]; features.1.bias: shape [2] in the file, the model has [3]; features.1.running_mean: shape [2] in the file, the model has [3]; features.1.running_var: shape [2] in the file, the model has [3]
}

// A BN layer in Eval folded into the linear layer before it: one layer
// instead of two at inference, the same outputs.
func ExampleFoldWeights() {
	g := gorgonia.NewGraph()
	l, _ := bn.New(g, 2, tensor.Float64)
	l.SetRunningStats([]float64{1, -1}, []float64{4 - 1e-5, 1 - 1e-5}) // σ = 2 and 1
	l.SetMode(bn.Eval)
	w := tensor.New(tensor.WithShape(3, 2), tensor.WithBacking([]float64{1, 1, 2, 2, 3, 3})) // x·W, (in, out)
	b := tensor.New(tensor.WithShape(2), tensor.WithBacking([]float64{1, 0}))
	wf, bf, err := bn.FoldWeights(l, w, b, 1) // axis 1: the output channels of x·W
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("W' = %.2f\nb' = %.2f\n", wf.Data(), bf.Data())
	// Output:
	// W' = [0.50 1.00 1.00 2.00 1.50 3.00]
	// b' = [0.00 1.00]
}

// γ and β from elsewhere (another framework): dtype and shape are checked.
func ExampleLayer_SetAffine() {
	g := gorgonia.NewGraph()
	l, _ := bn.New(g, 3, tensor.Float32, bn.WithName("bn1"))
	err := l.SetAffine(
		tensor.New(tensor.WithShape(3), tensor.WithBacking([]float32{1, 2, 3})),
		tensor.New(tensor.WithShape(3), tensor.WithBacking([]float32{0, 0.5, 1})))
	fmt.Println(err, l.Gamma().Value().Data(), l.Beta().Value().Data())
	err = l.SetAffine(
		tensor.New(tensor.WithShape(3), tensor.WithBacking([]float64{1, 2, 3})),
		tensor.New(tensor.WithShape(3), tensor.WithBacking([]float64{0, 0, 0})))
	fmt.Println(err)
	// Output:
	// <nil> [1 2 3] [0 0.5 1]
	// bn: unsupported dtype: SetAffine: γ is float64, layer bn1 is float32
}

// A layer trained in one graph, evaluated in another graph at another
// batch size: the copy shares γ, β, the running statistics and the mode.
func ExampleLayer_In() {
	g := gorgonia.NewGraph()
	x := input(g, "x", tensor.Shape{4, 1}, []float64{1, 2, 3, 4})
	l, _ := bn.New(g, 1, tensor.Float64, bn.WithName("bn"), bn.WithMomentum(1))
	if _, err := l.Apply(x); err != nil {
		log.Fatal(err)
	}
	trainOnce(g) // running mean 2.5, var 1.667

	g2 := gorgonia.NewGraph()
	l2, err := l.In(g2)
	if err != nil {
		log.Fatal(err)
	}
	y2, _ := l2.Apply(input(g2, "x", tensor.Shape{2, 1}, []float64{2.5, 5}))
	l2.SetMode(bn.Eval) // one mode for both graphs
	trainOnce(g2)
	mean, variance := l.RunningStats()
	fmt.Printf("y = %.3f; running mean %.3f, var %.3f; %v\n", y2.Value().Data(), mean, variance, l.Mode())
	// Output:
	// y = [0.000 1.936]; running mean [2.500], var [1.667]; eval
}

// Converting existing layers to SyncBN on two in-process ranks (PyTorch's
// convert_sync_batchnorm): each rank's batch is normalized with the
// statistics of both.
func ExampleSync() {
	comms, _ := collective.NewInProcess(2)
	batches := [][]float64{{0, 2}, {4, 6}}
	graphs := make([]*gorgonia.ExprGraph, 2)
	outs := make([]*gorgonia.Node, 2)
	for r := range 2 { // Gorgonia graphs are built one at a time
		graphs[r] = gorgonia.NewGraph()
		l, _ := bn.New(graphs[r], 1, tensor.Float64, bn.WithName("head.bn"))
		outs[r], _ = l.Apply(input(graphs[r], "x", tensor.Shape{2, 1}, batches[r]))
		if err := bn.Sync([]bn.Normalizer{l}, comms[r]); err != nil {
			log.Fatal(err)
		}
	}
	var wg sync.WaitGroup
	for r := range 2 {
		wg.Go(func() { trainOnce(graphs[r]) })
	}
	wg.Wait()
	fmt.Printf("rank 0 %.3f, rank 1 %.3f\n", outs[0].Value().Data(), outs[1].Value().Data())
	// Output:
	// rank 0 [-1.342 -0.447], rank 1 [0.447 1.342]
}

// PreciseBN over 10 samples in batches of 4, 4 and 2: one forward graph per
// batch size, over copies of the model's layer.
func ExampleBySize() {
	data := []float64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}
	g := gorgonia.NewGraph()
	l, _ := bn.New(g, 1, tensor.Float64, bn.WithName("bn"))
	run := bn.BySize(func(_ context.Context, i int) (int, error) {
		if 4*i >= len(data) {
			return 0, io.EOF
		}
		return min(4, len(data)-4*i), nil
	}, func(n int) (bn.BatchFunc, error) {
		gn := gorgonia.NewGraph()
		ln, err := l.In(gn)
		if err != nil {
			return nil, err
		}
		xv := tensor.New(tensor.Of(tensor.Float64), tensor.WithShape(n, 1))
		x := gorgonia.NewTensor(gn, tensor.Float64, 2, gorgonia.WithShape(n, 1), gorgonia.WithValue(xv))
		if _, err := ln.Apply(x); err != nil {
			return nil, err
		}
		m := gorgonia.NewTapeMachine(gn)
		return func(_ context.Context, i int) (int, error) {
			copy(xv.Data().([]float64), data[4*i:])
			m.Reset()
			return n, m.RunAll()
		}, nil
	})
	rep, err := bn.Precise(context.Background(), []bn.Normalizer{l}, run, bn.PreciseOptions{Samples: 100})
	mean, variance := l.RunningStats()
	fmt.Printf("%v; %d batches, %d samples, data ended %v; mean %.2f, var %.4f\n", err, rep.Batches, rep.Samples, rep.DataEnded, mean, variance)
	// Output:
	// <nil>; 3 batches, 10 samples, data ended true; mean [5.50], var [9.1667]
}

// After every Step, every rank holds rank 0's running statistics (PyTorch
// DDP's broadcast_buffers), for layers that are not synchronized.
func ExampleDataParallel_SetBuffers() {
	comms, _ := collective.NewInProcess(2)
	layers := make([]*bn.Layer, 2)
	dps := make([]*bn.DataParallel, 2)
	for r := range 2 { // Gorgonia graphs are built one at a time
		layers[r], _ = bn.New(gorgonia.NewGraph(), 1, tensor.Float64)
		layers[r].SetRunningStats([]float64{float64(r)}, []float64{1 + float64(r)})
		p := gorgonia.NewVector(gorgonia.NewGraph(), tensor.Float64, gorgonia.WithShape(1), gorgonia.WithInit(gorgonia.Zeroes()))
		dps[r], _ = bn.NewDataParallel(comms[r], gorgonia.Nodes{p}, bn.GradMean)
		if err := dps[r].SetBuffers(0, layers[r]); err != nil {
			log.Fatal(err)
		}
	}
	var wg sync.WaitGroup
	for r := range 2 {
		wg.Go(func() {
			if err := dps[r].BroadcastBuffers(context.Background()); err != nil { // Step and Broadcast do it too
				log.Fatal(err)
			}
		})
	}
	wg.Wait()
	m1, v1 := layers[1].RunningStats()
	fmt.Println(m1, v1)
	// Output:
	// [0] [1]
}
