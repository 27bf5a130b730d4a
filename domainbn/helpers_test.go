package domainbn_test

import (
	"fmt"
	"math"
	"math/rand"
	"testing"

	"github.com/gorgonia-bn/bn"
	"github.com/gorgonia-bn/bn/domainbn"
	"gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// out is what one run of x → BN → Σ y⊙w gives: y, dx, and dγ, dβ (D·C with
// domain-specific affine, C otherwise; nil without affine).
type out struct {
	y, dx, dg, db []float64
	cost          float64
}

// harness is the graph x → domain BN → cost = Σ y⊙w in float64, with the
// gradients of x, γ and β, for one batch shape; x, w and the domains change
// between runs.
type harness struct {
	shape tensor.Shape
	x, w  *gorgonia.Node
	y     *gorgonia.Node
	cost  *gorgonia.Node
	grads gorgonia.Nodes
	l     *domainbn.Layer
	m     gorgonia.VM
}

func newHarness(t testing.TB, shape tensor.Shape, D int, opts ...domainbn.Option) *harness {
	t.Helper()
	h, err := buildHarness(shape, D, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.m.Close() })
	return h
}

func buildHarness(shape tensor.Shape, D int, opts ...domainbn.Option) (*harness, error) {
	g := gorgonia.NewGraph()
	h := &harness{shape: shape}
	h.x = gorgonia.NewTensor(g, tensor.Float64, len(shape), gorgonia.WithShape(shape...), gorgonia.WithName("x"), gorgonia.WithInit(gorgonia.Zeroes()))
	h.w = gorgonia.NewTensor(g, tensor.Float64, len(shape), gorgonia.WithShape(shape...), gorgonia.WithName("w"), gorgonia.WithInit(gorgonia.Zeroes()))
	var err error
	if h.l, err = domainbn.New(g, shape[1], D, tensor.Float64, append([]domainbn.Option{domainbn.WithBN(bn.WithName("dbn"))}, opts...)...); err != nil {
		return nil, err
	}
	if h.y, err = h.l.Apply(h.x); err != nil {
		return nil, err
	}
	h.cost = gorgonia.Must(gorgonia.Sum(gorgonia.Must(gorgonia.HadamardProd(h.y, h.w))))
	wrt := append(gorgonia.Nodes{h.x}, h.l.Learnables()...)
	if h.grads, err = gorgonia.Grad(h.cost, wrt...); err != nil {
		return nil, err
	}
	h.m = gorgonia.NewTapeMachine(g, gorgonia.BindDualValues(h.l.Learnables()...))
	return h, nil
}

func vals(v []float64, shape tensor.Shape) *tensor.Dense {
	return tensor.New(tensor.WithShape(shape...), tensor.WithBacking(append([]float64(nil), v...)))
}

func f64(n *gorgonia.Node) []float64 {
	return append([]float64(nil), n.Value().Data().([]float64)...)
}

// setDomains selects ids on the layer: SetDomain when they are all equal,
// SetDomainIDs otherwise.
func setDomains(l *domainbn.Layer, ids []int) error {
	same := len(ids) > 0
	for _, d := range ids {
		same = same && d == ids[0]
	}
	if same {
		return l.SetDomain(ids[0])
	}
	return l.SetDomainIDs(ids)
}

// run sets x, w, the domains and the mode and runs the graph once.
func (h *harness) run(x, w []float64, ids []int, mode bn.Mode) (out, error) {
	if err := gorgonia.Let(h.x, vals(x, h.shape)); err != nil {
		return out{}, err
	}
	if err := gorgonia.Let(h.w, vals(w, h.shape)); err != nil {
		return out{}, err
	}
	if err := setDomains(h.l, ids); err != nil {
		return out{}, err
	}
	if err := h.l.SetMode(mode); err != nil {
		return out{}, err
	}
	h.m.Reset()
	if err := h.m.RunAll(); err != nil {
		return out{}, err
	}
	o := out{y: f64(h.y), dx: f64(h.grads[0]), cost: h.cost.Value().Data().(float64)}
	if len(h.grads) == 3 {
		o.dg, o.db = f64(h.grads[1]), f64(h.grads[2])
	}
	return o, nil
}

