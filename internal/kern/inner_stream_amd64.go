//go:build amd64 && !purego

package kern

import "unsafe"

// Streaming stores for the element-wise plane passes (AVX-512). An
// ordinary store first reads the line it writes into the cache (read for
// ownership) and later writes it back, evicting data the next pass needs;
// a non-temporal store writes whole lines straight to memory. For outputs far larger than the caches that removes a quarter of
// the forward's memory traffic (read x twice, write y: 4 → 3 tensor passes
// with the ownership read) and a sixth of the backward's. For outputs that
// their reader (the next layer) would still find in a cache — tens of MB
// with a large L3 — it is a loss: see streamMin. The kernels
// (affine_amd64.s) are those of the cached stores with another store
// instruction: streamed or not, y is the same bit for bit.

// streams reports whether an Apply writing n elements of T streams.
func streams[T Float](n int) bool {
	return useAVX512 && n*sizeOf[T]() >= streamMin
}

//go:noescape
func affinePlanesNT32(x, y unsafe.Pointer, n, strideb, k int, m, b, c unsafe.Pointer)

//go:noescape
func affinePlanesNT64(x, y unsafe.Pointer, n, strideb, k int, m, b, c unsafe.Pointer)

//go:noescape
func affine2PlanesNT32(x, dy, y unsafe.Pointer, n, strideb, k int, m, a, b, c unsafe.Pointer)

//go:noescape
func affine2PlanesNT64(x, dy, y unsafe.Pointer, n, strideb, k int, m, a, b, c unsafe.Pointer)

// streamFence orders the streaming stores before every later store
// (SFENCE): called at the end of each Apply block, before the block is
// reported done to the pool, so whoever reads y next sees it.
func streamFence()
