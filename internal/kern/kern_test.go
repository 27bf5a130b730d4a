package kern

import (
	"fmt"
	"math"
	"math/rand"
	"sync"
	"testing"
)

// The kernels against naive float64 loops written here, for many layouts;
// Merge's algebra; float32 accuracy; determinism across thread counts; and
// zero allocations per call on a reused Plan.

// segOf returns the segment of sample n under l (the test's own reading of
// Layout's contract: nil Seg means one segment).
func segOf(l Layout, n int) int {
	if l.Seg == nil {
		return 0
	}
	return l.Seg[n]
}

func nsegOf(l Layout) int {
	if l.NSeg < 1 {
		return 1
	}
	return l.NSeg
}

// naiveMoments is the two-pass mean and M2 of every (segment, channel), in
// float64, sample by sample.
func naiveMoments(x []float64, l Layout) []Moments {
	ns := nsegOf(l)
	out := make([]Moments, ns*l.C)
	for s := range ns {
		for c := range l.C {
			var sum, cnt float64
			for n := range l.N {
				if segOf(l, n) != s {
					continue
				}
				for i := range l.S {
					sum += x[(n*l.C+c)*l.S+i]
					cnt++
				}
			}
			if cnt == 0 {
				continue
			}
			m := sum / cnt
			var m2 float64
			for n := range l.N {
				if segOf(l, n) != s {
					continue
				}
				for i := range l.S {
					d := x[(n*l.C+c)*l.S+i] - m
					m2 += d * d
				}
			}
			out[s*l.C+c] = Moments{N: cnt, Mean: m, M2: m2}
		}
	}
	return out
}

// naiveSums is Σdy and Σdy·(x−mean) of every (segment, channel).
func naiveSums(x, dy, mean []float64, l Layout) [][2]float64 {
	out := make([][2]float64, nsegOf(l)*l.C)
	for n := range l.N {
		s := segOf(l, n)
		for c := range l.C {
			for i := range l.S {
				j := (n*l.C+c)*l.S + i
				out[s*l.C+c][0] += dy[j]
				out[s*l.C+c][1] += dy[j] * (x[j] - mean[s*l.C+c])
			}
		}
	}
	return out
}

// naiveApply is out = a·dy + b·(x−mean) + c element-wise (dy nil: no a·dy).
func naiveApply(x, dy, mean, a, b, c []float64, l Layout) []float64 {
	out := make([]float64, len(x))
	for n := range l.N {
		s := segOf(l, n)
		for ch := range l.C {
			k := s*l.C + ch
			for i := range l.S {
				j := (n*l.C+ch)*l.S + i
				v := b[k]*(x[j]-mean[k]) + c[k]
				if dy != nil {
					v += a[k] * dy[j]
				}
				out[j] = v
			}
		}
	}
	return out
}

type layoutCase struct {
	name string
	l    Layout
}

func ghostLayout(N, C, S, g int) Layout {
	seg := make([]int, N)
	ns := GhostSegments(seg, g, 0, len(seg))
	return Layout{N: N, C: C, S: S, Seg: seg, NSeg: ns}
}

func layouts() []layoutCase {
	return []layoutCase{
		{"tiny", Layout{N: 3, C: 2, S: 5}},
		{"one-element", Layout{N: 1, C: 1, S: 1}},
		{"S1-many-channels", Layout{N: 64, C: 300, S: 1}},
		{"S1-one-channel", Layout{N: 50, C: 1, S: 1}},
		{"S1-wide", Layout{N: 9, C: 5000, S: 1}},
		{"S3-short-planes", Layout{N: 40, C: 64, S: 3}},
		{"S15", Layout{N: 7, C: 33, S: 15}},
		{"S16", Layout{N: 7, C: 33, S: 16}},
		{"S-large-split", Layout{N: 3, C: 2, S: 40000}},
		{"S-large-split-odd", Layout{N: 1, C: 3, S: 70001}},
		{"medium", Layout{N: 16, C: 8, S: 1000}},
		{"NSeg0-means-1", Layout{N: 4, C: 3, S: 7, NSeg: 0}},
		{"ghost-3-last-1", ghostLayout(10, 4, 6, 3)},
		{"ghost-S1", ghostLayout(33, 70, 1, 8)},
		{"ghost-large-S", ghostLayout(3, 2, 40000, 2)},
		{"segments-with-empty", Layout{N: 9, C: 5, S: 17, Seg: []int{0, 0, 3, 3, 3, 0, 2, 2, 0}, NSeg: 5}},
		{"segments-interleaved-S1", Layout{N: 12, C: 40, S: 1, Seg: []int{1, 0, 1, 0, 2, 2, 0, 1, 1, 0, 2, 0}, NSeg: 4}},
	}
}

