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
// zeroed (sums) or not stored (element-wise kernels: masked stores).
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

// bcast and masked stand for archsimd's BroadcastFloat64x8 and
// Float64x8.Masked, which are Go code over intrinsics rather than
// intrinsics: they are not inlined into the instantiations of
// these generic loops that importing packages compile (package bn
// instantiates Plan[float32] without access to archsimd's function
// bodies), and a call between vector instructions passes its arguments
// with SSE instructions, each ~300 cycles with dirty upper halves on Intel
// (measured: 8×256×14×14 float32 forward kernels 3.6× slower). These are
// kern's own, made of intrinsics only, and inline wherever the loops are
// compiled.

// bcast returns x in every lane.
func bcast(x float64) vec {
	var z archsimd.Float64x2
	return z.SetElem(0, x).Broadcast1To8()
}

// masked returns v with the lanes outside m zeroed.
func masked(v vec, m archsimd.Mask64x8) vec {
	return v.AsInt64x8().And(m.ToInt64x8()).AsFloat64x8()
}

// topBits returns the bits of the last r (1 ≤ r ≤ 8) lanes; top, their
// mask.
func topBits(r int) uint8         { return uint8(0xff) << (8 - r) }
func top(r int) archsimd.Mask64x8 { return archsimd.Mask64x8FromBits(topBits(r)) }

// putMasked stores the lanes of v selected by the bits m into p[i:i+8],
// rounded to T, and leaves the other elements untouched (a masked store:
// no read of out, so no stall on the store just made to the overlapped
// lanes, and out may alias the input).
func putMasked[T Float](v vec, p unsafe.Pointer, i int, m uint8) {
	if is32[T]() {
		v.ConvertToFloat32().StoreMasked((*[8]float32)(unsafe.Add(p, 4*i)), archsimd.Mask32x8FromBits(m))
		return
	}
	v.StoreMasked((*[8]float64)(unsafe.Add(p, 8*i)), archsimd.Mask64x8FromBits(m))
}

// fold sums the lanes of v pairwise down to two, (v0+v4)+(v2+v6) and
// (v1+v5)+(v3+v7), and stores them in p; the kernels add the pair only
// after ClearAVXUpperBits. The scalar add and loads are SSE instructions,
// and on Intel CPUs each one run with dirty upper halves was measured to
// cost ~300 cycles (8×256×14×14 float32 statistics 8× slower). Going
// through memory keeps the compiler from moving them before the clear.
func fold(v vec, p *[2]float64) {
	h := v.GetLo().Add(v.GetHi())
	h.GetLo().Add(h.GetHi()).Store(p)
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
		a3 = a3.Add(masked(at[T](p, n-8), top(r)))
	}
	var s [2]float64
	fold(a0.Add(a1).Add(a2.Add(a3)), &s)
	archsimd.ClearAVXUpperBits()
	return s[0] + s[1]
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
	mv := bcast(m)
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
		d := masked(at[T](p, n-8).Sub(mv), top(r))
		q3 = d.MulAdd(d, q3)
		l3 = l3.Add(d)
	}
	var q, l [2]float64
	fold(q0.Add(q1).Add(q2.Add(q3)), &q)
	fold(l0.Add(l1).Add(l2.Add(l3)), &l)
	archsimd.ClearAVXUpperBits()
	return q[0] + q[1], l[0] + l[1]
}

// dotAVX512 keeps two pairs of accumulators: four would need more than the
// fifteen vector registers Go allocates, and a spilled accumulator costs a
// store-to-load round trip per iteration.
func dotAVX512[T Float](xs, dys []T, m float64) (sdy, sdyx float64) {
	n, px, pg := len(xs), ptr(xs), ptr(dys)
	mv := bcast(m)
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
		g := masked(at[T](pg, n-8), top(r))
		a1 = a1.Add(g)
		b1 = g.MulAdd(masked(at[T](px, n-8).Sub(mv), top(r)), b1)
	}
	var a, b [2]float64
	fold(a0.Add(a1), &a)
	fold(b0.Add(b1), &b)
	archsimd.ClearAVXUpperBits()
	return a[0] + a[1], b[0] + b[1]
}

