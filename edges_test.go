package bn

// Edge cases of issue 15 (items 1 and 6): layers of any channel count,
// including C = 1, trained with BindDualValues and a solver; and every
// misuse of the public entry points returning a typed error, not a panic.

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand"
	"strings"
	"testing"
	"time"

	"github.com/gorgonia-bn/bn/collective"
	"gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// edgeSegs is a segmenter that puts sample i in segment i % nseg, each
// segment normalized alone with its own statistics and γ/β group.
type edgeSegs struct{ nseg int }

func (f edgeSegs) Segments(n int, seg []int, m *segMap) (int, error) {
	for i := range n {
		seg[i] = i % f.nseg
	}
	m.Resize(f.nseg)
	for s := range f.nseg {
		m.Norm[s], m.Stat[s], m.Aff[s] = s, s, s
	}
	return f.nseg, nil
}

// dualNet is x → BN → cost = Σ y⊙w on a TapeMachine that binds the dual
// values of γ and β, as README shows for training with a solver.
type dualNet struct {
	t          testing.TB
	l          *Layer
	dt         tensor.Dtype
	x, cost    *gorgonia.Node
	params     gorgonia.Nodes
	vm         gorgonia.VM
	gammaShape tensor.Shape
}

func newDualNet(t testing.TB, dt tensor.Dtype, shape tensor.Shape, groups int, xs, ws []float64) *dualNet {
	t.Helper()
	g := gorgonia.NewGraph()
	d := &dualNet{t: t, dt: dt}
	d.x = gorgonia.NewTensor(g, dt, len(shape), gorgonia.WithShape(shape...), gorgonia.WithName("x"), gorgonia.WithValue(tensorOf(dt, shape, xs)))
	w := gorgonia.NewTensor(g, dt, len(shape), gorgonia.WithShape(shape...), gorgonia.WithName("w"), gorgonia.WithValue(tensorOf(dt, shape, ws)))
	var (
		y   *gorgonia.Node
		err error
	)
	if groups > 0 {
		d.l, err = newGrouped(g, shape[1], dt, groups, true)
		must(t, err)
		y, err = d.l.applySegmented(d.x, edgeSegs{groups})
	} else {
		d.l, err = New(g, shape[1], dt)
		must(t, err)
		y, err = d.l.Apply(d.x)
	}
	must(t, err)
	d.cost = gorgonia.Must(gorgonia.Sum(gorgonia.Must(gorgonia.HadamardProd(y, w))))
	d.params = d.l.Learnables()
	_, err = gorgonia.Grad(d.cost, d.params...)
	must(t, err)
	d.gammaShape = d.l.Gamma().Shape().Clone()
	d.vm = gorgonia.NewTapeMachine(g, gorgonia.BindDualValues(d.params...))
	t.Cleanup(func() { d.vm.Close() })
	return d
}

// run runs the graph once with the gradients zeroed first: the machine adds
// each run's gradients into the dual values (a solver's Step zeroes them).
func (d *dualNet) run() {
	d.t.Helper()
	for _, p := range d.params {
		if g, err := p.Grad(); err == nil {
			if tt, ok := g.(tensor.Tensor); ok {
				tt.Zero()
			}
		}
	}
	d.vm.Reset()
	must(d.t, d.vm.RunAll())
}

func (d *dualNet) costValue() float64 { return valuesOf(d.t, d.cost.Value())[0] }

// grads returns the dual values (gradients) of γ and β, checking that they
// are tensors of γ's shape.
func (d *dualNet) grads() (dg, db []float64) {
	d.t.Helper()
	var out [2][]float64
	for i, p := range d.params {
		v, err := p.Grad()
		must(d.t, err)
		tt, ok := v.(tensor.Tensor)
		if !ok || !tt.Shape().Eq(d.gammaShape) {
			d.t.Fatalf("gradient of %v is %T %v, want a tensor of shape %v", p, v, v.Shape(), d.gammaShape)
		}
		out[i] = valuesOf(d.t, v)
	}
	return out[0], out[1]
}

