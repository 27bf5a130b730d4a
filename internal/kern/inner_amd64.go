//go:build amd64 && !purego

package kern

import (
	"unsafe"

	"golang.org/x/sys/cpu"
)

// On amd64 the block loops use the AVX-512 inner loops of inner_amd64.s
// (plane reductions, row kernels) and affine_amd64.s (plane element-wise
// kernels) when the CPU and the OS support AVX-512 (F, CD, BW, DQ, VL; and
// BMI2, which every such CPU has), the portable ones of inner_go.go
// otherwise or with the purego build tag. They compute in float64 lanes
// what the portable loops compute:
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
	useAVX512 = haveAVX512
)

// setSIMD turns the vector loops on or off (tests, benchmarks) and reports
// whether they are on. Not safe while kernels run.
func setSIMD(on bool) bool {
	useAVX512 = on && haveAVX512
	return useAVX512
}

// simdPath names the inner loops in use, for tests and benchmarks.
func simdPath() string {
	if useAVX512 {
		return "avx512"
	}
	return "go"
}

// is32 reports whether T is a float32 type (float32 or a type defined on it).
func is32[T Float]() bool {
	var z T
	return unsafe.Sizeof(z) == 4
}

func ptr[T any](s []T) unsafe.Pointer { return unsafe.Pointer(unsafe.SliceData(s)) }

// topBits returns the mask of the last r (0 ≤ r ≤ 8) lanes of 8.
func topBits(r int) uint64 { return 0xff << (8 - r) & 0xff }

// The plane reductions work on k = len(part) planes of n elements,
// x[i·stride : i·stride+n] for plane i, and add plane i's sums into
// part[i] (one call per sample of a block: the planes of its channels).
//
// sumPlanes, on float32 data, adds the elements in pairs in float32 before
// widening them (one conversion per 16 elements instead of two; the
// conversions bound the loop). Each pair sum is rounded once, |error| ≤
// 2⁻²⁴·|x_i + x_j|, so the result is within 2⁻²⁴·Σ|x| (plus float64
// rounding) of Σx. It serves only the first-pass mean of the corrected
// two-pass algorithm: the second pass, in float64, computes Σ(x−m)² and
// Σ(x−m) around that m, and the correction (mean = m + Σ(x−m)/n, M2 =
// Σ(x−m)² − (Σ(x−m))²/n) is exact for any m, so the moments keep float64
// accuracy (simd_test.go checks it).
// The assembly addresses part[i].N, .Mean, .M2 at bytes 24·i + 0, 8, 16
// (each line fails to compile otherwise).
var (
	_ = [1]struct{}{}[unsafe.Offsetof(Moments{}.N)]
	_ = [1]struct{}{}[unsafe.Offsetof(Moments{}.Mean)-8]
	_ = [1]struct{}{}[unsafe.Offsetof(Moments{}.M2)-16]
	_ = [1]struct{}{}[unsafe.Sizeof(Moments{})-24]
)

func sumPlanes[T Float](x []T, n, stride int, part []Moments) {
	k := len(part)
	if !useAVX512 || n < 8 || k == 0 {
		sumPlanesGo(x, n, stride, part)
		return
	}
	x = x[:(k-1)*stride+n]
	if is32[T]() {
		sumPlanes32(ptr(x), n, 4*stride, topBits(n&7), k, ptr(part))
		return
	}
	sumPlanes64(ptr(x), n, 8*stride, topBits(n&7), k, ptr(part))
}

// statsPlanes sets part[i] to the moments of plane i (count n), computed
// as sumPlanes and devPlanes would with the corrected two-pass algorithm,
// bit for bit, but each plane read twice in a row (from L1).
func statsPlanes[T Float](x []T, n, stride int, part []Moments) {
	k := len(part)
	if !useAVX512 || n < 8 || k == 0 {
		statsPlanesGo(x, n, stride, part)
		return
	}
	x = x[:(k-1)*stride+n]
	if is32[T]() {
		statsPlanes32(ptr(x), n, 4*stride, topBits(n&7), k, ptr(part), float64(n))
		return
	}
	statsPlanes64(ptr(x), n, 8*stride, topBits(n&7), k, ptr(part), float64(n))
}

func devPlanes[T Float](x []T, n, stride int, part []Moments) {
	k := len(part)
	if !useAVX512 || n < 8 || k == 0 {
		devPlanesGo(x, n, stride, part)
		return
	}
	x = x[:(k-1)*stride+n]
	if is32[T]() {
		devPlanes32(ptr(x), n, 4*stride, topBits(n&7), k, ptr(part))
		return
	}
	devPlanes64(ptr(x), n, 8*stride, topBits(n&7), k, ptr(part))
}

