package bn

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"math"
	"math/rand"
	"testing"

	"gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// ---------------------------------------------------------------------------
// Helpers: values, comparisons, and a small graph harness.

// tensorOf returns a dense tensor of dtype dt holding v (converted).
func tensorOf(dt tensor.Dtype, shape tensor.Shape, v []float64) *tensor.Dense {
	if dt == tensor.Float32 {
		f := make([]float32, len(v))
		for i := range v {
			f[i] = float32(v[i])
		}
		return tensor.New(tensor.WithShape(shape.Clone()...), tensor.WithBacking(f))
	}
	return tensor.New(tensor.WithShape(shape.Clone()...), tensor.WithBacking(append([]float64(nil), v...)))
}

// valuesOf returns a copy of the elements of v (a tensor or scalar) as float64.
func valuesOf(t testing.TB, v gorgonia.Value) []float64 {
	t.Helper()
	if v == nil {
		t.Fatalf("nil value")
	}
	switch d := v.Data().(type) {
	case float64:
		return []float64{d}
	case float32:
		return []float64{float64(d)}
	case []float64:
		return append([]float64(nil), d...)
	case []float32:
		r := make([]float64, len(d))
		for i := range d {
			r[i] = float64(d[i])
		}
		return r
	}
	t.Fatalf("unexpected value data %T", v.Data())
	return nil
}

// roundTo returns v rounded to the precision of dt (identity for float64).
func roundTo(dt tensor.Dtype, v []float64) []float64 {
	r := append([]float64(nil), v...)
	if dt == tensor.Float32 {
		for i := range r {
			r[i] = float64(float32(r[i]))
		}
	}
	return r
}

func randn(r *rand.Rand, n int, mean, sd float64) []float64 {
	v := make([]float64, n)
	for i := range v {
		v[i] = mean + sd*r.NormFloat64()
	}
	return v
}

// channelData returns N×C×S values whose channels have different means and
// scales, so that a mix-up of channels or statistics shows.
func channelData(r *rand.Rand, shape tensor.Shape) []float64 {
	N, C, S := shapeNCS(shape)
	v := make([]float64, N*C*S)
	for n := range N {
		for c := range C {
			for s := range S {
				v[at(C, S, n, c, s)] = float64(c) - 1 + (0.5+0.4*float64(c))*r.NormFloat64()
			}
		}
	}
	return v
}

func maxAbs(v []float64) float64 {
	m := 0.0
	for _, x := range v {
		m = math.Max(m, math.Abs(x))
	}
	return m
}

// closeTo fails unless |got−want| ≤ rtol·(|want| + max|want|) element-wise:
// a relative tolerance that does not blow up for elements near zero.
func closeTo(t testing.TB, what string, got, want []float64, rtol float64) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d values, want %d", what, len(got), len(want))
	}
	scale := maxAbs(want)
	bad := 0
	for i := range want {
		if !(math.Abs(got[i]-want[i]) <= rtol*(math.Abs(want[i])+scale)) {
			if bad < 5 {
				t.Errorf("%s[%d] = %.17g, want %.17g (rtol %g)", what, i, got[i], want[i], rtol)
			}
			bad++
		}
	}
	if bad > 5 {
		t.Errorf("%s: %d of %d values differ", what, bad, len(want))
	}
}

func sameBits(t testing.TB, what string, got, want []float64) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d values, want %d", what, len(got), len(want))
	}
	for i := range want {
		if math.Float64bits(got[i]) != math.Float64bits(want[i]) {
			t.Fatalf("%s[%d] = %v, want %v bit for bit", what, i, got[i], want[i])
		}
	}
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// isErr reports whether err wraps target. Gorgonia's machines wrap an op's
// error in a vmContextualError that has Err() but no Unwrap(), so
// errors.Is alone cannot see through it: follow Err() as well.
func isErr(err, target error) bool { return errors.Is(Cause(err), target) }

type machineKind int

const (
	tapeNoGrad machineKind = iota // TapeMachine, forward only
	tapeGrad                      // TapeMachine with gorgonia.Grad
	lispGrad                      // LispMachine (forward and DoDiff)
	tapeDual                      // TapeMachine with gorgonia.Grad and BindDualValues(γ, β), as for a solver
)

// env is a graph x → BN → y, cost = Σ y ⊙ w, on one machine. Its tapes
// trace execution (each node keeps a copy of its value): without that the
// tape reuses y's register (HadamardProd overwrites its input in place when
// nothing else reads y) and y.Value() is not y after the run.
type env struct {
	t       testing.TB
	g       *gorgonia.ExprGraph
	l       *Layer
	dt      tensor.Dtype
	shape   tensor.Shape
	kind    machineKind
	x, w    *gorgonia.Node
	y, cost *gorgonia.Node
	grads   gorgonia.Nodes // tape: gradient nodes of x, γ, β (γ, β only with affine)
	vm      gorgonia.VM
}

func newEnv(t testing.TB, dt tensor.Dtype, shape tensor.Shape, cfg refConfig, mode Mode, kind machineKind, xs, ws []float64) *env {
	t.Helper()
	e := &env{t: t, g: gorgonia.NewGraph(), dt: dt, shape: shape, kind: kind}
	e.x = gorgonia.NewTensor(e.g, dt, len(shape), gorgonia.WithShape(shape...), gorgonia.WithName("x"), gorgonia.WithValue(tensorOf(dt, shape, xs)))
	e.w = gorgonia.NewTensor(e.g, dt, len(shape), gorgonia.WithShape(shape...), gorgonia.WithName("w"), gorgonia.WithValue(tensorOf(dt, shape, ws)))
	l, err := New(e.g, shape[1], dt, cfg.options()...)
	must(t, err)
	must(t, l.SetMode(mode))
	e.l = l
	e.y, err = l.Apply(e.x)
	must(t, err)
	e.cost = gorgonia.Must(gorgonia.Sum(gorgonia.Must(gorgonia.HadamardProd(e.y, e.w))))
	switch kind {
	case tapeGrad, tapeDual:
		wrt := gorgonia.Nodes{e.x}
		wrt = append(wrt, l.Learnables()...)
		e.grads, err = gorgonia.Grad(e.cost, wrt...)
		must(t, err)
		if kind == tapeDual && l.Learnables() != nil {
			e.vm = gorgonia.NewTapeMachine(e.g, gorgonia.TraceExec(), gorgonia.BindDualValues(l.Learnables()...))
		} else {
			e.vm = gorgonia.NewTapeMachine(e.g, gorgonia.TraceExec())
		}
	case tapeNoGrad:
		e.vm = gorgonia.NewTapeMachine(e.g, gorgonia.TraceExec())
	case lispGrad:
		e.vm = gorgonia.NewLispMachine(e.g)
	}
	t.Cleanup(func() { e.vm.Close() })
	return e
}

func (e *env) setX(xs []float64) { must(e.t, gorgonia.Let(e.x, tensorOf(e.dt, e.shape, xs))) }

func (e *env) setParams(gamma, beta []float64) {
	C := tensor.Shape{e.shape[1]}
	must(e.t, gorgonia.Let(e.l.Gamma(), tensorOf(e.dt, C, gamma)))
	must(e.t, gorgonia.Let(e.l.Beta(), tensorOf(e.dt, C, beta)))
}

// run runs the graph once (resetting a tape first). A LispMachine env runs
// once only: its Reset rewinds to the last node, not to the start.
// A tapeDual env zeroes the dual values first: the machine adds each run's
// gradients into them.
func (e *env) run() error {
	if e.kind == tapeDual {
		for _, p := range e.l.Learnables() {
			if g, err := p.Grad(); err == nil {
				if tt, ok := g.(tensor.Tensor); ok {
					tt.Zero()
				}
			}
		}
	}
	if e.kind != lispGrad {
		e.vm.Reset()
	}
	return e.vm.RunAll()
}

func (e *env) mustRun() {
	e.t.Helper()
	must(e.t, e.run())
}

func (e *env) costValue() float64 { return valuesOf(e.t, e.cost.Value())[0] }
func (e *env) yValue() []float64  { return valuesOf(e.t, e.y.Value()) }

// gradValues returns the gradients of x, γ, β (nil γ, β without affine).
func (e *env) gradValues() (dx, dg, db []float64) {
	e.t.Helper()
	if e.kind == lispGrad {
		get := func(n *gorgonia.Node) []float64 {
			v, err := n.Grad()
			must(e.t, err)
			return valuesOf(e.t, v)
		}
		dx = get(e.x)
		if e.l.Gamma() != nil {
			dg, db = get(e.l.Gamma()), get(e.l.Beta())
		}
		return
	}
	dx = valuesOf(e.t, e.grads[0].Value())
	if len(e.grads) == 3 {
		dg, db = valuesOf(e.t, e.grads[1].Value()), valuesOf(e.t, e.grads[2].Value())
		if e.kind == tapeDual { // the dual values: tensors of γ's shape
			for i, p := range e.l.Learnables() {
				v, err := p.Grad()
				must(e.t, err)
				if tt, ok := v.(tensor.Tensor); !ok || !tt.Shape().Eq(p.Shape()) {
					e.t.Fatalf("dual value of %v is %T %v, want a tensor of shape %v", p, v, v.Shape(), p.Shape())
				}
				sameBits(e.t, "dual value of "+p.Name(), valuesOf(e.t, v), [][]float64{dg, db}[i])
			}
		}
	}
	return
}