func randData(r *rand.Rand, n int, mean, sd float64) []float64 {
	v := make([]float64, n)
	for i := range v {
		v[i] = mean + sd*r.NormFloat64()
	}
	return v
}

func to32(v []float64) []float32 {
	f := make([]float32, len(v))
	for i := range v {
		f[i] = float32(v[i])
	}
	return f
}

func from32(v []float32) []float64 {
	f := make([]float64, len(v))
	for i := range v {
		f[i] = float64(v[i])
	}
	return f
}

func checkMoments(t *testing.T, what string, got, want []Moments, rtol float64) {
	t.Helper()
	for i := range want {
		w, g := want[i], got[i]
		if w.N == 0 {
			if g != (Moments{}) {
				t.Fatalf("%s: empty (segment, channel) %d: got %+v, want zero moments", what, i, g)
			}
			continue
		}
		sd := math.Sqrt(w.M2 / w.N)
		if g.N != w.N || math.Abs(g.Mean-w.Mean) > rtol*(math.Abs(w.Mean)+sd) || math.Abs(g.M2-w.M2) > rtol*w.M2+1e-300 {
			t.Fatalf("%s: %d: got %+v, want %+v", what, i, g, w)
		}
	}
}

var threadCounts = []int{1, 4}

func TestStatsAgainstNaive(t *testing.T) {
	for li, lc := range layouts() {
		for _, th := range threadCounts {
			t.Run(fmt.Sprintf("%s/threads%d", lc.name, th), func(t *testing.T) {
				r := rand.New(rand.NewSource(int64(li)))
				x := randData(r, lc.l.Len(), 3, 2)
				want := naiveMoments(x, lc.l)
				got := make([]Moments, len(want))
				for i := range got {
					got[i] = Moments{N: -1, Mean: math.NaN(), M2: math.NaN()} // must be overwritten
				}
				p := NewPlan[float64](lc.l, th)
				p.Stats(x, got)
				checkMoments(t, "float64", got, want, 1e-12)
				if lc.l.S > 32768 {
					// The case is meant to split planes: make sure it does.
					split := false
					for _, b := range p.blocks {
						split = split || b.s1-b.s0 < lc.l.S
					}
					if !split {
						t.Fatalf("no block splits the spatial dimension")
					}
				}

				x32 := to32(x)
				want = naiveMoments(from32(x32), lc.l)
				NewPlan[float32](lc.l, th).Stats(x32, got)
				checkMoments(t, "float32", got, want, 1e-12)
			})
		}
	}
}

func TestBackwardSumsAgainstNaive(t *testing.T) {
	for li, lc := range layouts() {
		for _, th := range threadCounts {
			t.Run(fmt.Sprintf("%s/threads%d", lc.name, th), func(t *testing.T) {
				r := rand.New(rand.NewSource(int64(100 + li)))
				x := randData(r, lc.l.Len(), 1, 2)
				dy := randData(r, lc.l.Len(), 0.5, 1)
				mean := randData(r, nsegOf(lc.l)*lc.l.C, 1, 0.5)
				check := func(what string, got, want [][2]float64) {
					for i := range want {
						for j := range 2 {
							// Sums of n terms of size ~|dy|·|x−m|: absolute error ~ n·ε.
							n := float64(lc.l.N * lc.l.S)
							if math.Abs(got[i][j]-want[i][j]) > 1e-13*n*4+1e-12*math.Abs(want[i][j]) {
								t.Fatalf("%s: sums[%d][%d] = %v, want %v", what, i, j, got[i][j], want[i][j])
							}
						}
					}
				}
				want := naiveSums(x, dy, mean, lc.l)
				got := make([][2]float64, len(want))
				for i := range got {
					got[i] = [2]float64{math.NaN(), math.NaN()}
				}
				NewPlan[float64](lc.l, th).BackwardSums(x, dy, mean, got)
				check("float64", got, want)

				x32, dy32 := to32(x), to32(dy)
				want = naiveSums(from32(x32), from32(dy32), mean, lc.l)
				NewPlan[float32](lc.l, th).BackwardSums(x32, dy32, mean, got)
				check("float32", got, want)
			})
		}
	}
}

