package kern

// The per-block loops. A block whose planes are long (S ≥ planeMin) is
// processed one contiguous (sample, channel) plane at a time; a block of
// short planes row by row, with one accumulator per channel.

const planeMin = 16

// sum returns Σ xs in float64.
func sum[T Float](xs []T) float64 {
	var s0, s1, s2, s3 float64
	i := 0
	for ; i+4 <= len(xs); i += 4 {
		v := xs[i : i+4 : i+4]
		s0 += float64(v[0])
		s1 += float64(v[1])
		s2 += float64(v[2])
		s3 += float64(v[3])
	}
	for ; i < len(xs); i++ {
		s0 += float64(xs[i])
	}
	return (s0 + s1) + (s2 + s3)
}

// dev returns Σ(x−m)² and Σ(x−m) in float64.
func dev[T Float](xs []T, m float64) (sq, lin float64) {
	var q0, q1, q2, q3, l0, l1, l2, l3 float64
	i := 0
	for ; i+4 <= len(xs); i += 4 {
		v := xs[i : i+4 : i+4]
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
	}
	for ; i < len(xs); i++ {
		d := float64(xs[i]) - m
		q0 += d * d
		l0 += d
	}
	return (q0 + q1) + (q2 + q3), (l0 + l1) + (l2 + l3)
}

// dot returns Σdy and Σdy·(x−m) in float64.
func dot[T Float](xs, dys []T, m float64) (sdy, sdyx float64) {
	dys = dys[:len(xs)]
	var a0, a1, a2, a3, b0, b1, b2, b3 float64
	i := 0
	for ; i+4 <= len(xs); i += 4 {
		v := xs[i : i+4 : i+4]
		g := dys[i : i+4 : i+4]
		g0, g1, g2, g3 := float64(g[0]), float64(g[1]), float64(g[2]), float64(g[3])
		a0 += g0
		a1 += g1
		a2 += g2
		a3 += g3
		b0 += g0 * (float64(v[0]) - m)
		b1 += g1 * (float64(v[1]) - m)
		b2 += g2 * (float64(v[2]) - m)
		b3 += g3 * (float64(v[3]) - m)
	}
	for ; i < len(xs); i++ {
		g := float64(dys[i])
		a0 += g
		b0 += g * (float64(xs[i]) - m)
	}
	return (a0 + a1) + (a2 + a3), (b0 + b1) + (b2 + b3)
}

// affine computes out = b·(x−m) + c.
func affine[T Float](xs, out []T, m, b, c float64) {
	out = out[:len(xs)]
	for i, v := range xs {
		out[i] = T((float64(v)-m)*b + c)
	}
}

// affine2 computes out = a·dy + b·(x−m) + c.
func affine2[T Float](xs, dys, out []T, m, a, b, c float64) {
	dys = dys[:len(xs)]
	out = out[:len(xs)]
	for i, v := range xs {
		out[i] = T(a*float64(dys[i]) + (float64(v)-m)*b + c)
	}
}

func (p *Plan[T]) blockStats(i int) {
	bl := p.blocks[i]
	C, S := p.l.C, p.l.S
	part := p.part[bl.off : bl.off+bl.c1-bl.c0]
	cnt := float64((bl.n1 - bl.n0) * (bl.s1 - bl.s0))
	if S >= planeMin || bl.c1-bl.c0 == 1 {
		for c := bl.c0; c < bl.c1; c++ {
			var s float64
			for n := bl.n0; n < bl.n1; n++ {
				o := (n*C + c) * S
				s += sum(p.x[o+bl.s0 : o+bl.s1])
			}
			m := s / cnt
			var sq, lin float64
			for n := bl.n0; n < bl.n1; n++ {
				o := (n*C + c) * S
				q, l := dev(p.x[o+bl.s0:o+bl.s1], m)
				sq += q
				lin += l
			}
			// Corrected two-pass: the second term removes the rounding
			// error of m (Björck; Chan, Golub, LeVeque).
			part[c-bl.c0] = Moments{N: cnt, Mean: m + lin/cnt, M2: sq - lin*lin/cnt}
		}
		return
	}
	// Short planes: row by row, one accumulator per channel. During the
	// passes Mean holds Σx, then the mean; M2 holds Σd² and N holds Σd.
	clear(part)
	if S == 1 {
		p.rowStats(bl, part, cnt)
		return
	}
	for n := bl.n0; n < bl.n1; n++ {
		row := p.x[(n*C+bl.c0)*S : (n*C+bl.c1)*S]
		for k := range part {
			part[k].Mean += sum(row[k*S : k*S+S])
		}
	}
	for k := range part {
		part[k].Mean /= cnt
	}
	for n := bl.n0; n < bl.n1; n++ {
		row := p.x[(n*C+bl.c0)*S : (n*C+bl.c1)*S]
		for k := range part {
			q, l := dev(row[k*S:k*S+S], part[k].Mean)
			part[k].M2 += q
			part[k].N += l
		}
	}
	for k := range part {
		lin := part[k].N
		part[k] = Moments{N: cnt, Mean: part[k].Mean + lin/cnt, M2: part[k].M2 - lin*lin/cnt}
	}
}