// randomState sets random γ/β (affine) and running statistics (tracking)
// on the layer and the reference.
func randomState(r *rand.Rand, e *env, ref *refLayer) {
	C := e.shape[1]
	if !ref.cfg.noAffine {
		ref.gamma = roundTo(e.dt, randn(r, C, 1, 0.5))
		ref.beta = roundTo(e.dt, randn(r, C, 0, 0.5))
		e.setParams(ref.gamma, ref.beta)
	}
	if !ref.cfg.noTrack {
		for c := range C {
			ref.rmean[c] = r.NormFloat64()
			ref.rvar[c] = 0.3 + 2*r.Float64()
		}
		must(e.t, e.l.SetRunningStats(ref.rmean, ref.rvar))
	}
}

// copyState gives e's layer the reference's γ/β and running statistics.
func copyState(e *env, ref *refLayer) {
	if !ref.cfg.noAffine {
		e.setParams(ref.gamma, ref.beta)
	}
	must(e.t, e.l.SetRunningStats(ref.rmean, ref.rvar))
}

func putF64(b []byte, v float64) { binary.LittleEndian.PutUint64(b, math.Float64bits(v)) }

func appendCRC(b []byte) []byte {
	return binary.LittleEndian.AppendUint32(b, crc32.ChecksumIEEE(b))
}

// gradCase is a configuration of the gradient and reference tests.
type gradCase struct {
	name  string
	shape tensor.Shape
	mode  Mode
	cfg   refConfig
}

func gradCases() []gradCase {
	shapes := []tensor.Shape{{6, 3}, {4, 3, 5}, {3, 2, 3, 3}, {3, 2, 2, 2, 2}}
	var cs []gradCase
	for _, s := range shapes {
		for _, m := range []Mode{Train, Eval, EvalBatchStats, Frozen} {
			cs = append(cs, gradCase{name: fmt.Sprintf("rank%d/%v", len(s), m), shape: s, mode: m})
		}
	}
	return append(cs,
		gradCase{"ghost/rank2/3+3+2", tensor.Shape{8, 3}, Train, refConfig{ghost: 3}},
		gradCase{"ghost/rank3/2+2+1", tensor.Shape{5, 2, 3}, Train, refConfig{ghost: 2}},
		gradCase{"ghost/rank4/eval-batch-stats", tensor.Shape{5, 2, 2, 2}, EvalBatchStats, refConfig{ghost: 2}},
		gradCase{"ghost/rank4/eval-uses-running", tensor.Shape{5, 2, 2, 2}, Eval, refConfig{ghost: 2}},
		gradCase{"ghost/larger-than-batch", tensor.Shape{4, 3, 2}, Train, refConfig{ghost: 9}},
		gradCase{"affine-off/train", tensor.Shape{4, 3, 2, 2}, Train, refConfig{noAffine: true}},
		gradCase{"affine-off/eval", tensor.Shape{4, 3, 2}, Eval, refConfig{noAffine: true}},
		gradCase{"affine-off/frozen/rank5", tensor.Shape{2, 2, 2, 1, 3}, Frozen, refConfig{noAffine: true}},
		gradCase{"no-tracking/train", tensor.Shape{5, 3, 2}, Train, refConfig{noTrack: true}},
		gradCase{"no-tracking/eval", tensor.Shape{5, 3, 2}, Eval, refConfig{noTrack: true}},
		gradCase{"no-tracking/frozen/rank4", tensor.Shape{3, 2, 2, 2}, Frozen, refConfig{noTrack: true}},
		gradCase{"eps0.5/train", tensor.Shape{4, 2, 3}, Train, refConfig{eps: 0.5}},
		gradCase{"C1/rank2/train", tensor.Shape{5, 1}, Train, refConfig{}},
		gradCase{"C1/rank4/train", tensor.Shape{3, 1, 2, 2}, Train, refConfig{}},
		gradCase{"C1/rank3/frozen", tensor.Shape{3, 1, 4}, Frozen, refConfig{}},
		gradCase{"C1/ghost", tensor.Shape{6, 1, 2}, Train, refConfig{ghost: 4}},
	)
}

// ---------------------------------------------------------------------------
// Gradients.

// TestGradFiniteDifferences checks dx, dγ, dβ of cost = Σ y⊙w (w random)
// against central differences of the cost through the TapeMachine, and the
// LispMachine's gradients (DoDiff) against the TapeMachine's (SymDiff).
func TestGradFiniteDifferences(t *testing.T) {
	for ci, tc := range gradCases() {
		t.Run(tc.name, func(t *testing.T) {
			r := rand.New(rand.NewSource(int64(100 + ci)))
			xs := channelData(r, tc.shape)
			ws := randn(r, len(xs), 0, 1)
			e := newEnv(t, tensor.Float64, tc.shape, tc.cfg, tc.mode, tapeGrad, xs, ws)
			ref := newRef(tc.cfg, tc.shape[1])
			randomState(r, e, ref)
			e.mustRun()
			dx, dg, db := e.gradValues()
			if maxAbs(dx) == 0 {
				t.Fatal("dx is zero: the check would be vacuous")
			}

			const h = 1e-5
			fd := func(set func(v float64), v0 float64) float64 {
				set(v0 + h)
				e.mustRun()
				cp := e.costValue()
				set(v0 - h)
				e.mustRun()
				cm := e.costValue()
				set(v0)
				return (cp - cm) / (2 * h)
			}
			check := func(what string, i int, got, want float64) {
				if math.Abs(got-want) > 1e-6*math.Max(1, math.Abs(want)) {
					t.Errorf("%s[%d] = %.10g, finite difference %.10g", what, i, got, want)
				}
			}
			idx := []int{0, len(xs) - 1}
			for range 4 {
				idx = append(idx, r.Intn(len(xs)))
			}
			for _, i := range idx {
				x := append([]float64(nil), xs...)
				want := fd(func(v float64) { x[i] = v; e.setX(x) }, xs[i])
				check("dx", i, dx[i], want)
			}
			if dg != nil {
				for _, c := range []int{0, tc.shape[1] - 1} {
					g := append([]float64(nil), ref.gamma...)
					b := append([]float64(nil), ref.beta...)
					want := fd(func(v float64) { g[c] = v; e.setParams(g, b) }, ref.gamma[c])
					check("dγ", c, dg[c], want)
					g = append(g[:0], ref.gamma...)
					want = fd(func(v float64) { b[c] = v; e.setParams(g, b) }, ref.beta[c])
					check("dβ", c, db[c], want)
				}
			} else if e.l.Gamma() != nil || e.l.Learnables() != nil {
				t.Fatal("affine off but the layer has γ")
			}

			// The LispMachine (DoDiff) on a fresh graph with the same values
			// and the same initial state.
			lp := newEnv(t, tensor.Float64, tc.shape, tc.cfg, tc.mode, lispGrad, xs, ws)
			copyState(lp, ref)
			lp.mustRun()
			ldx, ldg, ldb := lp.gradValues()
			closeTo(t, "lisp dx", ldx, dx, 1e-10)
			if dg != nil {
				closeTo(t, "lisp dγ", ldg, dg, 1e-10)
				closeTo(t, "lisp dβ", ldb, db, 1e-10)
			}
			closeTo(t, "lisp y", lp.yValue(), func() []float64 { e.mustRun(); return e.yValue() }(), 1e-12)
		})
	}
}

// TestForwardBackwardMatchReference compares y, dx, dγ, dβ of float64 and
// float32 layers with the float64 reference, for every case of the
// gradient test, on both machines and on a TapeMachine with BindDualValues.
func TestForwardBackwardMatchReference(t *testing.T) {
	for ci, tc := range gradCases() {
		for _, dt := range []tensor.Dtype{tensor.Float64, tensor.Float32} {
			for _, kind := range []machineKind{tapeGrad, lispGrad, tapeDual} {
				name := fmt.Sprintf("%s/%v/%s", tc.name, dt, [...]string{"", "tape", "lisp", "dual"}[kind])
				t.Run(name, func(t *testing.T) {
					r := rand.New(rand.NewSource(int64(7 + ci)))
					xs := roundTo(dt, channelData(r, tc.shape))
					ws := roundTo(dt, randn(r, len(xs), 0, 1))
					e := newEnv(t, dt, tc.shape, tc.cfg, tc.mode, kind, xs, ws)
					ref := newRef(tc.cfg, tc.shape[1])
					randomState(r, e, ref)
					e.mustRun()
					wantY, ctx := ref.forward(xs, tc.shape, tc.mode)
					wdx, wdg, wdb := ref.backward(ctx, ws)
					rtol := 1e-10
					if dt == tensor.Float32 {
						rtol = 1e-5
					}
					closeTo(t, "y", e.yValue(), wantY, rtol)
					dx, dg, db := e.gradValues()
					closeTo(t, "dx", dx, wdx, rtol)
					if !tc.cfg.noAffine {
						closeTo(t, "dγ", dg, wdg, rtol)
						closeTo(t, "dβ", db, wdb, rtol)
					}
					m, v := e.l.RunningStats()
					closeTo(t, "running mean", m, ref.rmean, 1e-12)
					closeTo(t, "running var", v, ref.rvar, 1e-12)
					if got := e.l.NumBatchesTracked(); got != ref.tracked {
						t.Errorf("NumBatchesTracked = %d, want %d", got, ref.tracked)
					}
				})
			}
		}
	}
}

