package kern

// Tests of the inner loops: the ones the block loops use (the AVX-512
// assembly on an amd64 CPU that has it) against the portable ones of
// inner_go.go, which are always built. Elsewhere, or with -tags purego,
// both sides are the portable loops.

import (
	"math"
	"math/rand"
	"testing"
)

// innerLens are the lengths tried: every length up to 70 (all tails of the
// 32-, 16-, 8-wide loops) and a few large ones.
func innerLens() []int {
	var ls []int
	for n := 0; n <= 70; n++ {
		ls = append(ls, n)
	}
	return append(ls, 127, 128, 129, 1000, 4099, 65536+13)
}

// innerData returns a slice of n values of kind k at offset off of a larger
// array (so that it starts unaligned), with a guard element after it.
func innerData[T Float](r *rand.Rand, kind, n, off int) []T {
	buf := make([]T, off+n+1)
	for i := range buf {
		switch kind {
		case 0:
			buf[i] = T(r.NormFloat64())
		case 1:
			buf[i] = T(1e4 + r.NormFloat64())
		default:
			buf[i] = T(r.Float64()*2e3 - 1e3)
		}
	}
	return buf[off : off+n : off+n+1]
}

// innerClose reports whether got is within the rounding of a float64
// accumulation of n terms of total magnitude mag of want.
func innerClose(got, want float64, n int, mag float64) bool {
	tol := float64(n/4+16) * 0x1p-52 * mag
	return math.Abs(got-want) <= tol
}

func TestInnerSIMDName(t *testing.T) {
	t.Logf("inner loops: %s", simdPath())
}

func TestInnerPlane(t *testing.T) {
	testInnerPlane[float32](t)
	testInnerPlane[float64](t)
}

func testInnerPlane[T Float](t *testing.T) {
	r := rand.New(rand.NewSource(7))
	for kind := range 3 {
		for _, n := range innerLens() {
			off := r.Intn(8)
			xs := innerData[T](r, kind, n, off)
			dys := innerData[T](r, 0, n, r.Intn(8))
			var m, ax, ad, axd float64
			for i, v := range xs {
				m += float64(v)
				ax += math.Abs(float64(v))
				ad += math.Abs(float64(dys[i]))
			}
			if n > 0 {
				m /= float64(n)
			}
			m += 0.123 // not the exact mean
			var ad2 float64
			for i, v := range xs {
				d := math.Abs(float64(v) - m)
				ad2 += d * d
				axd += math.Abs(float64(dys[i])) * d
			}
			ad1 := ax + float64(n)*math.Abs(m)

			// The vector sum adds float32 data in pairs in float32 first:
			// within 2⁻²⁴·Σ|x| more (it only feeds the corrected first-pass
			// mean; TestInnerAccuracy checks the moments).
			sumTol := ax
			if _, ok := any(xs).([]float32); ok {
				sumTol = ax * (1 + 0x1p-24/(float64(n/4+16)*0x1p-52))
			}
			if got, want := sum(xs), sumGo(xs); !innerClose(got, want, n, sumTol) {
				t.Errorf("%T kind %d n %d: sum %v, portable %v", xs, kind, n, got, want)
			}
			sq, lin := dev(xs, m)
			sqw, linw := devGo(xs, m)
			if !innerClose(sq, sqw, n, ad2) || !innerClose(lin, linw, n, ad1) {
				t.Errorf("%T kind %d n %d: dev %v %v, portable %v %v", xs, kind, n, sq, lin, sqw, linw)
			}
			a, b := dot(xs, dys, m)
			aw, bw := dotGo(xs, dys, m)
			if !innerClose(a, aw, n, ad) || !innerClose(b, bw, n, axd) {
				t.Errorf("%T kind %d n %d: dot %v %v, portable %v %v", xs, kind, n, a, b, aw, bw)
			}

			// Element-wise kernels: each output is one rounding of a few
			// float64 operations, so both paths agree to an ulp of T.
			const sc, sh, ga = 0.37, -1.25, 0.5
			out := innerData[T](r, 0, n, r.Intn(8))
			guard := innerGuard(out)
			want := make([]T, n)
			affine(xs, out, m, sc, sh, false)
			affineGo(xs, want, m, sc, sh)
			innerCheckElems(t, "affine", xs, out, want, guard)
			affine2(xs, dys, out, m, ga, sc, sh, false)
			affine2Go(xs, dys, want, m, ga, sc, sh)
			innerCheckElems(t, "affine2", xs, out, want, guard)
			// In place, as Apply allows.
			in := innerData[T](r, 0, n, r.Intn(8))
			guard = innerGuard(in)
			copy(in, xs)
			affine(in, in, m, sc, sh, false)
			affineGo(xs, want, m, sc, sh)
			innerCheckElems(t, "affine in place", xs, in, want, guard)
		}
	}
}

