//go:build goexperiment.simd && amd64

package kern

import (
	"simd/archsimd"
	"unsafe"
)

// The AVX-512 inner loops (GOEXPERIMENT=simd). Each computes what its
// portable namesake in inner_go.go computes, in float64 lanes: float32 data
// is widened to float64 on load (VCVTPS2PD) and rounded once on store.
//
// The plane kernels (sum, dev, dot) keep two or four vectors of eight
// float64 partial sums per sum (16 or 32 interleaved accumulators, fused
// multiply-adds) and reduce them in a fixed tree: the result depends only
// on the data and its length, not on alignment or threads, but differs
// from the portable path in the last bits (sum of float32 data: see
// sumAVX512). The row kernels (S = 1) give lane k to channel k and accumulate
// the rows in order with unfused operations, exactly as the portable loop
// does: they match it bit for bit.
//
// The callers (inner_amd64.go) check the lengths; the loops then address
// the data through a base pointer, without bounds checks, and never outside
// the slices. A tail of r < 8 elements is done with the vector of the last
// eight elements, which overlaps elements already done: their lanes are
// zeroed (sums) or keep the value already stored (element-wise kernels).
//
// Every kernel ends with ClearAVXUpperBits (VZEROUPPER): scalar SSE code run
// after 512-bit code with dirty upper halves was measured ~3× slower.

type vec = archsimd.Float64x8

// at returns the 8 elements at p[i:] in float64 lanes.
func at[T Float](p unsafe.Pointer, i int) vec {
	if is32[T]() {
		return archsimd.LoadFloat32x8((*[8]float32)(unsafe.Add(p, 4*i))).ConvertToFloat64()
	}
	return archsimd.LoadFloat64x8((*[8]float64)(unsafe.Add(p, 8*i)))
}

// put stores v into p[i:i+8], rounded to T.
func put[T Float](v vec, p unsafe.Pointer, i int) {
	if is32[T]() {
		v.ConvertToFloat32().Store((*[8]float32)(unsafe.Add(p, 4*i)))
		return
	}
	v.Store((*[8]float64)(unsafe.Add(p, 8*i)))
}

// at64 returns p[i:i+8] of float64 data.
func at64(p unsafe.Pointer, i int) vec {
	return archsimd.LoadFloat64x8((*[8]float64)(unsafe.Add(p, 8*i)))
}

func ptr[T any](s []T) unsafe.Pointer { return unsafe.Pointer(unsafe.SliceData(s)) }

// top returns the mask of the last r (1 ≤ r ≤ 8) lanes.
func top(r int) archsimd.Mask64x8 {
	return archsimd.Mask64x8FromBits(uint8(0xff) << (8 - r))
}

// hsum returns the sum of the lanes of v: ((v0+v4)+(v2+v6))+((v1+v5)+(v3+v7)).
func hsum(v vec) float64 {
	h := v.GetLo().Add(v.GetHi())
	q := h.GetLo().Add(h.GetHi())
	return q.GetElem(0) + q.GetElem(1)
}

// The plane kernels require len(xs) ≥ 8, and len(dys), len(out) ≥ len(xs).