// TestRunningStatsAfterKSteps trains K steps on fresh batches and compares
// the running statistics and the counter with the reference, for EMA
// momenta and the cumulative average (checked also directly as the mean of
// the batch means and of the unbiased batch variances).
func TestRunningStatsAfterKSteps(t *testing.T) {
	const K = 5
	cases := []struct {
		name  string
		shape tensor.Shape
		cfg   refConfig
	}{
		{"ema-default", tensor.Shape{6, 3, 4}, refConfig{}},
		{"ema-0.3", tensor.Shape{5, 2, 2, 3}, refConfig{momentum: 0.3, setMom: true}},
		{"ema-1", tensor.Shape{7, 4}, refConfig{momentum: 1, setMom: true}},
		{"ema-0", tensor.Shape{7, 4}, refConfig{momentum: 0, setMom: true}},
		{"cumulative", tensor.Shape{4, 3, 3}, refConfig{cumulative: true}},
		{"cumulative-rank5", tensor.Shape{2, 2, 2, 2, 3}, refConfig{cumulative: true}},
		{"ghost-ema", tensor.Shape{7, 3, 2}, refConfig{ghost: 3}},
		{"ghost-cumulative", tensor.Shape{7, 3, 2}, refConfig{ghost: 2, cumulative: true}},
	}
	for ci, tc := range cases {
		for _, dt := range []tensor.Dtype{tensor.Float64, tensor.Float32} {
			t.Run(fmt.Sprintf("%s/%v", tc.name, dt), func(t *testing.T) {
				r := rand.New(rand.NewSource(int64(300 + ci)))
				xs := roundTo(dt, channelData(r, tc.shape))
				e := newEnv(t, dt, tc.shape, tc.cfg, Train, tapeNoGrad, xs, randn(r, len(xs), 0, 1))
				ref := newRef(tc.cfg, tc.shape[1])
				for k := range K {
					if k > 0 {
						xs = roundTo(dt, channelData(r, tc.shape))
						for i := range xs {
							xs[i] = xs[i]*float64(k+1) + float64(k) // each batch differs
						}
						xs = roundTo(dt, xs)
						e.setX(xs)
					}
					e.mustRun()
					ref.forward(xs, tc.shape, Train)
				}
				m, v := e.l.RunningStats()
				closeTo(t, "running mean", m, ref.rmean, 1e-12)
				closeTo(t, "running var", v, ref.rvar, 1e-12)
				if got := e.l.NumBatchesTracked(); got != K {
					t.Errorf("NumBatchesTracked = %d, want %d", got, K)
				}
				if tc.cfg.cumulative {
					C := tc.shape[1]
					am, av := make([]float64, C), make([]float64, C)
					for k := range K {
						for c := range C {
							am[c] += ref.batchMeans[k][c] / K
							av[c] += ref.batchUnbVars[k][c] / K
						}
					}
					closeTo(t, "cumulative mean = mean of batch means", m, am, 1e-12)
					closeTo(t, "cumulative var = mean of unbiased batch vars", v, av, 1e-12)
				}
				if tc.cfg.setMom && tc.cfg.momentum == 0 && !tc.cfg.cumulative {
					for c := range m {
						if m[c] != 0 || v[c] != 1 {
							t.Errorf("momentum 0 changed channel %d: %v %v", c, m[c], v[c])
						}
					}
				}
			})
		}
	}
}

// TestBackwardUsesItsOwnForward applies one layer to two inputs of very
// different statistics in one graph (weight sharing): each input's gradient
// must match the reference computed with its own batch statistics, and dγ,
// dβ the sum of both, on both machines.
func TestBackwardUsesItsOwnForward(t *testing.T) {
	for _, kind := range []machineKind{tapeGrad, lispGrad} {
		for _, cfg := range []refConfig{{}, {ghost: 2}} {
			t.Run(fmt.Sprintf("%s/ghost%d", [...]string{"", "tape", "lisp"}[kind], cfg.ghost), func(t *testing.T) {
				r := rand.New(rand.NewSource(11))
				shape := tensor.Shape{5, 3, 2, 2}
				x1 := channelData(r, shape)
				x2 := randn(r, len(x1), 4, 3)
				w1, w2 := randn(r, len(x1), 0, 1), randn(r, len(x1), 0, 1)
				g := gorgonia.NewGraph()
				l, err := New(g, 3, tensor.Float64, cfg.options()...)
				must(t, err)
				gam, bet := randn(r, 3, 1, 0.5), randn(r, 3, 0, 0.5)
				must(t, gorgonia.Let(l.Gamma(), tensorOf(tensor.Float64, tensor.Shape{3}, gam)))
				must(t, gorgonia.Let(l.Beta(), tensorOf(tensor.Float64, tensor.Shape{3}, bet)))
				node := func(name string, v []float64) *gorgonia.Node {
					return gorgonia.NewTensor(g, tensor.Float64, 4, gorgonia.WithShape(shape...), gorgonia.WithName(name), gorgonia.WithValue(tensorOf(tensor.Float64, shape, v)))
				}
				xn1, xn2, wn1, wn2 := node("x1", x1), node("x2", x2), node("w1", w1), node("w2", w2)
				y1, err := l.Apply(xn1)
				must(t, err)
				y2, err := l.Apply(xn2)
				must(t, err)
				cost := gorgonia.Must(gorgonia.Add(
					gorgonia.Must(gorgonia.Sum(gorgonia.Must(gorgonia.HadamardProd(y1, wn1)))),
					gorgonia.Must(gorgonia.Sum(gorgonia.Must(gorgonia.HadamardProd(y2, wn2))))))
				var vm gorgonia.VM
				var grads gorgonia.Nodes
				if kind == tapeGrad {
					grads, err = gorgonia.Grad(cost, xn1, xn2, l.Gamma(), l.Beta())
					must(t, err)
					vm = gorgonia.NewTapeMachine(g)
				} else {
					vm = gorgonia.NewLispMachine(g)
				}
				defer vm.Close()
				must(t, vm.RunAll())
				get := func(i int, n *gorgonia.Node) []float64 {
					if kind == tapeGrad {
						return valuesOf(t, grads[i].Value())
					}
					v, err := n.Grad()
					must(t, err)
					return valuesOf(t, v)
				}
				ref := newRef(cfg, 3)
				ref.gamma, ref.beta = gam, bet
				yr1, c1 := ref.forward(x1, shape, Train)
				yr2, c2 := ref.forward(x2, shape, Train)
				dx1, dg1, db1 := ref.backward(c1, w1)
				dx2, dg2, db2 := ref.backward(c2, w2)
				closeTo(t, "y1", valuesOf(t, y1.Value()), yr1, 1e-10)
				closeTo(t, "y2", valuesOf(t, y2.Value()), yr2, 1e-10)
				closeTo(t, "dx1", get(0, xn1), dx1, 1e-10)
				closeTo(t, "dx2", get(1, xn2), dx2, 1e-10)
				for c := range 3 {
					dg1[c] += dg2[c]
					db1[c] += db2[c]
				}
				closeTo(t, "dγ", get(2, l.Gamma()), dg1, 1e-10)
				closeTo(t, "dβ", get(3, l.Beta()), db1, 1e-10)
				if n := l.NumBatchesTracked(); n != 2 {
					t.Errorf("NumBatchesTracked = %d after two applications, want 2", n)
				}
			})
		}
	}
}

// TestModeSwitchBetweenRuns runs one compiled graph in every mode in turn:
// each run's y and gradients match the reference for that mode with the
// running statistics at that point, and only Train runs move them.
func TestModeSwitchBetweenRuns(t *testing.T) {
	r := rand.New(rand.NewSource(5))
	shape := tensor.Shape{6, 3, 2}
	xs := channelData(r, shape)
	ws := randn(r, len(xs), 0, 1)
	e := newEnv(t, tensor.Float64, shape, refConfig{}, Train, tapeGrad, xs, ws)
	ref := newRef(refConfig{}, 3)
	randomState(r, e, ref)
	for step, m := range []Mode{Train, Eval, Frozen, EvalBatchStats, Train, Frozen, Train, Eval} {
		must(t, e.l.SetMode(m))
		if got := e.l.Mode(); got != m {
			t.Fatalf("Mode() = %v after SetMode(%v)", got, m)
		}
		xs = channelData(r, shape)
		e.setX(xs)
		beforeM, beforeV := e.l.RunningStats()
		e.mustRun()
		y, ctx := ref.forward(xs, shape, m)
		dx, dg, db := ref.backward(ctx, ws)
		what := fmt.Sprintf("step %d (%v)", step, m)
		closeTo(t, what+" y", e.yValue(), y, 1e-10)
		gx, gg, gb := e.gradValues()
		closeTo(t, what+" dx", gx, dx, 1e-10)
		closeTo(t, what+" dγ", gg, dg, 1e-10)
		closeTo(t, what+" dβ", gb, db, 1e-10)
		afterM, afterV := e.l.RunningStats()
		if m != Train {
			sameBits(t, what+" running mean", afterM, beforeM)
			sameBits(t, what+" running var", afterV, beforeV)
		} else {
			closeTo(t, what+" running mean", afterM, ref.rmean, 1e-12)
			closeTo(t, what+" running var", afterV, ref.rvar, 1e-12)
		}
		if e.l.NumBatchesTracked() != ref.tracked {
			t.Errorf("%s: NumBatchesTracked = %d, want %d", what, e.l.NumBatchesTracked(), ref.tracked)
		}
	}
}

