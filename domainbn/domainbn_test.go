package domainbn_test

import (
	"context"
	"errors"
	"io"
	"math"
	"math/rand"
	"sync"
	"testing"
	"time"

	"github.com/gorgonia-bn/bn"
	"github.com/gorgonia-bn/bn/collective"
	"github.com/gorgonia-bn/bn/domainbn"
	"gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// schedule is a sequence of steps over a batch of 7 samples and 3 domains:
// mixed batches, a domain absent, a batch of one domain, and every mode.
var schedule = []struct {
	ids  []int
	mode bn.Mode
}{
	{[]int{0, 1, 2, 0, 1, 2, 0}, bn.Train},
	{[]int{1, 1, 0, 1, 0, 0, 1}, bn.Train}, // domain 2 absent
	{[]int{2, 2, 2, 2, 2, 2, 2}, bn.Train}, // SetDomain(2)
	{[]int{2, 0, 1, 1, 0, 2, 2}, bn.Eval},
	{[]int{0, 2, 0, 2, 1, 1, 0}, bn.EvalBatchStats},
	{[]int{1, 0, 2, 2, 0, 1, 1}, bn.Frozen},
	{[]int{0, 0, 0, 0, 0, 0, 0}, bn.Eval}, // SetDomain(0)
	{[]int{0, 0, 0, 1, 1, 2, 2}, bn.Train},
}

// TestEquivalenceWithCoreLayers: for every combination of the three
// switches, 2D and 4D inputs, EMA and cumulative running statistics, a
// domain layer gives on every step of the schedule what core layers (bn.New)
// give on each domain's samples (or on the whole batch, where a switch is
// off): y, dx, dγ and dβ, and the running statistics and counters of every
// domain.
func TestEquivalenceWithCoreLayers(t *testing.T) {
	const D, C = 3, 2
	for _, inner := range [][]int{nil, {2, 3}} {
		for _, variant := range []string{"ema", "cumulative", "no affine", "no tracking"} {
			for mask := range 8 {
				norm, stats, affine := mask&1 != 0, mask&2 != 0, mask&4 != 0
				name := switches(norm, stats, affine) + "," + variant
				opts := []bn.Option{bn.WithEps(1e-3)}
				switch variant {
				case "cumulative":
					opts = append(opts, bn.WithCumulativeAverage())
				default:
					opts = append(opts, bn.WithMomentum(0.3))
				}
				switch variant {
				case "no affine":
					opts = append(opts, bn.WithAffine(false))
				case "no tracking":
					opts = append(opts, bn.WithTrackRunningStats(false))
				}
				if inner != nil {
					name += ",4d"
				}
				t.Run(name, func(t *testing.T) {
					rng := rand.New(rand.NewSource(int64(mask) + 1))
					S := 1
					for _, d := range inner {
						S *= d
					}
					shape := append(tensor.Shape{len(schedule[0].ids), C}, inner...)
					h := newHarness(t, shape, D, domainbn.WithDomainNorm(norm), domainbn.WithDomainStats(stats),
						domainbn.WithDomainAffine(affine), domainbn.WithBN(opts...))
					ref := &reference{C: C, S: S, inner: inner, D: D, norm: norm, stats: stats, affine: affine && variant != "no affine",
						noTrack: variant == "no tracking", opts: opts, state: map[int][]byte{}}
					for d := range D {
						g, b := make([]float64, C), make([]float64, C)
						for c := range C {
							g[c], b[c] = 0.5+rng.Float64(), rng.NormFloat64()
						}
						if variant == "no affine" {
							for c := range C {
								g[c], b[c] = 1, 0
							}
						} else if err := h.l.SetAffine(d, g, b); err != nil {
							t.Fatal(err)
						}
					}
					for d := range D {
						g, b, err := h.l.Affine(d)
						if err != nil {
							t.Fatal(err)
						}
						if g == nil {
							g, b = []float64{1, 1}, []float64{0, 0}
						}
						ref.gamma, ref.beta = append(ref.gamma, g), append(ref.beta, b)
					}
					for k, st := range schedule {
						x, w := domainData(rng, st.ids, C*S)
						got, err := h.run(x, w, st.ids, st.mode)
						if err != nil {
							t.Fatalf("step %d: %v", k, err)
						}
						want, err := ref.step(x, w, st.ids, st.mode)
						if err != nil {
							t.Fatalf("step %d reference: %v", k, err)
						}
						assertClose(t, "y", got.y, want.y, 1e-10)
						assertClose(t, "dx", got.dx, want.dx, 1e-10)
						if variant != "no affine" {
							assertClose(t, "dγ", got.dg, want.dg, 1e-10)
							assertClose(t, "dβ", got.db, want.db, 1e-10)
						} else if got.dg != nil || h.l.Gamma() != nil || h.l.DomainAffine() {
							t.Fatal("layer without affine has γ")
						}
						for d := range D {
							m, v, err := h.l.RunningStats(d)
							if err != nil {
								t.Fatal(err)
							}
							tr, _ := h.l.NumBatchesTracked(d)
							wm, wv, wt, err := ref.runningStats(d)
							if err != nil {
								t.Fatal(err)
							}
							assertClose(t, "running mean", m, wm, 1e-10)
							assertClose(t, "running var", v, wv, 1e-10)
							if tr != wt {
								t.Fatalf("step %d domain %d: %d batches tracked, want %d", k, d, tr, wt)
							}
						}
					}
				})
			}
		}
	}
}

// TestAbsentDomainUntouched: training on domains 0 and 1 only, with a solver
// updating γ/β, leaves domain 2's running statistics, counter and γ/β bit
// for bit as they were; so does training on whole batches of domain 0 for
// domain 1.
func TestAbsentDomainUntouched(t *testing.T) {
	const D, C = 3, 4
	shape := tensor.Shape{6, C, 3}
	for _, solver := range []struct {
		name string
		make func() gorgonia.Solver
	}{
		{"sgd", func() gorgonia.Solver { return gorgonia.NewVanillaSolver(gorgonia.WithLearnRate(0.1)) }},
		{"adam", func() gorgonia.Solver { return gorgonia.NewAdamSolver(gorgonia.WithLearnRate(0.01)) }},
	} {
		t.Run(solver.name, func(t *testing.T) {
			rng := rand.New(rand.NewSource(3))
			h := newHarness(t, shape, D)
			// Give every domain its own statistics and γ/β first.
			for d := range D {
				x, w := domainData(rng, []int{d, d, d, d, d, d}, C*3)
				if _, err := h.run(x, w, []int{d, d, d, d, d, d}, bn.Train); err != nil {
					t.Fatal(err)
				}
				g, b := make([]float64, C), make([]float64, C)
				for c := range C {
					g[c], b[c] = 1+rng.Float64(), rng.NormFloat64()
				}
				if err := h.l.SetAffine(d, g, b); err != nil {
					t.Fatal(err)
				}
			}
			type snap struct {
				m, v, g, b []float64
				n          int64
			}
			take := func(d int) snap {
				m, v, _ := h.l.RunningStats(d)
				g, b, _ := h.l.Affine(d)
				n, _ := h.l.NumBatchesTracked(d)
				return snap{m, v, g, b, n}
			}
			same := func(d int, s snap, affine bool) {
				t.Helper()
				now := take(d)
				assertBitEqual(t, "running mean", now.m, s.m)
				assertBitEqual(t, "running var", now.v, s.v)
				if affine {
					assertBitEqual(t, "γ", now.g, s.g)
					assertBitEqual(t, "β", now.b, s.b)
				}
				if now.n != s.n {
					t.Fatalf("domain %d: counter %d, was %d", d, now.n, s.n)
				}
			}
			// The machine accumulates gradients into the parameters' dual
			// values until a solver step zeroes them: start from zero.
			for _, n := range h.l.Learnables() {
				gv, err := n.Grad()
				if err != nil {
					t.Fatal(err)
				}
				gv.(tensor.Tensor).Zero()
			}
			s := solver.make()
			step := func(ids []int) {
				x, w := domainData(rng, ids, C*3)
				if _, err := h.run(x, w, ids, bn.Train); err != nil {
					t.Fatal(err)
				}
				if err := s.Step(gorgonia.NodesToValueGrads(h.l.Learnables())); err != nil {
					t.Fatal(err)
				}
			}
			before2, before0 := take(2), take(0)
			for range 5 {
				step([]int{0, 1, 1, 0, 0, 1})
			}
			same(2, before2, true)
			if now := take(0); now.n != before0.n+5 || now.g[0] == before0.g[0] {
				t.Fatalf("domain 0 did not train: counter %d → %d, γ %v → %v", before0.n, now.n, before0.g, now.g)
			}
			before1 := take(1)
			for range 5 {
				step([]int{0, 0, 0, 0, 0, 0})
			}
			// Adam keeps moving a parameter by its momentum after its
			// gradients become zero: domain 1's γ/β stay only under SGD.
			same(1, before1, solver.name == "sgd")
			same(2, before2, true)
		})
	}
}

// TestFiniteDifferences: in float64, dx and every entry of γ and β match
// central finite differences of the cost, for a mixed 4D batch, in the
// modes with batch and running statistics, with and without
// domain-specific normalization and affine.
func TestFiniteDifferences(t *testing.T) {
	const D, C = 3, 2
	ids := []int{2, 0, 1, 0, 2, 1}
	shape := tensor.Shape{len(ids), C, 2, 2}
	P := C * 4
	for _, tc := range []struct {
		name string
		mode bn.Mode
		opts []domainbn.Option
	}{
		{"train", bn.Train, nil},
		{"train shared norm", bn.Train, []domainbn.Option{domainbn.WithDomainNorm(false)}},
		{"train shared affine", bn.Train, []domainbn.Option{domainbn.WithDomainAffine(false)}},
		{"eval batch stats", bn.EvalBatchStats, nil},
		{"frozen", bn.Frozen, nil},
		{"eval", bn.Eval, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rng := rand.New(rand.NewSource(11))
			h := newHarness(t, shape, D, tc.opts...)
			// Non-trivial running statistics and γ/β.
			for d := range D {
				all := []int{d, d, d, d, d, d}
				x, w := domainData(rng, all, P)
				if _, err := h.run(x, w, all, bn.Train); err != nil {
					t.Fatal(err)
				}
				g, b := make([]float64, C), make([]float64, C)
				for c := range C {
					g[c], b[c] = 0.5+rng.Float64(), rng.NormFloat64()
				}
				if err := h.l.SetAffine(d, g, b); err != nil {
					t.Fatal(err)
				}
			}
			x, w := domainData(rng, ids, P)
			o, err := h.run(x, w, ids, tc.mode)
			if err != nil {
				t.Fatal(err)
			}
			cost := func() float64 {
				t.Helper()
				r, err := h.run(x, w, ids, tc.mode)
				if err != nil {
					t.Fatal(err)
				}
				return r.cost
			}
			const eps = 1e-6
			check := func(what string, i int, analytic float64, set func(v float64), v0 float64) {
				t.Helper()
				set(v0 + eps)
				cp := cost()
				set(v0 - eps)
				cm := cost()
				set(v0)
				fd := (cp - cm) / (2 * eps)
				if math.Abs(fd-analytic) > 1e-6*math.Max(1, math.Abs(fd)) {
					t.Errorf("%s[%d] = %v, finite difference %v", what, i, analytic, fd)
				}
			}
			for i := range x {
				check("dx", i, o.dx[i], func(v float64) { x[i] = v }, x[i])
			}
			A := len(o.dg) / C
			for a := range A {
				g, b, _ := h.l.Affine(a)
				for c := range C {
					check("dγ", a*C+c, o.dg[a*C+c], func(v float64) {
						gg := append([]float64(nil), g...)
						gg[c] = v
						if err := h.l.SetAffine(a, gg, b); err != nil {
							t.Fatal(err)
						}
					}, g[c])
					check("dβ", a*C+c, o.db[a*C+c], func(v float64) {
						bb := append([]float64(nil), b...)
						bb[c] = v
						if err := h.l.SetAffine(a, g, bb); err != nil {
							t.Fatal(err)
						}
					}, b[c])
				}
			}
		})
	}
}

