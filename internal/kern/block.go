package kern

// The per-block loops. A block whose planes are long (S ≥ planeMin) is
// processed one contiguous (sample, channel) plane at a time; a block of
// short planes row by row, with one accumulator per channel.

const planeMin = 16

func (p *Plan[T]) blockStats(i int) {
	p.blockStats1(i)
	if p.direct {
		bl := p.blocks[i]
		k := bl.seg * p.l.C
		copy(p.moms[k+bl.c0:k+bl.c1], p.part[bl.off:bl.off+bl.c1-bl.c0])
	}
}

func (p *Plan[T]) blockSums(i int) {
	p.blockSums1(i)
	if p.direct {
		bl := p.blocks[i]
		dst := p.sums[bl.seg*p.l.C+bl.c0 : bl.seg*p.l.C+bl.c1]
		for k, q := range p.part[bl.off : bl.off+len(dst)] {
			dst[k] = [2]float64{q.Mean, q.M2}
		}
	}
}

func (p *Plan[T]) blockStats1(i int) {
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
		rowStats(p.x[bl.n0*C+bl.c0:], C, bl.n1-bl.n0, part, cnt)
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

func (p *Plan[T]) blockSums1(i int) {
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
	if S == 1 {
		rowDot(p.x[bl.n0*C+bl.c0:], p.dy[bl.n0*C+bl.c0:], C, bl.n1-bl.n0, mean[bl.c0:bl.c1], part)
		return
	}
	clear(part)
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
	bl := p.ablocks[i]
	C, S := p.l.C, p.l.S
	k0 := bl.seg * C
	if S == 1 {
		o, rows := bl.n0*C+bl.c0, bl.n1-bl.n0
		ms := p.mean[k0+bl.c0 : k0+bl.c1]
		if p.dy == nil {
			rowAffine(p.x[o:], p.out[o:], C, rows, ms, p.b[k0+bl.c0:k0+bl.c1], p.c[k0+bl.c0:k0+bl.c1])
		} else {
			rowAffine2(p.x[o:], p.dy[o:], p.out[o:], C, rows, ms, p.a[k0+bl.c0:k0+bl.c1], p.b[k0+bl.c0:k0+bl.c1], p.c[k0+bl.c0:k0+bl.c1])
		}
		return
	}
	for n := bl.n0; n < bl.n1; n++ {
		for c := bl.c0; c < bl.c1; c++ {
			o := (n*C + c) * S
			lo, hi := o+bl.s0, o+bl.s1
			k := k0 + c
			if p.dy == nil {
				affine(p.x[lo:hi], p.out[lo:hi], p.mean[k], p.b[k], p.c[k], p.stream)
			} else {
				affine2(p.x[lo:hi], p.dy[lo:hi], p.out[lo:hi], p.mean[k], p.a[k], p.b[k], p.c[k], p.stream)
			}
		}
	}
	if p.stream {
		streamFence()
	}
}
