package bn

import (
	"math"
	"math/rand"
	"testing"

	"gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

func TestSmokeGrad(t *testing.T) {
	r := rand.New(rand.NewSource(1))
	shape := tensor.Shape{4, 3, 2, 2}
	xs := make([]float64, shape.TotalSize())
	ws := make([]float64, shape.TotalSize())
	for i := range xs {
		xs[i] = r.NormFloat64()*2 + 1
		ws[i] = r.NormFloat64()
	}
	run := func(xv []float64) (float64, []float64, []float64) {
		g := gorgonia.NewGraph()
		x := gorgonia.NewTensor(g, tensor.Float64, 4, gorgonia.WithShape(shape...), gorgonia.WithName("x"), gorgonia.WithValue(tensor.New(tensor.WithShape(shape...), tensor.WithBacking(append([]float64(nil), xv...)))))
		w := gorgonia.NewTensor(g, tensor.Float64, 4, gorgonia.WithShape(shape...), gorgonia.WithName("w"), gorgonia.WithValue(tensor.New(tensor.WithShape(shape...), tensor.WithBacking(ws))))
		l, err := New(g, 3, tensor.Float64)
		if err != nil {
			t.Fatal(err)
		}
		y, err := l.Apply(x)
		if err != nil {
			t.Fatal(err)
		}
		cost := gorgonia.Must(gorgonia.Sum(gorgonia.Must(gorgonia.HadamardProd(y, w))))
		grads, err := gorgonia.Grad(cost, x, l.Gamma())
		if err != nil {
			t.Fatal(err)
		}
		m := gorgonia.NewTapeMachine(g)
		defer m.Close()
		if err := m.RunAll(); err != nil {
			t.Fatal(err)
		}
		return cost.Value().Data().(float64), grads[0].Value().Data().([]float64), grads[1].Value().Data().([]float64)
	}
	c0, dx, _ := run(xs)
	for _, i := range []int{0, 5, 17, 40} {
		h := 1e-5
		xp := append([]float64(nil), xs...)
		xp[i] += h
		cp, _, _ := run(xp)
		xp[i] -= 2 * h
		cm, _, _ := run(xp)
		fd := (cp - cm) / (2 * h)
		if math.Abs(fd-dx[i]) > 1e-6 {
			t.Errorf("dx[%d] = %v, fd %v (cost %v)", i, dx[i], fd, c0)
		}
	}
}
