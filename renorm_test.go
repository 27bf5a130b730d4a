package bn

// Tests of Batch Renormalization (renorm.go) against the float64 reference
// of renorm_ref_test.go, finite differences, and its defining equivalences:
// r = 1, d = 0 is plain BN bit for bit; unclipped, the training output is
// the inference output; SyncBN is BRN over the concatenated batch.

import (
	"errors"
	"fmt"
	"math"
	"math/rand"
	"sync"
	"testing"

	"github.com/gorgonia-bn/bn/collective"
	"gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// brnSegs assigns sample i to segment (domain) (*ids)[i] of D; the segments
// are normalized alone or all together (sharedNorm), keep their own running
// statistics or share group 0 (sharedStats), and have their own γ/β.
type brnSegs struct {
	ids                     *[]int
	D                       int
	sharedNorm, sharedStats bool
}

func (b brnSegs) Segments(n int, seg []int, m *segMap) (int, error) {
	if len(*b.ids) != n {
		return 0, fmt.Errorf("%w: %d domain ids for %d samples", ErrShape, len(*b.ids), n)
	}
	copy(seg, *b.ids)
	m.Resize(b.D)
	for s := range b.D {
		m.Norm[s], m.Stat[s], m.Aff[s] = s, s, s
		if b.sharedNorm {
			m.Norm[s] = 0
		}
		if b.sharedStats {
			m.Stat[s] = 0
		}
	}
	return b.D, nil
}

func (b brnSegs) assign() brnAssign {
	ids := *b.ids
	a := plainAssign(len(ids))
	for i, d := range ids {
		a.aff[i] = d
		if !b.sharedNorm {
			a.norm[i] = d
		}
		if !b.sharedStats {
			a.stat[i] = d
		}
	}
	return a
}

// brnSetup describes a layer: its options, ghost size, or domain segments.
type brnSetup struct {
	opts []Option
	segs *brnSegs // nil: a plain (or ghost) layer
}

func (s brnSetup) groups() (stat, aff int) {
	if s.segs == nil {
		return 1, 1
	}
	return s.segs.D, s.segs.D
}

// rnNet is x → layer → cost = Σ y⊙w on one machine kind (tapeGrad,
// lispGrad or tapeDual), with the gradients of x, γ, β.
type rnNet struct {
	t      testing.TB
	dt     tensor.Dtype
	shape  tensor.Shape
	kind   machineKind
	l      *Layer
	x, w   *gorgonia.Node
	y      *gorgonia.Node
	cost   *gorgonia.Node
	grads  gorgonia.Nodes
	vm     gorgonia.VM
	closed bool
}

func newRnNet(t testing.TB, dt tensor.Dtype, shape tensor.Shape, kind machineKind, st brnSetup) *rnNet {
	t.Helper()
	g := gorgonia.NewGraph()
	n := &rnNet{t: t, dt: dt, shape: shape, kind: kind}
	n.x = gorgonia.NewTensor(g, dt, len(shape), gorgonia.WithShape(shape...), gorgonia.WithName("x"), gorgonia.WithInit(gorgonia.Zeroes()))
	n.w = gorgonia.NewTensor(g, dt, len(shape), gorgonia.WithShape(shape...), gorgonia.WithName("w"), gorgonia.WithInit(gorgonia.Zeroes()))
	var err error
	if st.segs != nil {
		n.l, err = newGrouped(g, shape[1], dt, st.segs.D, true, st.opts...)
		must(t, err)
		n.y, err = n.l.applySegmented(n.x, *st.segs)
	} else {
		n.l, err = New(g, shape[1], dt, st.opts...)
		must(t, err)
		n.y, err = n.l.Apply(n.x)
	}
	must(t, err)
	n.cost = gorgonia.Must(gorgonia.Sum(gorgonia.Must(gorgonia.HadamardProd(n.y, n.w))))
	if kind == lispGrad {
		n.vm = gorgonia.NewLispMachine(g)
	} else {
		n.grads, err = gorgonia.Grad(n.cost, append(gorgonia.Nodes{n.x}, n.l.Learnables()...)...)
		must(t, err)
		if kind == tapeDual && n.l.Learnables() != nil {
			n.vm = gorgonia.NewTapeMachine(g, gorgonia.TraceExec(), gorgonia.BindDualValues(n.l.Learnables()...))
		} else {
			n.vm = gorgonia.NewTapeMachine(g, gorgonia.TraceExec())
		}
	}
	t.Cleanup(n.close)
	return n
}

func (n *rnNet) close() {
	if !n.closed {
		n.closed = true
		n.vm.Close()
	}
}

// setParams sets γ and β (flattened, γ's shape) when the layer has them.
func (n *rnNet) setParams(gamma, beta []float64) {
	if n.l.Gamma() == nil {
		return
	}
	s := n.l.Gamma().Shape()
	must(n.t, gorgonia.Let(n.l.Gamma(), tensorOf(n.dt, s, gamma)))
	must(n.t, gorgonia.Let(n.l.Beta(), tensorOf(n.dt, s, beta)))
}

// run runs the graph once on x, w in mode m and returns y, dx, dγ, dβ.
func (n *rnNet) run(xs, ws []float64, m Mode) (brnOut, error) {
	must(n.t, gorgonia.Let(n.x, tensorOf(n.dt, n.shape, xs)))
	must(n.t, gorgonia.Let(n.w, tensorOf(n.dt, n.shape, ws)))
	must(n.t, n.l.SetMode(m))
	if n.kind == tapeDual {
		for _, p := range n.l.Learnables() {
			if g, err := p.Grad(); err == nil {
				if tt, ok := g.(tensor.Tensor); ok {
					tt.Zero()
				}
			}
		}
	}
	if n.kind != lispGrad {
		n.vm.Reset()
	}
	if err := n.vm.RunAll(); err != nil {
		return brnOut{}, err
	}
	var o brnOut
	o.y = valuesOf(n.t, n.y.Value())
	if n.kind == lispGrad {
		get := func(nd *gorgonia.Node) []float64 {
			v, err := nd.Grad()
			must(n.t, err)
			return valuesOf(n.t, v)
		}
		o.dx = get(n.x)
		if n.l.Gamma() != nil {
			o.dg, o.db = get(n.l.Gamma()), get(n.l.Beta())
		}
		return o, nil
	}
	o.dx = valuesOf(n.t, n.grads[0].Value())
	if len(n.grads) == 3 {
		o.dg, o.db = valuesOf(n.t, n.grads[1].Value()), valuesOf(n.t, n.grads[2].Value())
		if n.kind == tapeDual {
			for i, p := range n.l.Learnables() {
				v, err := p.Grad()
				must(n.t, err)
				sameBits(n.t, "dual value of "+p.Name(), valuesOf(n.t, v), [][]float64{o.dg, o.db}[i])
			}
		}
	}
	return o, nil
}

// rnStepper runs successive steps of one layer on one machine kind: the
// TapeMachines on one graph; the LispMachine, which runs a graph once, on a
// new graph per step that takes over the layer's state (MarshalBinary:
// running statistics and counters, so the renorm schedule goes on).
type rnStepper struct {
	t     testing.TB
	dt    tensor.Dtype
	shape tensor.Shape
	kind  machineKind
	st    brnSetup
	net   *rnNet
}

func (s *rnStepper) step(xs, ws, gamma, beta []float64, m Mode) (brnOut, error) {
	if s.net == nil || s.kind == lispGrad {
		next := newRnNet(s.t, s.dt, s.shape, s.kind, s.st)
		if s.net != nil {
			state, err := s.net.l.MarshalBinary()
			must(s.t, err)
			must(s.t, next.l.UnmarshalBinary(state))
			s.net.close()
		}
		s.net = next
	}
	s.net.setParams(gamma, beta)
	return s.net.run(xs, ws, m)
}

func flat(v [][]float64) []float64 {
	var f []float64
	for _, r := range v {
		f = append(f, r...)
	}
	return f
}

// brnData draws a batch whose channels (and domains) have different means
// and spreads that move from step to step, so that r and d fall both inside
// and outside their limits.
func brnData(r *rand.Rand, shape tensor.Shape, ids []int, step int) []float64 {
	N, C, S := shapeNCS(shape)
	v := make([]float64, N*C*S)
	for n := range N {
		dom := 0.0
		if ids != nil {
			dom = float64(ids[n])
		}
		for c := range C {
			mean := 0.6*math.Sin(float64(3*c+step)) + 0.7*dom
			sd := 0.5 + 0.4*float64((c+step)%4) + 0.3*dom
			for s := range S {
				v[at(C, S, n, c, s)] = mean + sd*r.NormFloat64()
			}
		}
	}
	return v
}

type brnCase struct {
	name  string
	shape tensor.Shape
	ghost int
	segs  *brnSegs
	ids   [][]int // per step, with segs
	extra []Option
}

func brnCases() []brnCase {
	dom := func(sharedNorm, sharedStats bool) *brnSegs {
		return &brnSegs{ids: new([]int), D: 3, sharedNorm: sharedNorm, sharedStats: sharedStats}
	}
	ids := [][]int{{0, 1, 2, 0, 1, 2}, {1, 1, 0, 0, 1, 0}, {2, 0, 2, 1, 1, 0}, {0, 0, 0, 0, 0, 0}, {2, 1, 0, 2, 1, 0}}
	return []brnCase{
		{name: "2d", shape: tensor.Shape{8, 3}},
		{name: "3d", shape: tensor.Shape{6, 4, 5}},
		{name: "4d", shape: tensor.Shape{5, 3, 2, 3}},
		{name: "5d", shape: tensor.Shape{3, 2, 2, 2, 2}},
		{name: "C1/2d", shape: tensor.Shape{6, 1}},
		{name: "C1/4d", shape: tensor.Shape{3, 1, 2, 2}},
		{name: "C1024/batch2", shape: tensor.Shape{2, 1024}},
		{name: "batch2/4d", shape: tensor.Shape{2, 3, 2, 2}},
		{name: "ghost/3+3+2", shape: tensor.Shape{8, 3, 2}, ghost: 3},
		{name: "ghost/4d/batch2", shape: tensor.Shape{2, 2, 2, 2}, ghost: 1},
		{name: "affine-off", shape: tensor.Shape{6, 3, 2}, extra: []Option{WithAffine(false)}},
		{name: "domains", shape: tensor.Shape{6, 2, 3}, segs: dom(false, false), ids: ids},
		{name: "domains/shared-norm", shape: tensor.Shape{6, 2, 3}, segs: dom(true, false), ids: ids},
		{name: "domains/shared-stats", shape: tensor.Shape{6, 2, 2, 2}, segs: dom(false, true), ids: ids},
	}
}

// brnModes is the mode of each step: training steps through the schedule,
// then every other mode, then training again.
var brnModes = []Mode{Train, Train, Train, Train, Train, Eval, EvalBatchStats, Frozen, Train}

var brnSchedule = RenormConfig{RMax: 1.5, DMax: 0.5, Warmup: 1, RMaxRamp: 2, DMaxRamp: 3}

// TestRenormMatchesAlgorithm1 compares y, dx, dγ, dβ, the running
// statistics and the counters of float64 and float32 layers with the
// reference, step by step through the warm-up schedule and every mode, for
// 2D to 5D inputs, C = 1 and 1024, batches of 2, ghost batches and domain
// segments, on the TapeMachine (SymDiff), the LispMachine (DoDiff) and a
// TapeMachine with BindDualValues.
func TestRenormMatchesAlgorithm1(t *testing.T) {
	var rIn, rClipped, dIn, dClipped int
	for ci, tc := range brnCases() {
		for _, dt := range []tensor.Dtype{tensor.Float64, tensor.Float32} {
			for _, kind := range []machineKind{tapeGrad, lispGrad, tapeDual} {
				name := fmt.Sprintf("%s/%v/%s", tc.name, dt, [...]string{"", "tape", "lisp", "dual"}[kind])
				t.Run(name, func(t *testing.T) {
					const eps, mom = 1e-3, 0.3
					opts := append([]Option{WithEps(eps), WithMomentum(mom), WithRenorm(brnSchedule)}, tc.extra...)
					if tc.ghost > 0 {
						opts = append(opts, WithGhostBatch(tc.ghost))
					}
					st := brnSetup{opts: opts, segs: tc.segs}
					sg, ag := st.groups()
					ref := newBRNRef(tc.shape[1], sg, ag, eps, mom, brnSchedule)
					r := rand.New(rand.NewSource(int64(31 + ci)))
					for g := range sg {
						for c := range tc.shape[1] {
							ref.rmean[g][c], ref.rvar[g][c] = 0.5*r.NormFloat64(), 0.5+1.5*r.Float64()
						}
					}
					noAffine := len(tc.extra) > 0
					if !noAffine {
						for a := range ag {
							ref.gamma[a] = roundTo(dt, randn(r, tc.shape[1], 1, 0.4))
							ref.beta[a] = roundTo(dt, randn(r, tc.shape[1], 0, 0.5))
						}
					}
					s := &rnStepper{t: t, dt: dt, shape: tc.shape, kind: kind, st: st}
					s.net = newRnNet(t, dt, tc.shape, kind, st)
					must(t, s.net.l.SetRunningStats(flat(ref.rmean), flat(ref.rvar)))
					rtol := 1e-10
					if dt == tensor.Float32 {
						rtol = 2e-5
					}
					for k, m := range brnModes {
						as := plainAssign(tc.shape[0])
						var ids []int
						if tc.segs != nil {
							ids = tc.ids[k%len(tc.ids)]
							*tc.segs.ids = ids
							as = tc.segs.assign()
						} else if tc.ghost > 0 {
							as = ghostAssign(tc.shape[0], tc.ghost)
						}
						xs := roundTo(dt, brnData(r, tc.shape, ids, k))
						ws := roundTo(dt, randn(r, len(xs), 0, 1))
						got, err := s.step(xs, ws, flat(ref.gamma), flat(ref.beta), m)
						if err != nil {
							t.Fatalf("step %d (%v): %v", k, m, err)
						}
						want := ref.step(xs, ws, tc.shape, as, m)
						what := func(s string) string { return fmt.Sprintf("step %d (%v): %s", k, m, s) }
						closeTo(t, what("y"), got.y, want.y, rtol)
						closeTo(t, what("dx"), got.dx, want.dx, rtol)
						if !noAffine {
							closeTo(t, what("dγ"), got.dg, want.dg, rtol)
							closeTo(t, what("dβ"), got.db, want.db, rtol)
						}
						rm, rv := s.net.l.RunningStats()
						closeTo(t, what("running mean"), rm, flat(ref.rmean), 1e-12)
						closeTo(t, what("running var"), rv, flat(ref.rvar), 1e-12)
						if tr := s.net.l.trackedGroups(); fmt.Sprint(tr) != fmt.Sprint(ref.tracked) {
							t.Fatalf("%s = %v, want %v", what("tracked"), tr, ref.tracked)
						}
						if t.Failed() {
							t.FailNow()
						}
					}
					if dt == tensor.Float64 && kind == tapeGrad {
						rIn, rClipped, dIn, dClipped = rIn+ref.rIn, rClipped+ref.rClipped, dIn+ref.dIn, dClipped+ref.dClipped
					}
				})
			}
		}
	}
	t.Logf("r inside its limits %d times, clipped %d; d inside %d, clipped %d", rIn, rClipped, dIn, dClipped)
	if rIn == 0 || rClipped == 0 || dIn == 0 || dClipped == 0 {
		t.Errorf("the data should put r and d both inside and outside their limits: r %d/%d, d %d/%d", rIn, rClipped, dIn, dClipped)
	}
}

// TestRenormIdentityIsPlainBN: with r = 1 and d = 0 (RMax 1, DMax 0, or
// the warm-up of any schedule) a renorm layer is a plain layer bit for bit
// (y, dx, dγ, dβ, running statistics), and in Eval, Frozen and
// EvalBatchStats any renorm layer is.
func TestRenormIdentityIsPlainBN(t *testing.T) {
	cfgs := []struct {
		name  string
		rc    RenormConfig
		modes []Mode
	}{
		{"rmax1-dmax0", RenormConfig{RMax: 1, DMax: 0}, []Mode{Train, Train, Train}},
		{"warm-up", RenormConfig{RMax: 3, DMax: 5, Warmup: 3, RMaxRamp: 10}, []Mode{Train, Train, Train}},
		{"other-modes", RenormConfig{RMax: 1.2, DMax: 0.1}, []Mode{Eval, Frozen, EvalBatchStats}},
	}
	for _, cfg := range cfgs {
		for _, tc := range brnCases() {
			for _, dt := range []tensor.Dtype{tensor.Float64, tensor.Float32} {
				t.Run(fmt.Sprintf("%s/%s/%v", cfg.name, tc.name, dt), func(t *testing.T) {
					base := append([]Option{WithMomentum(0.4)}, tc.extra...)
					if tc.ghost > 0 {
						base = append(base, WithGhostBatch(tc.ghost))
					}
					plain := newRnNet(t, dt, tc.shape, tapeGrad, brnSetup{opts: base, segs: tc.segs})
					ren := newRnNet(t, dt, tc.shape, tapeGrad, brnSetup{opts: append(base, WithRenorm(cfg.rc)), segs: tc.segs})
					r := rand.New(rand.NewSource(5))
					n := plain.l.Groups() * tc.shape[1]
					rm, rv := randn(r, n, 0, 1), randn(r, n, 1.5, 0.3)
					must(t, plain.l.SetRunningStats(rm, rv))
					must(t, ren.l.SetRunningStats(rm, rv))
					if plain.l.Gamma() != nil {
						k := plain.l.Gamma().Shape().TotalSize()
						g, b := roundTo(dt, randn(r, k, 1, 0.5)), roundTo(dt, randn(r, k, 0, 0.5))
						plain.setParams(g, b)
						ren.setParams(g, b)
					}
					for k, m := range cfg.modes {
						var ids []int
						if tc.segs != nil {
							ids = tc.ids[k]
							*tc.segs.ids = ids
						}
						xs, ws := brnData(r, tc.shape, ids, k), randn(r, tc.shape.TotalSize(), 0, 1)
						want, err := plain.run(xs, ws, m)
						must(t, err)
						got, err := ren.run(xs, ws, m)
						must(t, err)
						sameBits(t, "y", got.y, want.y)
						sameBits(t, "dx", got.dx, want.dx)
						sameBits(t, "dγ", got.dg, want.dg)
						sameBits(t, "dβ", got.db, want.db)
						gm, gv := ren.l.RunningStats()
						wm, wv := plain.l.RunningStats()
						sameBits(t, "running mean", gm, wm)
						sameBits(t, "running var", gv, wv)
					}
				})
			}
		}
	}
}

// TestRenormUnclippedIsInference: with limits that never bind, the
// training output is the inference output of the running statistics before
// the step, y = γ·(x − μ)/σ + β — the point of Batch Renormalization —
// while plain training would differ.
func TestRenormUnclippedIsInference(t *testing.T) {
	for _, tc := range brnCases() {
		if tc.segs != nil && tc.segs.sharedNorm {
			continue // one set over domains of other running statistics: covered by the reference test
		}
		t.Run(tc.name, func(t *testing.T) {
			base := append([]Option{WithMomentum(0.4)}, tc.extra...)
			if tc.ghost > 0 {
				base = append(base, WithGhostBatch(tc.ghost))
			}
			train := newRnNet(t, tensor.Float64, tc.shape, tapeGrad, brnSetup{opts: append(base, WithRenorm(RenormConfig{RMax: 1e6, DMax: 1e6})), segs: tc.segs})
			eval := newRnNet(t, tensor.Float64, tc.shape, tapeGrad, brnSetup{opts: base, segs: tc.segs})
			plain := newRnNet(t, tensor.Float64, tc.shape, tapeGrad, brnSetup{opts: base, segs: tc.segs})
			r := rand.New(rand.NewSource(9))
			n := train.l.Groups() * tc.shape[1]
			rm, rv := randn(r, n, 0, 1), randn(r, n, 1.5, 0.3)
			for _, l := range []*Layer{train.l, eval.l, plain.l} {
				must(t, l.SetRunningStats(rm, rv))
			}
			if train.l.Gamma() != nil {
				k := train.l.Gamma().Shape().TotalSize()
				g, b := randn(r, k, 1, 0.5), randn(r, k, 0, 0.5)
				for _, nt := range []*rnNet{train, eval, plain} {
					nt.setParams(g, b)
				}
			}
			for k := range 3 {
				var ids []int
				if tc.segs != nil {
					ids = tc.ids[k]
					*tc.segs.ids = ids
				}
				xs, ws := brnData(r, tc.shape, ids, k), randn(r, tc.shape.TotalSize(), 0, 1)
				m, v := train.l.RunningStats()
				must(t, eval.l.SetRunningStats(m, v))
				want, err := eval.run(xs, ws, Eval)
				must(t, err)
				got, err := train.run(xs, ws, Train)
				must(t, err)
				closeTo(t, fmt.Sprintf("step %d: training y vs inference y", k), got.y, want.y, 1e-9)
				pl, err := plain.run(xs, ws, Train)
				must(t, err)
				if d := maxDiff(pl.y, want.y); d < 1e-3 {
					t.Fatalf("step %d: plain training is within %g of inference: the check would be vacuous", k, d)
				}
			}
		})
	}
}

// TestRenormFiniteDifferences checks the gradients with r and d held
// constant. (a) Where every r and d sits at a limit they are locally
// constant, so central differences of the layer's own forward through the
// TapeMachine must match dx, dγ, dβ (momentum 0 keeps the running
// statistics, and so r and d, fixed between runs); the LispMachine must
// agree with the TapeMachine. (b) Inside the limits, the gradients must match
// central differences of the forward with r and d frozen at their values
// (frozenRD) and differ from the layer's full derivative, which also moves r
// and d (stop-gradient is real).
func TestRenormFiniteDifferences(t *testing.T) {
	const h, eps = 1e-5, 1e-5
	check := func(t *testing.T, what string, i int, got, want float64) {
		t.Helper()
		if math.Abs(got-want) > 1e-6*math.Max(1, math.Abs(want)) {
			t.Errorf("%s[%d] = %.10g, finite difference %.10g", what, i, got, want)
		}
	}
	for _, tc := range brnCases() {
		if tc.shape.TotalSize() > 200 {
			continue
		}
		t.Run("clipped/"+tc.name, func(t *testing.T) {
			opts := append([]Option{WithMomentum(0), WithRenorm(RenormConfig{RMax: 1.25, DMax: 0.5})}, tc.extra...)
			if tc.ghost > 0 {
				opts = append(opts, WithGhostBatch(tc.ghost))
			}
			st := brnSetup{opts: opts, segs: tc.segs}
			e := newRnNet(t, tensor.Float64, tc.shape, tapeGrad, st)
			sg, ag := st.groups()
			C := tc.shape[1]
			// Running statistics far from the batch's: the batch's channels
			// have mean 8 and spread 4 or mean −4 and spread 0.2, the running
			// statistics mean 0 and var 1.
			ref := newBRNRef(C, sg, ag, eps, 0, RenormConfig{RMax: 1.25, DMax: 0.5})
			r := rand.New(rand.NewSource(3))
			var ids []int
			as := plainAssign(tc.shape[0])
			if tc.segs != nil {
				ids = tc.ids[0]
				*tc.segs.ids = ids
				as = tc.segs.assign()
			} else if tc.ghost > 0 {
				as = ghostAssign(tc.shape[0], tc.ghost)
			}
			N, _, S := shapeNCS(tc.shape)
			xs := make([]float64, tc.shape.TotalSize())
			for n := range N {
				for c := range C {
					mean, sd := 8.0, 4.0
					if c%2 == 1 {
						mean, sd = -4, 0.2
					}
					for s := range S {
						xs[at(C, S, n, c, s)] = mean + sd*r.NormFloat64()
					}
				}
			}
			ws := randn(r, len(xs), 0, 1)
			if e.l.Gamma() != nil {
				for a := range ag {
					ref.gamma[a], ref.beta[a] = randn(r, C, 1, 0.3), randn(r, C, 0, 0.5)
				}
				e.setParams(flat(ref.gamma), flat(ref.beta))
			}
			got, err := e.run(xs, ws, Train)
			must(t, err)
			ref.step(xs, ws, tc.shape, as, Train)
			if ref.rIn != 0 || ref.dIn != 0 || ref.rClipped == 0 || ref.dClipped == 0 {
				t.Fatalf("want every r and d clipped: r %d inside, %d clipped; d %d inside, %d clipped", ref.rIn, ref.rClipped, ref.dIn, ref.dClipped)
			}
			cost := func() float64 {
				_, err := e.run(xs, ws, Train)
				must(t, err)
				return valuesOf(t, e.cost.Value())[0]
			}
			fd := func(p *float64) float64 {
				v := *p
				*p = v + h
				cp := cost()
				*p = v - h
				cm := cost()
				*p = v
				return (cp - cm) / (2 * h)
			}
			for _, i := range []int{0, len(xs) - 1, r.Intn(len(xs)), r.Intn(len(xs))} {
				check(t, "dx", i, got.dx[i], fd(&xs[i]))
			}
			if e.l.Gamma() != nil {
				g, b := flat(ref.gamma), flat(ref.beta)
				for _, i := range []int{0, len(g) - 1} {
					setG := func(v float64) float64 {
						g[i] = v
						e.setParams(g, b)
						return cost()
					}
					v := g[i]
					want := (setG(v+h) - setG(v-h)) / (2 * h)
					setG(v)
					check(t, "dγ", i, got.dg[i], want)
					setB := func(v float64) float64 {
						b[i] = v
						e.setParams(g, b)
						return cost()
					}
					v = b[i]
					want = (setB(v+h) - setB(v-h)) / (2 * h)
					setB(v)
					check(t, "dβ", i, got.db[i], want)
				}
			}
			lp := newRnNet(t, tensor.Float64, tc.shape, lispGrad, st)
			if lp.l.Gamma() != nil {
				lp.setParams(flat(ref.gamma), flat(ref.beta))
			}
			lgot, err := lp.run(xs, ws, Train)
			must(t, err)
			closeTo(t, "lisp dx", lgot.dx, got.dx, 1e-10)
			closeTo(t, "lisp dγ", lgot.dg, got.dg, 1e-10)
			closeTo(t, "lisp dβ", lgot.db, got.db, 1e-10)
		})
	}
	for _, shape := range []tensor.Shape{{7, 3}, {4, 2, 3, 2}, {2, 1, 3}} {
		t.Run(fmt.Sprintf("inside/%v", shape), func(t *testing.T) {
			C := shape[1]
			rc := RenormConfig{RMax: 100, DMax: 100}
			e := newRnNet(t, tensor.Float64, shape, tapeGrad, brnSetup{opts: []Option{WithEps(eps), WithMomentum(0), WithRenorm(rc)}})
			r := rand.New(rand.NewSource(4))
			ref := newBRNRef(C, 1, 1, eps, 0, rc)
			for c := range C {
				ref.rmean[0][c], ref.rvar[0][c] = r.NormFloat64(), 0.5+r.Float64()
			}
			must(t, e.l.SetRunningStats(ref.rmean[0], ref.rvar[0]))
			ref.gamma[0], ref.beta[0] = randn(r, C, 1, 0.3), randn(r, C, 0, 0.5)
			e.setParams(ref.gamma[0], ref.beta[0])
			xs, ws := channelData(r, shape), randn(r, shape.TotalSize(), 0, 1)
			got, err := e.run(xs, ws, Train)
			must(t, err)
			ref.step(xs, ws, shape, plainAssign(shape[0]), Train)
			if ref.rClipped != 0 || ref.dClipped != 0 {
				t.Fatalf("want r and d inside their limits")
			}
			rr, dd := ref.lastR, ref.lastD
			g, b := ref.gamma[0], ref.beta[0]
			frozen := func() float64 { return frozenRD(xs, ws, g, b, rr, dd, shape, eps) }
			fd := func(p *float64) float64 {
				v := *p
				*p = v + h
				cp := frozen()
				*p = v - h
				cm := frozen()
				*p = v
				return (cp - cm) / (2 * h)
			}
			full := 0.0 // the largest gap to the derivative that moves r and d
			for i := range xs {
				check(t, "dx", i, got.dx[i], fd(&xs[i]))
				v := xs[i]
				xs[i] = v + h
				_, err := e.run(xs, ws, Train)
				must(t, err)
				cp := valuesOf(t, e.cost.Value())[0]
				xs[i] = v - h
				_, err = e.run(xs, ws, Train)
				must(t, err)
				cm := valuesOf(t, e.cost.Value())[0]
				xs[i] = v
				full = math.Max(full, math.Abs((cp-cm)/(2*h)-got.dx[i]))
			}
			if full < 1e-3 {
				t.Errorf("dx is within %g of the derivative through r and d: stop-gradient not shown", full)
			}
			for c := range C {
				check(t, "dγ", c, got.dg[c], fd(&g[c]))
				check(t, "dβ", c, got.db[c], fd(&b[c]))
			}
		})
	}
}

// TestRenormSyncEqualsConcatenated: K ranks with uneven batches (one empty,
// calling EmptyStep), plain and ghost, give over three steps what one renorm
// layer gives on the concatenated batch: y, dx, Σdγ, Σdβ, running
// statistics (bitwise equal across ranks) and counters.
func TestRenormSyncEqualsConcatenated(t *testing.T) {
	rc := WithRenorm(RenormConfig{RMax: 2, DMax: 3, RMaxRamp: 2})
	for _, tc := range []struct {
		name  string
		sizes []int
		inner []int
		opts  []Option
	}{
		{"2d", []int{3, 1, 5}, nil, nil},
		{"empty rank", []int{3, 0, 5}, []int{2}, nil},
		{"ghost", []int{5, 3}, []int{2}, []Option{WithGhostBatch(2)}},
		{"4d", []int{2, 3, 1, 4}, []int{2, 3}, nil},
		{"batch2+2", []int{1, 1}, []int{3}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := rand.New(rand.NewSource(11))
			const C = 3
			per := C
			for _, d := range tc.inner {
				per *= d
			}
			opts := append([]Option{WithMomentum(0.5), rc}, tc.opts...)
			var all, allW []float64
			xs, ws := make([][]float64, len(tc.sizes)), make([][]float64, len(tc.sizes))
			total := 0
			for i, n := range tc.sizes {
				xs[i], ws[i] = randn(r, n*per, 2, 3), randn(r, n*per, 0, 1)
				all, allW = append(all, xs[i]...), append(allW, ws[i]...)
				total += n
			}
			shapeOf := func(n int) tensor.Shape { return append(tensor.Shape{n, C}, tc.inner...) }
			want, err := runLayer(shapeOf(total), all, allW, 3, opts...)
			must(t, err)
			plain, err := runLayer(shapeOf(total), all, allW, 3, append([]Option{WithMomentum(0.5)}, tc.opts...)...)
			must(t, err)
			if maxDiff(plain.y, want.y) < 1e-3 {
				t.Fatal("renorm changes nothing here: the check would be vacuous")
			}
			comms, err := collective.NewInProcess(len(tc.sizes))
			must(t, err)
			got := make([]bnRun, len(tc.sizes))
			errs := make([]error, len(tc.sizes))
			var wg sync.WaitGroup
			for i := range tc.sizes {
				wg.Go(func() {
					o := append([]Option{WithCommunicator(comms[i])}, opts...)
					if tc.sizes[i] == 0 {
						got[i], errs[i] = emptyRank(3, C, o...)
						return
					}
					got[i], errs[i] = runLayer(shapeOf(tc.sizes[i]), xs[i], ws[i], 3, o...)
				})
			}
			wg.Wait()
			off := 0
			dg, db := make([]float64, C), make([]float64, C)
			for i, n := range tc.sizes {
				if errs[i] != nil {
					t.Fatalf("rank %d: %v", i, errs[i])
				}
				assertClose(t, "y", got[i].y, want.y[off:off+n*per], 1e-10)
				assertClose(t, "dx", got[i].dx, want.dx[off:off+n*per], 1e-10)
				for c := range C {
					dg[c] += got[i].dg[c]
					db[c] += got[i].db[c]
				}
				assertClose(t, "running mean", got[i].rm, want.rm, 1e-12)
				assertClose(t, "running var", got[i].rv, want.rv, 1e-12)
				sameBits(t, "running mean across ranks", got[i].rm, got[0].rm)
				sameBits(t, "running var across ranks", got[i].rv, got[0].rv)
				if got[i].tracked != want.tracked {
					t.Fatalf("rank %d tracked %d, want %d", i, got[i].tracked, want.tracked)
				}
				off += n * per
			}
			assertClose(t, "Σ dγ", dg, want.dg, 1e-10)
			assertClose(t, "Σ dβ", db, want.db, 1e-10)
		})
	}
}

