//go:build amd64 && !purego

package kern

import (
	"os"
	"unsafe"

	"golang.org/x/sys/cpu"
)

// On amd64 the block loops use the AVX-512 inner loops of inner_amd64.s
// (plane reductions, row kernels) and affine_amd64.s (plane element-wise
// kernels) when the CPU and the OS support AVX-512 (F, CD, BW, DQ, VL; and
// BMI2, which every such CPU has), else the AVX2 ones of
// inner_avx2_amd64.s (AVX2 and FMA; the same kernels in 4-lane vectors,
// without streaming stores), else — and with the purego build tag — the
// portable ones of inner_go.go. They compute in float64 lanes what the
// portable loops compute:
//
//   - the plane kernels (sumPlanes, statsPlanes, devPlanes, dotPlanes,
//     affinePlanes, affine2Planes) keep several vectors of partial sums and
//     use fused multiply-adds: their results depend only on the data and
//     its length (not on alignment, threads or how many planes one call
//     takes) but differ from the portable loops in the last bits;
//   - the row kernels (S = 1) give lane k to channel k and accumulate the
//     rows in order with unfused operations, exactly as the portable
//     loops: they match them bit for bit.
//
// The dispatchers below check the lengths and hand the kernels base
// pointers; inputs shorter than one vector go to the portable loops.

var (
	haveAVX512 = cpu.X86.HasAVX512F && cpu.X86.HasAVX512CD && cpu.X86.HasAVX512BW &&
		cpu.X86.HasAVX512DQ && cpu.X86.HasAVX512VL && cpu.X86.HasBMI2
	haveAVX2 = cpu.X86.HasAVX2 && cpu.X86.HasFMA

	// The loops in use. The environment variable BN_KERNELS=avx2 or
	// BN_KERNELS=go caps the choice (to compare, or to test a level on a
	// CPU that has a higher one).
	useAVX512, useAVX2 bool
	_                  = setSIMD(true)
)

// setSIMD turns the vector loops on or off (tests, benchmarks) and reports
// whether they are on. Not safe while kernels run.
func setSIMD(on bool) bool {
	limit := os.Getenv("BN_KERNELS")
	useAVX512 = on && haveAVX512 && limit != "avx2" && limit != "go"
	useAVX2 = on && haveAVX2 && !useAVX512 && limit != "go"
	return useAVX512 || useAVX2
}

// simdPath names the inner loops in use, for tests and benchmarks.
func simdPath() string {
	switch {
	case useAVX512:
		return "avx512"
	case useAVX2:
		return "avx2"
	}
	return "go"
}

// is32 reports whether T is a float32 type (float32 or a type defined on it).
func is32[T Float]() bool { return sizeOf[T]() == 4 }

func ptr[T any](s []T) unsafe.Pointer { return unsafe.Pointer(unsafe.SliceData(s)) }

// sizeOf returns the size of T in bytes.
func sizeOf[T Float]() int {
	var z T
	return int(unsafe.Sizeof(z))
}

// pick returns the kernel for T among its AVX-512 (a5) and AVX2 (a2)
// instantiations for float32 and float64 elements. (The row reductions,
// which pass stack arrays, call theirs directly: through a function value
// the arrays would escape to the heap.)
func pick[T Float, F any](a5f32, a5f64, a2f32, a2f64 F) F {
	switch {
	case useAVX512 && is32[T]():
		return a5f32
	case useAVX512:
		return a5f64
	case is32[T]():
		return a2f32
	}
	return a2f64
}

// topBits returns the mask of the last r (0 ≤ r ≤ 8) lanes of 8.
func topBits(r int) uint64 { return 0xff << (8 - r) & 0xff }

// The assembly addresses part[i].N, .Mean, .M2 at bytes 24·i + 0, 8, 16
// (each line fails to compile otherwise).
var (
	_ = [1]struct{}{}[unsafe.Offsetof(Moments{}.N)]
	_ = [1]struct{}{}[unsafe.Offsetof(Moments{}.Mean)-8]
	_ = [1]struct{}{}[unsafe.Offsetof(Moments{}.M2)-16]
	_ = [1]struct{}{}[unsafe.Sizeof(Moments{})-24]
)

