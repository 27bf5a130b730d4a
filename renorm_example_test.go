package bn_test

import (
	"fmt"
	"log"

	"github.com/gorgonia-bn/bn"
	"gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// Batch Renormalization: in training, the batch {1, 2, 3, 4} is normalized
// with its own statistics and then corrected towards the running mean 2 and
// variance 4, with r clipped to [1/2, 2] and d to [−1, 1]. With Warmup 1
// the first training run is plain BN; the second renormalizes, and since
// r = σ_B/σ ≈ 0.56 and d = (μ_B − μ)/σ = 0.25 lie inside their limits, y is
// what Eval gives with the running statistics (momentum 0 keeps them).
func ExampleWithRenorm() {
	g := gorgonia.NewGraph()
	x := input(g, "x", tensor.Shape{4, 1}, []float64{1, 2, 3, 4})
	l, err := bn.New(g, 1, tensor.Float64, bn.WithMomentum(0),
		bn.WithRenorm(bn.RenormConfig{RMax: 2, DMax: 1, Warmup: 1}))
	if err != nil {
		log.Fatal(err)
	}
	if err := l.SetRunningStats([]float64{2}, []float64{4}); err != nil {
		log.Fatal(err)
	}
	y, err := l.Apply(x)
	if err != nil {
		log.Fatal(err)
	}
	m := gorgonia.NewTapeMachine(g)
	defer m.Close()
	for _, mode := range []bn.Mode{bn.Train, bn.Train, bn.Eval} {
		rmax, dmax := bn.RenormConfig{RMax: 2, DMax: 1, Warmup: 1}.Limits(l.NumBatchesTracked())
		if err := l.SetMode(mode); err != nil {
			log.Fatal(err)
		}
		m.Reset()
		if err := m.RunAll(); err != nil {
			log.Fatal(err)
		}
		fmt.Printf("%-5v rmax %.0f dmax %.0f  y = %.3f\n", mode, rmax, dmax, y.Value().Data())
	}
	// Output:
	// train rmax 1 dmax 0  y = [-1.342 -0.447 0.447 1.342]
	// train rmax 2 dmax 1  y = [-0.500 0.000 0.500 1.000]
	// eval  rmax 2 dmax 1  y = [-0.500 0.000 0.500 1.000]
}