// sumAVX512 adds float32 data in pairs in float32 before widening (one
// conversion per 16 elements instead of two; the conversions bound these
// loops). Each pair sum is rounded once, |error| ≤ 2⁻²⁴·|x_i + x_j|, so the
// result is within 2⁻²⁴·Σ|x| (plus float64 rounding) of Σx. sum serves only
// the first-pass mean of the corrected two-pass algorithm: the second pass,
// in float64, computes Σ(x−m)² and Σ(x−m) around that m and the correction
// (mean = m + Σ(x−m)/n, M2 = Σ(x−m)² − (Σ(x−m))²/n) is exact for any m, so
// the moments keep float64 accuracy (simd_test.go checks it).
func sumAVX512[T Float](xs []T) float64 {
	n, p := len(xs), ptr(xs)
	var a0, a1, a2, a3 vec
	i := 0
	if is32[T]() {
		for ; i+32 <= n; i += 32 {
			a0 = a0.Add(pair32(p, i))
			a1 = a1.Add(pair32(p, i+16))
		}
		if i+16 <= n {
			a2 = a2.Add(pair32(p, i))
			i += 16
		}
	} else {
		for ; i+32 <= n; i += 32 {
			a0 = a0.Add(at[T](p, i))
			a1 = a1.Add(at[T](p, i+8))
			a2 = a2.Add(at[T](p, i+16))
			a3 = a3.Add(at[T](p, i+24))
		}
		if i+16 <= n {
			a0 = a0.Add(at[T](p, i))
			a1 = a1.Add(at[T](p, i+8))
			i += 16
		}
	}
	if i+8 <= n {
		a2 = a2.Add(at[T](p, i))
		i += 8
	}
	if r := n - i; r > 0 {
		a3 = a3.Add(at[T](p, n-8).Masked(top(r)))
	}
	s := hsum(a0.Add(a1).Add(a2.Add(a3)))
	archsimd.ClearAVXUpperBits()
	return s
}

// pair32 returns p[i:i+8] + p[i+8:i+16] of float32 data, added in float32,
// in float64 lanes.
func pair32(p unsafe.Pointer, i int) vec {
	a := archsimd.LoadFloat32x8((*[8]float32)(unsafe.Add(p, 4*i)))
	b := archsimd.LoadFloat32x8((*[8]float32)(unsafe.Add(p, 4*i+32)))
	return a.Add(b).ConvertToFloat64()
}

func devAVX512[T Float](xs []T, m float64) (sq, lin float64) {
	n, p := len(xs), ptr(xs)
	mv := archsimd.BroadcastFloat64x8(m)
	var q0, q1, q2, q3, l0, l1, l2, l3 vec
	i := 0
	for ; i+32 <= n; i += 32 {
		d0 := at[T](p, i).Sub(mv)
		q0 = d0.MulAdd(d0, q0)
		l0 = l0.Add(d0)
		d1 := at[T](p, i+8).Sub(mv)
		q1 = d1.MulAdd(d1, q1)
		l1 = l1.Add(d1)
		d2 := at[T](p, i+16).Sub(mv)
		q2 = d2.MulAdd(d2, q2)
		l2 = l2.Add(d2)
		d3 := at[T](p, i+24).Sub(mv)
		q3 = d3.MulAdd(d3, q3)
		l3 = l3.Add(d3)
	}
	if i+16 <= n {
		d0 := at[T](p, i).Sub(mv)
		q0 = d0.MulAdd(d0, q0)
		l0 = l0.Add(d0)
		d1 := at[T](p, i+8).Sub(mv)
		q1 = d1.MulAdd(d1, q1)
		l1 = l1.Add(d1)
		i += 16
	}
	if i+8 <= n {
		d := at[T](p, i).Sub(mv)
		q2 = d.MulAdd(d, q2)
		l2 = l2.Add(d)
		i += 8
	}
	if r := n - i; r > 0 {
		d := at[T](p, n-8).Sub(mv).Masked(top(r))
		q3 = d.MulAdd(d, q3)
		l3 = l3.Add(d)
	}
	sq = hsum(q0.Add(q1).Add(q2.Add(q3)))
	lin = hsum(l0.Add(l1).Add(l2.Add(l3)))
	archsimd.ClearAVXUpperBits()
	return sq, lin
}