// The plane reductions work on k = len(part) planes of n elements,
// x[i·stride : i·stride+n] for plane i, and add plane i's sums into
// part[i] (one call per sample of a block: the planes of its channels).
//
// sumPlanes, on float32 data with AVX-512, adds the elements in pairs in
// float32 before widening them (one conversion per 16 elements instead of
// two; the conversions bound the loop). Each pair sum is rounded once,
// |error| ≤ 2⁻²⁴·|x_i + x_j|, so the result is within 2⁻²⁴·Σ|x| (plus
// float64 rounding) of Σx. It serves only the first-pass mean of the
// corrected two-pass algorithm (see corrected), exact for any mean, so the
// moments keep float64 accuracy (simd_test.go checks it).
func sumPlanes[T Float](x []T, n, stride int, part []Moments) {
	k := len(part)
	if !(useAVX512 || useAVX2) || n < 8 || k == 0 {
		sumPlanesGo(x, n, stride, part)
		return
	}
	x = x[:(k-1)*stride+n]
	f := pick[T](sumPlanes32, sumPlanes64, sumPlanesA32, sumPlanesA64)
	f(ptr(x), n, sizeOf[T]()*stride, topBits(n&7), k, ptr(part))
}

// statsPlanes sets part[i] to the moments of plane i (count n), computed
// as sumPlanes and devPlanes would with the corrected two-pass algorithm,
// bit for bit, but each plane read twice in a row (from L1).
func statsPlanes[T Float](x []T, n, stride int, part []Moments) {
	k := len(part)
	if !(useAVX512 || useAVX2) || n < 8 || k == 0 {
		statsPlanesGo(x, n, stride, part)
		return
	}
	x = x[:(k-1)*stride+n]
	f := pick[T](statsPlanes32, statsPlanes64, statsPlanesA32, statsPlanesA64)
	f(ptr(x), n, sizeOf[T]()*stride, topBits(n&7), k, ptr(part), float64(n))
}

func devPlanes[T Float](x []T, n, stride int, part []Moments) {
	k := len(part)
	if !(useAVX512 || useAVX2) || n < 8 || k == 0 {
		devPlanesGo(x, n, stride, part)
		return
	}
	x = x[:(k-1)*stride+n]
	f := pick[T](devPlanes32, devPlanes64, devPlanesA32, devPlanesA64)
	f(ptr(x), n, sizeOf[T]()*stride, topBits(n&7), k, ptr(part))
}

func dotPlanes[T Float](x, dy []T, n, stride int, mean []float64, part []Moments) {
	k := len(part)
	if !(useAVX512 || useAVX2) || n < 8 || k == 0 {
		dotPlanesGo(x, dy, n, stride, mean, part)
		return
	}
	x, dy, mean = x[:(k-1)*stride+n], dy[:(k-1)*stride+n], mean[:k]
	f := pick[T](dotPlanes32, dotPlanes64, dotPlanesA32, dotPlanesA64)
	f(ptr(x), ptr(dy), n, sizeOf[T]()*stride, topBits(n&7), k, ptr(mean), ptr(part))
}

// affinePlanes and affine2Planes compute k = len(m) planes of n elements,
// out[i·stride : i·stride+n] from the same elements of x (and dy) with the
// coefficients of index i, and write y with streaming stores when stream
// is set (see streams).

func affinePlanes[T Float](x, out []T, n, stride int, m, b, c []float64, stream bool) {
	k := len(m)
	if !(useAVX512 || useAVX2) || n < 8 || k == 0 {
		affinePlanesGo(x, out, n, stride, m, b, c)
		return
	}
	l := (k-1)*stride + n
	x, out, b, c = x[:l], out[:l], b[:k], c[:k]
	f := pick[T](affinePlanes32, affinePlanes64, affinePlanesA32, affinePlanesA64)
	if stream && useAVX512 {
		f = pick[T](affinePlanesNT32, affinePlanesNT64, nil, nil)
	}
	f(ptr(x), ptr(out), n, sizeOf[T]()*stride, k, ptr(m), ptr(b), ptr(c))
}