// plainRun runs a core layer without affine (bn.New, WithAffine(false)) on
// x in the given mode, starting from state (nil: a fresh layer), with the
// cost Σ x̂⊙w. It returns x̂, dx and the layer's state afterwards.
func plainRun(shape tensor.Shape, x, w []float64, mode bn.Mode, state []byte, opts []bn.Option) (xhat, dx []float64, newState []byte, err error) {
	g := gorgonia.NewGraph()
	xn := gorgonia.NewTensor(g, tensor.Float64, len(shape), gorgonia.WithShape(shape...), gorgonia.WithName("x"), gorgonia.WithValue(vals(x, shape)))
	wn := gorgonia.NewTensor(g, tensor.Float64, len(shape), gorgonia.WithShape(shape...), gorgonia.WithName("w"), gorgonia.WithValue(vals(w, shape)))
	l, err := bn.New(g, shape[1], tensor.Float64, append(append([]bn.Option(nil), opts...), bn.WithAffine(false))...)
	if err != nil {
		return nil, nil, nil, err
	}
	if state != nil {
		if err := l.UnmarshalBinary(state); err != nil {
			return nil, nil, nil, err
		}
	}
	if err := l.SetMode(mode); err != nil {
		return nil, nil, nil, err
	}
	y, err := l.Apply(xn)
	if err != nil {
		return nil, nil, nil, err
	}
	cost := gorgonia.Must(gorgonia.Sum(gorgonia.Must(gorgonia.HadamardProd(y, wn))))
	grads, err := gorgonia.Grad(cost, xn)
	if err != nil {
		return nil, nil, nil, err
	}
	m := gorgonia.NewTapeMachine(g)
	defer m.Close()
	if err := m.RunAll(); err != nil {
		return nil, nil, nil, err
	}
	if newState, err = l.MarshalBinary(); err != nil {
		return nil, nil, nil, err
	}
	return f64(y), f64(grads[0]), newState, nil
}

// plainStats decodes the running statistics and counter of a plain state
// (nil: a fresh layer).
func plainStats(C int, state []byte, opts []bn.Option) (mean, variance []float64, tracked int64, err error) {
	l, err := bn.New(gorgonia.NewGraph(), C, tensor.Float64, append(append([]bn.Option(nil), opts...), bn.WithAffine(false))...)
	if err != nil {
		return nil, nil, 0, err
	}
	if state != nil {
		if err := l.UnmarshalBinary(state); err != nil {
			return nil, nil, 0, err
		}
	}
	mean, variance = l.RunningStats()
	return mean, variance, l.NumBatchesTracked(), nil
}

// reference computes what a domain layer must give, from core layers only:
// each normalization set (a domain's samples, or the whole batch) is
// normalized by its own affine-free core layer in batch-statistics modes;
// each statistics group (a domain, or all samples) has its own core layer
// whose running statistics follow the training steps and normalize in Eval
// and Frozen. γ and β are applied on top: y = γ_d·x̂ + β_d, and the cost
// Σ y⊙w = Σ x̂⊙(γ_d·w) + const gives dx through the core layer fed γ_d·w,
// dγ_a = Σ w·x̂ and dβ_a = Σ w over the samples of the domains of γ/β group a.
type reference struct {
	C, S                int
	inner               []int
	D                   int
	norm, stats, affine bool
	noTrack             bool // bn.WithTrackRunningStats(false) is among opts
	opts                []bn.Option
	state               map[int][]byte // statistics group → core layer state
	gamma, beta         [][]float64    // per domain
}

// sub gathers the samples of x (N×C×S) at idx.
func (r *reference) sub(x []float64, idx []int) []float64 {
	P := r.C * r.S
	s := make([]float64, 0, len(idx)*P)
	for _, i := range idx {
		s = append(s, x[i*P:(i+1)*P]...)
	}
	return s
}

func (r *reference) shape(n int) tensor.Shape { return append(tensor.Shape{n, r.C}, r.inner...) }

// groups partitions the samples by domain (per) or returns all of them as
// group 0.
func groupsOf(ids []int, per bool) map[int][]int {
	g := map[int][]int{}
	for i, d := range ids {
		k := 0
		if per {
			k = d
		}
		g[k] = append(g[k], i)
	}
	return g
}

