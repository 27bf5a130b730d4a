package kern

import (
	"fmt"
	"math"
	"math/rand"
	"testing"
)

// The fused BN + ReLU passes: the element-wise kernels in use (vector or
// portable) against the portable loops bit for bit, on special values; and
// ApplyReLU / BackwardSumsReLU against the unfused passes (bit for bit) and
// against naive float64 loops, on every layout of layouts().

// sameBits reports whether a and b are the same value: equal bits, or both
// NaN.
func sameBits[T Float](a, b T) bool {
	fa, fb := float64(a), float64(b)
	if math.IsNaN(fa) || math.IsNaN(fb) {
		return math.IsNaN(fa) && math.IsNaN(fb)
	}
	return math.Float64bits(fa) == math.Float64bits(fb)
}

func fusedData[T Float](r *rand.Rand, n, off int) []T {
	special := []float64{0, math.Copysign(0, -1), math.NaN(), math.Inf(1), math.Inf(-1), 1e-310, -1e-310, 1, -1}
	buf := make([]T, off+n+1)
	for i := range buf {
		buf[i] = T(r.NormFloat64())
		if r.Intn(5) == 0 {
			buf[i] = T(special[r.Intn(len(special))])
		}
	}
	return buf[off : off+n : off+n+1]
}

func TestFusedElementwise(t *testing.T) {
	testFusedElementwise[float32](t)
	testFusedElementwise[float64](t)
}

func testFusedElementwise[T Float](t *testing.T) {
	r := rand.New(rand.NewSource(11))
	for _, n := range innerLens() {
		for off := range 3 {
			x := fusedData[T](r, n, off)
			want := append([]T(nil), x...)
			reluGo(want)
			got := append(make([]T, 0, n+1), x...)
			got = append(got, 7)[:n]
			relu(got)
			if got[:n+1][n] != 7 {
				t.Fatalf("%T relu n=%d wrote past the end", got, n)
			}
			for i := range want {
				if !sameBits(got[i], want[i]) || (x[i] < 0 && got[i] != 0) || (!(x[i] < 0) && !sameBits(got[i], x[i])) {
					t.Fatalf("%T relu n=%d [%d]: %v → %v, want %v", got, n, i, x[i], got[i], want[i])
				}
			}
			dy, y := fusedData[T](r, n, off), fusedData[T](r, n, (off+1)%3)
			g := make([]T, n+1)
			g[n] = 7
			maskTo(dy, y, g[:n])
			if g[n] != 7 {
				t.Fatalf("%T mask n=%d wrote past the end", g, n)
			}
			for i := range n {
				want := T(0)
				if y[i] > 0 {
					want = dy[i]
				}
				if !sameBits(g[i], want) {
					t.Fatalf("%T mask n=%d [%d]: dy %v y %v → %v, want %v", g, n, i, dy[i], y[i], g[i], want)
				}
			}
		}
	}
}

func TestFusedPasses(t *testing.T) {
	for li, lc := range layouts() {
		for _, th := range threadCounts {
			t.Run(fmt.Sprintf("%s/threads%d", lc.name, th), func(t *testing.T) {
				testFusedPasses[float64](t, li, lc.l, th)
				testFusedPasses[float32](t, li, lc.l, th)
			})
		}
	}
}