// ---------------------------------------------------------------------------
// Modes.

// TestEvalUsesRunningStats: y = γ(x − rm)/√(rv+ε) + β, computed here.
func TestEvalUsesRunningStats(t *testing.T) {
	for _, dt := range []tensor.Dtype{tensor.Float64, tensor.Float32} {
		t.Run(dt.String(), func(t *testing.T) {
			shape := tensor.Shape{3, 2, 4}
			xs := []float64{}
			for i := range shape.TotalSize() {
				xs = append(xs, float64(i%7)-2)
			}
			e := newEnv(t, dt, shape, refConfig{eps: 1e-3}, Eval, tapeNoGrad, xs, make([]float64, len(xs)))
			rm, rv := []float64{0.5, -1}, []float64{4, 0.25}
			gam, bet := []float64{2, -1}, []float64{0.5, 3}
			must(t, e.l.SetRunningStats(rm, rv))
			e.setParams(gam, bet)
			e.mustRun()
			y := e.yValue()
			for n := range 3 {
				for c := range 2 {
					for s := range 4 {
						i := at(2, 4, n, c, s)
						want := gam[c]*(xs[i]-rm[c])/math.Sqrt(rv[c]+1e-3) + bet[c]
						if math.Abs(y[i]-want) > 1e-6*(1+math.Abs(want)) {
							t.Fatalf("y[%d] = %v, want %v", i, y[i], want)
						}
					}
				}
			}
			if e.l.NumBatchesTracked() != 0 {
				t.Error("eval updated the counter")
			}
		})
	}
}

// TestEvalBatchStatsDoesNotUpdate: y equals the train-mode output but the
// running statistics and the counter stay.
func TestEvalBatchStatsDoesNotUpdate(t *testing.T) {
	r := rand.New(rand.NewSource(8))
	shape := tensor.Shape{5, 3, 3}
	xs := channelData(r, shape)
	e := newEnv(t, tensor.Float64, shape, refConfig{}, EvalBatchStats, tapeNoGrad, xs, xs)
	e.mustRun()
	yb := e.yValue()
	m, v := e.l.RunningStats()
	for c := range 3 {
		if m[c] != 0 || v[c] != 1 {
			t.Fatalf("eval-batch-stats updated channel %d: %v %v", c, m[c], v[c])
		}
	}
	if e.l.NumBatchesTracked() != 0 {
		t.Fatal("eval-batch-stats updated the counter")
	}
	must(t, e.l.SetMode(Train))
	e.mustRun()
	sameBits(t, "eval-batch-stats y vs train y", yb, e.yValue())
	if e.l.NumBatchesTracked() != 1 {
		t.Fatal("train did not update the counter")
	}
}

// TestFrozenGradient: in Frozen mode dx = γ·dy/√(rv+ε) exactly as computed
// here, and dγ, dβ are still produced.
func TestFrozenGradient(t *testing.T) {
	r := rand.New(rand.NewSource(9))
	shape := tensor.Shape{4, 3, 2, 2}
	xs := channelData(r, shape)
	ws := randn(r, len(xs), 0, 1)
	e := newEnv(t, tensor.Float64, shape, refConfig{}, Frozen, tapeGrad, xs, ws)
	rm, rv := []float64{1, -2, 0.3}, []float64{0.5, 3, 1.5}
	gam := []float64{1.5, -0.7, 2}
	must(t, e.l.SetRunningStats(rm, rv))
	e.setParams(gam, []float64{0, 1, 2})
	e.mustRun()
	dx, dg, db := e.gradValues()
	_, C, S := shapeNCS(shape)
	wdg, wdb := make([]float64, C), make([]float64, C)
	for i := range xs {
		c := (i / S) % C
		want := gam[c] * ws[i] / math.Sqrt(rv[c]+1e-5)
		if math.Abs(dx[i]-want) > 1e-12*(1+math.Abs(want)) {
			t.Fatalf("dx[%d] = %v, want γ·dy/√(rv+ε) = %v", i, dx[i], want)
		}
		wdg[c] += ws[i] * (xs[i] - rm[c]) / math.Sqrt(rv[c]+1e-5)
		wdb[c] += ws[i]
	}
	closeTo(t, "dγ", dg, wdg, 1e-12)
	closeTo(t, "dβ", db, wdb, 1e-12)
	m, v := e.l.RunningStats()
	sameBits(t, "frozen running mean", m, rm)
	sameBits(t, "frozen running var", v, rv)
}

// TestSetModeRejectsUnknown checks SetMode's validation and Mode.String.
func TestSetModeRejectsUnknown(t *testing.T) {
	l, err := New(gorgonia.NewGraph(), 2, tensor.Float64)
	must(t, err)
	for _, m := range []Mode{-1, Frozen + 1} {
		if err := l.SetMode(m); !errors.Is(err, ErrOption) {
			t.Errorf("SetMode(%d) = %v, want ErrOption", int(m), err)
		}
	}
	if l.Mode() != Train {
		t.Errorf("default mode %v, want train", l.Mode())
	}
	names := map[string]bool{}
	for _, m := range []Mode{Train, Eval, EvalBatchStats, Frozen, 7} {
		names[m.String()] = true
	}
	if len(names) != 5 {
		t.Errorf("mode names not distinct: %v", names)
	}
}

// ---------------------------------------------------------------------------
// Numerics.

// TestFloat32Stability: for float32 x = 1e4 + N(0,1) the batch variance
// (seen as the running variance after one step with momentum 1) is within
// 1e-4 relative of the float64 variance of the same values, never negative,
// and y has zero mean and unit variance per channel.
func TestFloat32Stability(t *testing.T) {
	for _, shape := range []tensor.Shape{{64, 3, 8, 8}, {4096, 4}, {2, 2, 200, 200}} {
		t.Run(fmt.Sprint(shape), func(t *testing.T) {
			r := rand.New(rand.NewSource(12))
			xs := roundTo(tensor.Float32, randn(r, shape.TotalSize(), 1e4, 1))
			e := newEnv(t, tensor.Float32, shape, refConfig{momentum: 1, setMom: true}, Train, tapeNoGrad, xs, xs)
			e.mustRun()
			N, C, S := shapeNCS(shape)
			cnt := float64(N * S)
			mean, variance := e.l.RunningStats()
			y := e.yValue()
			for c := range C {
				mu, v := twoPass(xs, C, S, 0, N, c)
				unb := v * cnt / (cnt - 1)
				if variance[c] < 0 || math.Abs(variance[c]-unb) > 1e-4*unb {
					t.Errorf("channel %d: running var %v, float64 %v", c, variance[c], unb)
				}
				if math.Abs(mean[c]-mu) > 1e-8*mu {
					t.Errorf("channel %d: running mean %v, float64 %v", c, mean[c], mu)
				}
				ym, yv := twoPass(y, C, S, 0, N, c)
				want := v / (v + 1e-5)
				if math.Abs(ym) > 1e-4 || math.Abs(yv-want) > 1e-4 {
					t.Errorf("channel %d: y mean %v var %v, want 0 and %v", c, ym, yv, want)
				}
			}
		})
	}
}

// TestNaNInInputPropagatesToItsChannelAndDoesNotPanic documents PyTorch's
// behaviour: a NaN in x makes every y of its channel NaN (in training the
// batch statistics are NaN), other channels stay finite, and nothing
// panics or errors; in eval mode only that element is NaN.
func TestNaNInInputPropagatesToItsChannelAndDoesNotPanic(t *testing.T) {
	shape := tensor.Shape{4, 3, 2}
	r := rand.New(rand.NewSource(13))
	for _, dt := range []tensor.Dtype{tensor.Float64, tensor.Float32} {
		for _, m := range []Mode{Train, Eval} {
			t.Run(fmt.Sprintf("%v/%v", dt, m), func(t *testing.T) {
				xs := channelData(r, shape)
				bad := at(3, 2, 2, 1, 1)
				xs[bad] = math.NaN()
				e := newEnv(t, dt, shape, refConfig{}, m, tapeGrad, xs, randn(r, len(xs), 0, 1))
				must(t, e.run())
				y := e.yValue()
				for i, v := range y {
					c := (i / 2) % 3
					switch {
					case m == Train && c == 1 || i == bad:
						if !math.IsNaN(v) {
							t.Errorf("y[%d] = %v, want NaN", i, v)
						}
					default:
						if math.IsNaN(v) || math.IsInf(v, 0) {
							t.Errorf("y[%d] = %v, want finite", i, v)
						}
					}
				}
			})
		}
	}
}

// ---------------------------------------------------------------------------
// Gorgonia contract.