// dotAVX512 keeps two pairs of accumulators: four would need more than the
// fifteen vector registers Go allocates, and a spilled accumulator costs a
// store-to-load round trip per iteration.
func dotAVX512[T Float](xs, dys []T, m float64) (sdy, sdyx float64) {
	n, px, pg := len(xs), ptr(xs), ptr(dys)
	mv := archsimd.BroadcastFloat64x8(m)
	var a0, a1, b0, b1 vec
	i := 0
	for ; i+16 <= n; i += 16 {
		g0 := at[T](pg, i)
		a0 = a0.Add(g0)
		b0 = g0.MulAdd(at[T](px, i).Sub(mv), b0)
		g1 := at[T](pg, i+8)
		a1 = a1.Add(g1)
		b1 = g1.MulAdd(at[T](px, i+8).Sub(mv), b1)
	}
	if i+8 <= n {
		g := at[T](pg, i)
		a0 = a0.Add(g)
		b0 = g.MulAdd(at[T](px, i).Sub(mv), b0)
		i += 8
	}
	if r := n - i; r > 0 {
		g := at[T](pg, n-8).Masked(top(r))
		a1 = a1.Add(g)
		b1 = g.MulAdd(at[T](px, n-8).Sub(mv).Masked(top(r)), b1)
	}
	sdy = hsum(a0.Add(a1))
	sdyx = hsum(b0.Add(b1))
	archsimd.ClearAVXUpperBits()
	return sdy, sdyx
}

func affineAVX512[T Float](xs, out []T, m, b, c float64) {
	n, px, py := len(xs), ptr(xs), ptr(out)
	mv := archsimd.BroadcastFloat64x8(m)
	bv := archsimd.BroadcastFloat64x8(b)
	cv := archsimd.BroadcastFloat64x8(c)
	i := 0
	for ; i+32 <= n; i += 32 {
		put[T](at[T](px, i).Sub(mv).MulAdd(bv, cv), py, i)
		put[T](at[T](px, i+8).Sub(mv).MulAdd(bv, cv), py, i+8)
		put[T](at[T](px, i+16).Sub(mv).MulAdd(bv, cv), py, i+16)
		put[T](at[T](px, i+24).Sub(mv).MulAdd(bv, cv), py, i+24)
	}
	for ; i+8 <= n; i += 8 {
		put[T](at[T](px, i).Sub(mv).MulAdd(bv, cv), py, i)
	}
	if r := n - i; r > 0 {
		// out may alias xs: the overlapped lanes keep what was stored.
		y := at[T](px, n-8).Sub(mv).MulAdd(bv, cv)
		put[T](y.Merge(at[T](py, n-8), top(r)), py, n-8)
	}
	archsimd.ClearAVXUpperBits()
}

func affine2AVX512[T Float](xs, dys, out []T, m, a, b, c float64) {
	n, px, pg, py := len(xs), ptr(xs), ptr(dys), ptr(out)
	mv := archsimd.BroadcastFloat64x8(m)
	av := archsimd.BroadcastFloat64x8(a)
	bv := archsimd.BroadcastFloat64x8(b)
	cv := archsimd.BroadcastFloat64x8(c)
	i := 0
	for ; i+32 <= n; i += 32 {
		put[T](at[T](pg, i).MulAdd(av, at[T](px, i).Sub(mv).MulAdd(bv, cv)), py, i)
		put[T](at[T](pg, i+8).MulAdd(av, at[T](px, i+8).Sub(mv).MulAdd(bv, cv)), py, i+8)
		put[T](at[T](pg, i+16).MulAdd(av, at[T](px, i+16).Sub(mv).MulAdd(bv, cv)), py, i+16)
		put[T](at[T](pg, i+24).MulAdd(av, at[T](px, i+24).Sub(mv).MulAdd(bv, cv)), py, i+24)
	}
	for ; i+8 <= n; i += 8 {
		put[T](at[T](pg, i).MulAdd(av, at[T](px, i).Sub(mv).MulAdd(bv, cv)), py, i)
	}
	if r := n - i; r > 0 {
		y := at[T](pg, n-8).MulAdd(av, at[T](px, n-8).Sub(mv).MulAdd(bv, cv))
		put[T](y.Merge(at[T](py, n-8), top(r)), py, n-8)
	}
	archsimd.ClearAVXUpperBits()
}