func affineAVX512[T Float](xs, out []T, m, b, c float64) {
	n, px, py := len(xs), ptr(xs), ptr(out)
	mv := bcast(m)
	bv := bcast(b)
	cv := bcast(c)
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
		// The overlapped lanes are not stored again (out may alias xs).
		putMasked[T](at[T](px, n-8).Sub(mv).MulAdd(bv, cv), py, n-8, topBits(r))
	}
	archsimd.ClearAVXUpperBits()
}

func affine2AVX512[T Float](xs, dys, out []T, m, a, b, c float64) {
	n, px, pg, py := len(xs), ptr(xs), ptr(dys), ptr(out)
	mv := bcast(m)
	av := bcast(a)
	bv := bcast(b)
	cv := bcast(c)
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
		putMasked[T](y, py, n-8, topBits(r))
	}
	archsimd.ClearAVXUpperBits()
}

// The row kernels require w ≥ 8 channels, rows ≥ 1 and the slices checked
// by their callers. They walk the rows in order, four at a time, over
// chunks of at most rowChunk channels, and keep the per-channel sums of a
// chunk in float64 arrays on the stack (L1): every access to the data is
// then sequential within a row, with no stride of a whole row between two
// consecutive loads or between a store and the next loads, which defeated
// the prefetchers and hit 4 KB aliasing at C = 1024. Lane k of a vector
// holds channel k; the four rows are added one after the other, in row
// order, with unfused operations, exactly as the portable loop does: the
// results match it bit for bit. A chunk whose width is not a multiple of 8
// ends with the vector of its last 8 channels, whose first lanes redo
// channels already done (same result, not written; in place, the stored
// value is kept).

// rowChunk is the widest chunk of channels a row kernel works on at once.
const rowChunk = 128

// rowVecs returns the number of vectors of a chunk of wc ≥ 8 channels and
// the channel offset of the last one.
func rowVecs(wc int) (nv, last int) { return (wc + 7) / 8, wc - 8 }

// st64 stores v into p[i:i+8] of float64 data.
func st64(v vec, p unsafe.Pointer, i int) {
	v.Store((*[8]float64)(unsafe.Add(p, 8*i)))
}

func rowStatsAVX512[T Float](x []T, ld, rows int, part []Moments, cnt float64) {
	w, px := len(part), ptr(x)
	cv := bcast(cnt)
	var sa, qa, la [rowChunk + 8]float64
	ps, pq, pl := unsafe.Pointer(&sa), unsafe.Pointer(&qa), unsafe.Pointer(&la)
	nc := (w + rowChunk - 1) / rowChunk
	for ci := range nc {
		k0, k1 := ci*w/nc, (ci+1)*w/nc
		nv, last := rowVecs(k1 - k0)
		clear(sa[:8*nv])
		clear(qa[:8*nv])
		clear(la[:8*nv])
		// Σx
		n, o := 0, k0
		for ; n+4 <= rows; n, o = n+4, o+4*ld {
			for v := range nv {
				c := o + min(8*v, last)
				s := at64(ps, 8*v).Add(at[T](px, c)).Add(at[T](px, c+ld))
				st64(s.Add(at[T](px, c+2*ld)).Add(at[T](px, c+3*ld)), ps, 8*v)
			}
		}
		for ; n < rows; n, o = n+1, o+ld {
			for v := range nv {
				st64(at64(ps, 8*v).Add(at[T](px, o+min(8*v, last))), ps, 8*v)
			}
		}
		for v := range nv {
			st64(at64(ps, 8*v).Div(cv), ps, 8*v)
		}
		// Σ(x−μ)², Σ(x−μ)
		n, o = 0, k0
		for ; n+4 <= rows; n, o = n+4, o+4*ld {
			for v := range nv {
				c := o + min(8*v, last)
				m, q, l := at64(ps, 8*v), at64(pq, 8*v), at64(pl, 8*v)
				d := at[T](px, c).Sub(m)
				q, l = q.Add(d.Mul(d)), l.Add(d)
				d = at[T](px, c+ld).Sub(m)
				q, l = q.Add(d.Mul(d)), l.Add(d)
				d = at[T](px, c+2*ld).Sub(m)
				q, l = q.Add(d.Mul(d)), l.Add(d)
				d = at[T](px, c+3*ld).Sub(m)
				st64(q.Add(d.Mul(d)), pq, 8*v)
				st64(l.Add(d), pl, 8*v)
			}
		}
		for ; n < rows; n, o = n+1, o+ld {
			for v := range nv {
				d := at[T](px, o+min(8*v, last)).Sub(at64(ps, 8*v))
				st64(at64(pq, 8*v).Add(d.Mul(d)), pq, 8*v)
				st64(at64(pl, 8*v).Add(d), pl, 8*v)
			}
		}
		for v := range nv {
			m, q, l := at64(ps, 8*v), at64(pq, 8*v), at64(pl, 8*v)
			st64(m.Add(l.Div(cv)), ps, 8*v)
			st64(q.Sub(l.Mul(l).Div(cv)), pq, 8*v)
		}
		archsimd.ClearAVXUpperBits() // before the scalar copy (see fold)
		p, tail := part[k0:k1], 8*(nv-1)
		for k := range p {
			j := k
			if k >= tail {
				j = tail + k - last
			}
			p[k] = Moments{N: cnt, Mean: sa[j], M2: qa[j]}
		}
	}
	archsimd.ClearAVXUpperBits()
}