// TestSyncedEqualsSingleProcess: K in-process ranks with synchronized domain
// layers, uneven per-domain counts and domains empty on some ranks, give
// what one unsynchronized layer gives on the concatenated batch: each rank's
// rows of y and dx, dγ and dβ summed over ranks, and running statistics and
// counters (bitwise equal on every rank).
func TestSyncedEqualsSingleProcess(t *testing.T) {
	const D, C = 3, 2
	// ids[step][rank]
	steps := [][][]int{
		{{0, 0, 1, 2, 2}, {1, 1}, {0, 2, 2, 1}},
		{{1, 1, 1, 1, 1}, {0, 0}, {0, 1, 1, 0}}, // domain 2 absent everywhere
		{{2, 0, 2, 0, 2}, {2, 2}, {2, 2, 2, 2}}, // domain 1 absent everywhere
		{{0, 1, 0, 1, 0}, {1, 0}, {2, 2, 1, 0}},
	}
	for _, tc := range []struct {
		name  string
		inner []int
		opts  []domainbn.Option
	}{
		{"2d", nil, nil},
		{"4d", []int{3, 2}, nil},
		{"shared norm", []int{2}, []domainbn.Option{domainbn.WithDomainNorm(false)}},
		{"shared stats cumulative", []int{2}, []domainbn.Option{domainbn.WithDomainStats(false), domainbn.WithBN(bn.WithCumulativeAverage())}},
		{"renorm", []int{2}, []domainbn.Option{domainbn.WithBN(bn.WithMomentum(0.5), bn.WithRenorm(bn.RenormConfig{RMax: 1.5, DMax: 0.5, RMaxRamp: 1}))}},
		{"renorm shared norm", []int{2}, []domainbn.Option{domainbn.WithDomainNorm(false), domainbn.WithBN(bn.WithMomentum(0.5), bn.WithRenorm(bn.RenormConfig{RMax: 1.5, DMax: 0.5}))}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rng := rand.New(rand.NewSource(5))
			S := 1
			for _, d := range tc.inner {
				S *= d
			}
			P := C * S
			K := len(steps[0])
			shapeOf := func(n int) tensor.Shape { return append(tensor.Shape{n, C}, tc.inner...) }
			total := 0
			for _, ids := range steps[0] {
				total += len(ids)
			}
			single := newHarness(t, shapeOf(total), D, tc.opts...)
			comms, err := collective.NewInProcess(K)
			if err != nil {
				t.Fatal(err)
			}
			ranks := make([]*harness, K)
			for r := range K {
				o := append([]domainbn.Option{domainbn.WithBN(bn.WithCommunicator(comms[r]), bn.WithSyncTimeout(time.Minute))}, tc.opts...)
				ranks[r] = newHarness(t, shapeOf(len(steps[0][r])), D, o...)
			}
			for k, st := range steps {
				xs, ws := make([][]float64, K), make([][]float64, K)
				var all, allW []float64
				var allIDs []int
				for r, ids := range st {
					xs[r], ws[r] = domainData(rng, ids, P)
					all, allW, allIDs = append(all, xs[r]...), append(allW, ws[r]...), append(allIDs, ids...)
				}
				mode := bn.Train
				if k == 3 {
					mode = bn.EvalBatchStats
				}
				want, err := single.run(all, allW, allIDs, mode)
				if err != nil {
					t.Fatalf("step %d single: %v", k, err)
				}
				got := make([]out, K)
				errs := make([]error, K)
				var wg sync.WaitGroup
				for r := range K {
					wg.Go(func() { got[r], errs[r] = ranks[r].run(xs[r], ws[r], st[r], mode) })
				}
				wg.Wait()
				off := 0
				dg, db := make([]float64, len(want.dg)), make([]float64, len(want.db))
				for r := range K {
					if errs[r] != nil {
						t.Fatalf("step %d rank %d: %v", k, r, errs[r])
					}
					n := len(st[r]) * P
					assertClose(t, "y", got[r].y, want.y[off:off+n], 1e-10)
					assertClose(t, "dx", got[r].dx, want.dx[off:off+n], 1e-10)
					for i := range dg {
						dg[i] += got[r].dg[i]
						db[i] += got[r].db[i]
					}
					off += n
				}
				assertClose(t, "Σ dγ", dg, want.dg, 1e-10)
				assertClose(t, "Σ dβ", db, want.db, 1e-10)
				for d := range D {
					wm, wv, _ := single.l.RunningStats(d)
					wt, _ := single.l.NumBatchesTracked(d)
					m0, v0, _ := ranks[0].l.RunningStats(d)
					for r := range K {
						m, v, _ := ranks[r].l.RunningStats(d)
						tr, _ := ranks[r].l.NumBatchesTracked(d)
						assertClose(t, "running mean", m, wm, 1e-10)
						assertClose(t, "running var", v, wv, 1e-10)
						assertBitEqual(t, "running mean across ranks", m, m0)
						assertBitEqual(t, "running var across ranks", v, v0)
						if tr != wt {
							t.Fatalf("step %d rank %d domain %d: %d batches tracked, want %d", k, r, d, tr, wt)
						}
					}
				}
			}
		})
	}
}