// TestRenormLimits: the schedule at the paper's settings (plain BN for 5000
// steps, rmax 3 at step 40k, dmax 5 at step 25k), by hand.
func TestRenormLimits(t *testing.T) {
	c := RenormConfig{RMax: 3, DMax: 5, Warmup: 5000, RMaxRamp: 35000, DMaxRamp: 20000}
	for _, tc := range []struct {
		step       int64
		rmax, dmax float64
	}{
		{0, 1, 0}, {4999, 1, 0}, {5000, 1, 0},
		{15000, 1 + 2*10000.0/35000, 5 * 10000.0 / 20000},
		{25000, 1 + 2*20000.0/35000, 5}, {40000, 3, 5}, {1 << 40, 3, 5},
	} {
		rmax, dmax := c.Limits(tc.step)
		if math.Abs(rmax-tc.rmax) > 1e-15 || math.Abs(dmax-tc.dmax) > 1e-15 {
			t.Errorf("Limits(%d) = %v, %v; want %v, %v", tc.step, rmax, dmax, tc.rmax, tc.dmax)
		}
	}
	if r, d := (RenormConfig{RMax: 2, DMax: 1, Warmup: 3}).Limits(3); r != 2 || d != 1 {
		t.Errorf("no ramp: Limits(3) = %v, %v; want 2, 1 once the warm-up is over", r, d)
	}
}