func testFusedPasses[T Float](t *testing.T, li int, l Layout, th int) {
	r := rand.New(rand.NewSource(int64(500 + li)))
	L, K := l.Len(), nsegOf(l)*l.C
	x, z, dy := randData(r, L, 1, 2), randData(r, L, 0, 1), randData(r, L, 0, 1)
	mean, b, c := randData(r, K, 1, 1), randData(r, K, 1, 1), randData(r, K, 0, 1)
	ones := make([]float64, K)
	for i := range ones {
		ones[i] = 1
	}
	xt, zt, dyt := conv[T](x), conv[T](z), conv[T](dy)
	p := NewPlan[T](l, th)
	for _, withZ := range []bool{false, true} {
		var zz []T
		var a []float64
		if withZ {
			zz, a = zt, ones
		}
		// The unfused passes, then a ReLU.
		want := make([]T, L)
		p.Apply(xt, zz, want, mean, a, b, c)
		reluGo(want)
		got := conv[T](randData(r, L, math.NaN(), 0))
		p.ApplyReLU(xt, zz, got, mean, b, c)
		// Naive float64: relu((x−m)·b + c + z), rounded to T.
		for i := range got {
			if !sameBits(got[i], want[i]) {
				t.Fatalf("%T z=%v: ApplyReLU[%d] = %v, Apply+ReLU %v", got[i], withZ, i, got[i], want[i])
			}
		}
		checkNaiveReLU(t, x, z, withZ, mean, b, c, l, got)

		// Backward: masked by y = got.
		g := conv[T](randData(r, L, math.NaN(), 0))
		sums := make([][2]float64, K)
		p.BackwardSumsReLU(xt, dyt, got, g, mean, sums)
		gw := make([]T, L)
		maskGo(dyt, got, gw)
		ref := make([][2]float64, K)
		p.BackwardSums(xt, gw, mean, ref)
		for i := range gw {
			if !sameBits(g[i], gw[i]) {
				t.Fatalf("%T: masked g[%d] = %v, want %v", g[i], i, g[i], gw[i])
			}
		}
		for i := range ref {
			if sums[i] != ref[i] {
				t.Fatalf("%T: BackwardSumsReLU[%d] = %v, BackwardSums of the masked dy %v", g[0], i, sums[i], ref[i])
			}
		}
		// And against naive float64 sums of the mask.
		naive := naiveSums(fromT(xt), fromT(gw), mean, l)
		for i := range naive {
			for j := range 2 {
				if math.Abs(sums[i][j]-naive[i][j]) > 1e-12*float64(l.N*l.S)+1e-12*math.Abs(naive[i][j]) {
					t.Fatalf("%T: sums[%d][%d] = %v, naive %v", g[0], i, j, sums[i][j], naive[i][j])
				}
			}
		}
	}
}

// checkNaiveReLU checks got against relu((x−m)·b + c [+ z]) computed by
// a plain loop in float64 from the T-rounded inputs.
func checkNaiveReLU[T Float](t *testing.T, x, z []float64, withZ bool, mean, b, c []float64, l Layout, got []T) {
	t.Helper()
	tol := 1e-14
	if sizeOf32[T]() {
		tol = 1e-7
	}
	for n := range l.N {
		s := segOf(l, n)
		for ch := range l.C {
			k := s*l.C + ch
			for i := range l.S {
				e := (n*l.C+ch)*l.S + i
				v := (float64(T(x[e]))-mean[k])*b[k] + c[k]
				if withZ {
					v += float64(T(z[e]))
				}
				v = max(v, 0)
				if math.Abs(float64(got[e])-v) > tol*(1+math.Abs(v)) {
					t.Fatalf("%T: out[%d] = %v, naive relu %v", got[e], e, got[e], v)
				}
			}
		}
	}
}

func sizeOf32[T Float]() bool {
	var z T
	_, ok := any(z).(float32)
	return ok
}

func conv[T Float](v []float64) []T {
	o := make([]T, len(v))
	for i := range v {
		o[i] = T(v[i])
	}
	return o
}

func fromT[T Float](v []T) []float64 {
	o := make([]float64, len(v))
	for i := range v {
		o[i] = float64(v[i])
	}
	return o
}

// TestFusedZeroAllocs: the fused passes on a reused Plan allocate nothing
// (after the first ApplyReLU with z, which sizes its coefficient a = 1).
func TestFusedZeroAllocs(t *testing.T) {
	l := Layout{N: 4, C: 8, S: 300}
	p := NewPlan[float32](l, 0)
	x, z, y, g := make([]float32, l.Len()), make([]float32, l.Len()), make([]float32, l.Len()), make([]float32, l.Len())
	k := make([]float64, l.C)
	sums := make([][2]float64, l.C)
	p.ApplyReLU(x, z, y, k, k, k)
	if n := testing.AllocsPerRun(20, func() {
		p.ApplyReLU(x, nil, y, k, k, k)
		p.ApplyReLU(x, z, y, k, k, k)
		p.BackwardSumsReLU(x, z, y, g, k, sums)
	}); n != 0 {
		t.Fatalf("%v allocations per run", n)
	}
}