func dotPlanes[T Float](x, dy []T, n, stride int, mean []float64, part []Moments) {
	k := len(part)
	if !useAVX512 || n < 8 || k == 0 {
		dotPlanesGo(x, dy, n, stride, mean, part)
		return
	}
	x, dy, mean = x[:(k-1)*stride+n], dy[:(k-1)*stride+n], mean[:k]
	if is32[T]() {
		dotPlanes32(ptr(x), ptr(dy), n, 4*stride, topBits(n&7), k, ptr(mean), ptr(part))
		return
	}
	dotPlanes64(ptr(x), ptr(dy), n, 8*stride, topBits(n&7), k, ptr(mean), ptr(part))
}

// affinePlanes and affine2Planes compute k = len(m) planes of n elements,
// out[i·stride : i·stride+n] from the same elements of x (and dy) with the
// coefficients of index i, and write y with streaming stores when stream
// is set (see streams).

func affinePlanes[T Float](x, out []T, n, stride int, m, b, c []float64, stream bool) {
	k := len(m)
	if !useAVX512 || n < 8 || k == 0 {
		affinePlanesGo(x, out, n, stride, m, b, c)
		return
	}
	l := (k-1)*stride + n
	x, out, b, c = x[:l], out[:l], b[:k], c[:k]
	f := affinePlanes64
	switch {
	case is32[T]() && stream:
		f = affinePlanesNT32
	case is32[T]():
		f = affinePlanes32
	case stream:
		f = affinePlanesNT64
	}
	var z T
	f(ptr(x), ptr(out), n, stride*int(unsafe.Sizeof(z)), k, ptr(m), ptr(b), ptr(c))
}

func affine2Planes[T Float](x, dy, out []T, n, stride int, m, a, b, c []float64, stream bool) {
	k := len(m)
	if !useAVX512 || n < 8 || k == 0 {
		affine2PlanesGo(x, dy, out, n, stride, m, a, b, c)
		return
	}
	l := (k-1)*stride + n
	x, dy, out, a, b, c = x[:l], dy[:l], out[:l], a[:k], b[:k], c[:k]
	f := affine2Planes64
	switch {
	case is32[T]() && stream:
		f = affine2PlanesNT32
	case is32[T]():
		f = affine2Planes32
	case stream:
		f = affine2PlanesNT64
	}
	var z T
	f(ptr(x), ptr(dy), ptr(out), n, stride*int(unsafe.Sizeof(z)), k, ptr(m), ptr(a), ptr(b), ptr(c))
}

// The row kernels walk the rows in order, four at a time, over chunks of
// at most rowChunk channels, and keep the per-channel sums of a chunk in
// float64 arrays on the stack (L1): every access to the data is then
// sequential within a row, with no stride of a whole row between two
// consecutive loads or between a store and the next loads, which defeated
// the prefetchers and hit 4 KB aliasing at C = 1024. A chunk whose width
// is not a multiple of 8 ends with the vector of its last 8 channels,
// whose first lanes redo channels already done (the same sums, not read
// back; the element-wise kernels do not store them again). Blocks
// narrower than one vector go to the portable loops.

// rowChunk is the widest chunk of channels a row reduction works on at once.
const rowChunk = 128

// rowAcc maps the channels of a chunk to their accumulator index: k below
// tail is k, k at or above it is in the last vector (channel last = w−8).
func rowAcc(k, tail, last int) int {
	if k >= tail {
		return tail + k - last
	}
	return k
}

func rowStats[T Float](x []T, ld, rows int, part []Moments, cnt float64) {
	w := len(part)
	if !useAVX512 || rows <= 0 || w < 8 {
		rowStatsGo(x, ld, rows, part, cnt)
		return
	}
	x = x[:(rows-1)*ld+w]
	var z T
	sz := int(unsafe.Sizeof(z))
	var sa, qa, la [rowChunk + 8]float64
	nc := (w + rowChunk - 1) / rowChunk
	for ci := range nc {
		k0, k1 := ci*w/nc, (ci+1)*w/nc
		nv, last := (k1-k0+7)/8, k1-k0-8
		end, lastb, px := 64*(nv-1), last*sz, ptr(x[k0:])
		clear(sa[:8*nv])
		clear(qa[:8*nv])
		clear(la[:8*nv])
		if sz == 4 {
			rowSum32(px, ld*sz, rows, end, lastb, unsafe.Pointer(&sa))
		} else {
			rowSum64(px, ld*sz, rows, end, lastb, unsafe.Pointer(&sa))
		}
		for k := range 8 * nv {
			sa[k] /= cnt
		}
		if sz == 4 {
			rowDev32(px, ld*sz, rows, end, lastb, unsafe.Pointer(&sa), unsafe.Pointer(&qa), unsafe.Pointer(&la))
		} else {
			rowDev64(px, ld*sz, rows, end, lastb, unsafe.Pointer(&sa), unsafe.Pointer(&qa), unsafe.Pointer(&la))
		}
		tail := 8 * (nv - 1)
		for k := range part[k0:k1] {
			j := rowAcc(k, tail, last)
			m, q, l := sa[j], qa[j], la[j]
			part[k0+k] = Moments{N: cnt, Mean: m + l/cnt, M2: q - l*l/cnt}
		}
	}
}

