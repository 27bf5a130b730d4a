package domainbn_test

import (
	"fmt"
	"math/rand"
	"testing"

	"github.com/gorgonia-bn/bn"
	"github.com/gorgonia-bn/bn/domainbn"
	"gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// coreRenormRun runs a core layer with γ and β (bn.New with opts) on x in
// the given mode, starting from state (nil: a fresh layer), with the cost
// Σ y⊙w. It returns y, dx, dγ, dβ and the layer's state afterwards.
func coreRenormRun(shape tensor.Shape, x, w, gamma, beta []float64, mode bn.Mode, state []byte, opts []bn.Option) (o out, newState []byte, err error) {
	g := gorgonia.NewGraph()
	xn := gorgonia.NewTensor(g, tensor.Float64, len(shape), gorgonia.WithShape(shape...), gorgonia.WithName("x"), gorgonia.WithValue(vals(x, shape)))
	wn := gorgonia.NewTensor(g, tensor.Float64, len(shape), gorgonia.WithShape(shape...), gorgonia.WithName("w"), gorgonia.WithValue(vals(w, shape)))
	l, err := bn.New(g, shape[1], tensor.Float64, opts...)
	if err != nil {
		return out{}, nil, err
	}
	if state != nil {
		if err := l.UnmarshalBinary(state); err != nil {
			return out{}, nil, err
		}
	}
	C := tensor.Shape{shape[1]}
	if err := gorgonia.Let(l.Gamma(), vals(gamma, C)); err != nil {
		return out{}, nil, err
	}
	if err := gorgonia.Let(l.Beta(), vals(beta, C)); err != nil {
		return out{}, nil, err
	}
	if err := l.SetMode(mode); err != nil {
		return out{}, nil, err
	}
	y, err := l.Apply(xn)
	if err != nil {
		return out{}, nil, err
	}
	cost := gorgonia.Must(gorgonia.Sum(gorgonia.Must(gorgonia.HadamardProd(y, wn))))
	grads, err := gorgonia.Grad(cost, xn, l.Gamma(), l.Beta())
	if err != nil {
		return out{}, nil, err
	}
	m := gorgonia.NewTapeMachine(g)
	defer m.Close()
	if err := m.RunAll(); err != nil {
		return out{}, nil, err
	}
	if newState, err = l.MarshalBinary(); err != nil {
		return out{}, nil, err
	}
	return out{y: f64(y), dx: f64(grads[0]), dg: f64(grads[1]), db: f64(grads[2])}, newState, nil
}

// TestRenormEqualsCoreLayers: with Batch Renormalization, a domain layer
// (domain-specific normalization, statistics and γ/β) gives on every step of
// the schedule — mixed batches, an absent domain, every mode — what one core
// renorm layer per domain gives on that domain's samples: y, dx, dγ, dβ, and
// each domain's running statistics and counter, which drives its own
// warm-up schedule (an absent domain's stays where it was).
func TestRenormEqualsCoreLayers(t *testing.T) {
	const D, C = 3, 2
	opts := []bn.Option{bn.WithEps(1e-3), bn.WithMomentum(0.4),
		bn.WithRenorm(bn.RenormConfig{RMax: 1.5, DMax: 0.5, Warmup: 1, RMaxRamp: 1, DMaxRamp: 2})}
	for _, inner := range [][]int{{3}, {2, 2}} {
		t.Run(fmt.Sprint(inner), func(t *testing.T) {
			rng := rand.New(rand.NewSource(8))
			S := 1
			for _, d := range inner {
				S *= d
			}
			shapeOf := func(n int) tensor.Shape { return append(tensor.Shape{n, C}, inner...) }
			h := newHarness(t, shapeOf(len(schedule[0].ids)), D, domainbn.WithBN(opts...))
			gamma, beta := make([][]float64, D), make([][]float64, D)
			for d := range D {
				gamma[d], beta[d] = []float64{0.5 + rng.Float64(), 0.5 + rng.Float64()}, []float64{rng.NormFloat64(), rng.NormFloat64()}
				if err := h.l.SetAffine(d, gamma[d], beta[d]); err != nil {
					t.Fatal(err)
				}
			}
			ref := &reference{C: C, S: S, inner: inner}
			state := map[int][]byte{}
			for k, st := range append(schedule, schedule...) {
				x, w := domainData(rng, st.ids, C*S)
				got, err := h.run(x, w, st.ids, st.mode)
				if err != nil {
					t.Fatalf("step %d: %v", k, err)
				}
				want := out{y: make([]float64, len(x)), dx: make([]float64, len(x)), dg: make([]float64, D*C), db: make([]float64, D*C)}
				P := C * S
				for d, idx := range groupsOf(st.ids, true) {
					o, ns, err := coreRenormRun(ref.shape(len(idx)), ref.sub(x, idx), ref.sub(w, idx), gamma[d], beta[d], st.mode, state[d], opts)
					if err != nil {
						t.Fatalf("step %d domain %d: %v", k, d, err)
					}
					state[d] = ns
					for j, i := range idx {
						copy(want.y[i*P:(i+1)*P], o.y[j*P:(j+1)*P])
						copy(want.dx[i*P:(i+1)*P], o.dx[j*P:(j+1)*P])
					}
					copy(want.dg[d*C:], o.dg)
					copy(want.db[d*C:], o.db)
				}
				assertClose(t, "y", got.y, want.y, 1e-10)
				assertClose(t, "dx", got.dx, want.dx, 1e-10)
				assertClose(t, "dγ", got.dg, want.dg, 1e-10)
				assertClose(t, "dβ", got.db, want.db, 1e-10)
				for d := range D {
					m, v, err := h.l.RunningStats(d)
					if err != nil {
						t.Fatal(err)
					}
					tr, _ := h.l.NumBatchesTracked(d)
					wm, wv, wt := []float64{0, 0}, []float64{1, 1}, int64(0)
					if state[d] != nil {
						l, err := bn.New(gorgonia.NewGraph(), C, tensor.Float64, opts...)
						if err != nil {
							t.Fatal(err)
						}
						if err := l.UnmarshalBinary(state[d]); err != nil {
							t.Fatal(err)
						}
						wm, wv = l.RunningStats()
						wt = l.NumBatchesTracked()
					}
					assertClose(t, "running mean", m, wm, 1e-12)
					assertClose(t, "running var", v, wv, 1e-12)
					if tr != wt {
						t.Fatalf("step %d domain %d: %d batches tracked, want %d", k, d, tr, wt)
					}
				}
			}
		})
	}
}
