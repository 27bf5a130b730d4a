package bn

import (
	"fmt"
	"math"
	"math/rand"
	"sync"
	"testing"

	"github.com/gorgonia-bn/bn/collective"
	"gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// The fused ops ApplyReLU and ApplyAddReLU: against the float64 reference
// of reference_test.go followed by naive loops relu(bn(x) + z), on every
// case of the gradient tests (modes, ghost batches, no affine, no
// tracking, C = 1), in float64 and float32, on the TapeMachine (SymDiff),
// the LispMachine (DoDiff) and a TapeMachine with BindDualValues; against
// central finite differences; against the two-op pair Apply → Rectify;
// under SyncBN against one layer on the concatenated batch.

// fusedEnv is x [, z] → fused BN → y, cost = Σ y ⊙ w, on one machine.
type fusedEnv struct {
	t        testing.TB
	l        *Layer
	dt       tensor.Dtype
	shape    tensor.Shape
	kind     machineKind
	add      bool
	x, z, w  *gorgonia.Node
	y, cost  *gorgonia.Node
	grads    gorgonia.Nodes // tape: gradients of x, [z], [γ, β]
	vm       gorgonia.VM
	twoOps   bool // Apply → [Add] → Rectify instead of the fused op
	nodeGrad bool
}

func newFusedEnv(t testing.TB, dt tensor.Dtype, shape tensor.Shape, add, twoOps bool, kind machineKind, xs, zs, ws []float64, opts ...Option) *fusedEnv {
	t.Helper()
	g := gorgonia.NewGraph()
	e := &fusedEnv{t: t, dt: dt, shape: shape, kind: kind, add: add, twoOps: twoOps}
	mk := func(name string, v []float64) *gorgonia.Node {
		return gorgonia.NewTensor(g, dt, len(shape), gorgonia.WithShape(shape...), gorgonia.WithName(name), gorgonia.WithValue(tensorOf(dt, shape, v)))
	}
	e.x, e.w = mk("x", xs), mk("w", ws)
	if add {
		e.z = mk("z", zs)
	}
	l, err := New(g, shape[1], dt, opts...)
	must(t, err)
	e.l = l
	switch {
	case twoOps:
		b, err := l.Apply(e.x)
		must(t, err)
		if add {
			b = gorgonia.Must(gorgonia.Add(b, e.z))
		}
		e.y, err = gorgonia.Rectify(b)
		must(t, err)
	case add:
		e.y, err = l.ApplyAddReLU(e.x, e.z)
		must(t, err)
	default:
		e.y, err = l.ApplyReLU(e.x)
		must(t, err)
	}
	e.cost = gorgonia.Must(gorgonia.Sum(gorgonia.Must(gorgonia.HadamardProd(e.y, e.w))))
	wrt := e.wrt()
	switch kind {
	case tapeGrad, tapeDual:
		e.grads, err = gorgonia.Grad(e.cost, wrt...)
		must(t, err)
		if kind == tapeDual && l.Learnables() != nil {
			e.vm = gorgonia.NewTapeMachine(g, gorgonia.TraceExec(), gorgonia.BindDualValues(l.Learnables()...))
		} else {
			e.vm = gorgonia.NewTapeMachine(g, gorgonia.TraceExec())
		}
	case lispGrad:
		e.vm = gorgonia.NewLispMachine(g)
	default:
		e.vm = gorgonia.NewTapeMachine(g, gorgonia.TraceExec())
	}
	t.Cleanup(func() { e.vm.Close() })
	return e
}

func (e *fusedEnv) wrt() gorgonia.Nodes {
	wrt := gorgonia.Nodes{e.x}
	if e.add {
		wrt = append(wrt, e.z)
	}
	return append(wrt, e.l.Learnables()...)
}

func (e *fusedEnv) run() error {
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

func (e *fusedEnv) mustRun() { e.t.Helper(); must(e.t, e.run()) }

func (e *fusedEnv) setParams(gamma, beta []float64) {
	C := tensor.Shape{e.shape[1]}
	must(e.t, gorgonia.Let(e.l.Gamma(), tensorOf(e.dt, C, gamma)))
	must(e.t, gorgonia.Let(e.l.Beta(), tensorOf(e.dt, C, beta)))
}

// gradValues returns the gradients of x, z (nil without z), γ and β (nil
// without affine).
func (e *fusedEnv) gradValues() (dx, dz, dg, db []float64) {
	e.t.Helper()
	var vs [][]float64
	for i, n := range e.wrt() {
		if e.kind == lispGrad || (e.kind == tapeDual && i >= len(e.wrt())-len(e.l.Learnables())) {
			v, err := n.Grad()
			must(e.t, err)
			if tt, ok := v.(tensor.Tensor); !ok || !tt.Shape().Eq(n.Shape()) {
				e.t.Fatalf("gradient of %v is %T %v, want a tensor of shape %v", n, v, v.Shape(), n.Shape())
			}
			vs = append(vs, valuesOf(e.t, v))
			continue
		}
		vs = append(vs, valuesOf(e.t, e.grads[i].Value()))
	}
	dx, vs = vs[0], vs[1:]
	if e.add {
		dz, vs = vs[0], vs[1:]
	}
	if len(vs) == 2 {
		dg, db = vs[0], vs[1]
	}
	return
}

// fusedRef returns y = relu(bn(x) + z) and the gradients of Σ y⊙w by the
// reference: dy of BN = w where y > 0, dz the same.
func fusedRef(ref *refLayer, xs, zs, ws []float64, shape tensor.Shape, m Mode) (y, dx, dz, dg, db, pre []float64) {
	b, ctx := ref.forward(xs, shape, m)
	y, pre, dz = make([]float64, len(b)), make([]float64, len(b)), make([]float64, len(b))
	for i, v := range b {
		if zs != nil {
			v += zs[i]
		}
		pre[i] = v
		if v > 0 {
			y[i], dz[i] = v, ws[i]
		}
	}
	dx, dg, db = ref.backward(ctx, dz)
	return
}

// fusedCases adds the wide and tiny-batch shapes of the issue to the
// gradient cases.
func fusedCases() []gradCase {
	return append(gradCases(),
		gradCase{"C1024/batch2/rank2", tensor.Shape{2, 1024}, Train, refConfig{}},
		gradCase{"C1024/batch2/rank4", tensor.Shape{2, 1024, 2, 1}, Train, refConfig{}},
		gradCase{"C1/batch2", tensor.Shape{2, 1}, Train, refConfig{}},
		gradCase{"C1024/batch2/eval", tensor.Shape{2, 1024}, Eval, refConfig{}},
	)
}

// awayFromKink moves z so that no pre-activation lies within 0.05 of 0
// (for the ReLU alone, z is nil and nothing moves).
func awayFromKink(pre, zs []float64) {
	if zs == nil {
		return
	}
	for i, v := range pre {
		if math.Abs(v) < 0.05 {
			zs[i] += 0.1
		}
	}
}

func TestFusedMatchesReference(t *testing.T) {
	for ci, tc := range fusedCases() {
		for _, add := range []bool{false, true} {
			for _, dt := range []tensor.Dtype{tensor.Float64, tensor.Float32} {
				for _, kind := range []machineKind{tapeGrad, lispGrad, tapeDual} {
					name := fmt.Sprintf("%s/add=%v/%v/%s", tc.name, add, dt, [...]string{"", "tape", "lisp", "dual"}[kind])
					t.Run(name, func(t *testing.T) {
						r := rand.New(rand.NewSource(int64(31 + ci)))
						xs := roundTo(dt, channelData(r, tc.shape))
						ws := roundTo(dt, randn(r, len(xs), 0, 1))
						var zs []float64
						if add {
							zs = roundTo(dt, randn(r, len(xs), 0, 1))
						}
						ref := newRef(tc.cfg, tc.shape[1])
						C := tc.shape[1]
						if !tc.cfg.noAffine {
							ref.gamma = roundTo(dt, randn(r, C, 1, 0.5))
							ref.beta = roundTo(dt, randn(r, C, 0.5, 0.5))
						}
						if !tc.cfg.noTrack {
							for c := range C {
								ref.rmean[c], ref.rvar[c] = r.NormFloat64(), 0.3+2*r.Float64()
							}
						}
						state := *ref
						state.rmean, state.rvar = append([]float64(nil), ref.rmean...), append([]float64(nil), ref.rvar...)
						_, _, _, _, _, pre := fusedRef(&state, xs, zs, ws, tc.shape, tc.mode)
						awayFromKink(pre, zs)
						zs = roundTo(dt, zs)
						e := newFusedEnv(t, dt, tc.shape, add, false, kind, xs, zs, ws, tc.cfg.options()...)
						if !tc.cfg.noAffine {
							e.setParams(ref.gamma, ref.beta)
						}
						must(t, e.l.SetRunningStats(ref.rmean, ref.rvar))
						must(t, e.l.SetMode(tc.mode))
						e.mustRun()
						wy, wdx, wdz, wdg, wdb, _ := fusedRef(ref, xs, zs, ws, tc.shape, tc.mode)
						rtol := 1e-10
						if dt == tensor.Float32 {
							rtol = 1e-5
						}
						closeTo(t, "y", valuesOf(t, e.y.Value()), wy, rtol)
						if maxAbs(wdx) == 0 || maxAbs(wy) == 0 {
							t.Fatalf("y or dx is zero: the check would be vacuous (max |y| %v, |dx| %v)", maxAbs(wy), maxAbs(wdx))
						}
						dx, dz, dg, db := e.gradValues()
						closeTo(t, "dx", dx, wdx, rtol)
						if add {
							closeTo(t, "dz", dz, wdz, rtol)
						}
						if !tc.cfg.noAffine {
							closeTo(t, "dγ", dg, wdg, rtol)
							closeTo(t, "dβ", db, wdb, rtol)
						}
						m, v := e.l.RunningStats()
						closeTo(t, "running mean", m, ref.rmean, 1e-12)
						closeTo(t, "running var", v, ref.rvar, 1e-12)
					})
				}
			}
		}
	}
}

// TestFusedGradFiniteDifferences checks every gradient of cost = Σ y⊙w
// against central differences through the TapeMachine, in float64, with
// the pre-activations kept at least 0.05 from the kink (for the ReLU alone
// the data are drawn until they are).
func TestFusedGradFiniteDifferences(t *testing.T) {
	cases := []gradCase{
		{"rank4/train", tensor.Shape{3, 2, 3, 3}, Train, refConfig{}},
		{"rank2/train", tensor.Shape{6, 3}, Train, refConfig{}},
		{"rank3/eval", tensor.Shape{4, 3, 5}, Eval, refConfig{}},
		{"rank4/frozen", tensor.Shape{3, 2, 2, 2}, Frozen, refConfig{}},
		{"rank3/eval-batch-stats", tensor.Shape{4, 2, 3}, EvalBatchStats, refConfig{}},
		{"ghost", tensor.Shape{5, 2, 3}, Train, refConfig{ghost: 2}},
		{"affine-off", tensor.Shape{4, 3, 2}, Train, refConfig{noAffine: true}},
		{"C1/batch2", tensor.Shape{2, 1, 3}, Train, refConfig{}},
	}
	for ci, tc := range cases {
		for _, add := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/add=%v", tc.name, add), func(t *testing.T) {
				var xs, zs, ws []float64
				ref := newRef(tc.cfg, tc.shape[1])
				for seed := int64(0); ; seed++ {
					r := rand.New(rand.NewSource(int64(ci)*1000 + seed))
					xs = channelData(r, tc.shape)
					ws = randn(r, len(xs), 0, 1)
					zs = nil
					if add {
						zs = randn(r, len(xs), 0, 1)
					}
					for c := range tc.shape[1] {
						ref.rmean[c], ref.rvar[c] = r.NormFloat64()*0.3, 0.5+r.Float64()
						if !tc.cfg.noAffine {
							ref.gamma[c], ref.beta[c] = 1+0.5*r.NormFloat64(), 0.3*r.NormFloat64()
						}
					}
					st := *ref
					st.rmean, st.rvar = append([]float64(nil), ref.rmean...), append([]float64(nil), ref.rvar...)
					_, _, _, _, _, pre := fusedRef(&st, xs, zs, ws, tc.shape, tc.mode)
					awayFromKink(pre, zs)
					ok := true
					st = *ref
					st.rmean, st.rvar = append([]float64(nil), ref.rmean...), append([]float64(nil), ref.rvar...)
					_, _, _, _, _, pre = fusedRef(&st, xs, zs, ws, tc.shape, tc.mode)
					pos := 0
					for _, v := range pre {
						ok = ok && math.Abs(v) >= 0.05
						if v > 0 {
							pos++
						}
					}
					if ok && pos > 0 && pos < len(pre) {
						break
					}
					if seed > 1000 {
						t.Fatal("no data away from the kink")
					}
				}
				e := newFusedEnv(t, tensor.Float64, tc.shape, add, false, tapeGrad, xs, zs, ws, tc.cfg.options()...)
				if !tc.cfg.noAffine {
					e.setParams(ref.gamma, ref.beta)
				}
				must(t, e.l.SetRunningStats(ref.rmean, ref.rvar))
				must(t, e.l.SetMode(tc.mode))
				// Train updates the running statistics each run: Eval-like
				// modes only read them, Train and EvalBatchStats ignore them.
				e.mustRun()
				dx, dz, dg, db := e.gradValues()
				cost := func() float64 { e.mustRun(); return valuesOf(t, e.cost.Value())[0] }
				const h = 1e-6
				fd := func(set func(v float64), v0 float64) float64 {
					set(v0 + h)
					cp := cost()
					set(v0 - h)
					cm := cost()
					set(v0)
					return (cp - cm) / (2 * h)
				}
				check := func(what string, i int, got, want float64) {
					if math.Abs(got-want) > 1e-6*math.Max(1, math.Abs(want)) {
						t.Errorf("%s[%d] = %.10g, finite difference %.10g", what, i, got, want)
					}
				}
				setT := func(n *gorgonia.Node, v []float64) func(i int, f float64) {
					return func(i int, f float64) {
						c := append([]float64(nil), v...)
						c[i] = f
						must(t, gorgonia.Let(n, tensorOf(tensor.Float64, tc.shape, c)))
					}
				}
				for i := range xs {
					sx := setT(e.x, xs)
					check("dx", i, dx[i], fd(func(v float64) { sx(i, v) }, xs[i]))
					if add {
						sz := setT(e.z, zs)
						check("dz", i, dz[i], fd(func(v float64) { sz(i, v) }, zs[i]))
					}
				}
				if !tc.cfg.noAffine {
					for c := range tc.shape[1] {
						g, b := append([]float64(nil), ref.gamma...), append([]float64(nil), ref.beta...)
						check("dγ", c, dg[c], fd(func(v float64) { g[c] = v; e.setParams(g, b) }, ref.gamma[c]))
						g = append(g[:0], ref.gamma...)
						check("dβ", c, db[c], fd(func(v float64) { b[c] = v; e.setParams(g, b) }, ref.beta[c]))
					}
				}
			})
		}
	}
}