func affine2Planes[T Float](x, dy, out []T, n, stride int, m, a, b, c []float64, stream bool) {
	k := len(m)
	if !(useAVX512 || useAVX2) || n < 8 || k == 0 {
		affine2PlanesGo(x, dy, out, n, stride, m, a, b, c)
		return
	}
	l := (k-1)*stride + n
	x, dy, out, a, b, c = x[:l], dy[:l], out[:l], a[:k], b[:k], c[:k]
	f := pick[T](affine2Planes32, affine2Planes64, affine2PlanesA32, affine2PlanesA64)
	if stream && useAVX512 {
		f = pick[T](affine2PlanesNT32, affine2PlanesNT64, nil, nil)
	}
	f(ptr(x), ptr(dy), ptr(out), n, sizeOf[T]()*stride, k, ptr(m), ptr(a), ptr(b), ptr(c))
}

// The row kernels walk the rows in order, four at a time, over chunks of
// at most rowChunk channels, and keep the per-channel sums of a chunk in
// float64 arrays on the stack (L1): every access to the data is then
// sequential within a row, with no stride of a whole row between two
// consecutive loads or between a store and the next loads, which defeated
// the prefetchers and hit 4 KB aliasing at C = 1024. A chunk whose width
// is not a multiple of the L lanes ends with the vector of its last L
// channels,
// whose first lanes redo channels already done (the same sums, not read
// back; the element-wise kernels do not store them again). Blocks
// narrower than one vector go to the portable loops.

// rowChunk is the widest chunk of channels a row reduction works on at once.
const rowChunk = 128

// rowAcc maps the channels of a chunk to their accumulator index: k below
// tail is k, k at or above it is in the last vector (channel last = w−L).
func rowAcc(k, tail, last int) int {
	if k >= tail {
		return tail + k - last
	}
	return k
}

// lanes returns the float64 lanes of the row kernels in use: 8 with
// AVX-512, 4 with AVX2.
func lanes() int {
	if useAVX512 {
		return 8
	}
	return 4
}

// rowGeom returns, for a chunk of w ≥ L channels in vectors of L lanes,
// the number of vectors and the first channel of the last one.
func rowGeom(w, L int) (nv, last int) { return (w + L - 1) / L, w - L }

// rowKeep returns the mask argument of the element-wise row kernels: the
// lanes of the last vector not already written by the one before (out may
// alias x, so they are not stored again): their bits for AVX-512, their
// number for AVX2.
func rowKeep(nv, last, L int) uint64 {
	r := L - (L*(nv-1) - last)
	if L == 8 {
		return topBits(r)
	}
	return uint64(r)
}