// TestErrors: invalid domains, lengths and options are reported with
// errors.Is-testable errors, at the call or when the graph runs.
func TestErrors(t *testing.T) {
	g := gorgonia.NewGraph()
	if _, err := domainbn.New(g, 2, 0, tensor.Float64); !errors.Is(err, domainbn.ErrDomain) {
		t.Errorf("0 domains: %v", err)
	}
	if _, err := domainbn.New(g, 2, 2, tensor.Float64, domainbn.WithBN(bn.WithEps(-1))); !errors.Is(err, bn.ErrOption) {
		t.Errorf("bad eps: %v", err)
	}
	if _, err := domainbn.New(g, 0, 2, tensor.Float64); !errors.Is(err, bn.ErrShape) {
		t.Errorf("0 channels: %v", err)
	}
	if _, err := domainbn.New(g, 2, 2, tensor.Int); !errors.Is(err, bn.ErrDtype) {
		t.Errorf("int dtype: %v", err)
	}
	if _, err := domainbn.New(g, 2, 2, tensor.Float64, domainbn.WithSelector(nil)); !errors.Is(err, bn.ErrOption) {
		t.Errorf("nil selector: %v", err)
	}
	sel3, _ := domainbn.NewSelector(3)
	if _, err := domainbn.New(g, 2, 2, tensor.Float64, domainbn.WithSelector(sel3)); !errors.Is(err, domainbn.ErrDomain) {
		t.Errorf("selector of 3 domains on a layer of 2: %v", err)
	}
	if _, err := domainbn.NewSelector(0); !errors.Is(err, domainbn.ErrDomain) {
		t.Errorf("selector of 0 domains: %v", err)
	}
	l, err := domainbn.New(g, 2, 2, tensor.Float64)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range []int{-1, 2} {
		if err := l.SetDomain(d); !errors.Is(err, domainbn.ErrDomain) {
			t.Errorf("SetDomain(%d): %v", d, err)
		}
		if err := l.SetDomainIDs([]int{0, d, 1}); !errors.Is(err, domainbn.ErrDomain) {
			t.Errorf("SetDomainIDs with %d: %v", d, err)
		}
		if _, _, err := l.RunningStats(d); !errors.Is(err, domainbn.ErrDomain) {
			t.Errorf("RunningStats(%d): %v", d, err)
		}
		if err := l.SetRunningStats(d, []float64{0, 0}, []float64{1, 1}); !errors.Is(err, domainbn.ErrDomain) {
			t.Errorf("SetRunningStats(%d): %v", d, err)
		}
		if _, _, err := l.Affine(d); !errors.Is(err, domainbn.ErrDomain) {
			t.Errorf("Affine(%d): %v", d, err)
		}
		if err := l.CopyDomain(d, 0); !errors.Is(err, domainbn.ErrDomain) {
			t.Errorf("CopyDomain(%d, 0): %v", d, err)
		}
		if _, err := domainbn.AdaBN(context.Background(), []*domainbn.Layer{l}, d, nil, bn.PreciseOptions{}); !errors.Is(err, domainbn.ErrDomain) {
			t.Errorf("AdaBN(%d): %v", d, err)
		}
	}
	if err := l.SetRunningStats(0, []float64{0}, []float64{1, 1}); !errors.Is(err, bn.ErrState) {
		t.Errorf("SetRunningStats of length 1: %v", err)
	}
	if err := l.SetRunningStats(0, []float64{0, 0}, []float64{1, -1}); !errors.Is(err, bn.ErrState) {
		t.Errorf("SetRunningStats with a negative variance: %v", err)
	}
	if err := l.SetAffine(0, []float64{1}, []float64{0, 0}); !errors.Is(err, bn.ErrState) {
		t.Errorf("SetAffine of length 1: %v", err)
	}
	noAff, _ := domainbn.New(g, 2, 2, tensor.Float64, domainbn.WithBN(bn.WithAffine(false)))
	if err := noAff.SetAffine(0, []float64{1, 1}, []float64{0, 0}); !errors.Is(err, bn.ErrState) {
		t.Errorf("SetAffine without affine: %v", err)
	}
	if g, b, err := noAff.Affine(1); g != nil || b != nil || err != nil {
		t.Errorf("Affine without affine = %v, %v, %v", g, b, err)
	}

	// Errors when the graph runs.
	rng := rand.New(rand.NewSource(1))
	shape := tensor.Shape{4, 2}
	x, w := domainData(rng, []int{0, 0, 1, 1}, 2)
	runErr := func(h *harness, set func(*domainbn.Layer) error, mode bn.Mode) error {
		t.Helper()
		if err := gorgonia.Let(h.x, vals(x, shape)); err != nil {
			t.Fatal(err)
		}
		if err := gorgonia.Let(h.w, vals(w, shape)); err != nil {
			t.Fatal(err)
		}
		if set != nil {
			if err := set(h.l); err != nil {
				t.Fatal(err)
			}
		}
		if err := h.l.SetMode(mode); err != nil {
			t.Fatal(err)
		}
		h.m.Reset()
		return h.m.RunAll()
	}
	h := newHarness(t, shape, 2)
	if err := runErr(h, nil, bn.Train); !errors.Is(bn.Cause(err), domainbn.ErrDomain) {
		t.Errorf("no domain set: %v", err)
	}
	for _, ids := range [][]int{{0, 1, 0}, {0, 1, 0, 1, 0}, {}} {
		if err := runErr(h, func(l *domainbn.Layer) error { return l.SetDomainIDs(ids) }, bn.Eval); !errors.Is(bn.Cause(err), domainbn.ErrDomain) {
			t.Errorf("%d ids for 4 samples: %v", len(ids), err)
		}
	}
	// One sample of domain 1 in a 2D batch: one value per channel.
	one := func(l *domainbn.Layer) error { return l.SetDomainIDs([]int{0, 0, 0, 1}) }
	for _, mode := range []bn.Mode{bn.Train, bn.EvalBatchStats} {
		if err := runErr(h, one, mode); !errors.Is(bn.Cause(err), bn.ErrTooFewValues) {
			t.Errorf("%v, one sample of domain 1: %v", mode, err)
		}
	}
	for _, mode := range []bn.Mode{bn.Eval, bn.Frozen} {
		if err := runErr(h, one, mode); err != nil {
			t.Errorf("%v, one sample of domain 1: %v", mode, err)
		}
	}
	// With shared normalization the set is the whole batch: no error.
	hs := newHarness(t, shape, 2, domainbn.WithDomainNorm(false))
	if err := runErr(hs, one, bn.Train); err != nil {
		t.Errorf("shared norm, one sample of domain 1: %v", err)
	}
	// The running statistics of the single-sample domain are not updated.
	if n, _ := hs.l.NumBatchesTracked(1); n != 0 {
		t.Errorf("domain with one value per channel tracked %d batches", n)
	}
	// The layer recovers after errors.
	if err := runErr(h, func(l *domainbn.Layer) error { return l.SetDomainIDs([]int{0, 1, 0, 1}) }, bn.Train); err != nil {
		t.Errorf("after errors: %v", err)
	}
}