// TestUsePreallocDoMatchesDo calls the forward op (y.Op()) and the two
// backward ops (their nodes' Op()) directly: UsePreallocDo into a NaN-filled
// buffer gives what Do gives, bit for bit, and returns the buffer; a buffer
// of the wrong shape or dtype is an error.
func TestUsePreallocDoMatchesDo(t *testing.T) {
	cases := []struct {
		shape tensor.Shape
		mode  Mode
		cfg   refConfig
	}{
		{tensor.Shape{6, 3}, Train, refConfig{}},
		{tensor.Shape{4, 3, 2, 2}, Eval, refConfig{}},
		{tensor.Shape{5, 2, 3}, Train, refConfig{ghost: 2}},
		{tensor.Shape{3, 2, 2, 2, 2}, Frozen, refConfig{}},
		{tensor.Shape{4, 3, 5}, EvalBatchStats, refConfig{noAffine: true}},
	}
	for ci, tc := range cases {
		for _, dt := range []tensor.Dtype{tensor.Float64, tensor.Float32} {
			t.Run(fmt.Sprintf("%v/%v/%v", tc.shape, tc.mode, dt), func(t *testing.T) {
				r := rand.New(rand.NewSource(int64(20 + ci)))
				xs := channelData(r, tc.shape)
				e := newEnv(t, dt, tc.shape, tc.cfg, tc.mode, tapeGrad, xs, randn(r, len(xs), 0, 1))
				randomState(r, e, newRef(tc.cfg, tc.shape[1]))
				fwd, ok := e.y.Op().(*fwdOp)
				if !ok {
					t.Fatalf("y.Op() is %T", e.y.Op())
				}
				dxo, ok := e.grads[0].Op().(*dxOp)
				if !ok || dxo.f != fwd {
					t.Fatalf("dx node's op is %T, not the dx op of y's op", e.grads[0].Op())
				}
				in := []gorgonia.Value{e.x.Value()}
				if g := e.l.Gamma(); g != nil {
					in = append(in, g.Value(), e.l.Beta().Value())
				}
				nanLike := func(shape tensor.Shape) *tensor.Dense {
					v := make([]float64, shape.TotalSize())
					for i := range v {
						v[i] = math.NaN()
					}
					return tensorOf(dt, shape, v)
				}
				prealloc := func(op interface {
					Do(...gorgonia.Value) (gorgonia.Value, error)
					UsePreallocDo(gorgonia.Value, ...gorgonia.Value) (gorgonia.Value, error)
				}, what string, in []gorgonia.Value) gorgonia.Value {
					want, err := op.Do(in...)
					must(t, err)
					buf := nanLike(want.Shape())
					got, err := op.UsePreallocDo(buf, in...)
					must(t, err)
					if got != gorgonia.Value(buf) {
						t.Errorf("%s: UsePreallocDo did not return the buffer", what)
					}
					sameBits(t, what, valuesOf(t, got), valuesOf(t, want))
					wrong := append(want.Shape().Clone(), 1)
					if _, err := op.UsePreallocDo(nanLike(wrong), in...); err == nil {
						t.Errorf("%s: UsePreallocDo into shape %v: no error", what, wrong)
					}
					other := tensor.New(tensor.Of(tensor.Int), tensor.WithShape(want.Shape().Clone()...))
					if _, err := op.UsePreallocDo(other, in...); err == nil {
						t.Errorf("%s: UsePreallocDo into an int buffer: no error", what)
					}
					return want
				}
				y := prealloc(fwd, "forward", in)
				dy := tensorOf(dt, tc.shape, randn(r, len(xs), 0, 1))
				sums := prealloc(&sumsOp{f: fwd}, "sums", []gorgonia.Value{in[0], dy, y})
				prealloc(dxo, "dx", []gorgonia.Value{in[0], dy, sums})
			})
		}
	}
}

// TestTwoLayersOnOneInputAreTwoNodes: hash-consing must not merge two layers
// (or two applications of one layer) on the same input; both run.
func TestTwoLayersOnOneInputAreTwoNodes(t *testing.T) {
	g := gorgonia.NewGraph()
	shape := tensor.Shape{4, 2, 3}
	r := rand.New(rand.NewSource(3))
	x := gorgonia.NewTensor(g, tensor.Float64, 3, gorgonia.WithShape(shape...), gorgonia.WithName("x"), gorgonia.WithValue(tensorOf(tensor.Float64, shape, channelData(r, shape))))
	l1, err := New(g, 2, tensor.Float64)
	must(t, err)
	l2, err := New(g, 2, tensor.Float64)
	must(t, err)
	must(t, gorgonia.Let(l2.Gamma(), tensorOf(tensor.Float64, tensor.Shape{2}, []float64{2, 3})))
	must(t, gorgonia.Let(l2.Beta(), tensorOf(tensor.Float64, tensor.Shape{2}, []float64{0, 0})))
	y1, err := l1.Apply(x)
	must(t, err)
	y2, err := l2.Apply(x)
	must(t, err)
	y3, err := l1.Apply(x)
	must(t, err)
	if y1 == y2 || y1.ID() == y2.ID() || y1 == y3 || y1.ID() == y3.ID() {
		t.Fatalf("BN nodes were merged: %v %v %v", y1.ID(), y2.ID(), y3.ID())
	}
	vm := gorgonia.NewTapeMachine(g)
	defer vm.Close()
	must(t, vm.RunAll())
	if l1.NumBatchesTracked() != 2 || l2.NumBatchesTracked() != 1 {
		t.Errorf("batches tracked %d and %d, want 2 and 1", l1.NumBatchesTracked(), l2.NumBatchesTracked())
	}
	v1, v2 := valuesOf(t, y1.Value()), valuesOf(t, y2.Value())
	for i := range v1 {
		c := (i / 3) % 2
		if want := v1[i] * float64(c+2); math.Abs(v2[i]-want) > 1e-12*(1+math.Abs(want)) {
			t.Fatalf("y2[%d] = %v, want %v (γ2 = %v·γ1)", i, v2[i], want, c+2)
		}
	}
	sameBits(t, "second application", valuesOf(t, y3.Value()), v1)
}

// TestTapeMachineRepeatedRuns: with Reset between RunAll calls every run
// executes the op (the counter moves) and eval output is stable.
func TestTapeMachineRepeatedRuns(t *testing.T) {
	r := rand.New(rand.NewSource(4))
	shape := tensor.Shape{4, 3, 2}
	xs := channelData(r, shape)
	e := newEnv(t, tensor.Float32, shape, refConfig{}, Train, tapeGrad, xs, randn(r, len(xs), 0, 1))
	for k := 1; k <= 3; k++ {
		e.mustRun()
		if got := e.l.NumBatchesTracked(); got != int64(k) {
			t.Fatalf("after %d runs NumBatchesTracked = %d", k, got)
		}
	}
	must(t, e.l.SetMode(Eval))
	e.mustRun()
	y1 := e.yValue()
	e.mustRun()
	sameBits(t, "eval y across runs", e.yValue(), y1)
}

// TestOutputReuse: with WithOutputReuse the ops return the same tensors
// run after run and the numbers are those of a layer without it (three
// training steps on different batches, x, γ, β gradients); without it every
// run returns new tensors. A reused tensor that a later op reshaped in
// place or made a view is replaced, not written through.
func TestOutputReuse(t *testing.T) {
	r := rand.New(rand.NewSource(21))
	shape := tensor.Shape{5, 3, 4}
	for _, dt := range []tensor.Dtype{tensor.Float64, tensor.Float32} {
		xs := roundTo(dt, channelData(r, shape))
		ws := roundTo(dt, randn(r, len(xs), 0, 1))
		plain := newEnv(t, dt, shape, refConfig{}, Train, tapeGrad, xs, ws)
		reuse := newEnv(t, dt, shape, refConfig{reuse: true}, Train, tapeGrad, xs, ws)
		for step := range 3 {
			if step > 0 {
				xs = roundTo(dt, channelData(r, shape))
				plain.setX(xs)
				reuse.setX(xs)
			}
			plain.mustRun()
			reuse.mustRun()
			sameBits(t, "y", reuse.yValue(), plain.yValue())
			pdx, pdg, pdb := plain.gradValues()
			rdx, rdg, rdb := reuse.gradValues()
			sameBits(t, "dx", rdx, pdx)
			sameBits(t, "dγ", rdg, pdg)
			sameBits(t, "dβ", rdb, pdb)
		}
	}

	for _, on := range []bool{false, true} {
		g := gorgonia.NewGraph()
		l, err := New(g, 3, tensor.Float64, WithOutputReuse(on))
		must(t, err)
		y, err := l.Apply(gorgonia.NewTensor(g, tensor.Float64, 3, gorgonia.WithShape(shape...), gorgonia.WithName("x")))
		must(t, err)
		op := y.Op().(*fwdOp)
		in := func() []gorgonia.Value {
			return []gorgonia.Value{tensorOf(tensor.Float64, shape, channelData(r, shape)),
				tensorOf(tensor.Float64, tensor.Shape{3}, []float64{1, 2, 3}), tensorOf(tensor.Float64, tensor.Shape{3}, []float64{0, 1, 0})}
		}
		x1, x2 := in(), in()
		y1, err := op.Do(x1...)
		must(t, err)
		dy := tensorOf(tensor.Float64, shape, channelData(r, shape))
		y2, err := op.Do(x2...)
		must(t, err)
		if same := y1 == y2; same != on {
			t.Errorf("reuse %v: second run returned the same tensor: %v", on, same)
		}
		sums := &sumsOp{f: op}
		s2, err := sums.Do(x2[0], dy, y2)
		must(t, err)
		s3, err := sums.Do(x2[0], dy, y2)
		must(t, err)
		if same := s2 == s3; same != on {
			t.Errorf("reuse %v: sums op returned the same tensor twice: %v", on, same)
		}
		if !on {
			continue
		}
		// A later op reshaped the reused output in place.
		want := append([]float64(nil), y2.Data().([]float64)...)
		must(t, y2.(*tensor.Dense).Reshape(5, 12))
		y3, err := op.Do(x2...)
		must(t, err)
		if y3 == y2 || !y3.Shape().Eq(shape) {
			t.Fatalf("reshaped output reused: %v", y3.Shape())
		}
		sameBits(t, "y after a reshape", y3.Data().([]float64), want)
		// ... or sliced a view of it: the next run replaces it.
		v, err := y3.(*tensor.Dense).Slice(gorgonia.S(0, 2))
		must(t, err)
		if !v.(*tensor.Dense).IsView() {
			t.Fatal("Slice did not return a view")
		}
		op.out = v.(*tensor.Dense)
		y4, err := op.Do(x2...)
		must(t, err)
		if y4 == v || !y4.Shape().Eq(shape) {
			t.Fatalf("view reused as output: %v", y4.Shape())
		}
	}
}