func rowStats[T Float](x []T, ld, rows int, part []Moments, cnt float64) {
	w, L := len(part), lanes()
	if !(useAVX512 || useAVX2) || rows <= 0 || w < L {
		rowStatsGo(x, ld, rows, part, cnt)
		return
	}
	x = x[:(rows-1)*ld+w]
	sz := sizeOf[T]()
	var sa, qa, la [rowChunk + 8]float64
	ps, pq, pl := unsafe.Pointer(&sa), unsafe.Pointer(&qa), unsafe.Pointer(&la)
	nc := (w + rowChunk - 1) / rowChunk
	for ci := range nc {
		k0, k1 := ci*w/nc, (ci+1)*w/nc
		nv, last := rowGeom(k1-k0, L)
		end, lastb, px := 8*L*(nv-1), last*sz, ptr(x[k0:])
		clear(sa[:L*nv])
		clear(qa[:L*nv])
		clear(la[:L*nv])
		switch {
		case useAVX512 && sz == 4:
			rowSum32(px, ld*sz, rows, end, lastb, ps)
		case useAVX512:
			rowSum64(px, ld*sz, rows, end, lastb, ps)
		case sz == 4:
			rowSumA32(px, ld*sz, rows, end, lastb, ps)
		default:
			rowSumA64(px, ld*sz, rows, end, lastb, ps)
		}
		for k := range L * nv {
			sa[k] /= cnt
		}
		switch {
		case useAVX512 && sz == 4:
			rowDev32(px, ld*sz, rows, end, lastb, ps, pq, pl)
		case useAVX512:
			rowDev64(px, ld*sz, rows, end, lastb, ps, pq, pl)
		case sz == 4:
			rowDevA32(px, ld*sz, rows, end, lastb, ps, pq, pl)
		default:
			rowDevA64(px, ld*sz, rows, end, lastb, ps, pq, pl)
		}
		tail := L * (nv - 1)
		for k := range part[k0:k1] {
			j := rowAcc(k, tail, last)
			part[k0+k] = corrected(cnt, sa[j], qa[j], la[j])
		}
	}
}

func rowDot[T Float](x, dy []T, ld, rows int, mean []float64, part []Moments) {
	w, L := len(part), lanes()
	if !(useAVX512 || useAVX2) || rows <= 0 || w < L {
		rowDotGo(x, dy, ld, rows, mean, part)
		return
	}
	n := (rows-1)*ld + w
	x, dy, mean = x[:n], dy[:n], mean[:w]
	sz := sizeOf[T]()
	dyx := uintptr(ptr(dy)) - uintptr(ptr(x))
	var ma, aa, ba [rowChunk + 8]float64
	pm, pa, pb := unsafe.Pointer(&ma), unsafe.Pointer(&aa), unsafe.Pointer(&ba)
	nc := (w + rowChunk - 1) / rowChunk
	for ci := range nc {
		k0, k1 := ci*w/nc, (ci+1)*w/nc
		nv, last := rowGeom(k1-k0, L)
		end, lastb, px := 8*L*(nv-1), last*sz, ptr(x[k0:])
		// The means in accumulator order: vector v at channel min(Lv, last).
		copy(ma[:L*(nv-1)], mean[k0:])
		copy(ma[L*(nv-1):L*nv], mean[k0+last:])
		clear(aa[:L*nv])
		clear(ba[:L*nv])
		switch {
		case useAVX512 && sz == 4:
			rowDot32(px, ld*sz, rows, end, lastb, pm, pa, pb, dyx)
		case useAVX512:
			rowDot64(px, ld*sz, rows, end, lastb, pm, pa, pb, dyx)
		case sz == 4:
			rowDotA32(px, ld*sz, rows, end, lastb, pm, pa, pb, dyx)
		default:
			rowDotA64(px, ld*sz, rows, end, lastb, pm, pa, pb, dyx)
		}
		tail := L * (nv - 1)
		for k := range part[k0:k1] {
			j := rowAcc(k, tail, last)
			part[k0+k] = Moments{Mean: aa[j], M2: ba[j]}
		}
	}
}

func rowAffine[T Float](x, out []T, ld, rows int, m, b, c []float64) {
	w, L := len(m), lanes()
	if !(useAVX512 || useAVX2) || rows <= 0 || w < L {
		rowAffineGo(x, out, ld, rows, m, b, c)
		return
	}
	n := (rows-1)*ld + w
	x, out, b, c = x[:n], out[:n], b[:w], c[:w]
	nv, last := rowGeom(w, L)
	sz := sizeOf[T]()
	ox := uintptr(ptr(out)) - uintptr(ptr(x))
	f := pick[T](rowAffine32, rowAffine64, rowAffineA32, rowAffineA64)
	f(ptr(x), ld*sz, rows, 8*L*(nv-1), last*sz, rowKeep(nv, last, L), 8*last, ptr(m), ptr(b), ptr(c), ox)
}