// innerCheckElems compares got with want and checks that the element after
// got still holds guard.
func innerCheckElems[T Float](t *testing.T, name string, xs, got, want []T, guard T) {
	t.Helper()
	if innerGuard(got) != guard {
		t.Fatalf("%s %T n %d: wrote past the end", name, got, len(got))
	}
	eps := 0x1p-50
	if _, ok := any(got[:0]).([]float32); ok {
		eps = 0x1p-22
	}
	for i := range got {
		w := float64(want[i])
		if math.Abs(float64(got[i])-w) > eps*math.Max(math.Abs(w), 1) {
			t.Fatalf("%s %T n %d: [%d] = %v, portable %v (x %v)", name, got, len(got), i, got[i], want[i], xs[i])
		}
	}
}

// innerGuard returns the element after s (innerData leaves one), which no
// kernel may write.
func innerGuard[T Float](s []T) T { return s[:cap(s)][len(s)] }

// TestInnerRows checks the S = 1 kernels: bit for bit equal to the portable
// ones, and no writes outside the w columns of each row.
func TestInnerRows(t *testing.T) {
	testInnerRows[float32](t)
	testInnerRows[float64](t)
}

func testInnerRows[T Float](t *testing.T) {
	r := rand.New(rand.NewSource(11))
	widths := []int{0, 1, 2, 7, 8, 9, 15, 16, 17, 31, 32, 33, 40, 63, 64, 65, 70, 100, 257}
	for _, w := range widths {
		for _, rows := range []int{1, 2, 3, 5, 33} {
			ld := w + r.Intn(5)
			kind := r.Intn(3)
			n := 0
			if rows > 0 {
				n = (rows-1)*ld + w
			}
			x := innerData[T](r, kind, n, r.Intn(8))
			dy := innerData[T](r, 0, n, r.Intn(8))
			cnt := float64(rows)
			got, want := make([]Moments, w), make([]Moments, w)
			rowStats(x, ld, rows, got, cnt)
			rowStatsGo(x, ld, rows, want, cnt)
			for k := range want {
				if got[k] != want[k] {
					t.Fatalf("%T w %d rows %d: rowStats[%d] = %+v, portable %+v", x, w, rows, k, got[k], want[k])
				}
			}
			mean, a, b, c := make([]float64, w), make([]float64, w), make([]float64, w), make([]float64, w)
			for k := range mean {
				mean[k], a[k], b[k], c[k] = want[k].Mean+0.01, r.NormFloat64(), r.NormFloat64(), r.NormFloat64()
			}
			rowDot(x, dy, ld, rows, mean, got)
			rowDotGo(x, dy, ld, rows, mean, want)
			for k := range want {
				if got[k] != want[k] {
					t.Fatalf("%T w %d rows %d: rowDot[%d] = %+v, portable %+v", x, w, rows, k, got[k], want[k])
				}
			}
			for pass := range 2 {
				o1 := innerData[T](r, 0, n, 3)
				o2 := append([]T(nil), o1[:n+1]...)[: n : n+1]
				if pass == 0 {
					rowAffine(x, o1, ld, rows, mean, b, c)
					rowAffineGo(x, o2, ld, rows, mean, b, c)
				} else {
					rowAffine2(x, dy, o1, ld, rows, mean, a, b, c)
					rowAffine2Go(x, dy, o2, ld, rows, mean, a, b, c)
				}
				for i := range n + 1 {
					if g, v := o1[:n+1][i], o2[:n+1][i]; g != v && !(g != g && v != v) {
						t.Fatalf("%T w %d rows %d pass %d: [%d] = %v, portable %v", x, w, rows, pass, i, g, v)
					}
				}
				// In place (out = x for pass 0, out = dy for pass 1), as
				// Apply allows: same result where written, x or dy elsewhere.
				in := append([]T(nil), x...)
				if pass == 0 {
					rowAffine(in, in, ld, rows, mean, b, c)
				} else {
					in = append(in[:0], dy...)
					rowAffine2(x, in, in, ld, rows, mean, a, b, c)
				}
				for i := range n {
					v := o2[i]
					if i%ld >= w {
						v = x[i]
						if pass == 1 {
							v = dy[i]
						}
					}
					if in[i] != v && !(in[i] != in[i] && v != v) {
						t.Fatalf("%T w %d rows %d pass %d in place: [%d] = %v, want %v", x, w, rows, pass, i, in[i], v)
					}
				}
			}
		}
	}
}