// TestSharedSelector: layers sharing a Selector follow one SetDomain; the
// selection is what was set last.
func TestSharedSelector(t *testing.T) {
	g := gorgonia.NewGraph()
	sel, err := domainbn.NewSelector(2)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, ok := sel.Selection(); ok {
		t.Fatal("fresh selector has a selection")
	}
	a, _ := domainbn.New(g, 3, 2, tensor.Float64, domainbn.WithSelector(sel))
	b, _ := domainbn.New(g, 5, 2, tensor.Float64, domainbn.WithSelector(sel))
	if a.Selector() != sel || b.Selector() != sel {
		t.Fatal("selector not shared")
	}
	if err := a.SetDomain(1); err != nil {
		t.Fatal(err)
	}
	if d, ids, ok := b.Selector().Selection(); d != 1 || ids != nil || !ok {
		t.Fatalf("selection = %d, %v, %v", d, ids, ok)
	}
	in := []int{0, 1, 1}
	if err := b.SetDomainIDs(in); err != nil {
		t.Fatal(err)
	}
	in[0] = 1 // the selector keeps a copy
	if _, ids, _ := sel.Selection(); len(ids) != 3 || ids[0] != 0 {
		t.Fatalf("ids = %v", ids)
	}
}

// TestDefaultsAndAccessors checks the switches' defaults and the shapes of
// γ/β and of the underlying running statistics.
func TestDefaultsAndAccessors(t *testing.T) {
	g := gorgonia.NewGraph()
	l, err := domainbn.New(g, 4, 3, tensor.Float32, domainbn.WithBN(bn.WithName("dbn")))
	if err != nil {
		t.Fatal(err)
	}
	if !l.DomainNorm() || !l.DomainStats() || !l.DomainAffine() || l.Domains() != 3 || l.Channels() != 4 || l.Name() != "dbn" {
		t.Fatalf("defaults: %v %v %v %d %d %q", l.DomainNorm(), l.DomainStats(), l.DomainAffine(), l.Domains(), l.Channels(), l.Name())
	}
	if s := l.Gamma().Shape(); !s.Eq(tensor.Shape{3, 4}) {
		t.Fatalf("γ shape %v", s)
	}
	if m, _ := l.BatchNorm().RunningStats(); len(m) != 12 {
		t.Fatalf("%d running means", len(m))
	}
	var _ bn.Normalizer = l
	shared, _ := domainbn.New(g, 4, 3, tensor.Float32, domainbn.WithDomainStats(false), domainbn.WithDomainAffine(false))
	if s := shared.Gamma().Shape(); !s.Eq(tensor.Shape{4}) {
		t.Fatalf("shared γ shape %v", s)
	}
	if shared.BatchNorm().Groups() != 1 {
		t.Fatalf("shared statistics in %d groups", shared.BatchNorm().Groups())
	}
	// Shared statistics: every domain reads and writes the one set.
	if err := shared.SetRunningStats(2, []float64{1, 2, 3, 4}, []float64{5, 6, 7, 8}); err != nil {
		t.Fatal(err)
	}
	if m, v, _ := shared.RunningStats(0); m[3] != 4 || v[0] != 5 {
		t.Fatalf("shared stats %v %v", m, v)
	}
	// CopyDomain copies statistics and γ/β.
	if err := l.SetRunningStats(1, []float64{1, 2, 3, 4}, []float64{5, 6, 7, 8}); err != nil {
		t.Fatal(err)
	}
	if err := l.SetAffine(1, []float64{2, 2, 2, 2}, []float64{-1, -1, -1, -1}); err != nil {
		t.Fatal(err)
	}
	if err := l.CopyDomain(2, 1); err != nil {
		t.Fatal(err)
	}
	m, v, _ := l.RunningStats(2)
	ga, be, _ := l.Affine(2)
	if m[1] != 2 || v[2] != 7 || ga[0] != 2 || be[3] != -1 {
		t.Fatalf("copied %v %v %v %v", m, v, ga, be)
	}
	if m0, _, _ := l.RunningStats(0); m0[1] != 0 {
		t.Fatalf("domain 0 changed: %v", m0)
	}
}