func TestApplyAgainstNaive(t *testing.T) {
	for li, lc := range layouts() {
		for _, th := range threadCounts {
			t.Run(fmt.Sprintf("%s/threads%d", lc.name, th), func(t *testing.T) {
				r := rand.New(rand.NewSource(int64(200 + li)))
				L, K := lc.l.Len(), nsegOf(lc.l)*lc.l.C
				x, dy := randData(r, L, 1, 2), randData(r, L, 0, 1)
				mean, a, b, c := randData(r, K, 1, 1), randData(r, K, 0, 1), randData(r, K, 1, 1), randData(r, K, 0, 1)
				p := NewPlan[float64](lc.l, th)
				check := func(what string, got, want []float64, tol float64) {
					for i := range want {
						if math.Abs(got[i]-want[i]) > tol*(1+math.Abs(want[i])) {
							t.Fatalf("%s[%d] = %v, want %v", what, i, got[i], want[i])
						}
					}
				}
				out := randData(r, L, math.NaN(), 0)
				p.Apply(x, nil, out, mean, nil, b, c)
				check("forward", out, naiveApply(x, nil, mean, nil, b, c, lc.l), 1e-14)
				p.Apply(x, dy, out, mean, a, b, c)
				want := naiveApply(x, dy, mean, a, b, c, lc.l)
				check("backward", out, want, 1e-14)
				// out may alias dy and x.
				d2 := append([]float64(nil), dy...)
				p.Apply(x, d2, d2, mean, a, b, c)
				check("backward in place of dy", d2, want, 1e-14)
				x2 := append([]float64(nil), x...)
				p.Apply(x2, nil, x2, mean, nil, b, c)
				check("forward in place of x", x2, naiveApply(x, nil, mean, nil, b, c, lc.l), 1e-14)

				// float32: computed in float64, rounded once.
				x32, dy32, out32 := to32(x), to32(dy), make([]float32, L)
				NewPlan[float32](lc.l, th).Apply(x32, dy32, out32, mean, a, b, c)
				want = naiveApply(from32(x32), from32(dy32), mean, a, b, c, lc.l)
				for i := range want {
					if out32[i] != float32(want[i]) && math.Abs(float64(out32[i])-want[i]) > 1e-7*(1+math.Abs(want[i])) {
						t.Fatalf("float32 backward[%d] = %v, want %v", i, out32[i], want[i])
					}
				}
			})
		}
	}
}

// TestThreadsDeterminism: the same plan layout gives bit-identical results
// with 1 and 4 goroutines, and on repeated calls.
func TestThreadsDeterminism(t *testing.T) {
	for li, lc := range layouts() {
		t.Run(lc.name, func(t *testing.T) {
			r := rand.New(rand.NewSource(int64(300 + li)))
			L, K := lc.l.Len(), nsegOf(lc.l)*lc.l.C
			x := to32(randData(r, L, 5, 3))
			dy := to32(randData(r, L, 0, 1))
			mean, a, b, c := randData(r, K, 5, 1), randData(r, K, 0, 1), randData(r, K, 1, 1), randData(r, K, 0, 1)
			type result struct {
				m    []Moments
				s    [][2]float64
				y, d []float32
			}
			run := func(th int) result {
				p := NewPlan[float32](lc.l, th)
				res := result{m: make([]Moments, K), s: make([][2]float64, K), y: make([]float32, L), d: make([]float32, L)}
				p.Stats(x, res.m)
				p.BackwardSums(x, dy, mean, res.s)
				p.Apply(x, nil, res.y, mean, nil, b, c)
				p.Apply(x, dy, res.d, mean, a, b, c)
				return res
			}
			one, four, again := run(1), run(4), run(4)
			for _, other := range []result{four, again} {
				for i := range one.m {
					if one.m[i] != other.m[i] || one.s[i] != other.s[i] {
						t.Fatalf("(segment, channel) %d: threads 1 %+v %v, threads 4 %+v %v", i, one.m[i], one.s[i], other.m[i], other.s[i])
					}
				}
				for i := range one.y {
					if one.y[i] != other.y[i] || one.d[i] != other.d[i] {
						t.Fatalf("element %d differs between thread counts", i)
					}
				}
			}
		})
	}
}