// TestInnerPlanPaths runs whole plans with the vector loops on and off.
func TestInnerPlanPaths(t *testing.T) {
	if !setSIMD(true) {
		t.Skipf("no vector loops (%s)", simdPath())
	}
	defer setSIMD(true)
	testInnerPlanPaths[float32](t)
	testInnerPlanPaths[float64](t)
}

func testInnerPlanPaths[T Float](t *testing.T) {
	r := rand.New(rand.NewSource(3))
	for _, l := range []Layout{
		{N: 4, C: 3, S: 1000}, {N: 8, C: 5, S: 17}, {N: 64, C: 70, S: 1}, {N: 3, C: 2, S: 5},
		{N: 9, C: 4, S: 33, Seg: []int{0, 1, 1, 0, 2, 2, 0, 1, 2}, NSeg: 3},
		{N: 2, C: 3, S: 50000},
	} {
		x := innerData[T](r, 1, l.Len(), 1)
		dy := innerData[T](r, 0, l.Len(), 2)
		K := l.Segments() * l.C
		var res [2]struct {
			ms   []Moments
			sums [][2]float64
			y    []T
			dx   []T
		}
		mean, a, b, c := make([]float64, K), make([]float64, K), make([]float64, K), make([]float64, K)
		for k := range K {
			a[k], b[k], c[k] = r.NormFloat64(), r.NormFloat64(), r.NormFloat64()
		}
		for i, on := range []bool{false, true} {
			setSIMD(on)
			p := NewPlan[T](l, 2)
			res[i].ms = make([]Moments, K)
			res[i].sums = make([][2]float64, K)
			res[i].y, res[i].dx = make([]T, l.Len()), make([]T, l.Len())
			p.Stats(x, res[i].ms)
			if i == 0 {
				for k := range K {
					mean[k] = res[0].ms[k].Mean
				}
			}
			p.Apply(x, nil, res[i].y, mean, nil, b, c)
			p.BackwardSums(x, dy, mean, res[i].sums)
			p.Apply(x, dy, res[i].dx, mean, a, b, c)
		}
		for k := range K {
			g, w := res[1].ms[k], res[0].ms[k]
			if g.N != w.N || math.Abs(g.Mean-w.Mean) > 1e-13*math.Abs(w.Mean) || math.Abs(g.M2-w.M2) > 1e-10*w.M2 {
				t.Errorf("%T %+v: moments[%d] %+v, portable %+v", x, l, k, g, w)
			}
			gs, ws := res[1].sums[k], res[0].sums[k]
			if math.Abs(gs[0]-ws[0]) > 1e-10*(1+math.Abs(ws[0])) || math.Abs(gs[1]-ws[1]) > 1e-10*(1+math.Abs(ws[1])) {
				t.Errorf("%T %+v: sums[%d] %v, portable %v", x, l, k, gs, ws)
			}
		}
		if l.S == 1 {
			for k := range K {
				if res[1].ms[k] != res[0].ms[k] || res[1].sums[k] != res[0].sums[k] {
					t.Errorf("%T %+v: S = 1 paths differ at %d", x, l, k)
				}
			}
		}
		eps := 0x1p-50
		if _, ok := any(x[:0]).([]float32); ok {
			eps = 0x1p-22
		}
		for i := range res[0].y {
			for _, pr := range [][2]T{{res[1].y[i], res[0].y[i]}, {res[1].dx[i], res[0].dx[i]}} {
				if math.Abs(float64(pr[0]-pr[1])) > eps*math.Max(1, math.Abs(float64(pr[1]))) {
					t.Fatalf("%T %+v: element %d: %v, portable %v", x, l, i, pr[0], pr[1])
				}
			}
		}
	}
}

