//go:build !amd64 || purego

package kern

// Off amd64, or with the purego build tag, the block loops use the portable
// inner loops of inner_go.go.

// simdPath names the inner loops in use, for tests and benchmarks.
func simdPath() string { return "go" }

// setSIMD reports that there are no vector loops to turn on.
func setSIMD(bool) bool { return false }

func sumPlanes[T Float](x []T, n, stride int, part []Moments) { sumPlanesGo(x, n, stride, part) }
func devPlanes[T Float](x []T, n, stride int, part []Moments) { devPlanesGo(x, n, stride, part) }
func statsPlanes[T Float](x []T, n, stride int, part []Moments) {
	statsPlanesGo(x, n, stride, part)
}
func dotPlanes[T Float](x, dy []T, n, stride int, mean []float64, part []Moments) {
	dotPlanesGo(x, dy, n, stride, mean, part)
}
func affinePlanes[T Float](x, out []T, n, stride int, m, b, c []float64, _ bool) {
	affinePlanesGo(x, out, n, stride, m, b, c)
}
func affine2Planes[T Float](x, dy, out []T, n, stride int, m, a, b, c []float64, _ bool) {
	affine2PlanesGo(x, dy, out, n, stride, m, a, b, c)
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