// TestFusedEqualsTwoOps: the fused op gives what Apply → [Add z] → Rectify
// gives, forward and backward, on both machines.
func TestFusedEqualsTwoOps(t *testing.T) {
	for _, shape := range []tensor.Shape{{8, 3}, {4, 5, 3, 2}, {2, 1024}} {
		for _, add := range []bool{false, true} {
			for _, kind := range []machineKind{tapeGrad, lispGrad} {
				for _, opts := range [][]Option{nil, {WithGhostBatch(3)}} {
					t.Run(fmt.Sprintf("%v/add=%v/kind%d/opts%d", shape, add, kind, len(opts)), func(t *testing.T) {
						r := rand.New(rand.NewSource(3))
						xs, zs, ws := channelData(r, shape), randn(r, shape.TotalSize(), 0, 1), randn(r, shape.TotalSize(), 0, 1)
						f := newFusedEnv(t, tensor.Float64, shape, add, false, kind, xs, zs, ws, opts...)
						u := newFusedEnv(t, tensor.Float64, shape, add, true, kind, xs, zs, ws, opts...)
						f.mustRun()
						u.mustRun()
						closeTo(t, "y", valuesOf(t, f.y.Value()), valuesOf(t, u.y.Value()), 1e-13)
						fx, fz, fg, fb := f.gradValues()
						ux, uz, ug, ub := u.gradValues()
						closeTo(t, "dx", fx, ux, 1e-11)
						closeTo(t, "dz", fz, uz, 1e-13)
						closeTo(t, "dγ", fg, ug, 1e-11)
						closeTo(t, "dβ", fb, ub, 1e-11)
					})
				}
			}
		}
	}
}