func rowDotAVX512[T Float](x, dy []T, ld, rows int, mean []float64, part []Moments) {
	w, px, pg, pm := len(part), ptr(x), ptr(dy), ptr(mean)
	var aa, ba [rowChunk + 8]float64
	pa, pb := unsafe.Pointer(&aa), unsafe.Pointer(&ba)
	nc := (w + rowChunk - 1) / rowChunk
	for ci := range nc {
		k0, k1 := ci*w/nc, (ci+1)*w/nc
		nv, last := rowVecs(k1 - k0)
		clear(aa[:8*nv])
		clear(ba[:8*nv])
		n, o := 0, k0
		for ; n+4 <= rows; n, o = n+4, o+4*ld {
			for v := range nv {
				j := min(8*v, last)
				c := o + j
				m, a, b := at64(pm, k0+j), at64(pa, 8*v), at64(pb, 8*v)
				g := at[T](pg, c)
				a, b = a.Add(g), b.Add(g.Mul(at[T](px, c).Sub(m)))
				g = at[T](pg, c+ld)
				a, b = a.Add(g), b.Add(g.Mul(at[T](px, c+ld).Sub(m)))
				g = at[T](pg, c+2*ld)
				a, b = a.Add(g), b.Add(g.Mul(at[T](px, c+2*ld).Sub(m)))
				g = at[T](pg, c+3*ld)
				st64(a.Add(g), pa, 8*v)
				st64(b.Add(g.Mul(at[T](px, c+3*ld).Sub(m))), pb, 8*v)
			}
		}
		for ; n < rows; n, o = n+1, o+ld {
			for v := range nv {
				j := min(8*v, last)
				g := at[T](pg, o+j)
				st64(at64(pa, 8*v).Add(g), pa, 8*v)
				st64(at64(pb, 8*v).Add(g.Mul(at[T](px, o+j).Sub(at64(pm, k0+j)))), pb, 8*v)
			}
		}
		archsimd.ClearAVXUpperBits() // before the scalar copy (see fold)
		p, tail := part[k0:k1], 8*(nv-1)
		for k := range p {
			j := k
			if k >= tail {
				j = tail + k - last
			}
			p[k] = Moments{Mean: aa[j], M2: ba[j]}
		}
	}
	archsimd.ClearAVXUpperBits()
}

// The element-wise row kernels go down the rows four at a time, each time
// across the whole width: Apply gives them runs of whole rows, contiguous
// in memory. Within a group of four rows all the loads of a vector come
// before its stores: a store to out[r] followed by a load of x[r+ld] would
// alias at 4 KB rows.