// TestPrecisePerDomain: bn.Precise over batches of mixed domains replaces
// each domain's running statistics with the exact population statistics of
// that domain's samples; a domain absent from every batch keeps its
// statistics bit for bit; the mode is restored.
func TestPrecisePerDomain(t *testing.T) {
	const D, C = 3, 2
	rng := rand.New(rand.NewSource(9))
	shape := tensor.Shape{6, C, 5}
	P := C * 5
	h := newHarness(t, shape, D)
	// Train a few steps so that every domain has statistics.
	for range 3 {
		ids := []int{0, 1, 2, 2, 1, 0}
		x, w := domainData(rng, ids, P)
		if _, err := h.run(x, w, ids, bn.Train); err != nil {
			t.Fatal(err)
		}
	}
	batches := [][]int{{0, 0, 1, 1, 0, 1}, {1, 0, 0, 0, 0, 0}, {1, 1, 1, 1, 1, 0}} // domain 2 absent
	xs := make([][]float64, len(batches))
	for i, ids := range batches {
		xs[i], _ = domainData(rng, ids, P)
	}
	m2, v2, _ := h.l.RunningStats(2)
	if err := h.l.SetMode(bn.Train); err != nil {
		t.Fatal(err)
	}
	rep, err := bn.Precise(context.Background(), []bn.Normalizer{h.l}, func(ctx context.Context, i int) (int, error) {
		if i >= len(batches) {
			return 0, io.EOF
		}
		_, err := h.run(xs[i], make([]float64, len(xs[i])), batches[i], bn.EvalBatchStats)
		return len(batches[i]), err
	}, bn.PreciseOptions{Batches: len(batches)})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Batches != 3 || rep.Samples != 18 {
		t.Fatalf("report %+v", rep)
	}
	if h.l.Mode() != bn.Train {
		t.Errorf("mode after Precise: %v, want train", h.l.Mode())
	}
	for d := range 2 {
		var sel [][]float64
		for i, ids := range batches {
			for j, id := range ids {
				if id == d {
					sel = append(sel, xs[i][j*P:(j+1)*P])
				}
			}
		}
		wm, wv := population(sel, C, 5)
		m, v, _ := h.l.RunningStats(d)
		assertClose(t, "population mean", m, wm, 1e-12)
		assertClose(t, "population var", v, wv, 1e-12)
	}
	m, v, _ := h.l.RunningStats(2)
	assertBitEqual(t, "absent domain mean", m, m2)
	assertBitEqual(t, "absent domain var", v, v2)
}

