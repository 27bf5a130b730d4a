package bn_test

import (
	"fmt"
	"log"

	"github.com/gorgonia-bn/bn"
	"gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// A sequence batch in (N, L, C) order — 2 samples of 3 steps, 2 channels —
// normalized per channel over the 6 (sample, step) pairs, without
// transposing it.
func ExampleWithChannelsLast() {
	g := gorgonia.NewGraph()
	x := input(g, "x", tensor.Shape{2, 3, 2}, []float64{
		1, 10, 2, 20, 3, 30, // sample 0: steps 0, 1, 2 of channels (0, 1)
		4, 40, 5, 50, 6, 60, // sample 1
	})
	layer, err := bn.New(g, 2, tensor.Float64, bn.WithChannelsLast())
	if err != nil {
		log.Fatal(err)
	}
	y, err := layer.Apply(x)
	if err != nil {
		log.Fatal(err)
	}
	m := gorgonia.NewTapeMachine(g)
	defer m.Close()
	if err := m.RunAll(); err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%.3f\n", y.Value().Data())
	mean, _ := layer.RunningStats()
	fmt.Printf("running mean %.2f\n", mean)
	// A channels-first input of the same layer is an error.
	_, err = layer.Apply(input(g, "nlc", tensor.Shape{2, 2, 3}, make([]float64, 12)))
	fmt.Println(err != nil)
	// Output:
	// [-1.464 -1.464 -0.878 -0.878 -0.293 -0.293 0.293 0.293 0.878 0.878 1.464 1.464]
	// running mean [0.35 3.50]
	// true
}
