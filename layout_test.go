package bn

import (
	"fmt"
	"math"
	"math/rand"
	"strings"
	"sync"
	"testing"

	"github.com/gorgonia-bn/bn/collective"
	"gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// Channels-last inputs are checked against the float64 reference on the
// NCHW tensor they are a transposition of, for every case of the NCHW
// tests (every mode, ghost batches, affine and tracking off, C = 1) and
// C = 1024, both dtypes and both machines; gradients against finite
// differences; SyncBN and domains against the NCHW layer.

// lastShape returns the channels-last shape of an NCHW shape.
func lastShape(s tensor.Shape) tensor.Shape {
	out := tensor.Shape{s[0]}
	out = append(out, s[2:]...)
	return append(out, s[1])
}

// toLast returns the values of an NCHW tensor of shape s in channels-last
// order; fromLast undoes it.
func toLast(v []float64, s tensor.Shape) []float64 {
	N, C, S := shapeNCS(s)
	out := make([]float64, len(v))
	for n := range N {
		for c := range C {
			for p := range S {
				out[(n*S+p)*C+c] = v[at(C, S, n, c, p)]
			}
		}
	}
	return out
}

func fromLast(v []float64, s tensor.Shape) []float64 {
	N, C, S := shapeNCS(s)
	out := make([]float64, len(v))
	for n := range N {
		for c := range C {
			for p := range S {
				out[at(C, S, n, c, p)] = v[(n*S+p)*C+c]
			}
		}
	}
	return out
}

// newEnvLast is newEnv for a channels-last layer: nchw is the NCHW shape
// the test thinks in, xs and ws are in NCHW order; the graph's x and w are
// their channels-last transpositions.
func newEnvLast(t testing.TB, dt tensor.Dtype, nchw tensor.Shape, cfg refConfig, mode Mode, kind machineKind, xs, ws []float64, opts ...Option) *env {
	t.Helper()
	shape := lastShape(nchw)
	e := &env{t: t, g: gorgonia.NewGraph(), dt: dt, shape: shape, kind: kind}
	e.x = gorgonia.NewTensor(e.g, dt, len(shape), gorgonia.WithShape(shape...), gorgonia.WithName("x"), gorgonia.WithValue(tensorOf(dt, shape, toLast(xs, nchw))))
	e.w = gorgonia.NewTensor(e.g, dt, len(shape), gorgonia.WithShape(shape...), gorgonia.WithName("w"), gorgonia.WithValue(tensorOf(dt, shape, toLast(ws, nchw))))
	l, err := New(e.g, nchw[1], dt, append(append(cfg.options(), WithChannelsLast()), opts...)...)
	must(t, err)
	must(t, l.SetMode(mode))
	e.l = l
	e.y, err = l.Apply(e.x)
	must(t, err)
	e.cost = gorgonia.Must(gorgonia.Sum(gorgonia.Must(gorgonia.HadamardProd(e.y, e.w))))
	switch kind {
	case tapeGrad, tapeDual:
		wrt := append(gorgonia.Nodes{e.x}, l.Learnables()...)
		e.grads, err = gorgonia.Grad(e.cost, wrt...)
		must(t, err)
		if kind == tapeDual && l.Learnables() != nil {
			e.vm = gorgonia.NewTapeMachine(e.g, gorgonia.TraceExec(), gorgonia.BindDualValues(l.Learnables()...))
		} else {
			e.vm = gorgonia.NewTapeMachine(e.g, gorgonia.TraceExec())
		}
	case lispGrad:
		e.vm = gorgonia.NewLispMachine(e.g)
	default:
		e.vm = gorgonia.NewTapeMachine(e.g, gorgonia.TraceExec())
	}
	t.Cleanup(func() { e.vm.Close() })
	return e
}

// setParamsLast sets γ and β of a channels-last env.
func setParamsLast(e *env, gamma, beta []float64) {
	C := tensor.Shape{e.l.Channels()}
	must(e.t, gorgonia.Let(e.l.Gamma(), tensorOf(e.dt, C, gamma)))
	must(e.t, gorgonia.Let(e.l.Beta(), tensorOf(e.dt, C, beta)))
}

// randomStateLast is randomState for a channels-last env.
func randomStateLast(r *rand.Rand, e *env, ref *refLayer) {
	C := e.l.Channels()
	if !ref.cfg.noAffine {
		ref.gamma = roundTo(e.dt, randn(r, C, 1, 0.5))
		ref.beta = roundTo(e.dt, randn(r, C, 0, 0.5))
		setParamsLast(e, ref.gamma, ref.beta)
	}
	if !ref.cfg.noTrack {
		for c := range C {
			ref.rmean[c] = r.NormFloat64()
			ref.rvar[c] = 0.3 + 2*r.Float64()
		}
		must(e.t, e.l.SetRunningStats(ref.rmean, ref.rvar))
	}
}

// lastCases are gradCases (NCHW shapes) and wide ones.
func lastCases() []gradCase {
	return append(gradCases(),
		gradCase{"C1024/rank3/train", tensor.Shape{3, 1024, 5}, Train, refConfig{}},
		gradCase{"C1024/rank4/eval", tensor.Shape{2, 1024, 2, 3}, Eval, refConfig{}},
		gradCase{"C1024/rank2/frozen", tensor.Shape{4, 1024}, Frozen, refConfig{}},
		gradCase{"C1024/ghost", tensor.Shape{5, 1024, 3}, Train, refConfig{ghost: 2}},
		gradCase{"C67/rank4/train", tensor.Shape{3, 67, 3, 5}, Train, refConfig{}},
		gradCase{"seq-NLC/C16/train", tensor.Shape{4, 16, 33}, Train, refConfig{}},
		gradCase{"batch1/rank3/train", tensor.Shape{1, 5, 4}, Train, refConfig{}},
		gradCase{"batch2/rank4/eval-batch-stats", tensor.Shape{2, 3, 2, 2}, EvalBatchStats, refConfig{}},
	)
}

// TestChannelsLastMatchesReference compares y, dx, dγ, dβ, the running
// statistics and the counter of channels-last layers on transposed data
// with the float64 reference on the NCHW data.
func TestChannelsLastMatchesReference(t *testing.T) {
	for ci, tc := range lastCases() {
		for _, dt := range []tensor.Dtype{tensor.Float64, tensor.Float32} {
			for _, kind := range []machineKind{tapeGrad, lispGrad, tapeDual} {
				name := fmt.Sprintf("%s/%v/%s", tc.name, dt, [...]string{"", "tape", "lisp", "dual"}[kind])
				t.Run(name, func(t *testing.T) {
					r := rand.New(rand.NewSource(int64(500 + ci)))
					xs := roundTo(dt, channelData(r, tc.shape))
					ws := roundTo(dt, randn(r, len(xs), 0, 1))
					e := newEnvLast(t, dt, tc.shape, tc.cfg, tc.mode, kind, xs, ws)
					ref := newRef(tc.cfg, tc.shape[1])
					randomStateLast(r, e, ref)
					e.mustRun()
					wantY, ctx := ref.forward(xs, tc.shape, tc.mode)
					wdx, wdg, wdb := ref.backward(ctx, ws)
					rtol := 1e-10
					if dt == tensor.Float32 {
						rtol = 1e-5
					}
					closeTo(t, "y", fromLast(e.yValue(), tc.shape), wantY, rtol)
					dx, dg, db := e.gradValues()
					closeTo(t, "dx", fromLast(dx, tc.shape), wdx, rtol)
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

// TestChannelsLastGradFiniteDifferences checks dx, dγ, dβ of channels-last
// layers against central differences of the cost (float64, TapeMachine).
func TestChannelsLastGradFiniteDifferences(t *testing.T) {
	for ci, tc := range lastCases() {
		if tc.shape[1] > 100 && testing.Short() {
			continue
		}
		t.Run(tc.name, func(t *testing.T) {
			r := rand.New(rand.NewSource(int64(900 + ci)))
			xs := channelData(r, tc.shape)
			ws := randn(r, len(xs), 0, 1)
			e := newEnvLast(t, tensor.Float64, tc.shape, tc.cfg, tc.mode, tapeGrad, xs, ws)
			ref := newRef(tc.cfg, tc.shape[1])
			randomStateLast(r, e, ref)
			e.mustRun()
			dx, dg, db := e.gradValues()
			if maxAbs(dx) == 0 {
				t.Fatal("dx is zero: the check would be vacuous")
			}
			xl := toLast(xs, tc.shape)
			const h = 1e-5
			// The rounding error of the cost, a sum of len(xs) terms,
			// divided by 2h: it matters with C = 1024 (1e-5 here).
			var scale float64
			wl := toLast(ws, tc.shape)
			for i, y := range e.yValue() {
				scale += math.Abs(y * wl[i])
			}
			noise := 64 * 0x1p-52 * scale / (2 * h)
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
				if math.Abs(got-want) > 1e-6*math.Max(1, math.Abs(want))+noise {
					t.Errorf("%s[%d] = %.10g, finite difference %.10g (± %.2g)", what, i, got, want, noise)
				}
			}
			idx := []int{0, len(xl) - 1}
			for range 4 {
				idx = append(idx, r.Intn(len(xl)))
			}
			for _, i := range idx {
				x := append([]float64(nil), xl...)
				want := fd(func(v float64) { x[i] = v; must(t, gorgonia.Let(e.x, tensorOf(e.dt, e.shape, x))) }, xl[i])
				check("dx", i, dx[i], want)
			}
			if dg != nil {
				for _, c := range []int{0, tc.shape[1] - 1} {
					g := append([]float64(nil), ref.gamma...)
					b := append([]float64(nil), ref.beta...)
					want := fd(func(v float64) { g[c] = v; setParamsLast(e, g, b) }, ref.gamma[c])
					check("dγ", c, dg[c], want)
					g = append(g[:0], ref.gamma...)
					want = fd(func(v float64) { b[c] = v; setParamsLast(e, g, b) }, ref.beta[c])
					check("dβ", c, db[c], want)
				}
			}
		})
	}
}

// runLayerLast is runLayer (op_syncbn_test.go) for a layer with C channels
// whose input has the given shape (channels last when opts say so).
func runLayerLast(shape tensor.Shape, C int, xs, ws []float64, steps int, opts ...Option) (bnRun, error) {
	g := gorgonia.NewGraph()
	x := gorgonia.NewTensor(g, tensor.Float64, len(shape), gorgonia.WithShape(shape...), gorgonia.WithName("x"),
		gorgonia.WithValue(tensor.New(tensor.WithShape(shape...), tensor.WithBacking(append([]float64(nil), xs...)))))
	w := gorgonia.NewTensor(g, tensor.Float64, len(shape), gorgonia.WithShape(shape...), gorgonia.WithName("w"),
		gorgonia.WithValue(tensor.New(tensor.WithShape(shape...), tensor.WithBacking(append([]float64(nil), ws...)))))
	l, err := New(g, C, tensor.Float64, append([]Option{WithName("l")}, opts...)...)
	if err != nil {
		return bnRun{}, err
	}
	y, err := l.Apply(x)
	if err != nil {
		return bnRun{}, err
	}
	cost := gorgonia.Must(gorgonia.Sum(gorgonia.Must(gorgonia.HadamardProd(y, w))))
	grads, err := gorgonia.Grad(cost, x, l.Gamma(), l.Beta())
	if err != nil {
		return bnRun{}, err
	}
	m := gorgonia.NewTapeMachine(g, gorgonia.TraceExec())
	defer m.Close()
	for range steps {
		m.Reset()
		if err := m.RunAll(); err != nil {
			return bnRun{}, err
		}
	}
	f := func(n *gorgonia.Node) []float64 { return append([]float64(nil), n.Value().Data().([]float64)...) }
	r := bnRun{y: f(y), dx: f(grads[0]), dg: f(grads[1]), db: f(grads[2]), tracked: l.NumBatchesTracked()}
	r.rm, r.rv = l.RunningStats()
	return r, nil
}

// TestChannelsLastSync: K channels-last SyncBN ranks with uneven batches
// (plain and ghost) give what one NCHW layer gives on the concatenated
// batch, transposed.
func TestChannelsLastSync(t *testing.T) {
	for _, tc := range []struct {
		name  string
		sizes []int
		inner []int
		opts  []Option
	}{
		{"3d", []int{3, 1, 5}, []int{4}, nil},
		{"4d-ghost", []int{5, 3}, []int{2, 3}, []Option{WithGhostBatch(2)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := rand.New(rand.NewSource(11))
			const C = 5
			per := C
			for _, d := range tc.inner {
				per *= d
			}
			nchw := func(n int) tensor.Shape { return append(tensor.Shape{n, C}, tc.inner...) }
			var all, allW []float64
			xs, ws := make([][]float64, len(tc.sizes)), make([][]float64, len(tc.sizes))
			total := 0
			for i, n := range tc.sizes {
				xs[i], ws[i] = randn(r, n*per, 5, 3), randn(r, n*per, 0, 1)
				all, allW = append(all, xs[i]...), append(allW, ws[i]...)
				total += n
			}
			want, err := runLayerLast(nchw(total), C, all, allW, 3, tc.opts...)
			must(t, err)
			comms, err := collective.NewInProcess(len(tc.sizes))
			must(t, err)
			got := make([]bnRun, len(tc.sizes))
			errs := make([]error, len(tc.sizes))
			var wg sync.WaitGroup
			for i, n := range tc.sizes {
				wg.Go(func() {
					opts := append([]Option{WithCommunicator(comms[i]), WithChannelsLast()}, tc.opts...)
					got[i], errs[i] = runLayerLast(lastShape(nchw(n)), C, toLast(xs[i], nchw(n)), toLast(ws[i], nchw(n)), 3, opts...)
				})
			}
			wg.Wait()
			off := 0
			for i, n := range tc.sizes {
				must(t, errs[i])
				k := n * per
				assertClose(t, fmt.Sprintf("rank %d y", i), fromLast(got[i].y, nchw(n)), want.y[off:off+k], 1e-10)
				assertClose(t, fmt.Sprintf("rank %d dx", i), fromLast(got[i].dx, nchw(n)), want.dx[off:off+k], 1e-10)
				assertClose(t, fmt.Sprintf("rank %d running mean", i), got[i].rm, want.rm, 1e-12)
				assertClose(t, fmt.Sprintf("rank %d running var", i), got[i].rv, want.rv, 1e-12)
				if got[i].tracked != want.tracked {
					t.Errorf("rank %d tracked %d, want %d", i, got[i].tracked, want.tracked)
				}
				off += k
			}
			// dγ, dβ are local: their sum over the ranks is the whole batch's.
			for c := range C {
				var sg, sb float64
				for i := range tc.sizes {
					sg += got[i].dg[c]
					sb += got[i].db[c]
				}
				assertClose(t, "Σ dγ", []float64{sg}, want.dg[c:c+1], 1e-10)
				assertClose(t, "Σ dβ", []float64{sb}, want.db[c:c+1], 1e-10)
			}
		})
	}
}

// TestChannelsLastSegmented: a grouped layer (domains, per-domain γ/β and
// running statistics) on channels-last data gives the NCHW layer's results
// transposed, in every mode.
func TestChannelsLastSegmented(t *testing.T) {
	nchw := tensor.Shape{7, 3, 2, 5}
	for _, mode := range []Mode{Train, Eval, EvalBatchStats, Frozen} {
		t.Run(mode.String(), func(t *testing.T) {
			r := rand.New(rand.NewSource(21))
			xs, ws := channelData(r, nchw), randn(r, nchw.TotalSize(), 0, 1)
			run := func(last bool) (y, dx, dg, db, rm, rv []float64) {
				g := gorgonia.NewGraph()
				shape, xv, wv := nchw, xs, ws
				opts := []Option{}
				if last {
					shape, xv, wv = lastShape(nchw), toLast(xs, nchw), toLast(ws, nchw)
					opts = append(opts, WithChannelsLast())
				}
				x := gorgonia.NewTensor(g, tensor.Float64, 4, gorgonia.WithShape(shape...), gorgonia.WithName("x"), gorgonia.WithValue(tensorOf(tensor.Float64, shape, xv)))
				w := gorgonia.NewTensor(g, tensor.Float64, 4, gorgonia.WithShape(shape...), gorgonia.WithName("w"), gorgonia.WithValue(tensorOf(tensor.Float64, shape, wv)))
				l, err := newGrouped(g, 3, tensor.Float64, 2, true, opts...)
				must(t, err)
				must(t, l.SetRunningStats([]float64{1, 2, 3, -1, 0, 1}, []float64{1, 2, 0.5, 3, 1, 2}))
				must(t, l.SetMode(mode))
				yn, err := l.applySegmented(x, edgeSegs{2})
				must(t, err)
				cost := gorgonia.Must(gorgonia.Sum(gorgonia.Must(gorgonia.HadamardProd(yn, w))))
				grads, err := gorgonia.Grad(cost, x, l.Gamma(), l.Beta())
				must(t, err)
				m := gorgonia.NewTapeMachine(g, gorgonia.TraceExec())
				defer m.Close()
				must(t, m.RunAll())
				y, dx = valuesOf(t, yn.Value()), valuesOf(t, grads[0].Value())
				if last {
					y, dx = fromLast(y, nchw), fromLast(dx, nchw)
				}
				rm, rv = l.RunningStats()
				return y, dx, valuesOf(t, grads[1].Value()), valuesOf(t, grads[2].Value()), rm, rv
			}
			y0, dx0, dg0, db0, rm0, rv0 := run(false)
			y1, dx1, dg1, db1, rm1, rv1 := run(true)
			closeTo(t, "y", y1, y0, 1e-12)
			closeTo(t, "dx", dx1, dx0, 1e-12)
			closeTo(t, "dγ", dg1, dg0, 1e-12)
			closeTo(t, "dβ", db1, db0, 1e-12)
			closeTo(t, "running mean", rm1, rm0, 1e-14)
			closeTo(t, "running var", rv1, rv0, 1e-14)
		})
	}
}

// TestChannelsLastShapeErrors: an input whose channel axis does not match
// is ErrShape at Apply and in Do, and the message points to the layout.
func TestChannelsLastShapeErrors(t *testing.T) {
	g := gorgonia.NewGraph()
	last, err := New(g, 3, tensor.Float64, WithChannelsLast())
	must(t, err)
	first, err := New(g, 3, tensor.Float64)
	must(t, err)
	nhwc := gorgonia.NewTensor(g, tensor.Float64, 4, gorgonia.WithShape(2, 4, 4, 3), gorgonia.WithName("nhwc"))
	nchw := gorgonia.NewTensor(g, tensor.Float64, 4, gorgonia.WithShape(2, 3, 4, 4), gorgonia.WithName("nchw"))
	for _, c := range []struct {
		name string
		l    *Layer
		x    *gorgonia.Node
		hint string
	}{
		{"NCHW-into-channels-last", last, nchw, "second axis"},
		{"NHWC-into-NCHW", first, nhwc, "WithChannelsLast"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := c.l.Apply(c.x)
			if !isErr(err, ErrShape) {
				t.Fatalf("Apply: %v, want ErrShape", err)
			}
			if !strings.Contains(err.Error(), c.hint) {
				t.Errorf("error %q does not mention %q", err, c.hint)
			}
		})
	}
	// Do with a value of another layout than the node's (a Let of the
	// wrong shape reaches the op).
	y, err := last.Apply(nhwc)
	must(t, err)
	op := y.Op().(*fwdOp)
	_, err = op.Do(tensorOf(tensor.Float64, tensor.Shape{2, 3, 4, 4}, make([]float64, 96)),
		tensorOf(tensor.Float64, tensor.Shape{3}, []float64{1, 1, 1}), tensorOf(tensor.Float64, tensor.Shape{3}, make([]float64, 3)))
	if !isErr(err, ErrShape) {
		t.Fatalf("Do: %v, want ErrShape", err)
	}
	if !last.ChannelsLast() || first.ChannelsLast() {
		t.Error("ChannelsLast() does not report the option")
	}
}