// TestFusedSync: ranks of a synchronized fused layer give what one fused
// layer gives on the concatenated batch (plain and ghost batches).
func TestFusedSync(t *testing.T) {
	for _, tc := range []struct {
		name  string
		sizes []int
		opts  []Option
	}{
		{"uneven", []int{3, 1, 4}, nil},
		{"ghost", []int{5, 3}, []Option{WithGhostBatch(2)}},
	} {
		for _, add := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/add=%v", tc.name, add), func(t *testing.T) {
				const C, S = 3, 4
				r := rand.New(rand.NewSource(9))
				total := 0
				for _, n := range tc.sizes {
					total += n
				}
				all := func(mean float64) []float64 { return randn(r, total*C*S, mean, 2) }
				xs, zs, ws := all(3), all(0), all(0)
				shape := func(n int) tensor.Shape { return tensor.Shape{n, C, 2, 2} }
				run := func(e *fusedEnv) [5][]float64 {
					for range 2 {
						e.mustRun()
					}
					dx, dz, dg, db := e.gradValues()
					return [5][]float64{valuesOf(t, e.y.Value()), dx, dz, dg, db}
				}
				want := run(newFusedEnv(t, tensor.Float64, shape(total), add, false, tapeGrad, xs, zs, ws, tc.opts...))
				comms, err := collective.NewInProcess(len(tc.sizes))
				must(t, err)
				got := make([][5][]float64, len(tc.sizes))
				var wg sync.WaitGroup
				off := 0
				for i, n := range tc.sizes {
					lo, hi := off*C*S, (off+n)*C*S
					off += n
					e := newFusedEnv(t, tensor.Float64, shape(n), add, false, tapeGrad, xs[lo:hi], zs[lo:hi], ws[lo:hi], append([]Option{WithName("l"), WithCommunicator(comms[i])}, tc.opts...)...)
					wg.Go(func() { got[i] = run(e) })
				}
				wg.Wait()
				off = 0
				sg, sb := make([]float64, C), make([]float64, C)
				for i, n := range tc.sizes {
					lo, hi := off*C*S, (off+n)*C*S
					off += n
					closeTo(t, "y", got[i][0], want[0][lo:hi], 1e-10)
					closeTo(t, "dx", got[i][1], want[1][lo:hi], 1e-10)
					if add {
						closeTo(t, "dz", got[i][2], want[2][lo:hi], 1e-10)
					}
					for c := range C {
						sg[c] += got[i][3][c]
						sb[c] += got[i][4][c]
					}
				}
				closeTo(t, "Σ dγ", sg, want[3], 1e-10)
				closeTo(t, "Σ dβ", sb, want[4], 1e-10)
			})
		}
	}
}