func rowAffine2[T Float](x, dy, out []T, ld, rows int, m, a, b, c []float64) {
	w, L := len(m), lanes()
	if !(useAVX512 || useAVX2) || rows <= 0 || w < L {
		rowAffine2Go(x, dy, out, ld, rows, m, a, b, c)
		return
	}
	n := (rows-1)*ld + w
	x, dy, out, a, b, c = x[:n], dy[:n], out[:n], a[:w], b[:w], c[:w]
	nv, last := rowGeom(w, L)
	sz := sizeOf[T]()
	dyx := uintptr(ptr(dy)) - uintptr(ptr(x))
	ox := uintptr(ptr(out)) - uintptr(ptr(x))
	f := pick[T](rowAffine2_32, rowAffine2_64, rowAffine2A32, rowAffine2A64)
	f(ptr(x), ld*sz, rows, 8*L*(nv-1), last*sz, rowKeep(nv, last, L), 8*last, ptr(m), ptr(a), ptr(b), ptr(c), dyx, ox)
}

// The kernels of inner_amd64.s and affine_amd64.s (AVX-512).

//go:noescape
func sumPlanes32(x unsafe.Pointer, n, strideb int, tm uint64, k int, part unsafe.Pointer)

//go:noescape
func sumPlanes64(x unsafe.Pointer, n, strideb int, tm uint64, k int, part unsafe.Pointer)

//go:noescape
func devPlanes32(x unsafe.Pointer, n, strideb int, tm uint64, k int, part unsafe.Pointer)

//go:noescape
func devPlanes64(x unsafe.Pointer, n, strideb int, tm uint64, k int, part unsafe.Pointer)

//go:noescape
func statsPlanes32(x unsafe.Pointer, n, strideb int, tm uint64, k int, part unsafe.Pointer, cnt float64)

//go:noescape
func statsPlanes64(x unsafe.Pointer, n, strideb int, tm uint64, k int, part unsafe.Pointer, cnt float64)

//go:noescape
func dotPlanes32(x, dy unsafe.Pointer, n, strideb int, tm uint64, k int, mean, part unsafe.Pointer)

//go:noescape
func dotPlanes64(x, dy unsafe.Pointer, n, strideb int, tm uint64, k int, mean, part unsafe.Pointer)

//go:noescape
func affinePlanes32(x, y unsafe.Pointer, n, strideb, k int, m, b, c unsafe.Pointer)

//go:noescape
func affinePlanes64(x, y unsafe.Pointer, n, strideb, k int, m, b, c unsafe.Pointer)

//go:noescape
func affine2Planes32(x, dy, y unsafe.Pointer, n, strideb, k int, m, a, b, c unsafe.Pointer)

//go:noescape
func affine2Planes64(x, dy, y unsafe.Pointer, n, strideb, k int, m, a, b, c unsafe.Pointer)

//go:noescape
func rowSum32(x unsafe.Pointer, ldb, rows, end, lastb int, s unsafe.Pointer)

//go:noescape
func rowSum64(x unsafe.Pointer, ldb, rows, end, lastb int, s unsafe.Pointer)

//go:noescape
func rowDev32(x unsafe.Pointer, ldb, rows, end, lastb int, m, q, l unsafe.Pointer)

//go:noescape
func rowDev64(x unsafe.Pointer, ldb, rows, end, lastb int, m, q, l unsafe.Pointer)

//go:noescape
func rowDot32(x unsafe.Pointer, ldb, rows, end, lastb int, m, a, b unsafe.Pointer, dyx uintptr)

//go:noescape
func rowDot64(x unsafe.Pointer, ldb, rows, end, lastb int, m, a, b unsafe.Pointer, dyx uintptr)

//go:noescape
func rowAffine32(x unsafe.Pointer, ldb, rows, end, lastb int, keep uint64, lastc int, m, b, c unsafe.Pointer, ox uintptr)

//go:noescape
func rowAffine64(x unsafe.Pointer, ldb, rows, end, lastb int, keep uint64, lastc int, m, b, c unsafe.Pointer, ox uintptr)

