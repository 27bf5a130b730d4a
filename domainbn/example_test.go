package domainbn_test

import (
	"fmt"
	"log"

	"github.com/gorgonia-bn/bn"
	"github.com/gorgonia-bn/bn/domainbn"
	"gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// A batch mixing two domains: each domain's samples are normalized with that
// domain's statistics and update that domain's running statistics; at
// inference SetDomain picks the statistics to normalize with.
func Example() {
	g := gorgonia.NewGraph()
	// 4 samples × 2 channels: samples 0 and 1 from domain 0, 2 and 3 from
	// domain 1 (whose values are about 10 larger).
	xv := tensor.New(tensor.WithShape(4, 2), tensor.WithBacking([]float64{
		-1, 0,
		1, 2,
		9, 10,
		11, 14,
	}))
	x := gorgonia.NewMatrix(g, tensor.Float64, gorgonia.WithShape(4, 2), gorgonia.WithName("x"), gorgonia.WithValue(xv))
	l, err := domainbn.New(g, 2, 2, tensor.Float64, domainbn.WithBN(bn.WithMomentum(1)))
	if err != nil {
		log.Fatal(err)
	}
	y, err := l.Apply(x)
	if err != nil {
		log.Fatal(err)
	}
	m := gorgonia.NewTapeMachine(g)
	defer m.Close()

	// Training on a mixed batch.
	if err := l.SetDomainIDs([]int{0, 0, 1, 1}); err != nil {
		log.Fatal(err)
	}
	if err := m.RunAll(); err != nil {
		log.Fatal(err)
	}
	fmt.Printf("train:  %.3f\n", y.Value().Data())
	for d := range 2 {
		mean, variance, _ := l.RunningStats(d)
		fmt.Printf("domain %d: running mean %v, var %v\n", d, mean, variance)
	}

	// Inference: the whole batch as domain 1.
	if err := l.SetMode(bn.Eval); err != nil {
		log.Fatal(err)
	}
	if err := l.SetDomain(1); err != nil {
		log.Fatal(err)
	}
	m.Reset()
	if err := m.RunAll(); err != nil {
		log.Fatal(err)
	}
	fmt.Printf("eval 1: %.3f\n", y.Value().Data())
	// Output:
	// train:  [-1.000 -1.000 1.000 1.000 -1.000 -1.000 1.000 1.000]
	// domain 0: running mean [0 1], var [2 2]
	// domain 1: running mean [10 12], var [2 8]
	// eval 1: [-7.778 -4.243 -6.364 -3.536 -0.707 -0.707 0.707 0.707]
}
