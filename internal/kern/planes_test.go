package kern

import (
	"math"
	"math/rand"
	"testing"
)

// TestInnerPlanesBatch checks that the plane kernels give each plane of a
// multi-plane call exactly what a call on that plane alone gives (the
// kernels keep nothing from one plane to the next), that statsPlanes is the
// corrected two-pass algorithm built from sumPlanes and devPlanes bit for
// bit, and that the element-wise kernels write nothing between the planes.
func TestInnerPlanesBatch(t *testing.T) {
	testInnerPlanesBatch[float32](t)
	testInnerPlanesBatch[float64](t)
}

func testInnerPlanesBatch[T Float](t *testing.T) {
	r := rand.New(rand.NewSource(17))
	same := func(a, b float64) bool { return math.Float64bits(a) == math.Float64bits(b) }
	for _, n := range []int{1, 7, 8, 9, 15, 16, 17, 31, 33, 64, 196, 1000} {
		for _, k := range []int{1, 2, 3, 7} {
			stride := n + r.Intn(12)
			l := (k-1)*stride + n
			x := innerData[T](r, r.Intn(3), l, r.Intn(8))
			dy := innerData[T](r, 0, l, r.Intn(8))
			plane := func(s []T, i int) []T { return s[i*stride : i*stride+n] }
			m, a, b, c := make([]float64, k), make([]float64, k), make([]float64, k), make([]float64, k)
			for i := range m {
				m[i], a[i], b[i], c[i] = float64(x[i*stride])+0.25, r.NormFloat64(), r.NormFloat64(), r.NormFloat64()
			}

			st := make([]Moments, k)
			statsPlanes(x, n, stride, st)
			got := make([]Moments, k)
			dotPlanes(x, dy, n, stride, m, got)
			cnt := float64(n)
			for i := range k {
				var p [1]Moments
				sumPlanes(plane(x, i), n, n, p[:])
				p[0].Mean /= cnt
				devPlanes(plane(x, i), n, n, p[:])
				lin := p[0].N
				want := Moments{N: cnt, Mean: p[0].Mean + lin/cnt, M2: p[0].M2 - lin*lin/cnt}
				if !same(st[i].N, want.N) || !same(st[i].Mean, want.Mean) || !same(st[i].M2, want.M2) {
					t.Fatalf("%T n %d k %d plane %d: statsPlanes %+v, alone %+v", x, n, k, i, st[i], want)
				}
				var d [1]Moments
				dotPlanes(plane(x, i), plane(dy, i), n, n, m[i:i+1], d[:])
				if !same(got[i].Mean, d[0].Mean) || !same(got[i].M2, d[0].M2) {
					t.Fatalf("%T n %d k %d plane %d: dotPlanes %+v, alone %+v", x, n, k, i, got[i], d[0])
				}
			}

			for _, stream := range []bool{false, true} {
				for pass := range 2 {
					nan := T(math.NaN())
					out, alone := innerData[T](r, 0, l, r.Intn(8)), make([]T, l)
					for i := range out {
						out[i], alone[i] = nan, nan
					}
					if pass == 0 {
						affinePlanes(x, out, n, stride, m, b, c, stream)
					} else {
						affine2Planes(x, dy, out, n, stride, m, a, b, c, stream)
					}
					for i := range k {
						if pass == 0 {
							affinePlanes(plane(x, i), plane(alone, i), n, n, m[i:i+1], b[i:i+1], c[i:i+1], false)
						} else {
							affine2Planes(plane(x, i), plane(dy, i), plane(alone, i), n, n, m[i:i+1], a[i:i+1], b[i:i+1], c[i:i+1], false)
						}
					}
					streamFence()
					for j := range out {
						if o, w := out[j], alone[j]; o != w && !(o != o && w != w) {
							t.Fatalf("%T n %d k %d stream %v pass %d: [%d] = %v, alone %v", x, n, k, stream, pass, j, o, w)
						}
					}
				}
			}
		}
	}
}