//go:noescape
func rowAffine2_32(x unsafe.Pointer, ldb, rows, end, lastb int, keep uint64, lastc int, m, a, b, c unsafe.Pointer, dyx, ox uintptr)

//go:noescape
func rowAffine2_64(x unsafe.Pointer, ldb, rows, end, lastb int, keep uint64, lastc int, m, a, b, c unsafe.Pointer, dyx, ox uintptr)

// The AVX2 plane kernels of inner_avx2_amd64.s (tm is unused there).

//go:noescape
func sumPlanesA32(x unsafe.Pointer, n, strideb int, tm uint64, k int, part unsafe.Pointer)

//go:noescape
func sumPlanesA64(x unsafe.Pointer, n, strideb int, tm uint64, k int, part unsafe.Pointer)

//go:noescape
func devPlanesA32(x unsafe.Pointer, n, strideb int, tm uint64, k int, part unsafe.Pointer)

//go:noescape
func devPlanesA64(x unsafe.Pointer, n, strideb int, tm uint64, k int, part unsafe.Pointer)

//go:noescape
func statsPlanesA32(x unsafe.Pointer, n, strideb int, tm uint64, k int, part unsafe.Pointer, cnt float64)

//go:noescape
func statsPlanesA64(x unsafe.Pointer, n, strideb int, tm uint64, k int, part unsafe.Pointer, cnt float64)

//go:noescape
func dotPlanesA32(x, dy unsafe.Pointer, n, strideb int, tm uint64, k int, mean, part unsafe.Pointer)

//go:noescape
func dotPlanesA64(x, dy unsafe.Pointer, n, strideb int, tm uint64, k int, mean, part unsafe.Pointer)

//go:noescape
func affinePlanesA32(x, y unsafe.Pointer, n, strideb, k int, m, b, c unsafe.Pointer)

//go:noescape
func affinePlanesA64(x, y unsafe.Pointer, n, strideb, k int, m, b, c unsafe.Pointer)

//go:noescape
func affine2PlanesA32(x, dy, y unsafe.Pointer, n, strideb, k int, m, a, b, c unsafe.Pointer)

//go:noescape
func affine2PlanesA64(x, dy, y unsafe.Pointer, n, strideb, k int, m, a, b, c unsafe.Pointer)

//go:noescape
func rowSumA32(x unsafe.Pointer, ldb, rows, end, lastb int, s unsafe.Pointer)

//go:noescape
func rowSumA64(x unsafe.Pointer, ldb, rows, end, lastb int, s unsafe.Pointer)

//go:noescape
func rowDevA32(x unsafe.Pointer, ldb, rows, end, lastb int, m, q, l unsafe.Pointer)

//go:noescape
func rowDevA64(x unsafe.Pointer, ldb, rows, end, lastb int, m, q, l unsafe.Pointer)

//go:noescape
func rowDotA32(x unsafe.Pointer, ldb, rows, end, lastb int, m, a, b unsafe.Pointer, dyx uintptr)

//go:noescape
func rowDotA64(x unsafe.Pointer, ldb, rows, end, lastb int, m, a, b unsafe.Pointer, dyx uintptr)

//go:noescape
func rowAffineA32(x unsafe.Pointer, ldb, rows, end, lastb int, keep uint64, lastc int, m, b, c unsafe.Pointer, ox uintptr)

//go:noescape
func rowAffineA64(x unsafe.Pointer, ldb, rows, end, lastb int, keep uint64, lastc int, m, b, c unsafe.Pointer, ox uintptr)

//go:noescape
func rowAffine2A32(x unsafe.Pointer, ldb, rows, end, lastb int, keep uint64, lastc int, m, a, b, c unsafe.Pointer, dyx, ox uintptr)

//go:noescape
func rowAffine2A64(x unsafe.Pointer, ldb, rows, end, lastb int, keep uint64, lastc int, m, a, b, c unsafe.Pointer, dyx, ox uintptr)
