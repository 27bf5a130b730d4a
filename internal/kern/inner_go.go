package kern

// The portable inner loops, always built. Each doc comment gives the plain
// loop the function computes; the fast versions (AVX-512 assembly,
// inner_amd64.go) compute the same sums in float64 in another fixed order
// (the row kernels: in the same order, bit for bit). The block loops
// (block.go) call the plane and row kernels through the names without the
// Go suffix (inner_noasm.go, inner_amd64.go).
//
// Sums are accumulated in float64 whatever T, in an order that depends only
// on the length of the input: same input, same result.

// sumGo returns Σ xs in float64:
//
//	for _, v := range xs { s += float64(v) }
func sumGo[T Float](xs []T) float64 {
	var s0, s1, s2, s3 float64
	for len(xs) >= 4 {
		v := xs[:4:4]
		s0 += float64(v[0])
		s1 += float64(v[1])
		s2 += float64(v[2])
		s3 += float64(v[3])
		xs = xs[4:]
	}
	for _, v := range xs {
		s0 += float64(v)
	}
	return (s0 + s1) + (s2 + s3)
}

// devGo returns Σ(x−m)² and Σ(x−m) in float64:
//
//	for _, v := range xs { d := float64(v) − m; sq += d·d; lin += d }
func devGo[T Float](xs []T, m float64) (sq, lin float64) {
	var q0, q1, q2, q3, l0, l1, l2, l3 float64
	for len(xs) >= 4 {
		v := xs[:4:4]
		d0 := float64(v[0]) - m
		d1 := float64(v[1]) - m
		d2 := float64(v[2]) - m
		d3 := float64(v[3]) - m
		q0 += d0 * d0
		q1 += d1 * d1
		q2 += d2 * d2
		q3 += d3 * d3
		l0 += d0
		l1 += d1
		l2 += d2
		l3 += d3
		xs = xs[4:]
	}
	for _, v := range xs {
		d := float64(v) - m
		q0 += d * d
		l0 += d
	}
	return (q0 + q1) + (q2 + q3), (l0 + l1) + (l2 + l3)
}

// dotGo returns Σdy and Σdy·(x−m) in float64 (len(dys) ≥ len(xs)):
//
//	for i, v := range xs { g := float64(dys[i]); sdy += g; sdyx += g·(float64(v) − m) }
func dotGo[T Float](xs, dys []T, m float64) (sdy, sdyx float64) {
	dys = dys[:len(xs)]
	var a0, a1, a2, a3, b0, b1, b2, b3 float64
	for len(xs) >= 4 {
		v := xs[:4:4]
		g := dys[:4:4]
		g0, g1, g2, g3 := float64(g[0]), float64(g[1]), float64(g[2]), float64(g[3])
		a0 += g0
		a1 += g1
		a2 += g2
		a3 += g3
		b0 += g0 * (float64(v[0]) - m)
		b1 += g1 * (float64(v[1]) - m)
		b2 += g2 * (float64(v[2]) - m)
		b3 += g3 * (float64(v[3]) - m)
		xs, dys = xs[4:], dys[4:]
	}
	dys = dys[:len(xs)]
	for i, v := range xs {
		g := float64(dys[i])
		a0 += g
		b0 += g * (float64(v) - m)
	}
	return (a0 + a1) + (a2 + a3), (b0 + b1) + (b2 + b3)
}

// The plane reductions over k = len(part) planes of n elements,
// x[i·stride : i·stride+n] for plane i (the planes of a block's channels
// in one sample), each plane's sums added into part[i]:
//
//	sumPlanesGo: part[i].Mean += sumGo(plane i)
//	devPlanesGo: q, l := devGo(plane i, part[i].Mean); part[i].M2 += q; part[i].N += l
//	dotPlanesGo: a, b := dotGo(plane i, dy plane i, mean[i]); part[i].Mean += a; part[i].M2 += b

func sumPlanesGo[T Float](x []T, n, stride int, part []Moments) {
	for i := range part {
		part[i].Mean += sumGo(x[i*stride : i*stride+n])
	}
}

func devPlanesGo[T Float](x []T, n, stride int, part []Moments) {
	for i := range part {
		q, l := devGo(x[i*stride:i*stride+n], part[i].Mean)
		part[i].M2 += q
		part[i].N += l
	}
}