// The row kernels require w ≥ 8 channels, rows ≥ 1 and the slices checked
// by their callers. They work on tiles of 16 (sums) or 32 (element-wise)
// channels over all rows, then of 8, and end with the tile of the last 8
// channels when w is not a multiple of 8 (its first lanes redo channels
// already done, with the same result, and are not written).

func rowStatsAVX512[T Float](x []T, ld, rows int, part []Moments, cnt float64) {
	w, px := len(part), ptr(x)
	cv := archsimd.BroadcastFloat64x8(cnt)
	var tm, tq [16]float64
	k := 0
	for ; k+16 <= w; k += 16 {
		var s0, s1 vec
		for o := k; o < rows*ld; o += ld {
			s0 = s0.Add(at[T](px, o))
			s1 = s1.Add(at[T](px, o+8))
		}
		m0, m1 := s0.Div(cv), s1.Div(cv)
		var q0, q1, l0, l1 vec
		for o := k; o < rows*ld; o += ld {
			d0 := at[T](px, o).Sub(m0)
			q0 = q0.Add(d0.Mul(d0))
			l0 = l0.Add(d0)
			d1 := at[T](px, o+8).Sub(m1)
			q1 = q1.Add(d1.Mul(d1))
			l1 = l1.Add(d1)
		}
		m0.Add(l0.Div(cv)).StoreSlice(tm[0:])
		m1.Add(l1.Div(cv)).StoreSlice(tm[8:])
		q0.Sub(l0.Mul(l0).Div(cv)).StoreSlice(tq[0:])
		q1.Sub(l1.Mul(l1).Div(cv)).StoreSlice(tq[8:])
		p := part[k : k+16]
		for i := range p {
			p[i] = Moments{N: cnt, Mean: tm[i], M2: tq[i]}
		}
	}
	for k < w {
		k0 := min(k, w-8) // the last tile may overlap the one before
		var s vec
		for o := k0; o < rows*ld; o += ld {
			s = s.Add(at[T](px, o))
		}
		m := s.Div(cv)
		var q, l vec
		for o := k0; o < rows*ld; o += ld {
			d := at[T](px, o).Sub(m)
			q = q.Add(d.Mul(d))
			l = l.Add(d)
		}
		m.Add(l.Div(cv)).StoreSlice(tm[0:])
		q.Sub(l.Mul(l).Div(cv)).StoreSlice(tq[0:])
		for i := k - k0; i < 8; i++ {
			part[k0+i] = Moments{N: cnt, Mean: tm[i], M2: tq[i]}
		}
		k = k0 + 8
	}
	archsimd.ClearAVXUpperBits()
}

func rowDotAVX512[T Float](x, dy []T, ld, rows int, mean []float64, part []Moments) {
	w, px, pg, pm := len(part), ptr(x), ptr(dy), ptr(mean)
	var ta, tb [16]float64
	k := 0
	for ; k+16 <= w; k += 16 {
		m0, m1 := at64(pm, k), at64(pm, k+8)
		var a0, a1, b0, b1 vec
		for o := k; o < rows*ld; o += ld {
			g0 := at[T](pg, o)
			a0 = a0.Add(g0)
			b0 = b0.Add(g0.Mul(at[T](px, o).Sub(m0)))
			g1 := at[T](pg, o+8)
			a1 = a1.Add(g1)
			b1 = b1.Add(g1.Mul(at[T](px, o+8).Sub(m1)))
		}
		a0.StoreSlice(ta[0:])
		a1.StoreSlice(ta[8:])
		b0.StoreSlice(tb[0:])
		b1.StoreSlice(tb[8:])
		p := part[k : k+16]
		for i := range p {
			p[i] = Moments{Mean: ta[i], M2: tb[i]}
		}
	}
	for k < w {
		k0 := min(k, w-8)
		m := at64(pm, k0)
		var a, b vec
		for o := k0; o < rows*ld; o += ld {
			g := at[T](pg, o)
			a = a.Add(g)
			b = b.Add(g.Mul(at[T](px, o).Sub(m)))
		}
		a.StoreSlice(ta[0:])
		b.StoreSlice(tb[0:])
		for i := k - k0; i < 8; i++ {
			part[k0+i] = Moments{Mean: ta[i], M2: tb[i]}
		}
		k = k0 + 8
	}
	archsimd.ClearAVXUpperBits()
}

