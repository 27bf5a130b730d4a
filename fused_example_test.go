package bn_test

import (
	"fmt"
	"log"

	"github.com/gorgonia-bn/bn"
	"gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// The end of a residual block, y = max(0, BN(x) + z), as one op; its
// gradient with respect to z is dy where y > 0.
func ExampleLayer_ApplyAddReLU() {
	g := gorgonia.NewGraph()
	x := input(g, "x", tensor.Shape{4, 1}, []float64{1, 2, 3, 4})
	z := input(g, "z", tensor.Shape{4, 1}, []float64{0.5, 0.5, 0, -2})
	l, err := bn.New(g, 1, tensor.Float64)
	if err != nil {
		log.Fatal(err)
	}
	y, err := l.ApplyAddReLU(x, z)
	if err != nil {
		log.Fatal(err)
	}
	cost := gorgonia.Must(gorgonia.Sum(y))
	grads, err := gorgonia.Grad(cost, z)
	if err != nil {
		log.Fatal(err)
	}
	m := gorgonia.NewTapeMachine(g)
	defer m.Close()
	if err := m.RunAll(); err != nil {
		log.Fatal(err)
	}
	fmt.Printf("y = %.3f\n", y.Value().Data())
	fmt.Printf("dz = %.0f\n", grads[0].Value().Data())
	// Output:
	// y = [0.000 0.053 0.447 0.000]
	// dz = [0 1 1 0]
}