func (r *reference) step(x, w []float64, ids []int, mode bn.Mode) (out, error) {
	P := r.C * r.S
	N := len(ids)
	// w' = γ_d·w
	wg := make([]float64, len(w))
	for i, d := range ids {
		for c := range r.C {
			for s := range r.S {
				k := i*P + c*r.S + s
				wg[k] = r.gamma[d][c] * w[k]
			}
		}
	}
	xhat, dx := make([]float64, N*P), make([]float64, N*P)
	scatter := func(idx []int, src, dst []float64) {
		for j, i := range idx {
			copy(dst[i*P:(i+1)*P], src[j*P:(j+1)*P])
		}
	}
	batch := mode == bn.Train || mode == bn.EvalBatchStats || r.noTrack
	if batch {
		for _, idx := range groupsOf(ids, r.norm) {
			xh, d, _, err := plainRun(r.shape(len(idx)), r.sub(x, idx), r.sub(wg, idx), bn.EvalBatchStats, nil, r.opts)
			if err != nil {
				return out{}, err
			}
			scatter(idx, xh, xhat)
			scatter(idx, d, dx)
		}
		if mode == bn.Train && !r.noTrack {
			for g, idx := range groupsOf(ids, r.stats) {
				_, _, st, err := plainRun(r.shape(len(idx)), r.sub(x, idx), r.sub(w, idx), bn.Train, r.state[g], r.opts)
				if err != nil {
					return out{}, err
				}
				r.state[g] = st
			}
		}
	} else {
		for g, idx := range groupsOf(ids, r.stats) {
			xh, d, _, err := plainRun(r.shape(len(idx)), r.sub(x, idx), r.sub(wg, idx), mode, r.state[g], r.opts)
			if err != nil {
				return out{}, err
			}
			scatter(idx, xh, xhat)
			scatter(idx, d, dx)
		}
	}
	A := 1
	if r.affine {
		A = r.D
	}
	o := out{y: make([]float64, N*P), dx: dx, dg: make([]float64, A*r.C), db: make([]float64, A*r.C)}
	for i, d := range ids {
		a := 0
		if r.affine {
			a = d
		}
		for c := range r.C {
			for s := range r.S {
				k := i*P + c*r.S + s
				o.y[k] = r.gamma[d][c]*xhat[k] + r.beta[d][c]
				o.dg[a*r.C+c] += w[k] * xhat[k]
				o.db[a*r.C+c] += w[k]
			}
		}
	}
	return o, nil
}

// runningStats returns the reference statistics of domain d.
func (r *reference) runningStats(d int) (mean, variance []float64, tracked int64, err error) {
	g := 0
	if r.stats {
		g = d
	}
	return plainStats(r.C, r.state[g], r.opts)
}

// domainData draws a batch whose samples of domain d have mean 3d−2 and
// standard deviation 1+d, and weights w ~ N(0,1).
func domainData(rng *rand.Rand, ids []int, P int) (x, w []float64) {
	x, w = make([]float64, len(ids)*P), make([]float64, len(ids)*P)
	for i, d := range ids {
		for k := range P {
			x[i*P+k] = float64(3*d-2) + float64(1+d)*rng.NormFloat64()
			w[i*P+k] = rng.NormFloat64()
		}
	}
	return x, w
}

func assertClose(t testing.TB, what string, got, want []float64, tol float64) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d values, want %d", what, len(got), len(want))
	}
	for i := range got {
		if d := math.Abs(got[i] - want[i]); !(d <= tol*math.Max(1, math.Abs(want[i]))) {
			t.Fatalf("%s[%d] = %v, want %v (diff %g)", what, i, got[i], want[i], d)
		}
	}
}

func assertBitEqual(t testing.TB, what string, got, want []float64) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d values, want %d", what, len(got), len(want))
	}
	for i := range got {
		if math.Float64bits(got[i]) != math.Float64bits(want[i]) {
			t.Fatalf("%s[%d] = %v, want %v bit for bit", what, i, got[i], want[i])
		}
	}
}

func switches(norm, stats, affine bool) string {
	b := func(on bool) string {
		if on {
			return "on"
		}
		return "off"
	}
	return fmt.Sprintf("norm=%s,stats=%s,affine=%s", b(norm), b(stats), b(affine))
}