// population returns the mean and unbiased variance per channel of samples
// (each C×S), computed directly.
func population(samples [][]float64, C, S int) (mean, variance []float64) {
	mean, variance = make([]float64, C), make([]float64, C)
	for c := range C {
		var sum, n float64
		for _, s := range samples {
			for k := range S {
				sum += s[c*S+k]
				n++
			}
		}
		mean[c] = sum / n
		var sq float64
		for _, s := range samples {
			for k := range S {
				d := s[c*S+k] - mean[c]
				sq += d * d
			}
		}
		variance[c] = sq / (n - 1)
	}
	return mean, variance
}

// TestAdaBN: AdaBN on domain 2 of a two-layer net sharing a selector
// replaces domain 2's statistics of the first layer with the exact
// population statistics of the new data, changes domain 2 of the second
// layer, leaves domains 0 and 1 of both bit for bit, and restores the
// selection and the modes.
func TestAdaBN(t *testing.T) {
	const D, C, N, S = 3, 3, 8, 4
	rng := rand.New(rand.NewSource(21))
	g := gorgonia.NewGraph()
	sel, _ := domainbn.NewSelector(D)
	shape := tensor.Shape{N, C, S}
	x := gorgonia.NewTensor(g, tensor.Float64, 3, gorgonia.WithShape(shape...), gorgonia.WithName("x"), gorgonia.WithInit(gorgonia.Zeroes()))
	l1, _ := domainbn.New(g, C, D, tensor.Float64, domainbn.WithSelector(sel), domainbn.WithBN(bn.WithName("l1")))
	l2, _ := domainbn.New(g, C, D, tensor.Float64, domainbn.WithSelector(sel), domainbn.WithBN(bn.WithName("l2")))
	y1, err := l1.Apply(x)
	if err != nil {
		t.Fatal(err)
	}
	h := gorgonia.Must(gorgonia.Square(y1))
	if _, err := l2.Apply(h); err != nil {
		t.Fatal(err)
	}
	m := gorgonia.NewTapeMachine(g)
	defer m.Close()
	forward := func(v []float64) error {
		if err := gorgonia.Let(x, vals(v, shape)); err != nil {
			return err
		}
		m.Reset()
		return m.RunAll()
	}
	ids := []int{0, 1, 0, 1, 1, 0, 0, 1}
	for range 4 {
		v, _ := domainData(rng, ids, C*S)
		if err := sel.SetDomainIDs(ids); err != nil {
			t.Fatal(err)
		}
		if err := forward(v); err != nil {
			t.Fatal(err)
		}
	}
	for _, l := range []*domainbn.Layer{l1, l2} {
		if err := l.CopyDomain(2, 0); err != nil {
			t.Fatal(err)
		}
		if err := l.SetMode(bn.Eval); err != nil {
			t.Fatal(err)
		}
	}
	type st struct{ m, v []float64 }
	snap := func() (s [2][D]st) {
		for i, l := range []*domainbn.Layer{l1, l2} {
			for d := range D {
				s[i][d].m, s[i][d].v, _ = l.RunningStats(d)
			}
		}
		return s
	}
	before := snap()
	// Unlabeled data of a new domain: mean 7, standard deviation 0.5.
	data := make([][]float64, 5)
	for i := range data {
		data[i] = make([]float64, N*C*S)
		for k := range data[i] {
			data[i][k] = 7 + 0.5*rng.NormFloat64()
		}
	}
	rep, err := domainbn.AdaBN(context.Background(), []*domainbn.Layer{l1, l2}, 2, func(ctx context.Context, i int) (int, error) {
		if i >= len(data) {
			return 0, io.EOF
		}
		return N, forward(data[i])
	}, bn.PreciseOptions{Batches: len(data)})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Updated) != 2 || rep.Samples != N*len(data) {
		t.Fatalf("report %+v", rep)
	}
	after := snap()
	for i := range 2 {
		for d := range 2 {
			assertBitEqual(t, "mean of a trained domain", after[i][d].m, before[i][d].m)
			assertBitEqual(t, "var of a trained domain", after[i][d].v, before[i][d].v)
		}
		if after[i][2].m[0] == before[i][2].m[0] {
			t.Errorf("layer %d: domain 2 not updated", i+1)
		}
	}
	var samples [][]float64
	for _, b := range data {
		for j := range N {
			samples = append(samples, b[j*C*S:(j+1)*C*S])
		}
	}
	wm, wv := population(samples, C, S)
	assertClose(t, "AdaBN mean", after[0][2].m, wm, 1e-12)
	assertClose(t, "AdaBN var", after[0][2].v, wv, 1e-12)
	if d, got, ok := sel.Selection(); !ok || d != 0 || len(got) != N || got[1] != 1 {
		t.Errorf("selection not restored: %d %v %v", d, got, ok)
	}
	if l1.Mode() != bn.Eval || l2.Mode() != bn.Eval {
		t.Errorf("modes not restored: %v %v", l1.Mode(), l2.Mode())
	}
	// A failing pass also restores the selection.
	_, err = domainbn.AdaBN(context.Background(), []*domainbn.Layer{l1, l2}, 2, func(ctx context.Context, i int) (int, error) {
		return 0, errors.New("boom")
	}, bn.PreciseOptions{Batches: 1})
	if err == nil {
		t.Fatal("no error")
	}
	if _, got, _ := sel.Selection(); len(got) != N {
		t.Errorf("selection not restored after a failure: %v", got)
	}
}

