//go:build !amd64 || purego

package kern

// Off amd64, or with the purego build tag, the block loops use the portable
// inner loops of inner_go.go.

// simdPath names the inner loops in use, for tests and benchmarks.
func simdPath() string { return "go" }

// setSIMD reports that there are no vector loops to turn on.
func setSIMD(bool) bool { return false }

func sum[T Float](xs []T) float64                       { return sumGo(xs) }
func dev[T Float](xs []T, m float64) (float64, float64) { return devGo(xs, m) }
func dot[T Float](xs, dys []T, m float64) (float64, float64) {
	return dotGo(xs, dys, m)
}
func affine[T Float](xs, out []T, m, b, c float64, _ bool) { affineGo(xs, out, m, b, c) }
func affine2[T Float](xs, dys, out []T, m, a, b, c float64, _ bool) {
	affine2Go(xs, dys, out, m, a, b, c)
}
func rowStats[T Float](x []T, ld, rows int, part []Moments, cnt float64) {
	rowStatsGo(x, ld, rows, part, cnt)
}
func rowDot[T Float](x, dy []T, ld, rows int, mean []float64, part []Moments) {
	rowDotGo(x, dy, ld, rows, mean, part)
}
func rowAffine[T Float](x, out []T, ld, rows int, m, b, c []float64) {
	rowAffineGo(x, out, ld, rows, m, b, c)
}
func rowAffine2[T Float](x, dy, out []T, ld, rows int, m, a, b, c []float64) {
	rowAffine2Go(x, dy, out, ld, rows, m, a, b, c)
}

// Streaming stores exist only with the vector loops.

func streams[T Float](int) bool { return false }
func streamFence()              {}
