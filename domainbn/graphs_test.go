package domainbn_test

import (
	"errors"
	"math"
	"math/rand"
	"slices"
	"testing"

	"github.com/gorgonia-bn/bn"
	"github.com/gorgonia-bn/bn/domainbn"
	"gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// fwdGraph is a forward-only graph x → l.Apply(x) of one batch shape.
type fwdGraph struct {
	l     *domainbn.Layer
	x, y  *gorgonia.Node
	m     gorgonia.VM
	shape tensor.Shape
}

func copyIn(t *testing.T, l *domainbn.Layer, shape ...int) *fwdGraph {
	t.Helper()
	g := gorgonia.NewGraph()
	c, err := l.In(g)
	if err != nil {
		t.Fatal(err)
	}
	f := &fwdGraph{l: c, shape: shape}
	f.x = gorgonia.NewTensor(g, tensor.Float64, len(shape), gorgonia.WithShape(shape...), gorgonia.WithName("x"), gorgonia.WithInit(gorgonia.Zeroes()))
	if f.y, err = c.Apply(f.x); err != nil {
		t.Fatal(err)
	}
	f.m = gorgonia.NewTapeMachine(g)
	t.Cleanup(func() { f.m.Close() })
	return f
}

func (f *fwdGraph) run(t *testing.T, x []float64, ids []int) []float64 {
	t.Helper()
	if err := setDomains(f.l, ids); err != nil {
		t.Fatal(err)
	}
	if err := gorgonia.Let(f.x, vals(x, f.shape)); err != nil {
		t.Fatal(err)
	}
	f.m.Reset()
	if err := f.m.RunAll(); err != nil {
		t.Fatal(err)
	}
	return f64(f.y)
}

// TestLayerIn trains a domain layer (per-domain statistics and γ/β) in one
// graph and evaluates it in two others of other batch sizes: outputs equal
// a float64 evaluation with each domain's running statistics and γ/β, the
// statistics stay bitwise the same, and a training run in a copy updates the
// shared statistics once.
func TestLayerIn(t *testing.T) {
	const C, D, eps = 3, 2, 1e-5
	rng := rand.New(rand.NewSource(7))
	shape := tensor.Shape{6, C, 2}
	h := newHarness(t, shape, D)
	solver := gorgonia.NewVanillaSolver(gorgonia.WithLearnRate(0.2))
	ids := []int{0, 1, 0, 1, 1, 0}
	for range 3 {
		x, w := domainData(rng, ids, 2*C)
		if _, err := h.run(x, w, ids, bn.Train); err != nil {
			t.Fatal(err)
		}
		if err := solver.Step(gorgonia.NodesToValueGrads(h.l.Learnables())); err != nil {
			t.Fatal(err)
		}
	}
	type state struct{ mean, variance, gamma, beta []float64 }
	snapshot := func(l *domainbn.Layer) [D]state {
		var s [D]state
		for d := range D {
			m, v, err := l.RunningStats(d)
			if err != nil {
				t.Fatal(err)
			}
			g, b, err := l.Affine(d)
			if err != nil {
				t.Fatal(err)
			}
			s[d] = state{m, v, g, b}
		}
		return s
	}
	want := snapshot(h.l)
	if want[0].gamma[0] == want[1].gamma[0] || want[0].mean[0] == want[1].mean[0] {
		t.Fatal("the domains did not diverge: the test would not see a mix-up")
	}
	g2, g3 := copyIn(t, h.l, 3, C, 2), copyIn(t, h.l, 4, C)
	if err := g2.l.SetMode(bn.Eval); err != nil {
		t.Fatal(err)
	}
	if h.l.Mode() != bn.Eval {
		t.Fatal("the mode is not shared by the copies")
	}
	ref := func(x []float64, ids []int, inner int) []float64 {
		y := make([]float64, len(x))
		for i := range x {
			n, c := i/(C*inner), i/inner%C
			s := want[ids[n]]
			y[i] = (x[i]-s.mean[c])/math.Sqrt(s.variance[c]+eps)*s.gamma[c] + s.beta[c]
		}
		return y
	}
	for range 2 {
		x2, ids2 := make([]float64, 3*C*2), []int{1, 0, 1}
		x3, ids3 := make([]float64, 4*C), []int{0, 0, 1, 0}
		for i := range x2 {
			x2[i] = rng.NormFloat64()*2 + 1
		}
		for i := range x3 {
			x3[i] = rng.NormFloat64() - 1
		}
		assertClose(t, "graph 2", g2.run(t, x2, ids2), ref(x2, ids2, 2), 1e-12)
		assertClose(t, "graph 3", g3.run(t, x3, ids3), ref(x3, ids3, 1), 1e-12)
		for _, l := range []*domainbn.Layer{h.l, g2.l, g3.l} {
			if got := snapshot(l); !slices.EqualFunc(got[:], want[:], func(a, b state) bool {
				return slices.Equal(a.mean, b.mean) && slices.Equal(a.variance, b.variance) && slices.Equal(a.gamma, b.gamma) && slices.Equal(a.beta, b.beta)
			}) {
				t.Fatal("evaluation in a copy changed the state")
			}
		}
	}
	// Training in a copy: domain 1 only, one update seen by every copy.
	before, err := h.l.NumBatchesTracked(1)
	if err != nil {
		t.Fatal(err)
	}
	if err := h.l.SetMode(bn.Train); err != nil {
		t.Fatal(err)
	}
	g3.run(t, []float64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}, []int{1, 1, 1, 1})
	for _, l := range []*domainbn.Layer{h.l, g2.l, g3.l} {
		n0, _ := l.NumBatchesTracked(0)
		n1, _ := l.NumBatchesTracked(1)
		if n1 != before+1 || n0 != before {
			t.Fatalf("tracked after one step in a copy: domain 0 %d, domain 1 %d; want %d, %d", n0, n1, before, before+1)
		}
		m, _, _ := l.RunningStats(1)
		if want := 0.9*want[1].mean[0] + 0.1*(1+4+7+10)/4; math.Abs(m[0]-want) > 1e-12 {
			t.Fatalf("domain 1 mean[0] %v, want %v", m[0], want)
		}
	}
	if got, err := h.l.In(h.l.BatchNorm().Gamma().Graph()); err != nil || got != h.l {
		t.Fatalf("In(own graph) = %p, %v; want the layer itself", got, err)
	}
	var nilLayer *domainbn.Layer
	if _, err := nilLayer.In(gorgonia.NewGraph()); !errors.Is(err, bn.ErrOption) {
		t.Fatalf("In on a nil layer: %v, want ErrOption", err)
	}
	if _, err := h.l.In(nil); !errors.Is(err, bn.ErrOption) {
		t.Fatalf("In(nil): %v, want ErrOption", err)
	}
}
