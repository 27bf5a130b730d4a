//go:build goexperiment.simd && amd64

package kern

import (
	"simd/archsimd"
	"unsafe"
)

// With GOEXPERIMENT=simd on amd64 the block loops use the AVX-512 inner
// loops of inner_avx512_amd64.go when the CPU has AVX-512 (F, CD, BW, DQ,
// VL), the portable ones of inner_go.go otherwise.

var (
	haveAVX512 = archsimd.X86.AVX512()
	useAVX512  = haveAVX512
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

// The dispatchers check the lengths (the vector loops index through a base
// pointer, unchecked); inputs shorter than one vector go to the portable
// loops.

func sum[T Float](xs []T) float64 {
	if useAVX512 && len(xs) >= 8 {
		return sumAVX512(xs)
	}
	return sumGo(xs)
}

func dev[T Float](xs []T, m float64) (float64, float64) {
	if useAVX512 && len(xs) >= 8 {
		return devAVX512(xs, m)
	}
	return devGo(xs, m)
}

func dot[T Float](xs, dys []T, m float64) (float64, float64) {
	if useAVX512 && len(xs) >= 8 {
		return dotAVX512(xs, dys[:len(xs)], m)
	}
	return dotGo(xs, dys, m)
}

// affine and affine2 stream their stores (inner_stream_amd64.go) when
// stream is set.

func affine[T Float](xs, out []T, m, b, c float64, stream bool) {
	if useAVX512 && len(xs) >= 8 {
		if stream {
			affineStream(xs, out[:len(xs)], m, b, c)
			return
		}
		affineAVX512(xs, out[:len(xs)], m, b, c)
		return
	}
	affineGo(xs, out, m, b, c)
}

func affine2[T Float](xs, dys, out []T, m, a, b, c float64, stream bool) {
	if useAVX512 && len(xs) >= 8 {
		if stream {
			affine2Stream(xs, dys[:len(xs)], out[:len(xs)], m, a, b, c)
			return
		}
		affine2AVX512(xs, dys[:len(xs)], out[:len(xs)], m, a, b, c)
		return
	}
	affine2Go(xs, dys, out, m, a, b, c)
}

// The row kernels leave blocks narrower than one vector to the portable
// loops.

func rowStats[T Float](x []T, ld, rows int, part []Moments, cnt float64) {
	if !useAVX512 || rows <= 0 || len(part) < 8 {
		rowStatsGo(x, ld, rows, part, cnt)
		return
	}
	rowStatsAVX512(x[:(rows-1)*ld+len(part)], ld, rows, part, cnt)
}

func rowDot[T Float](x, dy []T, ld, rows int, mean []float64, part []Moments) {
	if !useAVX512 || rows <= 0 || len(part) < 8 {
		rowDotGo(x, dy, ld, rows, mean, part)
		return
	}
	n := (rows-1)*ld + len(part)
	rowDotAVX512(x[:n], dy[:n], ld, rows, mean[:len(part)], part)
}

func rowAffine[T Float](x, out []T, ld, rows int, m, b, c []float64) {
	w := len(m)
	if !useAVX512 || rows <= 0 || w < 8 {
		rowAffineGo(x, out, ld, rows, m, b, c)
		return
	}
	n := (rows-1)*ld + w
	rowAffineAVX512(x[:n], out[:n], ld, rows, m, b[:w], c[:w])
}

func rowAffine2[T Float](x, dy, out []T, ld, rows int, m, a, b, c []float64) {
	w := len(m)
	if !useAVX512 || rows <= 0 || w < 8 {
		rowAffine2Go(x, dy, out, ld, rows, m, a, b, c)
		return
	}
	n := (rows-1)*ld + w
	rowAffine2AVX512(x[:n], dy[:n], out[:n], ld, rows, m, a[:w], b[:w], c[:w])
}
