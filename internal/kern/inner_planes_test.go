package kern

// Single-plane forms of the plane kernels, for the tests and benchmarks
// that compare them with the portable loops.

func sum[T Float](xs []T) float64 {
	var p [1]Moments
	sumPlanes(xs, len(xs), len(xs), p[:])
	return p[0].Mean
}

func dev[T Float](xs []T, m float64) (float64, float64) {
	p := [1]Moments{{Mean: m}}
	devPlanes(xs, len(xs), len(xs), p[:])
	return p[0].M2, p[0].N
}

func dot[T Float](xs, dys []T, m float64) (float64, float64) {
	var p [1]Moments
	dotPlanes(xs, dys, len(xs), len(xs), []float64{m}, p[:])
	return p[0].Mean, p[0].M2
}

func affine[T Float](xs, out []T, m, b, c float64, stream bool) {
	affinePlanes(xs, out, len(xs), len(xs), []float64{m}, []float64{b}, []float64{c}, stream)
}

func affine2[T Float](xs, dys, out []T, m, a, b, c float64, stream bool) {
	affine2Planes(xs, dys, out, len(xs), len(xs), []float64{m}, []float64{a}, []float64{b}, []float64{c}, stream)
}