// TestInnerAccuracy checks, on whichever loops are in use, float32 data
// with a large mean (x = 1e4 + N(0,1)): the variance to 1e-7 relative of the
// exact one (computed from the same float32 values in float64 by the
// textbook two-pass formula), and y = (x−μ)·scale + shift to 1e-6 relative.
func TestInnerAccuracy(t *testing.T) {
	r := rand.New(rand.NewSource(5))
	for _, l := range []Layout{{N: 32, C: 4, S: 1024}, {N: 4096, C: 3, S: 1}, {N: 16, C: 3, S: 7}} {
		x := innerData[float32](r, 1, l.Len(), 0)
		x64 := make([]float64, len(x))
		for i, v := range x {
			x64[i] = float64(v)
		}
		want := naiveMomentsInner(x64, l)
		got := make([]Moments, l.C)
		p := NewPlan[float32](l, 2)
		p.Stats(x, got)
		mean, inv, shift := make([]float64, l.C), make([]float64, l.C), make([]float64, l.C)
		for c := range got {
			if rel := math.Abs(got[c].Var()-want[c].Var()) / want[c].Var(); rel > 1e-7 {
				t.Errorf("%+v: channel %d: var %v, exact %v (rel %.2g)", l, c, got[c].Var(), want[c].Var(), rel)
			}
			// In fact both moments keep float64 accuracy.
			if rel := math.Abs(got[c].Mean-want[c].Mean) / want[c].Mean; rel > 1e-14 {
				t.Errorf("%+v: channel %d: mean %v, exact %v (rel %.2g)", l, c, got[c].Mean, want[c].Mean, rel)
			}
			if rel := math.Abs(got[c].M2-want[c].M2) / want[c].M2; rel > 1e-11 {
				t.Errorf("%+v: channel %d: M2 %v, exact %v (rel %.2g)", l, c, got[c].M2, want[c].M2, rel)
			}
			mean[c], inv[c], shift[c] = got[c].Mean, InvStd(got[c], 0), 0.5
		}
		y := make([]float32, len(x))
		p.Apply(x, nil, y, mean, nil, inv, shift)
		for i, v := range x64 {
			c := (i / l.S) % l.C
			w := (v-want[c].Mean)/math.Sqrt(want[c].Var()) + 0.5
			if rel := math.Abs(float64(y[i])-w) / math.Max(math.Abs(w), 1); rel > 1e-6 {
				t.Fatalf("%+v: y[%d] = %v, exact %v (rel %.2g)", l, i, y[i], w, rel)
			}
		}
	}
}

// naiveMomentsInner is the plain two-pass computation in float64 for one
// segment.
func naiveMomentsInner(x []float64, l Layout) []Moments {
	out := make([]Moments, l.C)
	for c := range l.C {
		var s, n float64
		for i := range l.N {
			for _, v := range x[(i*l.C+c)*l.S : (i*l.C+c+1)*l.S] {
				s += v
				n++
			}
		}
		m := s / n
		var q float64
		for i := range l.N {
			for _, v := range x[(i*l.C+c)*l.S : (i*l.C+c+1)*l.S] {
				q += (v - m) * (v - m)
			}
		}
		out[c] = Moments{N: n, Mean: m, M2: q}
	}
	return out
}

// TestInnerNoAllocs checks that the kernels allocate nothing per call.
func TestInnerNoAllocs(t *testing.T) {
	for _, l := range []Layout{{N: 8, C: 16, S: 200}, {N: 64, C: 40, S: 1}, {N: 8, C: 16, S: 5}} {
		x := make([]float32, l.Len())
		y := make([]float32, l.Len())
		ms := make([]Moments, l.C)
		v := make([]float64, l.C)
		sums := make([][2]float64, l.C)
		p := NewPlan[float32](l, 2)
		n := testing.AllocsPerRun(20, func() {
			p.Stats(x, ms)
			p.Apply(x, nil, y, v, nil, v, v)
			p.BackwardSums(x, y, v, sums)
			p.Apply(x, y, y, v, v, v, v)
		})
		if n != 0 {
			t.Errorf("%+v: %v allocations per call", l, n)
		}
	}
}