func rowDot[T Float](x, dy []T, ld, rows int, mean []float64, part []Moments) {
	w := len(part)
	if !useAVX512 || rows <= 0 || w < 8 {
		rowDotGo(x, dy, ld, rows, mean, part)
		return
	}
	n := (rows-1)*ld + w
	x, dy, mean = x[:n], dy[:n], mean[:w]
	var z T
	sz := int(unsafe.Sizeof(z))
	dyx := uintptr(ptr(dy)) - uintptr(ptr(x))
	var ma, aa, ba [rowChunk + 8]float64
	nc := (w + rowChunk - 1) / rowChunk
	for ci := range nc {
		k0, k1 := ci*w/nc, (ci+1)*w/nc
		nv, last := (k1-k0+7)/8, k1-k0-8
		end, lastb, px := 64*(nv-1), last*sz, ptr(x[k0:])
		// The means in accumulator order: vector v at channel min(8v, last).
		copy(ma[:8*(nv-1)], mean[k0:])
		copy(ma[8*(nv-1):8*nv], mean[k0+last:])
		clear(aa[:8*nv])
		clear(ba[:8*nv])
		pm, pa, pb := unsafe.Pointer(&ma), unsafe.Pointer(&aa), unsafe.Pointer(&ba)
		if sz == 4 {
			rowDot32(px, ld*sz, rows, end, lastb, pm, pa, pb, dyx)
		} else {
			rowDot64(px, ld*sz, rows, end, lastb, pm, pa, pb, dyx)
		}
		tail := 8 * (nv - 1)
		for k := range part[k0:k1] {
			j := rowAcc(k, tail, last)
			part[k0+k] = Moments{Mean: aa[j], M2: ba[j]}
		}
	}
}

func rowAffine[T Float](x, out []T, ld, rows int, m, b, c []float64) {
	w := len(m)
	if !useAVX512 || rows <= 0 || w < 8 {
		rowAffineGo(x, out, ld, rows, m, b, c)
		return
	}
	n := (rows-1)*ld + w
	x, out, b, c = x[:n], out[:n], b[:w], c[:w]
	nv, last := (w+7)/8, w-8
	keep := topBits(8 - (8*(nv-1) - last)) // out may alias x: overlapped lanes are not stored again
	var z T
	sz := int(unsafe.Sizeof(z))
	ox := uintptr(ptr(out)) - uintptr(ptr(x))
	if sz == 4 {
		rowAffine32(ptr(x), ld*sz, rows, 64*(nv-1), last*sz, keep, 8*last, ptr(m), ptr(b), ptr(c), ox)
		return
	}
	rowAffine64(ptr(x), ld*sz, rows, 64*(nv-1), last*sz, keep, 8*last, ptr(m), ptr(b), ptr(c), ox)
}

func rowAffine2[T Float](x, dy, out []T, ld, rows int, m, a, b, c []float64) {
	w := len(m)
	if !useAVX512 || rows <= 0 || w < 8 {
		rowAffine2Go(x, dy, out, ld, rows, m, a, b, c)
		return
	}
	n := (rows-1)*ld + w
	x, dy, out, a, b, c = x[:n], dy[:n], out[:n], a[:w], b[:w], c[:w]
	nv, last := (w+7)/8, w-8
	keep := topBits(8 - (8*(nv-1) - last))
	var z T
	sz := int(unsafe.Sizeof(z))
	dyx := uintptr(ptr(dy)) - uintptr(ptr(x))
	ox := uintptr(ptr(out)) - uintptr(ptr(x))
	if sz == 4 {
		rowAffine2_32(ptr(x), ld*sz, rows, 64*(nv-1), last*sz, keep, 8*last, ptr(m), ptr(a), ptr(b), ptr(c), dyx, ox)
		return
	}
	rowAffine2_64(ptr(x), ld*sz, rows, 64*(nv-1), last*sz, keep, 8*last, ptr(m), ptr(a), ptr(b), ptr(c), dyx, ox)
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
