package bn

import (
	"fmt"
	"math"
	"math/rand"
	"testing"

	"gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// comboRun is what runCombo returns, every tensor in NCHW order.
type comboRun struct {
	y, dx, dz, dg, db, rm, rv []float64
}

// runCombo runs x → l.Apply / ApplyReLU / ApplyAddReLU(x, z) → Σ y⊙w on an
// NCHW tensor of shape s, or (last) on its channels-last transposition:
// steps training steps, then one in Eval; it returns the last step's values.
func runCombo(s tensor.Shape, last bool, apply string, xs, zs, ws []float64, steps int, opts ...Option) (comboRun, error) {
	shape, tr, back := s, func(v []float64) []float64 { return v }, func(v []float64) []float64 { return v }
	if last {
		shape = lastShape(s)
		tr = func(v []float64) []float64 { return toLast(v, s) }
		back = func(v []float64) []float64 { return fromLast(v, s) }
		opts = append(opts, WithChannelsLast())
	}
	g := gorgonia.NewGraph()
	node := func(name string, v []float64) *gorgonia.Node {
		return gorgonia.NewTensor(g, tensor.Float64, len(shape), gorgonia.WithShape(shape...), gorgonia.WithName(name),
			gorgonia.WithValue(tensor.New(tensor.WithShape(shape...), tensor.WithBacking(tr(v)))))
	}
	x, z, w := node("x", xs), node("z", zs), node("w", ws)
	l, err := New(g, s[1], tensor.Float64, append([]Option{WithName("l")}, opts...)...)
	if err != nil {
		return comboRun{}, err
	}
	var y *gorgonia.Node
	switch apply {
	case "apply":
		y, err = l.Apply(x)
	case "relu":
		y, err = l.ApplyReLU(x)
	case "addrelu":
		y, err = l.ApplyAddReLU(x, z)
	}
	if err != nil {
		return comboRun{}, err
	}
	cost := gorgonia.Must(gorgonia.Sum(gorgonia.Must(gorgonia.HadamardProd(y, w))))
	grads, err := gorgonia.Grad(cost, x, z, l.Gamma(), l.Beta())
	if err != nil && apply != "addrelu" {
		// z is not in the graph: no gradient for it.
		grads, err = gorgonia.Grad(cost, x, l.Gamma(), l.Beta())
		if err == nil {
			grads = gorgonia.Nodes{grads[0], nil, grads[1], grads[2]}
		}
	}
	if err != nil {
		return comboRun{}, err
	}
	m := gorgonia.NewTapeMachine(g)
	defer m.Close()
	for i := range steps + 1 {
		if i == steps {
			if err := l.SetMode(Eval); err != nil {
				return comboRun{}, err
			}
		}
		m.Reset()
		if err := m.RunAll(); err != nil {
			return comboRun{}, err
		}
	}
	f := func(n *gorgonia.Node) []float64 {
		if n == nil {
			return nil
		}
		return append([]float64(nil), n.Value().Data().([]float64)...)
	}
	r := comboRun{y: back(f(y)), dx: back(f(grads[0])), dg: f(grads[2]), db: f(grads[3])}
	if grads[1] != nil {
		r.dz = back(f(grads[1]))
	}
	r.rm, r.rv = l.RunningStats()
	return r, nil
}

// TestChannelsLastCombinations: the options that landed beside
// WithChannelsLast — the fused ReLU ops and Batch Renormalization, with
// ghost batches — give on a channels-last input what they give on the NCHW
// tensor it transposes: outputs, gradients (x, z, γ, β) and running
// statistics after training steps and an Eval step.
func TestChannelsLastCombinations(t *testing.T) {
	renorm := WithRenorm(RenormConfig{RMax: 1.5, DMax: 0.5})
	for _, s := range []tensor.Shape{{6, 3, 5}, {4, 5, 3, 2}, {5, 1, 4}, {2, 1024, 2}} {
		for _, apply := range []string{"apply", "relu", "addrelu"} {
			for _, oc := range []struct {
				name string
				opts []Option
			}{
				{"plain", nil},
				{"renorm", []Option{WithMomentum(0.3), renorm}},
				{"ghost", []Option{WithGhostBatch(2)}},
				{"ghost+renorm", []Option{WithGhostBatch(2), renorm}},
			} {
				t.Run(fmt.Sprintf("%v/%s/%s", s, apply, oc.name), func(t *testing.T) {
					r := rand.New(rand.NewSource(int64(s.TotalSize())))
					n := s.TotalSize()
					xs, zs, ws := make([]float64, n), make([]float64, n), make([]float64, n)
					for i := range n {
						xs[i], zs[i], ws[i] = r.NormFloat64()*2+float64(i%3), r.NormFloat64(), r.NormFloat64()
					}
					want, err := runCombo(s, false, apply, xs, zs, ws, 3, oc.opts...)
					if err != nil {
						t.Fatal(err)
					}
					got, err := runCombo(s, true, apply, xs, zs, ws, 3, oc.opts...)
					if err != nil {
						t.Fatal(err)
					}
					for _, c := range []struct {
						name string
						g, w []float64
					}{{"y", got.y, want.y}, {"dx", got.dx, want.dx}, {"dz", got.dz, want.dz}, {"dγ", got.dg, want.dg},
						{"dβ", got.db, want.db}, {"running mean", got.rm, want.rm}, {"running var", got.rv, want.rv}} {
						if len(c.g) != len(c.w) {
							t.Fatalf("%s: %d values, want %d", c.name, len(c.g), len(c.w))
						}
						for i := range c.g {
							if d := math.Abs(c.g[i] - c.w[i]); !(d <= 1e-12*(1+math.Abs(c.w[i]))) {
								t.Fatalf("%s[%d] = %v, NCHW %v (diff %g)", c.name, i, c.g[i], c.w[i], d)
							}
						}
					}
				})
			}
		}
	}
}
