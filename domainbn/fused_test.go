package domainbn_test

import (
	"errors"
	"fmt"
	"math"
	"math/rand"
	"testing"

	"github.com/gorgonia-bn/bn"
	"github.com/gorgonia-bn/bn/domainbn"
	"gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// TestFusedEqualsTwoOps: a domain layer's ApplyReLU / ApplyAddReLU give
// what Apply → [Add z] → Rectify gives (y and every gradient), with mixed
// domains, for each combination of per-domain normalization, statistics
// and affine, in training and evaluation.
func TestFusedEqualsTwoOps(t *testing.T) {
	shape := tensor.Shape{6, 3, 2, 2}
	ids := []int{0, 1, 1, 0, 2, 1}
	for _, cfg := range [][3]bool{{true, true, true}, {false, true, true}, {true, true, false}} {
		for _, add := range []bool{false, true} {
			for _, mode := range []bn.Mode{bn.Train, bn.Eval} {
				t.Run(fmt.Sprintf("%v/add=%v/%v", cfg, add, mode), func(t *testing.T) {
					r := rand.New(rand.NewSource(5))
					n := shape.TotalSize()
					xs, zs, ws := make([]float64, n), make([]float64, n), make([]float64, n)
					for i := range xs {
						xs[i], zs[i], ws[i] = 2+3*r.NormFloat64(), r.NormFloat64(), r.NormFloat64()
					}
					var res [2][]([]float64)
					for k, fused := range []bool{true, false} {
						g := gorgonia.NewGraph()
						mk := func(name string, v []float64) *gorgonia.Node {
							return gorgonia.NewTensor(g, tensor.Float64, 4, gorgonia.WithShape(shape...), gorgonia.WithName(name), gorgonia.WithValue(vals(v, shape)))
						}
						x, z, w := mk("x", xs), mk("z", zs), mk("w", ws)
						l, err := domainbn.New(g, 3, 3, tensor.Float64, domainbn.WithDomainNorm(cfg[0]), domainbn.WithDomainStats(cfg[1]), domainbn.WithDomainAffine(cfg[2]))
						must(t, err)
						must(t, l.SetDomainIDs(ids))
						must(t, l.SetMode(mode))
						var y *gorgonia.Node
						switch {
						case fused && add:
							y, err = l.ApplyAddReLU(x, z)
						case fused:
							y, err = l.ApplyReLU(x)
						default:
							y, err = l.Apply(x)
							if err == nil && add {
								y, err = gorgonia.Add(y, z)
							}
							if err == nil {
								y, err = gorgonia.Rectify(y)
							}
						}
						must(t, err)
						cost := gorgonia.Must(gorgonia.Sum(gorgonia.Must(gorgonia.HadamardProd(y, w))))
						wrt := append(gorgonia.Nodes{x, z}, l.Learnables()...)
						if !add {
							wrt = append(gorgonia.Nodes{x}, l.Learnables()...)
						}
						grads, err := gorgonia.Grad(cost, wrt...)
						must(t, err)
						m := gorgonia.NewTapeMachine(g, gorgonia.TraceExec())
						defer m.Close()
						must(t, m.RunAll())
						res[k] = append(res[k], f64(y))
						for _, gn := range grads {
							res[k] = append(res[k], f64(gn))
						}
					}
					for i := range res[0] {
						for j := range res[0][i] {
							if d := math.Abs(res[0][i][j] - res[1][i][j]); d > 1e-11*math.Max(1, math.Abs(res[1][i][j])) {
								t.Fatalf("output %d [%d]: fused %v, two ops %v", i, j, res[0][i][j], res[1][i][j])
							}
						}
					}
					if m := maxAbsAll(res[0][1]); m == 0 {
						t.Fatal("dx is zero: vacuous")
					}
				})
			}
		}
	}
}

func maxAbsAll(v []float64) float64 {
	m := 0.0
	for _, x := range v {
		m = math.Max(m, math.Abs(x))
	}
	return m
}

func TestFusedErrors(t *testing.T) {
	g := gorgonia.NewGraph()
	l, err := domainbn.New(g, 3, 2, tensor.Float64)
	must(t, err)
	x := gorgonia.NewTensor(g, tensor.Float64, 2, gorgonia.WithShape(4, 3), gorgonia.WithName("x"))
	z := gorgonia.NewTensor(g, tensor.Float64, 2, gorgonia.WithShape(4, 2), gorgonia.WithName("z"))
	if _, err := l.ApplyAddReLU(x, z); !errors.Is(err, bn.ErrShape) {
		t.Errorf("z of another shape: %v, want ErrShape", err)
	}
	if _, err := l.ApplyAddReLU(x, nil); !errors.Is(err, bn.ErrShape) {
		t.Errorf("nil z: %v, want ErrShape", err)
	}
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
