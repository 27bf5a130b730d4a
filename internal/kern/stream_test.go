package kern

import (
	"math"
	"math/rand"
	"testing"
)

// TestInnerStream checks the streaming element-wise kernels against the
// ordinary ones: the same values bit for bit, for every alignment of x, dy
// and out (heads and tails of every length), in place, and no write before
// or after out. Without the vector loops both sides are the portable loops.
func TestInnerStream(t *testing.T) {
	testInnerStream[float32](t)
	testInnerStream[float64](t)
}

func testInnerStream[T Float](t *testing.T) {
	r := rand.New(rand.NewSource(11))
	const pad = 24
	guardOK := func(buf []T, off, n int) bool {
		for i, v := range buf {
			if (i < off || i >= off+n) && !math.IsNaN(float64(v)) {
				return false
			}
		}
		return true
	}
	poisoned := func(n int) []T {
		buf := make([]T, n)
		for i := range buf {
			buf[i] = T(math.NaN())
		}
		return buf
	}
	for _, n := range append(innerLens(), 200, 1031) {
		for trial := range 4 {
			ox, og, oo := r.Intn(16), r.Intn(16), r.Intn(16)
			if trial == 0 {
				ox, og, oo = 0, 0, 0
			}
			xs := innerData[T](r, trial%3, n, ox)
			dys := innerData[T](r, 0, n, og)
			const m, a, b, c = 0.3, -0.75, 1.7, 0.25
			for _, two := range []bool{false, true} {
				want := make([]T, n)
				gbuf := poisoned(n + 2*pad)
				got := gbuf[pad+oo : pad+oo+n]
				if two {
					affine2(xs, dys, want, m, a, b, c, false)
					affine2(xs, dys, got, m, a, b, c, true)
				} else {
					affine(xs, want, m, b, c, false)
					affine(xs, got, m, b, c, true)
				}
				streamFence()
				if !guardOK(gbuf, pad+oo, n) {
					t.Fatalf("%T two=%v n %d offset %d: wrote outside out", xs, two, n, oo)
				}
				for i := range want {
					if math.Float64bits(float64(got[i])) != math.Float64bits(float64(want[i])) {
						t.Fatalf("%T two=%v n %d offsets %d %d %d: [%d] = %v, not streamed %v", xs, two, n, ox, og, oo, i, got[i], want[i])
					}
				}
				// In place: out is x (forward) or dy (backward).
				ibuf := poisoned(n + 2*pad)
				in := ibuf[pad+oo : pad+oo+n]
				if two {
					copy(in, dys)
					affine2(xs, in, in, m, a, b, c, true)
				} else {
					copy(in, xs)
					affine(in, in, m, b, c, true)
				}
				streamFence()
				if !guardOK(ibuf, pad+oo, n) {
					t.Fatalf("%T two=%v n %d: in place wrote outside out", xs, two, n)
				}
				for i := range want {
					if math.Float64bits(float64(in[i])) != math.Float64bits(float64(want[i])) {
						t.Fatalf("%T two=%v n %d in place: [%d] = %v, not streamed %v", xs, two, n, i, in[i], want[i])
					}
				}
			}
		}
	}
}

// TestApplyStreamed checks that a plan's Apply gives the same bits whether
// its plane passes stream or not, for layouts with short, long and S = 1
// planes, forward and backward.
func TestApplyStreamed(t *testing.T) {
	testApplyStreamed[float32](t)
	testApplyStreamed[float64](t)
}

func testApplyStreamed[T Float](t *testing.T) {
	r := rand.New(rand.NewSource(12))
	for _, l := range []Layout{
		{N: 3, C: 5, S: 7}, {N: 4, C: 3, S: 61}, {N: 2, C: 4, S: 3136}, {N: 64, C: 9, S: 1},
		ghostLayout(10, 3, 33, 4),
	} {
		p := NewPlan[T](l, 2)
		n := l.Len()
		k := l.Segments() * l.C
		x, dy := make([]T, n), make([]T, n)
		for i := range x {
			x[i] = T(r.NormFloat64()*3 + 1)
			dy[i] = T(r.NormFloat64())
		}
		coef := func() []float64 {
			v := make([]float64, k)
			for i := range v {
				v[i] = r.NormFloat64()
			}
			return v
		}
		mean, a, b, c := coef(), coef(), coef(), coef()
		for _, back := range []bool{false, true} {
			g := dy
			if !back {
				g = nil
			}
			want, got := make([]T, n), make([]T, n)
			old := setStreamMin(math.MaxInt)
			p.Apply(x, g, want, mean, a, b, c)
			setStreamMin(0)
			p.Apply(x, g, got, mean, a, b, c)
			setStreamMin(old)
			for i := range want {
				if math.Float64bits(float64(got[i])) != math.Float64bits(float64(want[i])) {
					t.Fatalf("%T %+v backward=%v: [%d] = %v streamed, %v not", x, l, back, i, got[i], want[i])
				}
			}
		}
	}
}

// setStreamMin sets streamMin and returns the old value. Not safe while
// kernels run.
func setStreamMin(n int) int {
	old := streamMin
	streamMin = n
	return old
}