// TestTrainsWithSolvers trains x → Mul → BN → ReLU → Mul → BN → MSE vs
// targets with Gorgonia's solvers: the loss must drop. O = 1 makes the
// second layer one channel wide (C = 1 used to panic in the machine).
func TestTrainsWithSolvers(t *testing.T) {
	solvers := map[string]func() gorgonia.Solver{
		"vanilla": func() gorgonia.Solver { return gorgonia.NewVanillaSolver(gorgonia.WithLearnRate(0.1)) },
		"adam":    func() gorgonia.Solver { return gorgonia.NewAdamSolver(gorgonia.WithLearnRate(0.03)) },
	}
	for _, dt := range []tensor.Dtype{tensor.Float64, tensor.Float32} {
		for name, mk := range solvers {
			for _, O := range []int{3, 1} {
				t.Run(fmt.Sprintf("%s/%v/O=%d", name, dt, O), func(t *testing.T) {
					r := rand.New(rand.NewSource(6))
					const N, D, H = 32, 5, 8
					g := gorgonia.NewGraph()
					mat := func(name string, rows, cols int, v []float64) *gorgonia.Node {
						return gorgonia.NewMatrix(g, dt, gorgonia.WithShape(rows, cols), gorgonia.WithName(name), gorgonia.WithValue(tensorOf(dt, tensor.Shape{rows, cols}, v)))
					}
					xv := randn(r, N*D, 0, 1)
					// targets: a fixed nonlinear function of x, with per-output offsets and scales
					tv := make([]float64, N*O)
					for n := range N {
						for o := range O {
							tv[n*O+o] = float64(o) + (1+float64(o))*math.Tanh(xv[n*D+o]+0.5*xv[n*D+o+1])
						}
					}
					x, tg := mat("x", N, D, xv), mat("t", N, O, tv)
					w1, w2 := mat("w1", D, H, randn(r, D*H, 0, 0.5)), mat("w2", H, O, randn(r, H*O, 0, 0.5))
					bn1, err := New(g, H, dt, WithName("bn1"))
					must(t, err)
					bn2, err := New(g, O, dt, WithName("bn2"))
					must(t, err)
					h, err := bn1.Apply(gorgonia.Must(gorgonia.Mul(x, w1)))
					must(t, err)
					out, err := bn2.Apply(gorgonia.Must(gorgonia.Mul(gorgonia.Must(gorgonia.Rectify(h)), w2)))
					must(t, err)
					loss := gorgonia.Must(gorgonia.Mean(gorgonia.Must(gorgonia.Square(gorgonia.Must(gorgonia.Sub(out, tg))))))
					params := gorgonia.Nodes{w1, w2}
					params = append(params, bn1.Learnables()...)
					params = append(params, bn2.Learnables()...)
					_, err = gorgonia.Grad(loss, params...)
					must(t, err)
					vm := gorgonia.NewTapeMachine(g, gorgonia.BindDualValues(params...))
					defer vm.Close()
					s := mk()
					var first, last float64
					for step := range 60 {
						vm.Reset()
						must(t, vm.RunAll())
						last = valuesOf(t, loss.Value())[0]
						if step == 0 {
							first = last
						}
						must(t, s.Step(gorgonia.NodesToValueGrads(params)))
					}
					t.Logf("loss %.4g → %.4g", first, last)
					if !(last < 0.5*first) {
						t.Errorf("loss %v → %v: did not drop by half", first, last)
					}
					if bn1.NumBatchesTracked() != 60 || bn2.NumBatchesTracked() != 60 {
						t.Errorf("batches tracked %d, %d", bn1.NumBatchesTracked(), bn2.NumBatchesTracked())
					}
					gv := valuesOf(t, bn2.Gamma().Value())
					moved := false
					for _, v := range gv {
						moved = moved || v != 1
					}
					if !moved {
						t.Error("the solver did not update γ of the second layer")
					}
				})
			}
		}
	}
}

// ---------------------------------------------------------------------------
// Errors.

func TestApplyErrors(t *testing.T) {
	g := gorgonia.NewGraph()
	l64, err := New(g, 3, tensor.Float64)
	must(t, err)
	node := func(dt tensor.Dtype, shape ...int) *gorgonia.Node {
		return gorgonia.NewTensor(g, dt, len(shape), gorgonia.WithShape(shape...))
	}
	cases := []struct {
		name string
		x    *gorgonia.Node
		want error
	}{
		{"rank1", node(tensor.Float64, 3), ErrShape},
		{"rank6", node(tensor.Float64, 2, 3, 1, 1, 1, 2), ErrShape},
		{"channels", node(tensor.Float64, 2, 4, 2), ErrShape},
		{"channels-rank2", node(tensor.Float64, 3, 2), ErrShape},
		{"float32-into-float64-layer", node(tensor.Float32, 2, 3), ErrDtype},
		{"nil", nil, ErrShape},
		{"other-graph", gorgonia.NewTensor(gorgonia.NewGraph(), tensor.Float64, 2, gorgonia.WithShape(2, 3)), ErrShape},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			y, err := l64.Apply(tc.x)
			if !errors.Is(err, tc.want) || y != nil {
				t.Errorf("Apply = %v, %v; want nil, %v", y, err, tc.want)
			}
		})
	}
	l32, err := New(g, 3, tensor.Float32)
	must(t, err)
	if _, err := l32.Apply(node(tensor.Float64, 4, 3)); !errors.Is(err, ErrDtype) {
		t.Errorf("float64 into a float32 layer: %v", err)
	}
}

func TestNewErrors(t *testing.T) {
	g := gorgonia.NewGraph()
	cases := []struct {
		name string
		c    int
		dt   tensor.Dtype
		opts []Option
		want error
	}{
		{"int-dtype", 3, tensor.Int, nil, ErrDtype},
		{"float16-ish", 3, tensor.Complex64, nil, ErrDtype},
		{"zero-channels", 0, tensor.Float64, nil, ErrShape},
		{"eps0", 3, tensor.Float64, []Option{WithEps(0)}, ErrOption},
		{"eps-negative", 3, tensor.Float64, []Option{WithEps(-1e-5)}, ErrOption},
		{"eps-NaN", 3, tensor.Float64, []Option{WithEps(math.NaN())}, ErrOption},
		{"eps-Inf", 3, tensor.Float64, []Option{WithEps(math.Inf(1))}, ErrOption},
		{"momentum-negative", 3, tensor.Float64, []Option{WithMomentum(-0.1)}, ErrOption},
		{"momentum-1.5", 3, tensor.Float64, []Option{WithMomentum(1.5)}, ErrOption},
		{"momentum-NaN", 3, tensor.Float64, []Option{WithMomentum(math.NaN())}, ErrOption},
		{"ghost-negative", 3, tensor.Float64, []Option{WithGhostBatch(-1)}, ErrOption},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			l, err := New(g, tc.c, tc.dt, tc.opts...)
			if !errors.Is(err, tc.want) || l != nil {
				t.Errorf("New = %v, %v; want nil, %v", l, err, tc.want)
			}
		})
	}
	if _, err := New(nil, 3, tensor.Float64); err == nil {
		t.Error("New(nil graph): no error")
	}
	for _, o := range [][]Option{{WithMomentum(0)}, {WithMomentum(1)}, {WithGhostBatch(0)}, {WithEps(1e-300)}} {
		if _, err := New(g, 3, tensor.Float32, o...); err != nil {
			t.Errorf("valid option rejected: %v", err)
		}
	}
}