// TestConcurrentPlans: several goroutines (in-process ranks) run their own
// plans on the shared workers at the same time, many times: every call
// finishes (no lost or double-run item, no deadlock between callers) and
// gives the bit-identical results of a one-goroutine plan.
func TestConcurrentPlans(t *testing.T) {
	cases := layouts()
	const G, reps = 6, 40
	type result struct {
		m []Moments
		s [][2]float64
		d []float64
	}
	run := func(lc layoutCase, th int, x, dy []float64, mean, a, b, c []float64) result {
		L, K := lc.l.Len(), nsegOf(lc.l)*lc.l.C
		p := NewPlan[float64](lc.l, th)
		res := result{m: make([]Moments, K), s: make([][2]float64, K), d: make([]float64, L)}
		p.Stats(x, res.m)
		p.BackwardSums(x, dy, mean, res.s)
		p.Apply(x, dy, res.d, mean, a, b, c)
		return res
	}
	errs := make([]error, G)
	var wg sync.WaitGroup
	for g := range G {
		lc := cases[g%len(cases)]
		r := rand.New(rand.NewSource(int64(700 + g)))
		L, K := lc.l.Len(), nsegOf(lc.l)*lc.l.C
		x, dy := randData(r, L, 5, 3), randData(r, L, 0, 1)
		mean, a, b, c := randData(r, K, 5, 1), randData(r, K, 0, 1), randData(r, K, 1, 1), randData(r, K, 0, 1)
		want := run(lc, 1, x, dy, mean, a, b, c)
		wg.Go(func() {
			for i := range reps {
				got := run(lc, 0, x, dy, mean, a, b, c)
				for k := range want.m {
					if got.m[k] != want.m[k] || got.s[k] != want.s[k] {
						errs[g] = fmt.Errorf("%s, call %d: (segment, channel) %d differs", lc.name, i, k)
						return
					}
				}
				for k := range want.d {
					if got.d[k] != want.d[k] {
						errs[g] = fmt.Errorf("%s, call %d: element %d differs", lc.name, i, k)
						return
					}
				}
			}
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
}

// TestFloat32LargeOffset: x = 1e4 + N(0,1) in float32; the variance must be
// that of the float32 values to 1e-6 relative (Σx² − (Σx)²/n in float32
// would not even keep its sign).
func TestFloat32LargeOffset(t *testing.T) {
	for _, l := range []Layout{{N: 64, C: 3, S: 64}, {N: 4096, C: 4, S: 1}, {N: 2, C: 1, S: 100000}, ghostLayout(50, 3, 9, 7)} {
		for _, th := range threadCounts {
			r := rand.New(rand.NewSource(7))
			x := to32(randData(r, l.Len(), 1e4, 1))
			want := naiveMoments(from32(x), l)
			got := make([]Moments, len(want))
			NewPlan[float32](l, th).Stats(x, got)
			for i := range want {
				wv, gv := want[i].Var(), got[i].Var()
				if !(gv > 0) || math.Abs(gv-wv) > 1e-6*wv || math.Abs(got[i].Mean-want[i].Mean) > 1e-9*want[i].Mean {
					t.Errorf("%+v threads %d: %d: var %v mean %v, want %v %v", l, th, i, gv, got[i].Mean, wv, want[i].Mean)
				}
			}
		}
	}
}

// TestSetSegments: a plan whose segments change gives what a fresh plan
// for the new layout gives.
func TestSetSegments(t *testing.T) {
	r := rand.New(rand.NewSource(8))
	l := Layout{N: 10, C: 3, S: 20}
	x := randData(r, l.Len(), 0, 1)
	p := NewPlan[float64](l, 2)
	for _, nl := range []Layout{ghostLayout(10, 3, 20, 4), {N: 10, C: 3, S: 20, Seg: []int{2, 2, 0, 0, 0, 2, 2, 2, 2, 2}, NSeg: 3}, l} {
		p.SetSegments(nl.Seg, nl.NSeg)
		got := make([]Moments, nsegOf(nl)*3)
		p.Stats(x, got)
		checkMoments(t, fmt.Sprint(nl.Seg), got, naiveMoments(x, nl), 1e-12)
		if pl := p.Layout(); pl.Segments() != nsegOf(nl) {
			t.Errorf("Layout().Segments() = %d, want %d", pl.Segments(), nsegOf(nl))
		}
	}
	// NewPlan copies the segments: changing the caller's slice later has no effect.
	seg := []int{0, 0, 0, 0, 0, 1, 1, 1, 1, 1}
	q := NewPlan[float64](Layout{N: 10, C: 3, S: 20, Seg: seg, NSeg: 2}, 1)
	want := naiveMoments(x, Layout{N: 10, C: 3, S: 20, Seg: append([]int(nil), seg...), NSeg: 2})
	seg[0] = 1
	got := make([]Moments, 6)
	q.Stats(x, got)
	checkMoments(t, "copied segments", got, want, 1e-12)
}

func TestGhostSegments(t *testing.T) {
	for _, tc := range []struct{ n, g, want int }{{10, 3, 4}, {9, 3, 3}, {1, 5, 1}, {5, 1, 5}, {0, 2, 0}} {
		seg := make([]int, tc.n)
		if got := GhostSegments(seg, tc.g, 0, tc.n); got != tc.want {
			t.Errorf("GhostSegments(%d, %d) = %d, want %d", tc.n, tc.g, got, tc.want)
		}
		for i, s := range seg {
			if s != i/tc.g {
				t.Errorf("n=%d g=%d: seg[%d] = %d", tc.n, tc.g, i, s)
			}
		}
	}
}

// momentsOf is the naive two-pass moments of a slice.
func momentsOf(v []float64) Moments {
	if len(v) == 0 {
		return Moments{}
	}
	var s float64
	for _, x := range v {
		s += x
	}
	m := s / float64(len(v))
	var q float64
	for _, x := range v {
		q += (x - m) * (x - m)
	}
	return Moments{N: float64(len(v)), Mean: m, M2: q}
}

func momentsClose(a, b Moments, rtol float64) bool {
	sd := math.Sqrt(math.Max(a.M2, b.M2) / math.Max(a.N, 1))
	return a.N == b.N && math.Abs(a.Mean-b.Mean) <= rtol*(math.Abs(a.Mean)+sd) && math.Abs(a.M2-b.M2) <= rtol*math.Max(math.Abs(a.M2), 1e-300)
}

func TestMerge(t *testing.T) {
	r := rand.New(rand.NewSource(9))
	for trial := range 200 {
		// Three sets of different sizes, means and spreads.
		var sets [3][]float64
		for i := range sets {
			sets[i] = randData(r, 1+r.Intn(50), 100*r.NormFloat64(), math.Exp(3*r.NormFloat64()))
		}
		a, b, c := momentsOf(sets[0]), momentsOf(sets[1]), momentsOf(sets[2])
		union := momentsOf(append(append(append([]float64(nil), sets[0]...), sets[1]...), sets[2]...))
		left, right := a.Merge(b).Merge(c), a.Merge(b.Merge(c))
		if !momentsClose(left, right, 1e-12) {
			t.Fatalf("trial %d: (a∘b)∘c = %+v, a∘(b∘c) = %+v", trial, left, right)
		}
		if !momentsClose(left, union, 1e-12) {
			t.Fatalf("trial %d: merge %+v, moments of the union %+v", trial, left, union)
		}
		if ab, ba := a.Merge(b), b.Merge(a); !momentsClose(ab, ba, 1e-12) {
			t.Fatalf("trial %d: a∘b = %+v, b∘a = %+v", trial, ab, ba)
		}
		if all := MergeAll([]Moments{a, {}, b, c}); !momentsClose(all, union, 1e-12) {
			t.Fatalf("trial %d: MergeAll %+v, want %+v", trial, all, union)
		}
		// The empty operand returns the other bit for bit.
		if a.Merge(Moments{}) != a || (Moments{}).Merge(a) != a {
			t.Fatalf("merge with empty changed %+v", a)
		}
	}
	if MergeAll(nil) != (Moments{}) {
		t.Error("MergeAll(nil) is not empty")
	}
}

func TestVarAndInvStd(t *testing.T) {
	m := momentsOf([]float64{1, 2, 3, 4})
	if m.Var() != 1.25 || math.Abs(m.UnbiasedVar()-5.0/3) > 1e-15 {
		t.Errorf("Var %v UnbiasedVar %v", m.Var(), m.UnbiasedVar())
	}
	if got, want := InvStd(m, 0.75), 1/math.Sqrt(2); math.Abs(got-want) > 1e-15 {
		t.Errorf("InvStd = %v, want %v", got, want)
	}
	if !math.IsNaN((Moments{}).Var()) || !math.IsNaN(momentsOf([]float64{3}).UnbiasedVar()) {
		t.Error("Var of an empty set or UnbiasedVar of one value is not NaN")
	}
	if v := momentsOf([]float64{3}).Var(); v != 0 {
		t.Errorf("Var of one value = %v", v)
	}
}

func TestUpdateRunning(t *testing.T) {
	mean, variance := []float64{1, 2, 3}, []float64{4, 5, 6}
	ms := []Moments{momentsOf([]float64{0, 2}), momentsOf([]float64{7}), {}}
	UpdateRunning(mean, variance, ms, 0.25)
	// channel 0: batch mean 1, unbiased var 2.
	if mean[0] != 0.75*1+0.25*1 || variance[0] != 0.75*4+0.25*2 {
		t.Errorf("channel 0: %v %v", mean[0], variance[0])
	}
	if mean[1] != 2 || variance[1] != 5 || mean[2] != 3 || variance[2] != 6 {
		t.Errorf("channels with n ≤ 1 changed: %v %v", mean, variance)
	}
}

// TestZeroAllocs: the kernels allocate nothing on a reused Plan.
func TestZeroAllocs(t *testing.T) {
	for _, lc := range []layoutCase{{"planes", Layout{N: 8, C: 16, S: 1024}}, {"S1", Layout{N: 256, C: 64, S: 1}}, {"ghost", ghostLayout(12, 8, 50, 5)}, {"split", Layout{N: 2, C: 2, S: 40000}}} {
		for _, th := range []int{1, 4, 0} {
			t.Run(fmt.Sprintf("%s/threads%d", lc.name, th), func(t *testing.T) {
				l := lc.l
				K := nsegOf(l) * l.C
				x, y := make([]float32, l.Len()), make([]float32, l.Len())
				for i := range x {
					x[i] = float32(i%13) * 0.25
				}
				ms, sums := make([]Moments, K), make([][2]float64, K)
				mean, a, b, c := make([]float64, K), make([]float64, K), make([]float64, K), make([]float64, K)
				p := NewPlan[float32](l, th)
				p.Stats(x, ms) // warm up (starts the shared workers)
				for name, f := range map[string]func(){
					"Stats":        func() { p.Stats(x, ms) },
					"BackwardSums": func() { p.BackwardSums(x, y, mean, sums) },
					"Apply":        func() { p.Apply(x, nil, y, mean, nil, b, c) },
					"Apply-dx":     func() { p.Apply(x, y, y, mean, a, b, c) },
				} {
					if n := testing.AllocsPerRun(20, f); n != 0 {
						t.Errorf("%s: %v allocations per call", name, n)
					}
				}
			})
		}
	}
}