// TestRenormNaNStaysInItsChannel: a NaN in one channel's input makes that
// channel's r and d NaN and leaves the other channels exact, without a panic.
func TestRenormNaNStaysInItsChannel(t *testing.T) {
	shape := tensor.Shape{4, 3, 2}
	opts := []Option{WithRenorm(RenormConfig{RMax: 2, DMax: 1})}
	e := newRnNet(t, tensor.Float64, shape, tapeGrad, brnSetup{opts: opts})
	clean := newRnNet(t, tensor.Float64, shape, tapeGrad, brnSetup{opts: opts})
	r := rand.New(rand.NewSource(2))
	xs, ws := channelData(r, shape), randn(r, shape.TotalSize(), 0, 1)
	want, err := clean.run(xs, ws, Train)
	must(t, err)
	xs[at(3, 2, 1, 1, 0)] = math.NaN()
	got, err := e.run(xs, ws, Train)
	must(t, err)
	for n := range 4 {
		for c := range 3 {
			for s := range 2 {
				i := at(3, 2, n, c, s)
				if c == 1 {
					if !math.IsNaN(got.y[i]) {
						t.Errorf("y[%d] of the NaN channel = %v", i, got.y[i])
					}
				} else if got.y[i] != want.y[i] || got.dx[i] != want.dx[i] {
					t.Errorf("channel %d changed: y %v vs %v", c, got.y[i], want.y[i])
				}
			}
		}
	}
}