// TestLispMachineAndFloat32: the LispMachine (DoDiff) gives the gradients
// the TapeMachine (SymDiff) gives, and float32 agrees with float64 to
// float32 precision, for the default switches and for shared normalization
// with domain-specific affine.
func TestLispMachineAndFloat32(t *testing.T) {
	const D, C = 3, 2
	ids := []int{0, 2, 2, 1, 0, 1, 0}
	shape := tensor.Shape{len(ids), C, 3}
	for _, tc := range []struct {
		name string
		opts []domainbn.Option
	}{
		{"default", nil},
		{"shared norm", []domainbn.Option{domainbn.WithDomainNorm(false)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rng := rand.New(rand.NewSource(4))
			x, w := domainData(rng, ids, C*3)
			gam, bet := make([][]float64, D), make([][]float64, D)
			for d := range D {
				gam[d], bet[d] = []float64{0.5 + rng.Float64(), 1.5}, []float64{rng.NormFloat64(), -1}
			}
			h := newHarness(t, shape, D, tc.opts...)
			for d := range D {
				if err := h.l.SetAffine(d, gam[d], bet[d]); err != nil {
					t.Fatal(err)
				}
			}
			want, err := h.run(x, w, ids, bn.Train)
			if err != nil {
				t.Fatal(err)
			}
			for _, dt := range []tensor.Dtype{tensor.Float64, tensor.Float32} {
				for _, lisp := range []bool{false, true} {
					if dt == tensor.Float64 && !lisp {
						continue
					}
					g := gorgonia.NewGraph()
					conv := func(v []float64) *tensor.Dense {
						if dt == tensor.Float64 {
							return vals(v, shape)
						}
						f := make([]float32, len(v))
						for i := range v {
							f[i] = float32(v[i])
						}
						return tensor.New(tensor.WithShape(shape...), tensor.WithBacking(f))
					}
					xn := gorgonia.NewTensor(g, dt, 3, gorgonia.WithShape(shape...), gorgonia.WithName("x"), gorgonia.WithValue(conv(x)))
					wn := gorgonia.NewTensor(g, dt, 3, gorgonia.WithShape(shape...), gorgonia.WithName("w"), gorgonia.WithValue(conv(w)))
					l, err := domainbn.New(g, C, D, dt, tc.opts...)
					if err != nil {
						t.Fatal(err)
					}
					for d := range D {
						if err := l.SetAffine(d, gam[d], bet[d]); err != nil {
							t.Fatal(err)
						}
					}
					if err := l.SetDomainIDs(ids); err != nil {
						t.Fatal(err)
					}
					y, err := l.Apply(xn)
					if err != nil {
						t.Fatal(err)
					}
					cost := gorgonia.Must(gorgonia.Sum(gorgonia.Must(gorgonia.HadamardProd(y, wn))))
					var vm gorgonia.VM
					var grads []func() gorgonia.Value
					if lisp {
						vm = gorgonia.NewLispMachine(g)
						for _, n := range append(gorgonia.Nodes{xn}, l.Learnables()...) {
							grads = append(grads, func() gorgonia.Value { v, _ := n.Grad(); return v })
						}
					} else {
						gn, err := gorgonia.Grad(cost, append(gorgonia.Nodes{xn}, l.Learnables()...)...)
						if err != nil {
							t.Fatal(err)
						}
						vm = gorgonia.NewTapeMachine(g)
						for _, n := range gn {
							grads = append(grads, n.Value)
						}
					}
					if err := vm.RunAll(); err != nil {
						t.Fatal(err)
					}
					vm.Close()
					tol := 1e-10
					if dt == tensor.Float32 {
						tol = 1e-4
					}
					for i, wantV := range [][]float64{want.dx, want.dg, want.db} {
						v := grads[i]()
						var got []float64
						switch s := v.Data().(type) {
						case []float64:
							got = s
						case []float32:
							for _, f := range s {
								got = append(got, float64(f))
							}
						}
						assertClose(t, [3]string{"dx", "dγ", "dβ"}[i]+" "+dt.String(), got, wantV, tol)
					}
				}
			}
		})
	}
}

// TestSyncedLayerMismatch: ranks whose layers disagree (number of domains)
// get ErrSync, not wrong numbers or a hang.
func TestSyncedLayerMismatch(t *testing.T) {
	comms, err := collective.NewInProcess(2)
	if err != nil {
		t.Fatal(err)
	}
	errs := make([]error, 2)
	var wg sync.WaitGroup
	for r := range 2 {
		wg.Go(func() {
			h, err := buildHarness(tensor.Shape{4, 2}, 2+r, domainbn.WithBN(bn.WithCommunicator(comms[r]), bn.WithSyncTimeout(10*time.Second)))
			if err != nil {
				errs[r] = err
				return
			}
			defer h.m.Close()
			x, w := domainData(rand.New(rand.NewSource(int64(r))), []int{0, 0, 1, 1}, 2)
			_, errs[r] = h.run(x, w, []int{0, 0, 1, 1}, bn.Train)
		})
	}
	wg.Wait()
	for r, err := range errs {
		if !errors.Is(bn.Cause(err), bn.ErrSync) {
			t.Errorf("rank %d: %v, want ErrSync", r, err)
		}
	}
}
