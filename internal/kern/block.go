package kern

// The per-block loops. The reductions take a block one sample at a time,
// over the planes of its channels (contiguous in memory), with one
// accumulator per channel; an S = 1 block (rows of channels) goes to the
// row kernels.

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
	clear(part)
	if S == 1 && len(part) > 1 {
		rowStats(p.x[bl.n0*C+bl.c0:], C, bl.n1-bl.n0, part, cnt)
		return
	}
	L := bl.s1 - bl.s0
	if bl.n1-bl.n0 == 1 {
		// One sample: the planes of the block's channels, each read twice
		// in a row.
		statsPlanes(p.x[(bl.n0*C+bl.c0)*S+bl.s0:], L, S, part)
		return
	}
	// Several samples: channel by channel, over its planes. During the
	// passes Mean holds Σx, then the mean; M2 holds Σd² and N holds Σd
	// (d = x − mean), each added in sample order.
	for k := range part {
		pk := part[k : k+1]
		for n := bl.n0; n < bl.n1; n++ {
			sumPlanes(p.x[(n*C+bl.c0+k)*S+bl.s0:], L, L, pk)
		}
		pk[0].Mean /= cnt
		for n := bl.n0; n < bl.n1; n++ {
			devPlanes(p.x[(n*C+bl.c0+k)*S+bl.s0:], L, L, pk)
		}
		pk[0] = corrected(cnt, pk[0].Mean, pk[0].M2, pk[0].N)
	}
}

func (p *Plan[T]) blockSums1(i int) {
	bl := p.blocks[i]
	C, S := p.l.C, p.l.S
	part := p.part[bl.off : bl.off+bl.c1-bl.c0]
	mean := p.mean[bl.seg*C+bl.c0 : bl.seg*C+bl.c1]
	if S == 1 && len(part) > 1 {
		rowDot(p.x[bl.n0*C+bl.c0:], p.dy[bl.n0*C+bl.c0:], C, bl.n1-bl.n0, mean, part)
		return
	}
	// (Σdy, Σdy·(x−mean)) in (Mean, M2), added in sample order.
	clear(part)
	L := bl.s1 - bl.s0
	for n := bl.n0; n < bl.n1; n++ {
		o := (n*C+bl.c0)*S + bl.s0
		dotPlanes(p.x[o:], p.dy[o:], L, S, mean, part)
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
	// One sample at a time, the planes of the block's channels.
	lo, hi, L := k0+bl.c0, k0+bl.c1, bl.s1-bl.s0
	for n := bl.n0; n < bl.n1; n++ {
		o := (n*C+bl.c0)*S + bl.s0
		if p.dy == nil {
			affinePlanes(p.x[o:], p.out[o:], L, S, p.mean[lo:hi], p.b[lo:hi], p.c[lo:hi], p.stream)
		} else {
			affine2Planes(p.x[o:], p.dy[o:], p.out[o:], L, S, p.mean[lo:hi], p.a[lo:hi], p.b[lo:hi], p.c[lo:hi], p.stream)
		}
	}
	if p.stream {
		streamFence()
	}
}