func (p *Plan[T]) blockSums(i int) {
	bl := p.blocks[i]
	C, S := p.l.C, p.l.S
	part := p.part[bl.off : bl.off+bl.c1-bl.c0]
	mean := p.mean[bl.seg*C : bl.seg*C+C]
	if S >= planeMin || bl.c1-bl.c0 == 1 {
		for c := bl.c0; c < bl.c1; c++ {
			var a, b float64
			for n := bl.n0; n < bl.n1; n++ {
				o := (n*C + c) * S
				u, v := dot(p.x[o+bl.s0:o+bl.s1], p.dy[o+bl.s0:o+bl.s1], mean[c])
				a += u
				b += v
			}
			part[c-bl.c0] = Moments{Mean: a, M2: b}
		}
		return
	}
	clear(part)
	if S == 1 {
		for n := bl.n0; n < bl.n1; n++ {
			o := n*C + bl.c0
			xs := p.x[o : o+len(part)]
			dys := p.dy[o : o+len(part)]
			ms := mean[bl.c0 : bl.c0+len(part)]
			for k, v := range xs {
				g := float64(dys[k])
				part[k].Mean += g
				part[k].M2 += g * (float64(v) - ms[k])
			}
		}
		return
	}
	for n := bl.n0; n < bl.n1; n++ {
		o := (n*C + bl.c0) * S
		for k := range part {
			u, v := dot(p.x[o+k*S:o+k*S+S], p.dy[o+k*S:o+k*S+S], mean[bl.c0+k])
			part[k].Mean += u
			part[k].M2 += v
		}
	}
}

func (p *Plan[T]) blockApply(i int) {
	bl := p.blocks[i]
	C, S := p.l.C, p.l.S
	k0 := bl.seg * C
	if S == 1 {
		w := bl.c1 - bl.c0
		ms := p.mean[k0+bl.c0 : k0+bl.c0+w]
		bs := p.b[k0+bl.c0 : k0+bl.c0+w]
		cs := p.c[k0+bl.c0 : k0+bl.c0+w]
		for n := bl.n0; n < bl.n1; n++ {
			o := n*C + bl.c0
			xs, out := p.x[o:o+w], p.out[o:o+w]
			if p.dy == nil {
				for k, v := range xs {
					out[k] = T((float64(v)-ms[k])*bs[k] + cs[k])
				}
				continue
			}
			as, dys := p.a[k0+bl.c0:k0+bl.c0+w], p.dy[o:o+w]
			for k, v := range xs {
				out[k] = T(as[k]*float64(dys[k]) + (float64(v)-ms[k])*bs[k] + cs[k])
			}
		}
		return
	}
	for n := bl.n0; n < bl.n1; n++ {
		for c := bl.c0; c < bl.c1; c++ {
			o := (n*C + c) * S
			lo, hi := o+bl.s0, o+bl.s1
			k := k0 + c
			if p.dy == nil {
				affine(p.x[lo:hi], p.out[lo:hi], p.mean[k], p.b[k], p.c[k])
			} else {
				affine2(p.x[lo:hi], p.dy[lo:hi], p.out[lo:hi], p.mean[k], p.a[k], p.b[k], p.c[k])
			}
		}
	}
}

// rowStats is blockStats for S = 1: every row holds one value per channel.
func (p *Plan[T]) rowStats(bl block, part []Moments, cnt float64) {
	C, w := p.l.C, len(part)
	for n := bl.n0; n < bl.n1; n++ {
		xs := p.x[n*C+bl.c0 : n*C+bl.c0+w]
		for k, v := range xs {
			part[k].Mean += float64(v)
		}
	}
	for k := range part {
		part[k].Mean /= cnt
	}
	for n := bl.n0; n < bl.n1; n++ {
		xs := p.x[n*C+bl.c0 : n*C+bl.c0+w]
		for k, v := range xs {
			d := float64(v) - part[k].Mean
			part[k].M2 += d * d
			part[k].N += d
		}
	}
	for k := range part {
		lin := part[k].N
		part[k] = Moments{N: cnt, Mean: part[k].Mean + lin/cnt, M2: part[k].M2 - lin*lin/cnt}
	}
}