// TestBindDualValuesAnyChannels trains layers of C = 1 (the case that
// panicked inside the machine's goroutine: Gorgonia's Slice of the (2, 1)
// sums gave a scalar while the node said (1)) and C = 2, 3, 1024 as
// controls on a TapeMachine with BindDualValues: dγ and dβ have γ's shape
// and match float64 central differences of the cost (float32: the float64
// layer's gradients); a solver step applies them and the next run works.
func TestBindDualValuesAnyChannels(t *testing.T) {
	type tc struct {
		shape  tensor.Shape
		groups int // 0: New; > 0: NewGrouped with per-group affine
		solver string
	}
	var cases []tc
	for _, C := range []int{1, 2, 3, 1024} {
		cases = append(cases,
			tc{tensor.Shape{4, C}, 0, "vanilla"},
			tc{tensor.Shape{3, C, 2, 2}, 0, "adam"},
			tc{tensor.Shape{6, C}, 2, "adam"},
			tc{tensor.Shape{4, C, 1, 3}, 2, "vanilla"},
		)
	}
	cases = append(cases, tc{tensor.Shape{6, 1}, 1, "vanilla"}) // NewGrouped, one group: γ of shape (1)
	for ci, c := range cases {
		C := c.shape[1]
		name := fmt.Sprintf("C=%d/rank%d/groups=%d/%s", C, len(c.shape), c.groups, c.solver)
		t.Run(name, func(t *testing.T) {
			r := rand.New(rand.NewSource(int64(40 + ci)))
			xs := roundTo(tensor.Float32, channelData(r, c.shape))
			ws := roundTo(tensor.Float32, randn(r, len(xs), 0, 1))
			// float64: gradients against central differences of the cost.
			d64 := newDualNet(t, tensor.Float64, c.shape, c.groups, xs, ws)
			gam := valuesOf(t, d64.l.Gamma().Value())
			for i := range gam {
				gam[i] = 1 + 0.25*float64(i%7)
			}
			must(t, gorgonia.Let(d64.l.Gamma(), tensorOf(tensor.Float64, d64.gammaShape, gam)))
			d64.run()
			dg, db := d64.grads()
			if maxAbs(dg) == 0 || maxAbs(db) == 0 {
				t.Fatal("zero gradients: the check would be vacuous")
			}
			const h = 1e-5
			for pi, p := range d64.params {
				want := [][]float64{dg, db}[pi]
				idx := []int{0, len(want) - 1, len(want) / 2}
				for _, i := range idx {
					v0 := valuesOf(t, p.Value())
					fd := func(v float64) float64 {
						vs := append([]float64(nil), v0...)
						vs[i] = v
						must(t, gorgonia.Let(p, tensorOf(tensor.Float64, d64.gammaShape, vs)))
						d64.run()
						return d64.costValue()
					}
					got := (fd(v0[i]+h) - fd(v0[i]-h)) / (2 * h)
					must(t, gorgonia.Let(p, tensorOf(tensor.Float64, d64.gammaShape, v0)))
					if math.Abs(got-want[i]) > 1e-6*math.Max(1, math.Abs(got)) {
						t.Errorf("%v[%d] = %.10g, finite difference %.10g", p, i, want[i], got)
					}
				}
			}
			// float32: the same gradients, to float32 precision.
			d32 := newDualNet(t, tensor.Float32, c.shape, c.groups, xs, ws)
			must(t, gorgonia.Let(d32.l.Gamma(), tensorOf(tensor.Float32, d32.gammaShape, gam)))
			d64.run()
			dg, db = d64.grads()
			for _, d := range []*dualNet{d64, d32} {
				d.run()
				g32, b32 := d.grads()
				closeTo(t, fmt.Sprintf("%v dγ", d.dt), g32, dg, 1e-4)
				closeTo(t, fmt.Sprintf("%v dβ", d.dt), b32, db, 1e-4)
				// A solver step, then another run and step.
				var s gorgonia.Solver = gorgonia.NewVanillaSolver(gorgonia.WithLearnRate(0.1))
				if c.solver == "adam" {
					s = gorgonia.NewAdamSolver(gorgonia.WithLearnRate(0.01))
				}
				before := valuesOf(t, d.l.Gamma().Value())
				must(t, s.Step(gorgonia.NodesToValueGrads(d.params)))
				after := valuesOf(t, d.l.Gamma().Value())
				if c.solver == "vanilla" {
					want := make([]float64, len(before))
					for i := range want {
						want[i] = before[i] - 0.1*g32[i]
					}
					closeTo(t, fmt.Sprintf("%v γ after a step", d.dt), after, want, 1e-6)
				} else if fmt.Sprint(before) == fmt.Sprint(after) {
					t.Errorf("%v: the solver did not move γ", d.dt)
				}
				d.run()
				must(t, s.Step(gorgonia.NodesToValueGrads(d.params)))
				for _, v := range valuesOf(t, d.l.Beta().Value()) {
					if math.IsNaN(v) || math.IsInf(v, 0) {
						t.Fatalf("%v: β = %v after two steps", d.dt, v)
					}
				}
			}
		})
	}
}

