//go:build amd64 && !purego

package kern

import "unsafe"

// relu and maskTo run the vector kernels of fused_amd64.s on the whole
// vectors of their input (64 bytes with AVX-512, 32 with AVX2) and the
// portable loops on the rest. Both are exact (a maximum, a select): the
// result is that of the portable loops bit for bit.

func relu[T Float](xs []T) {
	vb := vecBytes()
	nb := len(xs) * sizeOf[T]() &^ (vb - 1)
	if vb == 0 || nb == 0 {
		reluGo(xs)
		return
	}
	pick[T](relu512x32, relu512x64, relu256x32, relu256x64)(ptr(xs), nb)
	reluGo(xs[nb/sizeOf[T]():])
}

func maskTo[T Float](dy, y, g []T) {
	y, g = y[:len(dy)], g[:len(dy)]
	vb := vecBytes()
	nb := len(dy) * sizeOf[T]() &^ (vb - 1)
	if vb == 0 || nb == 0 {
		maskGo(dy, y, g)
		return
	}
	pick[T](mask512x32, mask512x64, mask256x32, mask256x64)(ptr(dy), ptr(y), ptr(g), nb)
	k := nb / sizeOf[T]()
	maskGo(dy[k:], y[k:], g[k:])
}

// vecBytes returns the width in bytes of the vectors of the kernels in use
// (0: the portable loops).
func vecBytes() int {
	switch {
	case useAVX512:
		return 64
	case useAVX2:
		return 32
	}
	return 0
}

// The kernels of fused_amd64.s; nb, a positive multiple of the vector
// width, is the length in bytes.

//go:noescape
func relu512x32(x unsafe.Pointer, nb int)

//go:noescape
func relu512x64(x unsafe.Pointer, nb int)

//go:noescape
func relu256x32(x unsafe.Pointer, nb int)

//go:noescape
func relu256x64(x unsafe.Pointer, nb int)

//go:noescape
func mask512x32(dy, y, out unsafe.Pointer, nb int)

//go:noescape
func mask512x64(dy, y, out unsafe.Pointer, nb int)

//go:noescape
func mask256x32(dy, y, out unsafe.Pointer, nb int)

//go:noescape
func mask256x64(dy, y, out unsafe.Pointer, nb int)