// TestTooFewValuesInTraining: one value per channel (N·spatial = 1, or a
// ghost group of one value) is an error when the machine runs in a mode
// using batch statistics, and fine with running statistics.
func TestTooFewValuesInTraining(t *testing.T) {
	cases := []struct {
		name  string
		shape tensor.Shape
		mode  Mode
		cfg   refConfig
		fail  bool
	}{
		{"(1,C)/train", tensor.Shape{1, 3}, Train, refConfig{}, true},
		{"(1,C,1,1)/train", tensor.Shape{1, 3, 1, 1}, Train, refConfig{}, true},
		{"(1,C)/eval-batch-stats", tensor.Shape{1, 3}, EvalBatchStats, refConfig{}, true},
		{"(1,C)/eval-no-tracking", tensor.Shape{1, 3}, Eval, refConfig{noTrack: true}, true},
		{"ghost-last-group-of-one", tensor.Shape{7, 3}, Train, refConfig{ghost: 3}, true},
		{"(1,C)/eval", tensor.Shape{1, 3}, Eval, refConfig{}, false},
		{"(1,C)/frozen", tensor.Shape{1, 3}, Frozen, refConfig{}, false},
		{"(1,C,2)/train", tensor.Shape{1, 3, 2}, Train, refConfig{}, false},
		{"(2,C)/train", tensor.Shape{2, 3}, Train, refConfig{}, false},
	}
	for _, tc := range cases {
		kinds := []machineKind{tapeGrad, lispGrad}
		if tc.fail {
			// Not the LispMachine: when an op fails, its RunAll returns while
			// its worker goroutine still runs (it reads m.q, which RunAll's
			// defer sets to nil: a data race inside Gorgonia v0.9.18, and the
			// goroutine then blocks forever on an unread channel).
			kinds = kinds[:1]
		}
		for _, kind := range kinds {
			t.Run(fmt.Sprintf("%s/%d", tc.name, kind), func(t *testing.T) {
				xs := randn(rand.New(rand.NewSource(1)), tc.shape.TotalSize(), 0, 1)
				e := newEnv(t, tensor.Float32, tc.shape, tc.cfg, tc.mode, kind, xs, xs)
				err := e.run()
				switch {
				case tc.fail && !isErr(err, ErrTooFewValues):
					t.Fatalf("RunAll = %v, want ErrTooFewValues", err)
				case !tc.fail && err != nil:
					t.Fatalf("RunAll = %v", err)
				}
				if tc.fail && e.l.NumBatchesTracked() != 0 {
					t.Error("a failed forward updated the running statistics")
				}
			})
		}
	}
	// The machine's error should be testable with errors.Is directly; Gorgonia's
	// vmContextualError has no Unwrap, so this documents where that stops.
	e := newEnv(t, tensor.Float64, tensor.Shape{1, 2}, refConfig{}, Train, tapeNoGrad, []float64{1, 2}, []float64{1, 1})
	if err := e.run(); !isErr(err, ErrTooFewValues) {
		t.Fatalf("RunAll = %v", err)
	} else if !errors.Is(err, ErrTooFewValues) {
		t.Logf("note: errors.Is cannot see through Gorgonia's vmContextualError (%T); unwrap with Err()", err)
	}
	// Direct Do is plain errors.Is.
	fwd := e.y.Op().(*fwdOp)
	_, err := fwd.Do(e.x.Value(), e.l.Gamma().Value(), e.l.Beta().Value())
	if !errors.Is(err, ErrTooFewValues) {
		t.Errorf("Do = %v, want ErrTooFewValues", err)
	}
}

// TestDoRejectsBadInputs calls the ops with inputs they were not built for.
func TestDoRejectsBadInputs(t *testing.T) {
	e := newEnv(t, tensor.Float64, tensor.Shape{4, 3}, refConfig{}, Train, tapeGrad, randn(rand.New(rand.NewSource(2)), 12, 0, 1), make([]float64, 12))
	fwd := e.y.Op().(*fwdOp)
	gam, bet := e.l.Gamma().Value(), e.l.Beta().Value()
	x32 := tensorOf(tensor.Float32, tensor.Shape{4, 3}, make([]float64, 12))
	xInt := tensor.New(tensor.Of(tensor.Int), tensor.WithShape(4, 3))
	badC := tensorOf(tensor.Float64, tensor.Shape{4, 2}, make([]float64, 8))
	badG := tensorOf(tensor.Float64, tensor.Shape{2}, []float64{1, 1})
	dxo := e.grads[0].Op().(*dxOp)
	// Backward before any forward.
	if _, err := (&sumsOp{f: fwd}).Do(e.x.Value(), e.x.Value(), e.x.Value()); !errors.Is(err, ErrState) {
		t.Errorf("sums before forward: %v, want ErrState", err)
	}
	if _, err := dxo.Do(e.x.Value(), e.x.Value(), tensorOf(tensor.Float64, tensor.Shape{2, 3}, make([]float64, 6))); !errors.Is(err, ErrState) {
		t.Errorf("dx before forward: %v, want ErrState", err)
	}
	for _, tc := range []struct {
		name string
		in   []gorgonia.Value
		want error
	}{
		{"float32 x", []gorgonia.Value{x32, gam, bet}, ErrDtype},
		{"int x", []gorgonia.Value{xInt, gam, bet}, ErrDtype},
		{"channels", []gorgonia.Value{badC, gam, bet}, ErrShape},
		{"γ shape", []gorgonia.Value{e.x.Value(), badG, bet}, ErrShape},
		{"arity", []gorgonia.Value{e.x.Value()}, ErrShape},
	} {
		if _, err := fwd.Do(tc.in...); !errors.Is(err, tc.want) {
			t.Errorf("Do(%s) = %v, want %v", tc.name, err, tc.want)
		}
	}
	e.mustRun()
	// Backward with an x of another shape than its forward.
	other := tensorOf(tensor.Float64, tensor.Shape{2, 3}, make([]float64, 6))
	if _, err := (&sumsOp{f: fwd}).Do(other, other, other); err == nil {
		t.Error("sums of another shape: no error")
	}
	if _, err := (&sumsOp{f: fwd}).Do(e.x.Value(), x32, e.x.Value()); !errors.Is(err, ErrDtype) {
		t.Errorf("sums with a float32 dy: %v", err)
	}
	// The LispMachine's backward on a device.
	dev := gorgonia.ExecutionContext{Device: gorgonia.CPU + 1}
	if err := fwd.DoDiff(dev, gorgonia.Nodes{e.x, e.l.Gamma(), e.l.Beta()}, e.y); !errors.Is(err, ErrDevice) {
		t.Errorf("DoDiff on a device: %v, want ErrDevice", err)
	}
}

func TestSetRunningStatsErrors(t *testing.T) {
	l, err := New(gorgonia.NewGraph(), 3, tensor.Float64)
	must(t, err)
	must(t, l.SetRunningStats([]float64{1, 2, 3}, []float64{0, 1, 2}))
	cases := []struct {
		name    string
		m, v    []float64
		wantErr bool
	}{
		{"short mean", []float64{1, 2}, []float64{1, 1, 1}, true},
		{"long var", []float64{1, 2, 3}, []float64{1, 1, 1, 1}, true},
		{"NaN mean", []float64{1, math.NaN(), 3}, []float64{1, 1, 1}, true},
		{"Inf mean", []float64{1, 2, math.Inf(-1)}, []float64{1, 1, 1}, true},
		{"NaN var", []float64{1, 2, 3}, []float64{1, math.NaN(), 1}, true},
		{"negative var", []float64{1, 2, 3}, []float64{1, -1e-9, 1}, true},
		{"Inf var", []float64{1, 2, 3}, []float64{1, math.Inf(1), 1}, true},
	}
	for _, tc := range cases {
		if err := l.SetRunningStats(tc.m, tc.v); !errors.Is(err, ErrState) {
			t.Errorf("%s: %v, want ErrState", tc.name, err)
		}
	}
	m, v := l.RunningStats()
	sameBits(t, "mean kept", m, []float64{1, 2, 3})
	sameBits(t, "var kept", v, []float64{0, 1, 2})
	// RunningStats returns copies.
	m[0] = 99
	if m2, _ := l.RunningStats(); m2[0] != 1 {
		t.Error("RunningStats exposes the layer's slice")
	}
	l.ResetRunningStats()
	m, v = l.RunningStats()
	sameBits(t, "reset mean", m, []float64{0, 0, 0})
	sameBits(t, "reset var", v, []float64{1, 1, 1})
}

// ---------------------------------------------------------------------------
// State.

type layerSnapshot struct {
	mean, variance, gamma, beta []float64
	tracked                     int64
}

func snapshot(t testing.TB, l *Layer) layerSnapshot {
	s := layerSnapshot{tracked: l.NumBatchesTracked()}
	s.mean, s.variance = l.RunningStats()
	if l.Gamma() != nil {
		s.gamma, s.beta = valuesOf(t, l.Gamma().Value()), valuesOf(t, l.Beta().Value())
	}
	return s
}

func (s layerSnapshot) equal(t testing.TB, what string, o layerSnapshot) {
	t.Helper()
	sameBits(t, what+" mean", o.mean, s.mean)
	sameBits(t, what+" var", o.variance, s.variance)
	sameBits(t, what+" γ", o.gamma, s.gamma)
	sameBits(t, what+" β", o.beta, s.beta)
	if s.tracked != o.tracked {
		t.Errorf("%s: tracked %d, want %d", what, o.tracked, s.tracked)
	}
}