// TestFusedOutputReuseAndPrealloc: WithOutputReuse and UsePreallocDo give
// the same values as fresh outputs.
func TestFusedDoRejectsBadInputs(t *testing.T) {
	g := gorgonia.NewGraph()
	l, err := New(g, 2, tensor.Float64)
	must(t, err)
	x := gorgonia.NewMatrix(g, tensor.Float64, gorgonia.WithShape(4, 2), gorgonia.WithName("x"))
	z := gorgonia.NewMatrix(g, tensor.Float64, gorgonia.WithShape(4, 2), gorgonia.WithName("z"))
	y, err := l.ApplyAddReLU(x, z)
	must(t, err)
	op := y.Op().(*reluOp)
	xv := tensorOf(tensor.Float64, tensor.Shape{4, 2}, make([]float64, 8))
	gv := tensorOf(tensor.Float64, tensor.Shape{2}, []float64{1, 1})
	bv := tensorOf(tensor.Float64, tensor.Shape{2}, []float64{0, 0})
	for _, c := range []struct {
		name string
		in   []gorgonia.Value
		want error
	}{
		{"z of another shape", []gorgonia.Value{xv, tensorOf(tensor.Float64, tensor.Shape{4, 3}, make([]float64, 12)), gv, bv}, ErrShape},
		{"z of another dtype", []gorgonia.Value{xv, tensorOf(tensor.Float32, tensor.Shape{4, 2}, make([]float64, 8)), gv, bv}, ErrDtype},
		{"too few inputs", []gorgonia.Value{xv, gv, bv}, ErrShape},
	} {
		if _, err := op.Do(c.in...); !isErr(err, c.want) {
			t.Errorf("%s: %v, want %v", c.name, err, c.want)
		}
	}
	// The backward before a forward.
	if _, err := (&maskOp{f: op.f}).Do(xv, xv, xv); !isErr(err, ErrState) {
		t.Errorf("mask before a forward: %v, want ErrState", err)
	}
	if _, err := (&maskSumsOp{f: op.f}).Do(xv); !isErr(err, ErrState) {
		t.Errorf("sums before a forward: %v, want ErrState", err)
	}
}