// derefNorm is a Normalizer whose BatchNorm dereferences its receiver.
type derefNorm struct{ l *Layer }

func (d *derefNorm) BatchNorm() *Layer { return d.l }

// nilNorm is a Normalizer without a layer.
type nilNorm struct{}

func (nilNorm) BatchNorm() *Layer { return nil }

// TestMisuseReturnsTypedErrors: every bad input of the public entry points
// (nil options, layers, segmenters, contexts and functions; contradictory
// options; values out of range; Precise on a layer whose statistics would
// never be used) returns an error wrapping the sentinel, promptly, instead
// of a panic, a hang or a silent success.
func TestMisuseReturnsTypedErrors(t *testing.T) {
	g := gorgonia.NewGraph()
	newL := func(opts ...Option) *Layer {
		l, err := New(g, 2, tensor.Float64, opts...)
		must(t, err)
		return l
	}
	x := gorgonia.NewMatrix(g, tensor.Float64, gorgonia.WithShape(4, 2), gorgonia.WithName("x"), gorgonia.WithValue(tensorOf(tensor.Float64, tensor.Shape{4, 2}, []float64{1, 2, 3, 4, 5, 6, 7, 8})))
	plain, noTrack, ghost := newL(WithName("plain")), newL(WithTrackRunningStats(false)), newL(WithGhostBatch(2))
	var nilLayer *Layer
	var nilSeg *edgeSegsPtr
	grouped, err := newGrouped(g, 2, tensor.Float64, 2, true)
	must(t, err)
	yPlain, err := plain.Apply(x)
	must(t, err)
	vm := gorgonia.NewTapeMachine(g.SubgraphRoots(yPlain))
	defer vm.Close()
	forward := func(ctx context.Context, i int) (int, error) { vm.Reset(); return 4, vm.RunAll() }
	ctx := context.Background()
	precise := func(layers []Normalizer, run BatchFunc, opt PreciseOptions) func() error {
		return func() error { _, err := Precise(ctx, layers, run, opt); return err }
	}
	two, err := collective.NewInProcess(2)
	must(t, err)
	other, err := collective.NewInProcess(2)
	must(t, err)
	one, err := collective.NewInProcess(1)
	must(t, err)
	zWide := gorgonia.NewMatrix(g, tensor.Float64, gorgonia.WithShape(4, 3), gorgonia.WithName("zWide"))
	z32 := gorgonia.NewMatrix(g, tensor.Float32, gorgonia.WithShape(4, 2), gorgonia.WithName("z32"))
	zOther := gorgonia.NewMatrix(gorgonia.NewGraph(), tensor.Float64, gorgonia.WithShape(4, 2), gorgonia.WithName("zOther"))
	syncA := newL(WithName("syncA"), WithCommunicator(two[0]))
	syncB := newL(WithName("syncB"), WithCommunicator(other[0]))
	calls := 0
	type tc struct {
		name string
		call func() error
		want error
	}
	cases := []tc{
		{"New/nil-option", func() error { _, err := New(g, 3, tensor.Float64, nil); return err }, ErrOption},
		{"New/nil-option-among-valid", func() error { _, err := New(g, 3, tensor.Float64, WithEps(1e-3), nil); return err }, ErrOption},
		{"New/momentum-then-cumulative", func() error {
			_, err := New(g, 3, tensor.Float64, WithMomentum(0.5), WithCumulativeAverage())
			return err
		}, ErrOption},
		{"New/cumulative-then-momentum", func() error {
			_, err := New(g, 3, tensor.Float64, WithCumulativeAverage(), WithMomentum(0.5))
			return err
		}, ErrOption},
		{"New/eps-NaN", func() error { _, err := New(g, 3, tensor.Float64, WithEps(math.NaN())); return err }, ErrOption},
		{"New/eps-Inf", func() error { _, err := New(g, 3, tensor.Float64, WithEps(math.Inf(1))); return err }, ErrOption},
		{"New/eps-0", func() error { _, err := New(g, 3, tensor.Float64, WithEps(0)); return err }, ErrOption},
		{"New/momentum-NaN", func() error { _, err := New(g, 3, tensor.Float64, WithMomentum(math.NaN())); return err }, ErrOption},
		{"New/momentum-Inf", func() error { _, err := New(g, 3, tensor.Float64, WithMomentum(math.Inf(-1))); return err }, ErrOption},
		{"New/ghost-negative", func() error { _, err := New(g, 3, tensor.Float64, WithGhostBatch(-2)); return err }, ErrOption},
		{"New/renorm-zero-config", renormNew(g, RenormConfig{}), ErrOption},
		{"New/renorm-rmax-below-1", renormNew(g, RenormConfig{RMax: 0.5, DMax: 1}), ErrOption},
		{"New/renorm-rmax-NaN", renormNew(g, RenormConfig{RMax: math.NaN(), DMax: 1}), ErrOption},
		{"New/renorm-rmax-Inf", renormNew(g, RenormConfig{RMax: math.Inf(1), DMax: 1}), ErrOption},
		{"New/renorm-dmax-negative", renormNew(g, RenormConfig{RMax: 2, DMax: -0.5}), ErrOption},
		{"New/renorm-dmax-NaN", renormNew(g, RenormConfig{RMax: 2, DMax: math.NaN()}), ErrOption},
		{"New/renorm-dmax-Inf", renormNew(g, RenormConfig{RMax: 2, DMax: math.Inf(1)}), ErrOption},
		{"New/renorm-negative-warmup", renormNew(g, RenormConfig{RMax: 2, DMax: 1, Warmup: -1}), ErrOption},
		{"New/renorm-negative-ramp", renormNew(g, RenormConfig{RMax: 2, DMax: 1, RMaxRamp: 5, DMaxRamp: -5}), ErrOption},
		{"New/renorm-then-no-running-stats", renormNew(g, RenormConfig{RMax: 2, DMax: 1}, WithTrackRunningStats(false)), ErrOption},
		{"New/no-running-stats-then-renorm", func() error {
			_, err := New(g, 3, tensor.Float64, WithTrackRunningStats(false), WithRenorm(RenormConfig{RMax: 2, DMax: 1}))
			return err
		}, ErrOption},
		{"NewGrouped/renorm-without-running-stats", func() error {
			_, err := newGrouped(g, 3, tensor.Float64, 2, true, WithRenorm(RenormConfig{RMax: 2, DMax: 1}), WithTrackRunningStats(false))
			return err
		}, ErrOption},
		{"New/nil-graph", func() error { _, err := New(nil, 3, tensor.Float64); return err }, ErrOption},
		{"New/channels-0", func() error { _, err := New(g, 0, tensor.Float64); return err }, ErrShape},
		{"New/channels-above-MaxChannels", func() error { _, err := New(g, MaxChannels+1, tensor.Float64); return err }, ErrShape},
		{"New/channels-2^40", func() error { _, err := New(g, 1<<40, tensor.Float32); return err }, ErrShape},
		{"New/int-dtype", func() error { _, err := New(g, 3, tensor.Int); return err }, ErrDtype},
		{"NewGrouped/groups-0", func() error { _, err := newGrouped(g, 3, tensor.Float64, 0, false); return err }, ErrOption},
		{"NewGrouped/groups-negative", func() error { _, err := newGrouped(g, 3, tensor.Float64, -4, true); return err }, ErrOption},
		{"NewGrouped/groups-2^40", func() error { _, err := newGrouped(g, 3, tensor.Float64, 1<<40, true); return err }, ErrOption},
		{"NewGrouped/groups·channels-too-many", func() error { _, err := newGrouped(g, 1<<13, tensor.Float64, 1<<12, true); return err }, ErrShape},
		{"Apply/nil-layer", func() error { _, err := nilLayer.Apply(x); return err }, ErrOption},
		{"Apply/nil-input", func() error { _, err := plain.Apply(nil); return err }, ErrShape},
		{"ApplySegmented/nil-layer", func() error { _, err := nilLayer.applySegmented(x, edgeSegs{2}); return err }, ErrOption},
		{"ApplySegmented/nil-segmenter", func() error { _, err := grouped.applySegmented(x, nil); return err }, ErrOption},
		{"ApplySegmented/typed-nil-segmenter", func() error { _, err := grouped.applySegmented(x, nilSeg); return err }, ErrOption},
		{"ApplySegmented/ghost-layer", func() error { _, err := ghost.applySegmented(x, edgeSegs{2}); return err }, ErrOption},
		{"ApplyAddReLU/z-of-another-shape", func() error { _, err := plain.ApplyAddReLU(x, zWide); return err }, ErrShape},
		{"ApplyAddReLU/z-of-another-dtype", func() error { _, err := plain.ApplyAddReLU(x, z32); return err }, ErrDtype},
		{"ApplyAddReLU/nil-z", func() error { _, err := plain.ApplyAddReLU(x, nil); return err }, ErrShape},
		{"ApplyAddReLU/z-of-another-graph", func() error { _, err := plain.ApplyAddReLU(x, zOther); return err }, ErrShape},
		{"ApplyReLU/nil-layer", func() error { _, err := nilLayer.ApplyReLU(x); return err }, ErrOption},
		{"ApplyReLU/nil-input", func() error { _, err := plain.ApplyReLU(nil); return err }, ErrShape},
		{"ApplySegmentedReLU/nil-segmenter", func() error { _, err := grouped.applySegmentedReLU(x, nil, nil); return err }, ErrOption},
		{"ApplySegmentedReLU/ghost-layer", func() error { _, err := ghost.applySegmentedReLU(x, nil, edgeSegs{2}); return err }, ErrOption},
		{"Apply/channels-last-axis-mismatch", func() error {
			nchw := gorgonia.NewTensor(g, tensor.Float64, 3, gorgonia.WithShape(4, 2, 3), gorgonia.WithName("nchw"))
			_, err := newL(WithChannelsLast()).Apply(nchw) // last axis 3, layer 2 channels
			return err
		}, ErrShape},
		{"SetMode/unknown", func() error { return plain.SetMode(Mode(9)) }, ErrOption},
		{"SetRunningStats/nil", func() error { return plain.SetRunningStats(nil, nil) }, ErrState},
		{"Precise/nil-context", func() error {
			_, err := Precise(nil, []Normalizer{plain}, forward, PreciseOptions{Batches: 1}) //nolint:staticcheck // the misuse under test
			return err
		}, ErrOption},
		{"Precise/nil-run", precise([]Normalizer{plain}, nil, PreciseOptions{Batches: 1}), ErrOption},
		{"Precise/no-layers", precise(nil, forward, PreciseOptions{Batches: 1}), ErrOption},
		{"Precise/nil-Normalizer", precise([]Normalizer{plain, nil}, forward, PreciseOptions{Batches: 1}), ErrOption},
		{"Precise/nil-*Layer", precise([]Normalizer{nilLayer}, forward, PreciseOptions{Batches: 1}), ErrOption},
		{"Precise/typed-nil-Normalizer", precise([]Normalizer{(*derefNorm)(nil)}, forward, PreciseOptions{Batches: 1}), ErrOption},
		{"Precise/Normalizer-returning-nil", precise([]Normalizer{nilNorm{}}, forward, PreciseOptions{Batches: 1}), ErrOption},
		{"Precise/no-running-stats", precise([]Normalizer{noTrack}, forward, PreciseOptions{Batches: 1}), ErrOption},
		{"Precise/layer-twice", precise([]Normalizer{plain, plain}, forward, PreciseOptions{Batches: 1}), ErrOption},
		{"Precise/Batches-and-Samples", precise([]Normalizer{plain}, forward, PreciseOptions{Batches: 2, Samples: 8}), ErrOption},
		{"Precise/negative-Batches", precise([]Normalizer{plain}, forward, PreciseOptions{Batches: -1}), ErrOption},
		{"Precise/negative-SyncTimeout", precise([]Normalizer{plain}, forward, PreciseOptions{Batches: 1, SyncTimeout: -time.Second}), ErrOption},
		{"Precise/layers-on-different-communicators-without-Comm", precise([]Normalizer{syncA, syncB}, forward, PreciseOptions{Batches: 1}), ErrOption},
		{"Precise/Comm-smaller-than-a-layer's", precise([]Normalizer{syncA}, forward, PreciseOptions{Batches: 1, Comm: one[0]}), ErrOption},
		{"Precise/batches-of-no-samples", precise([]Normalizer{plain}, func(ctx context.Context, i int) (int, error) {
			if calls++; calls > 1000 {
				return 0, errors.New("the pass did not stop: 1000 batches of 0 samples")
			}
			return 0, nil
		}, PreciseOptions{Samples: 10}), ErrOption},
		{"Precise/Load-negative-samples", precise([]Normalizer{plain}, forward, PreciseOptions{Batches: 1, Load: func(context.Context, int) (int, error) { return -1, nil }}), ErrOption},
		{"Precise/layer-already-in-a-pass", precise([]Normalizer{plain}, func(ctx context.Context, i int) (int, error) {
			_, err := Precise(ctx, []Normalizer{plain}, forward, PreciseOptions{Batches: 1})
			if err != nil {
				return 0, err
			}
			return forward(ctx, i)
		}, PreciseOptions{Batches: 1}), ErrOption},
	}
	m0, v0 := plain.RunningStats()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var err error
			func() {
				defer func() {
					if p := recover(); p != nil {
						err = fmt.Errorf("panic: %v", p)
					}
				}()
				err = c.call()
			}()
			if !errors.Is(err, c.want) {
				t.Fatalf("got %v, want an error wrapping %v", err, c.want)
			}
			t.Logf("%v", err)
			if m, v := plain.RunningStats(); fmt.Sprint(m, v) != fmt.Sprint(m0, v0) || plain.Mode() != Train || plain.obs != nil {
				t.Fatalf("the layer changed: %v %v, mode %v", m, v, plain.Mode())
			}
		})
	}
	if err := precise([]Normalizer{noTrack}, forward, PreciseOptions{Batches: 1})(); err == nil || !strings.Contains(err.Error(), "never be used") {
		t.Errorf("Precise on a layer without running statistics should say why: %v", err)
	}
}

// edgeSegsPtr is a segmenter with a pointer receiver, for a typed nil.
type edgeSegsPtr struct{ n int }

func (f *edgeSegsPtr) Segments(n int, seg []int, m *segMap) (int, error) {
	return edgeSegs{f.n}.Segments(n, seg, m)
}

// renormNew returns a call of New with WithRenorm(rc) and then more.
func renormNew(g *gorgonia.ExprGraph, rc RenormConfig, more ...Option) func() error {
	return func() error {
		_, err := New(g, 3, tensor.Float64, append([]Option{WithRenorm(rc)}, more...)...)
		return err
	}
}