func rowAffineAVX512[T Float](x, out []T, ld, rows int, m, b, c []float64) {
	w, px, py := len(m), ptr(x), ptr(out)
	pm, pb, pc := ptr(m), ptr(b), ptr(c)
	nv, last := rowVecs(w)
	keep := topBits(8 - (8*(nv-1) - last)) // out may alias x: overlapped lanes are not stored again
	n, o := 0, 0
	for ; n+4 <= rows; n, o = n+4, o+4*ld {
		for j := 0; j < 8*(nv-1); j += 8 {
			mv, bv, cv := at64(pm, j), at64(pb, j), at64(pc, j)
			r := o + j
			y0 := at[T](px, r).Sub(mv).Mul(bv).Add(cv)
			y1 := at[T](px, r+ld).Sub(mv).Mul(bv).Add(cv)
			y2 := at[T](px, r+2*ld).Sub(mv).Mul(bv).Add(cv)
			y3 := at[T](px, r+3*ld).Sub(mv).Mul(bv).Add(cv)
			put[T](y0, py, r)
			put[T](y1, py, r+ld)
			put[T](y2, py, r+2*ld)
			put[T](y3, py, r+3*ld)
		}
		mv, bv, cv := at64(pm, last), at64(pb, last), at64(pc, last)
		for r := o + last; r < o+last+4*ld; r += ld {
			y := at[T](px, r).Sub(mv).Mul(bv).Add(cv)
			putMasked[T](y, py, r, keep)
		}
	}
	for ; n < rows; n, o = n+1, o+ld {
		for j := 0; j < 8*(nv-1); j += 8 {
			put[T](at[T](px, o+j).Sub(at64(pm, j)).Mul(at64(pb, j)).Add(at64(pc, j)), py, o+j)
		}
		y := at[T](px, o+last).Sub(at64(pm, last)).Mul(at64(pb, last)).Add(at64(pc, last))
		putMasked[T](y, py, o+last, keep)
	}
	archsimd.ClearAVXUpperBits()
}

func rowAffine2AVX512[T Float](x, dy, out []T, ld, rows int, m, a, b, c []float64) {
	w, px, pg, py := len(m), ptr(x), ptr(dy), ptr(out)
	pm, pa, pb, pc := ptr(m), ptr(a), ptr(b), ptr(c)
	nv, last := rowVecs(w)
	keep := topBits(8 - (8*(nv-1) - last))
	n, o := 0, 0
	for ; n+4 <= rows; n, o = n+4, o+4*ld {
		for j := 0; j < 8*(nv-1); j += 8 {
			mv, av, bv, cv := at64(pm, j), at64(pa, j), at64(pb, j), at64(pc, j)
			r := o + j
			y0 := av.Mul(at[T](pg, r)).Add(at[T](px, r).Sub(mv).Mul(bv)).Add(cv)
			y1 := av.Mul(at[T](pg, r+ld)).Add(at[T](px, r+ld).Sub(mv).Mul(bv)).Add(cv)
			y2 := av.Mul(at[T](pg, r+2*ld)).Add(at[T](px, r+2*ld).Sub(mv).Mul(bv)).Add(cv)
			y3 := av.Mul(at[T](pg, r+3*ld)).Add(at[T](px, r+3*ld).Sub(mv).Mul(bv)).Add(cv)
			put[T](y0, py, r)
			put[T](y1, py, r+ld)
			put[T](y2, py, r+2*ld)
			put[T](y3, py, r+3*ld)
		}
		mv, av, bv, cv := at64(pm, last), at64(pa, last), at64(pb, last), at64(pc, last)
		for r := o + last; r < o+last+4*ld; r += ld {
			y := av.Mul(at[T](pg, r)).Add(at[T](px, r).Sub(mv).Mul(bv)).Add(cv)
			putMasked[T](y, py, r, keep)
		}
	}
	for ; n < rows; n, o = n+1, o+ld {
		for j := 0; j < 8*(nv-1); j += 8 {
			y := at64(pa, j).Mul(at[T](pg, o+j)).Add(at[T](px, o+j).Sub(at64(pm, j)).Mul(at64(pb, j))).Add(at64(pc, j))
			put[T](y, py, o+j)
		}
		j := last
		y := at64(pa, j).Mul(at[T](pg, o+j)).Add(at[T](px, o+j).Sub(at64(pm, j)).Mul(at64(pb, j))).Add(at64(pc, j))
		putMasked[T](y, py, o+j, keep)
	}
	archsimd.ClearAVXUpperBits()
}