func rowAffineAVX512[T Float](x, out []T, ld, rows int, m, b, c []float64) {
	w, px, py := len(m), ptr(x), ptr(out)
	pm, pb, pc := ptr(m), ptr(b), ptr(c)
	k := 0
	for ; k+32 <= w; k += 32 {
		m0, m1, m2, m3 := at64(pm, k), at64(pm, k+8), at64(pm, k+16), at64(pm, k+24)
		b0, b1, b2, b3 := at64(pb, k), at64(pb, k+8), at64(pb, k+16), at64(pb, k+24)
		c0, c1, c2, c3 := at64(pc, k), at64(pc, k+8), at64(pc, k+16), at64(pc, k+24)
		for o := k; o < rows*ld; o += ld {
			put[T](at[T](px, o).Sub(m0).Mul(b0).Add(c0), py, o)
			put[T](at[T](px, o+8).Sub(m1).Mul(b1).Add(c1), py, o+8)
			put[T](at[T](px, o+16).Sub(m2).Mul(b2).Add(c2), py, o+16)
			put[T](at[T](px, o+24).Sub(m3).Mul(b3).Add(c3), py, o+24)
		}
	}
	for k < w {
		k0 := min(k, w-8)
		keep := top(8 - (k - k0)) // out may alias x: overlapped lanes keep what was stored
		mv, bv, cv := at64(pm, k0), at64(pb, k0), at64(pc, k0)
		for o := k0; o < rows*ld; o += ld {
			y := at[T](px, o).Sub(mv).Mul(bv).Add(cv)
			put[T](y.Merge(at[T](py, o), keep), py, o)
		}
		k = k0 + 8
	}
	archsimd.ClearAVXUpperBits()
}

func rowAffine2AVX512[T Float](x, dy, out []T, ld, rows int, m, a, b, c []float64) {
	w, px, pg, py := len(m), ptr(x), ptr(dy), ptr(out)
	pm, pa, pb, pc := ptr(m), ptr(a), ptr(b), ptr(c)
	k := 0
	for ; k+32 <= w; k += 32 {
		for j := k; j < k+32; j += 16 {
			// Two vectors at a time: 4 × 2 coefficient vectors stay in
			// registers.
			m0, m1 := at64(pm, j), at64(pm, j+8)
			a0, a1 := at64(pa, j), at64(pa, j+8)
			b0, b1 := at64(pb, j), at64(pb, j+8)
			c0, c1 := at64(pc, j), at64(pc, j+8)
			for o := j; o < rows*ld; o += ld {
				put[T](a0.Mul(at[T](pg, o)).Add(at[T](px, o).Sub(m0).Mul(b0)).Add(c0), py, o)
				put[T](a1.Mul(at[T](pg, o+8)).Add(at[T](px, o+8).Sub(m1).Mul(b1)).Add(c1), py, o+8)
			}
		}
	}
	for k < w {
		k0 := min(k, w-8)
		keep := top(8 - (k - k0))
		mv, av, bv, cv := at64(pm, k0), at64(pa, k0), at64(pb, k0), at64(pc, k0)
		for o := k0; o < rows*ld; o += ld {
			y := av.Mul(at[T](pg, o)).Add(at[T](px, o).Sub(mv).Mul(bv)).Add(cv)
			put[T](y.Merge(at[T](py, o), keep), py, o)
		}
		k = k0 + 8
	}
	archsimd.ClearAVXUpperBits()
}