// statsPlanesGo sets part[i] to the moments of plane i by the corrected
// two-pass algorithm (cnt = n):
//
//	m := sumGo(plane)/cnt; sq, lin := devGo(plane, m)
//	part[i] = Moments{N: cnt, Mean: m + lin/cnt, M2: sq − lin²/cnt}
func statsPlanesGo[T Float](x []T, n, stride int, part []Moments) {
	cnt := float64(n)
	for i := range part {
		xs := x[i*stride : i*stride+n]
		m := sumGo(xs) / cnt
		sq, lin := devGo(xs, m)
		part[i] = corrected(cnt, m, sq, lin)
	}
}

func dotPlanesGo[T Float](x, dy []T, n, stride int, mean []float64, part []Moments) {
	for i := range part {
		a, b := dotGo(x[i*stride:i*stride+n], dy[i*stride:i*stride+n], mean[i])
		part[i].Mean += a
		part[i].M2 += b
	}
}

// affineGo computes, in float64 (len(out) ≥ len(xs)):
//
//	for i, v := range xs { out[i] = T((float64(v) − m)·b + c) }
func affineGo[T Float](xs, out []T, m, b, c float64) {
	out = out[:len(xs)]
	for i, v := range xs {
		out[i] = T((float64(v)-m)*b + c)
	}
}

// affine2Go computes, in float64 (len(dys), len(out) ≥ len(xs)):
//
//	for i, v := range xs { out[i] = T(a·float64(dys[i]) + (float64(v) − m)·b + c) }
func affine2Go[T Float](xs, dys, out []T, m, a, b, c float64) {
	dys = dys[:len(xs)]
	out = out[:len(xs)]
	for i, v := range xs {
		out[i] = T(a*float64(dys[i]) + (float64(v)-m)*b + c)
	}
}

// affinePlanesGo and affine2PlanesGo apply affineGo and affine2Go to the
// k = len(m) planes of n elements at x[i·stride:] (out, dy likewise) with
// the coefficients of index i.

func affinePlanesGo[T Float](x, out []T, n, stride int, m, b, c []float64) {
	for i := range m {
		o := i * stride
		affineGo(x[o:o+n], out[o:o+n], m[i], b[i], c[i])
	}
}

func affine2PlanesGo[T Float](x, dy, out []T, n, stride int, m, a, b, c []float64) {
	for i := range m {
		o := i * stride
		affine2Go(x[o:o+n], dy[o:o+n], out[o:o+n], m[i], a[i], b[i], c[i])
	}
}

// The row kernels serve S = 1: x holds rows rows of w = len(part) (or
// len(m)) values, one per channel, row n at x[n·ld : n·ld+w]. Every channel
// accumulates over the rows in row order. Their products are rounded
// explicitly (float64(a·b)), which forbids fused multiply-adds: the result
// is the same for every GOAMD64 level and equals that of the vector
// versions bit for bit.

// rowStatsGo sets part[k] to the moments of column k (count cnt = rows):
// the two-pass mean and Σ(x−μ)² with the Σ(x−μ) correction, in float64:
//
//	μ = Σ_n x[n·ld+k] / cnt
//	lin = Σ_n (x[n·ld+k] − μ); sq = Σ_n (x[n·ld+k] − μ)²
//	part[k] = Moments{N: cnt, Mean: μ + lin/cnt, M2: sq − lin²/cnt}
func rowStatsGo[T Float](x []T, ld, rows int, part []Moments, cnt float64) {
	w := len(part)
	if rows <= 0 || w == 0 {
		clear(part)
		return
	}
	x = x[:(rows-1)*ld+w]
	// During the passes Mean holds Σx, then μ; M2 holds Σd² and N Σd.
	// Four rows at a time: one load and store of each sum per four values,
	// added one after the other in row order.
	clear(part)
	n := 0
	for ; n+4 <= rows; n += 4 {
		x0 := x[n*ld : n*ld+w]
		x1, x2, x3 := x[(n+1)*ld:][:len(x0)], x[(n+2)*ld:][:len(x0)], x[(n+3)*ld:][:len(x0)]
		part := part[:len(x0)]
		for k, v := range x0 {
			part[k].Mean = part[k].Mean + float64(v) + float64(x1[k]) + float64(x2[k]) + float64(x3[k])
		}
	}
	for ; n < rows; n++ {
		xs := x[n*ld : n*ld+w]
		part := part[:len(xs)]
		for k, v := range xs {
			part[k].Mean += float64(v)
		}
	}
	for k := range part {
		part[k].Mean /= cnt
	}
	n = 0
	for ; n+4 <= rows; n += 4 {
		x0 := x[n*ld : n*ld+w]
		x1, x2, x3 := x[(n+1)*ld:][:len(x0)], x[(n+2)*ld:][:len(x0)], x[(n+3)*ld:][:len(x0)]
		part := part[:len(x0)]
		for k, v := range x0 {
			m, q, l := part[k].Mean, part[k].M2, part[k].N
			d := float64(v) - m
			q, l = q+float64(d*d), l+d
			d = float64(x1[k]) - m
			q, l = q+float64(d*d), l+d
			d = float64(x2[k]) - m
			q, l = q+float64(d*d), l+d
			d = float64(x3[k]) - m
			part[k].M2, part[k].N = q+float64(d*d), l+d
		}
	}
	for ; n < rows; n++ {
		xs := x[n*ld : n*ld+w]
		part := part[:len(xs)]
		for k, v := range xs {
			d := float64(v) - part[k].Mean
			part[k].M2 += float64(d * d)
			part[k].N += d
		}
	}
	for k := range part {
		part[k] = corrected(cnt, part[k].Mean, part[k].M2, part[k].N)
	}
}

