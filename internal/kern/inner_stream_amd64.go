//go:build goexperiment.simd && amd64

package kern

import "unsafe"

// Streaming stores for the element-wise plane passes (GOEXPERIMENT=simd,
// AVX-512). An ordinary store first reads the line it writes into the
// cache (read for ownership) and later writes it back, evicting data the
// next pass needs; a non-temporal store writes whole lines straight to
// memory. For outputs far larger than the caches that removes a quarter of
// the forward's memory traffic (read x twice, write y: 4 → 3 tensor passes
// with the ownership read) and a sixth of the backward's. For outputs that
// their reader (the next layer) would still find in a cache — tens of MB
// with a large L3 — it is a loss: see streamMin. The kernels
// (stream_amd64.s) compute the same fused operations as affineAVX512 and
// affine2AVX512, lane for lane: streamed or not, y is the same bit for bit.

// streams reports whether an Apply writing n elements of T streams.
func streams[T Float](n int) bool {
	var z T
	return useAVX512 && n*int(unsafe.Sizeof(z)) >= streamMin
}

//go:noescape
func affineStream32(x, y unsafe.Pointer, n, h int, hm, tm uint64, m, b, c float64)

//go:noescape
func affineStream64(x, y unsafe.Pointer, n, h int, hm, tm uint64, m, b, c float64)

//go:noescape
func affine2Stream32(x, dy, y unsafe.Pointer, n, h int, hm, tm uint64, m, a, b, c float64)

//go:noescape
func affine2Stream64(x, dy, y unsafe.Pointer, n, h int, hm, tm uint64, m, a, b, c float64)

// streamFence orders the streaming stores before every later store
// (SFENCE): called at the end of each Apply block, before the block is
// reported done to the pool, so whoever reads y next sees it.
func streamFence()

// streamSplit returns the number h ≤ 7 of elements of an n-element (n ≥ 8)
// output at p before the first one aligned for streaming stores (32 bytes
// for float32, 64 for float64), and the masks of the head (the first h
// lanes of x[0:8]) and of the tail (the last (n−h) mod 8 lanes of
// x[n−8:n]).
func streamSplit[T Float](p unsafe.Pointer, n int) (h int, hm, tm uint64) {
	size := 8
	if is32[T]() {
		size = 4
	}
	h = int(-uintptr(p)&uintptr(8*size-1)) / size
	t := (n - h) & 7
	return h, 1<<h - 1, (0xff << (8 - t)) & 0xff
}

func affineStream[T Float](xs, out []T, m, b, c float64) {
	n := len(xs)
	h, hm, tm := streamSplit[T](ptr(out), n)
	if is32[T]() {
		affineStream32(ptr(xs), ptr(out), n, h, hm, tm, m, b, c)
		return
	}
	affineStream64(ptr(xs), ptr(out), n, h, hm, tm, m, b, c)
}

func affine2Stream[T Float](xs, dys, out []T, m, a, b, c float64) {
	n := len(xs)
	h, hm, tm := streamSplit[T](ptr(out), n)
	if is32[T]() {
		affine2Stream32(ptr(xs), ptr(dys), ptr(out), n, h, hm, tm, m, a, b, c)
		return
	}
	affine2Stream64(ptr(xs), ptr(dys), ptr(out), n, h, hm, tm, m, a, b, c)
}