// TestRenormOptions: the configuration is kept and reported, contradictions
// are ErrOption whatever the order of the options, and a domain layer takes
// WithRenorm through domainbn.WithBN (tested in package domainbn).
func TestRenormOptions(t *testing.T) {
	g := gorgonia.NewGraph()
	rc := RenormConfig{RMax: 3, DMax: 5, Warmup: 10, RMaxRamp: 20, DMaxRamp: 30}
	l, err := New(g, 4, tensor.Float32, WithRenorm(rc))
	must(t, err)
	if got, ok := l.Renorm(); !ok || got != rc {
		t.Errorf("Renorm() = %v, %v; want %v, true", got, ok, rc)
	}
	plain, err := New(g, 4, tensor.Float32)
	must(t, err)
	if _, ok := plain.Renorm(); ok {
		t.Error("a plain layer reports Batch Renormalization")
	}
	for _, opts := range [][]Option{
		{WithRenorm(rc), WithTrackRunningStats(false)},
		{WithTrackRunningStats(false), WithRenorm(rc)},
	} {
		if _, err := New(g, 4, tensor.Float32, opts...); !errors.Is(err, ErrOption) {
			t.Errorf("renorm without running statistics: %v, want ErrOption", err)
		}
	}
	if _, err := New(g, 4, tensor.Float32, WithRenorm(rc), WithTrackRunningStats(false), WithTrackRunningStats(true)); err != nil {
		t.Errorf("the last WithTrackRunningStats counts: %v", err)
	}
}