// rowDotGo sets part[k] to (Σdy, Σdy·(x−mean[k])) of column k, in (Mean, M2):
//
//	part[k] = Moments{Mean: Σ_n dy[n·ld+k], M2: Σ_n dy[n·ld+k]·(x[n·ld+k] − mean[k])}
func rowDotGo[T Float](x, dy []T, ld, rows int, mean []float64, part []Moments) {
	w := len(part)
	clear(part)
	if rows <= 0 || w == 0 {
		return
	}
	x = x[:(rows-1)*ld+w]
	dy = dy[:len(x)]
	mean = mean[:w]
	n := 0
	for ; n+4 <= rows; n += 4 {
		x0 := x[n*ld : n*ld+w]
		x1, x2, x3 := x[(n+1)*ld:][:len(x0)], x[(n+2)*ld:][:len(x0)], x[(n+3)*ld:][:len(x0)]
		g0 := dy[n*ld:][:len(x0)]
		g1, g2, g3 := dy[(n+1)*ld:][:len(x0)], dy[(n+2)*ld:][:len(x0)], dy[(n+3)*ld:][:len(x0)]
		part, mean := part[:len(x0)], mean[:len(x0)]
		for k, v := range x0 {
			m, a, b := mean[k], part[k].Mean, part[k].M2
			g := float64(g0[k])
			a, b = a+g, b+float64(g*(float64(v)-m))
			g = float64(g1[k])
			a, b = a+g, b+float64(g*(float64(x1[k])-m))
			g = float64(g2[k])
			a, b = a+g, b+float64(g*(float64(x2[k])-m))
			g = float64(g3[k])
			part[k].Mean, part[k].M2 = a+g, b+float64(g*(float64(x3[k])-m))
		}
	}
	for ; n < rows; n++ {
		xs := x[n*ld : n*ld+w]
		dys := dy[n*ld : n*ld+w]
		for k, v := range xs {
			g := float64(dys[k])
			part[k].Mean += g
			part[k].M2 += float64(g * (float64(v) - mean[k]))
		}
	}
}

// rowAffineGo computes, in float64, for every row n and channel k < len(m):
//
//	out[n·ld+k] = T((x[n·ld+k] − m[k])·b[k] + c[k])
func rowAffineGo[T Float](x, out []T, ld, rows int, m, b, c []float64) {
	w := len(m)
	if rows <= 0 || w == 0 {
		return
	}
	b, c = b[:w], c[:w]
	for n := range rows {
		xs := x[n*ld : n*ld+w]
		o := out[n*ld : n*ld+w]
		for k, v := range xs {
			o[k] = T(float64((float64(v)-m[k])*b[k]) + c[k])
		}
	}
}

// rowAffine2Go computes, in float64, for every row n and channel k < len(m):
//
//	out[n·ld+k] = T(a[k]·dy[n·ld+k] + (x[n·ld+k] − m[k])·b[k] + c[k])
func rowAffine2Go[T Float](x, dy, out []T, ld, rows int, m, a, b, c []float64) {
	w := len(m)
	if rows <= 0 || w == 0 {
		return
	}
	a, b, c = a[:w], b[:w], c[:w]
	for n := range rows {
		xs := x[n*ld : n*ld+w]
		dys := dy[n*ld : n*ld+w]
		o := out[n*ld : n*ld+w]
		for k, v := range xs {
			o[k] = T(float64(a[k]*float64(dys[k])) + float64((float64(v)-m[k])*b[k]) + c[k])
		}
	}
}