// TestStateRoundTrip trains a few steps (solver on γ/β, running stats
// moving), saves, loads into a fresh layer of the same configuration in
// another graph, and compares the state and the eval output bit for bit.
func TestStateRoundTrip(t *testing.T) {
	for _, dt := range []tensor.Dtype{tensor.Float64, tensor.Float32} {
		for _, cfg := range []refConfig{{}, {noAffine: true}, {noTrack: true}, {cumulative: true, ghost: 2}} {
			t.Run(fmt.Sprintf("%v/%+v", dt, cfg), func(t *testing.T) {
				r := rand.New(rand.NewSource(14))
				shape := tensor.Shape{6, 3, 2}
				xs := channelData(r, shape)
				a := newEnv(t, dt, shape, cfg, Train, tapeGrad, xs, randn(r, len(xs), 0, 1))
				s := gorgonia.NewVanillaSolver(gorgonia.WithLearnRate(0.1))
				for range 3 {
					a.setX(channelData(r, shape))
					a.mustRun()
					if l := a.l.Learnables(); l != nil {
						must(t, s.Step(gorgonia.NodesToValueGrads(l)))
					}
				}
				blob, err := a.l.MarshalBinary()
				must(t, err)
				b := newEnv(t, dt, shape, cfg, Eval, tapeNoGrad, xs, xs)
				fresh := snapshot(t, b.l)
				must(t, b.l.UnmarshalBinary(blob))
				want := snapshot(t, a.l)
				want.equal(t, "loaded", snapshot(t, b.l))
				if !cfg.noTrack && want.tracked != 3 {
					t.Errorf("tracked %d, want 3", want.tracked)
				}
				if !cfg.noAffine && fmt.Sprint(fresh.gamma) == fmt.Sprint(want.gamma) {
					t.Error("γ did not move: the round trip is not tested")
				}
				must(t, a.l.SetMode(Eval))
				a.setX(xs)
				a.mustRun()
				b.mustRun()
				sameBits(t, "eval y", b.yValue(), a.yValue())
				// Marshal is deterministic.
				blob2, err := b.l.MarshalBinary()
				must(t, err)
				if !bytes.Equal(blob, blob2) {
					t.Error("re-marshalled state differs")
				}
			})
		}
	}
}

// TestUnmarshalRejectsBadState: truncated, bit-flipped, wrong channel
// count, wrong dtype, wrong flags → ErrState, and the layer is unchanged.
func TestUnmarshalRejectsBadState(t *testing.T) {
	g := gorgonia.NewGraph()
	src, err := New(g, 3, tensor.Float64)
	must(t, err)
	must(t, src.SetRunningStats([]float64{1, 2, 3}, []float64{4, 5, 6}))
	good, err := src.MarshalBinary()
	must(t, err)
	blob := func(c int, dt tensor.Dtype, opts ...Option) []byte {
		l, err := New(gorgonia.NewGraph(), c, dt, opts...)
		must(t, err)
		b, err := l.MarshalBinary()
		must(t, err)
		return b
	}
	flip := func(i int, bit byte) []byte {
		b := append([]byte(nil), good...)
		b[i] ^= bit
		return b
	}
	cases := map[string][]byte{
		"empty":          nil,
		"truncated":      good[:len(good)-9],
		"truncated-head": good[:10],
		"extended":       append(append([]byte(nil), good...), 0),
		"flip-magic":     flip(0, 1),
		"flip-version":   flip(4, 2),
		"flip-mean":      flip(40, 0x10),
		"flip-var-sign":  flip(24+8+3*8+7, 0x80),
		"flip-crc":       flip(len(good)-1, 1),
		"wrong-channels": blob(4, tensor.Float64),
		"wrong-dtype":    blob(3, tensor.Float32),
		"wrong-affine":   blob(3, tensor.Float64, WithAffine(false)),
		"wrong-tracking": blob(3, tensor.Float64, WithTrackRunningStats(false)),
	}
	for i := 0; i < len(good); i += 7 {
		cases[fmt.Sprintf("flip-byte-%d", i)] = flip(i, 0x04)
	}
	dst, err := New(g, 3, tensor.Float64)
	must(t, err)
	must(t, gorgonia.Let(dst.Gamma(), tensorOf(tensor.Float64, tensor.Shape{3}, []float64{7, 8, 9})))
	must(t, dst.SetRunningStats([]float64{-1, -2, -3}, []float64{0.5, 0.25, 2}))
	before := snapshot(t, dst)
	for name, b := range cases {
		if err := dst.UnmarshalBinary(b); !errors.Is(err, ErrState) {
			t.Errorf("%s: %v, want ErrState", name, err)
		}
		before.equal(t, name, snapshot(t, dst))
	}
	// A valid state whose values are invalid (negative variance, NaN γ) but
	// with a correct checksum: still ErrState.
	bad := func(off int, v float64) []byte {
		b := append([]byte(nil), good[:len(good)-4]...)
		putF64(b[off:], v)
		return appendCRC(b)
	}
	for name, b := range map[string][]byte{
		"negative-var": bad(24+8+3*8, -1),
		"NaN-mean":     bad(24+8, math.NaN()),
		"NaN-γ":        bad(24+8+6*8, math.NaN()),
		"Inf-β":        bad(24+8+9*8, math.Inf(1)),
		"neg-counter":  bad(24, math.Float64frombits(1<<63)),
	} {
		if err := dst.UnmarshalBinary(b); !errors.Is(err, ErrState) {
			t.Errorf("%s: %v, want ErrState", name, err)
		}
		before.equal(t, name, snapshot(t, dst))
	}
	must(t, dst.UnmarshalBinary(good))
	snapshot(t, src).equal(t, "good", snapshot(t, dst))
}

// ---------------------------------------------------------------------------
// Fuzz.

// FuzzBatchNorm builds a layer from the fuzz arguments (rank 2–5, sizes
// 1–4, options, mode, dtype), runs forward and backward on the tape twice
// (second run in the next mode), and checks: no panic; the only error is
// ErrTooFewValues, exactly when a normalization group has one value per
// channel; otherwise y and the gradients are finite for finite x.
func FuzzBatchNorm(f *testing.F) {
	f.Add(uint8(0), uint32(0x0), uint8(0), uint8(0), false, int64(1), 1.0)        // (1,1) train: error
	f.Add(uint8(0), uint32(0x1b), uint8(0), uint8(1), true, int64(2), 3.0)        // (4,4) eval
	f.Add(uint8(1), uint32(0x1ff), uint8(0x0c), uint8(0), false, int64(3), 100.0) // ghost
	f.Add(uint8(2), uint32(0xa5a), uint8(0x03), uint8(2), true, int64(4), 1e-3)   // affine off, no tracking
	f.Add(uint8(3), uint32(0x7fff), uint8(0xf4), uint8(3), false, int64(5), 1e4)  // rank 5, cumulative, eps
	f.Add(uint8(3), uint32(0x0), uint8(0x80), uint8(0), true, int64(6), 0.0)      // rank 5 all ones
	f.Add(uint8(1), uint32(0x9), uint8(0x08), uint8(0), false, int64(7), -2.0)    // ghost with a last group of 1
	f.Add(uint8(0), uint32(0x3), uint8(0), uint8(0), true, int64(8), 1.0)         // (4,1) train, C = 1
	f.Add(uint8(2), uint32(0x1c1), uint8(0x10), uint8(3), false, int64(9), 5.0)   // (2,1,4,1) frozen, C = 1
	f.Fuzz(func(t *testing.T, rank uint8, dims uint32, flags uint8, mode uint8, f32 bool, seed int64, scale float64) {
		R := 2 + int(rank%4)
		shape := make(tensor.Shape, R)
		for i := range shape {
			shape[i] = 1 + int(dims>>(3*i))&3
		}
		cfg := refConfig{
			noAffine:   flags&1 != 0,
			noTrack:    flags&2 != 0,
			ghost:      int(flags>>2) & 3,
			cumulative: flags&0x10 != 0,
			eps:        [...]float64{0, 1e-3, 0.5, 1e-12}[(flags>>5)&3],
		}
		if flags&0x80 != 0 {
			cfg.momentum, cfg.setMom = 1, true
		}
		m := Mode(mode % 4)
		dt := tensor.Float64
		if f32 {
			dt = tensor.Float32
		}
		if cfg.cumulative && cfg.setMom { // contradictory options
			if _, err := New(gorgonia.NewGraph(), shape[1], dt, cfg.options()...); !errors.Is(err, ErrOption) {
				t.Fatalf("New(%+v) = %v, want ErrOption", cfg, err)
			}
			cfg.setMom = false
		}
		if math.IsNaN(scale) || math.IsInf(scale, 0) || math.Abs(scale) > 1e6 {
			scale = 1
		}
		r := rand.New(rand.NewSource(seed))
		xs := randn(r, shape.TotalSize(), scale, scale)
		// BindDualValues, as for a solver: dγ and dβ must be tensors of γ's
		// shape for every C (C = 1 used to panic inside the machine).
		e := newEnv(t, dt, shape, cfg, m, tapeDual, xs, randn(r, len(xs), 0, 1))
		N, _, S := shapeNCS(shape)
		for run := range 2 {
			if run == 1 {
				m = (m + 1) % 4
				must(t, e.l.SetMode(m))
			}
			batch := m == Train || m == EvalBatchStats || cfg.noTrack
			tooFew := false
			if batch {
				G := N
				if cfg.ghost > 0 && cfg.ghost < N {
					G = cfg.ghost
				}
				tooFew = G*S == 1 || (N%G)*S == 1
			}
			err := e.run()
			if tooFew {
				if !isErr(err, ErrTooFewValues) {
					t.Fatalf("%v %+v %v: RunAll = %v, want ErrTooFewValues", shape, cfg, m, err)
				}
				continue
			}
			if err != nil {
				t.Fatalf("%v %+v %v: RunAll = %v", shape, cfg, m, err)
			}
			finite := func(what string, v []float64) {
				for i, x := range v {
					if math.IsNaN(x) || math.IsInf(x, 0) {
						t.Fatalf("%v %+v %v %v: %s[%d] = %v for finite x", shape, cfg, m, dt, what, i, x)
					}
				}
			}
			finite("y", e.yValue())
			dx, dg, db := e.gradValues()
			finite("dx", dx)
			finite("dγ", dg)
			finite("dβ", db)
			rm, rv := e.l.RunningStats()
			finite("running mean", rm)
			finite("running var", rv)
		}
	})
}
