package kern

import "runtime"

// block is a unit of parallel work: samples [n0,n1) of one segment, channels
// [c0,c1) and spatial positions [s0,s1). off indexes its first per-channel
// partial result.
type block struct {
	n0, n1, c0, c1, s0, s1, seg, off int
}

// Plan is a reusable execution plan for one Layout and element type: the
// block decomposition and the scratch space of the kernels. Building a Plan
// allocates; running its kernels does not. A Plan is not safe for concurrent
// use: give each goroutine (each layer, each rank) its own.
type Plan[T Float] struct {
	l       Layout
	threads int
	blocks  []block
	part    []Moments // per block and channel: moments, or (Σdy, Σdy·(x−μ)) in (Mean, M2)
	chunks  int       // channel chunks of the reduction phase
	f       forker

	// arguments of the running phase
	phase      int
	x, dy, out []T
	mean       []float64 // per segment·C
	a, b, c    []float64 // per segment·C
	moms       []Moments // per segment·C, reduction output
	sums       [][2]float64
}

const (
	phaseStats = iota
	phaseReduceStats
	phaseSums
	phaseReduceSums
	phaseApply
)

// blockElems is the target number of elements of one block: small enough
// that a block read twice stays in L2, large enough to amortise scheduling.
const blockElems = 32 << 10

// minBlocks is the number of blocks a small tensor is cut into (blocks of
// at least 4096 elements). It is a constant, not a function of the thread
// count: the block decomposition, and so the order of every floating-point
// sum, depends only on the layout, and results are bit-identical for any
// number of goroutines. (8 = 4 blocks per goroutine on 2 cores.)
const minBlocks = 8

// NewPlan returns a plan for l that uses up to threads goroutines
// (≤ 0: GOMAXPROCS). l.Seg is copied.
func NewPlan[T Float](l Layout, threads int) *Plan[T] {
	if threads <= 0 {
		threads = runtime.GOMAXPROCS(0)
	}
	if l.Seg != nil {
		l.Seg = append([]int(nil), l.Seg...)
	}
	p := &Plan[T]{l: l, threads: threads}
	p.build()
	return p
}

// Layout returns the layout the plan was built for.
func (p *Plan[T]) Layout() Layout { return p.l }

// SetSegments replaces the per-sample segments (same N and NSeg bound) and
// rebuilds the blocks; it allocates only if the block count grows.
func (p *Plan[T]) SetSegments(seg []int, nseg int) {
	if seg == nil {
		p.l.Seg = nil
	} else {
		p.l.Seg = append(p.l.Seg[:0], seg...)
	}
	p.l.NSeg = nseg
	p.build()
}

func (p *Plan[T]) build() {
	l := p.l
	p.blocks = p.blocks[:0]
	total := l.Len()
	target := blockElems
	if want := total / minBlocks; want < target {
		target = max(want, 4096)
	}
	off := 0
	add := func(b block) {
		b.off = off
		off += b.c1 - b.c0
		p.blocks = append(p.blocks, b)
	}
	for r0 := 0; r0 < l.N; {
		seg := l.seg(r0)
		r1 := r0 + 1
		for r1 < l.N && l.seg(r1) == seg {
			r1++
		}
		if l.S >= target {
			ns := (l.S + target - 1) / target
			step := (l.S + ns - 1) / ns
			for n := r0; n < r1; n++ {
				for c := 0; c < l.C; c++ {
					for s := 0; s < l.S; s += step {
						add(block{n0: n, n1: n + 1, c0: c, c1: c + 1, s0: s, s1: min(s+step, l.S), seg: seg})
					}
				}
			}
		} else {
			cc := min(l.C, max(1, target/max(l.S, 1)))
			nn := max(1, target/max(cc*l.S, 1))
			for n := r0; n < r1; n += nn {
				for c := 0; c < l.C; c += cc {
					add(block{n0: n, n1: min(n+nn, r1), c0: c, c1: min(c+cc, l.C), s0: 0, s1: l.S, seg: seg})
				}
			}
		}
		r0 = r1
	}
	if cap(p.part) < off {
		p.part = make([]Moments, off)
	}
	p.part = p.part[:off]
	p.chunks = min(l.C, 4*p.threads)
}

func (p *Plan[T]) run(i int) {
	switch p.phase {
	case phaseStats:
		p.blockStats(i)
	case phaseReduceStats:
		p.reduceStats(i)
	case phaseSums:
		p.blockSums(i)
	case phaseReduceSums:
		p.reduceSums(i)
	case phaseApply:
		p.blockApply(i)
	}
}

func (p *Plan[T]) release() {
	p.x, p.dy, p.out = nil, nil, nil
	p.mean, p.a, p.b, p.c, p.moms, p.sums = nil, nil, nil, nil, nil, nil
}

// Stats computes the moments of every (segment, channel) of x into
// out[seg·C+c]. A segment without samples gets zero moments.
func (p *Plan[T]) Stats(x []T, out []Moments) {
	p.x, p.moms = x, out
	p.phase = phaseStats
	p.f.do(len(p.blocks), p.threads, p)
	p.phase = phaseReduceStats
	p.f.do(p.chunks, p.threads, p)
	p.release()
}

// BackwardSums computes, for every (segment, channel), Σdy and Σdy·(x−μ)
// into sums[seg·C+c], with μ = mean[seg·C+c].
func (p *Plan[T]) BackwardSums(x, dy []T, mean []float64, sums [][2]float64) {
	p.x, p.dy, p.mean, p.sums = x, dy, mean, sums
	p.phase = phaseSums
	p.f.do(len(p.blocks), p.threads, p)
	p.phase = phaseReduceSums
	p.f.do(p.chunks, p.threads, p)
	p.release()
}

// Apply computes, element-wise with the coefficients of the element's
// (segment, channel) k, in float64:
//
//	out = a[k]·dy + b[k]·(x − mean[k]) + c[k]
//
// dy may be nil (then a is ignored): the forward pass y = (x−μ)·scale + shift
// is Apply(x, nil, y, μ, nil, scale, shift); the backward pass is
// Apply(x, dy, dx, μ, a, b, c). out may alias x or dy.
func (p *Plan[T]) Apply(x, dy, out []T, mean, a, b, c []float64) {
	p.x, p.dy, p.out, p.mean, p.a, p.b, p.c = x, dy, out, mean, a, b, c
	p.phase = phaseApply
	p.f.do(len(p.blocks), p.threads, p)
	p.release()
}

// chunk returns the channel range of reduction item i.
func (p *Plan[T]) chunk(i int) (int, int) {
	C := p.l.C
	return i * C / p.chunks, (i + 1) * C / p.chunks
}

func (p *Plan[T]) reduceStats(i int) {
	ca, cb := p.chunk(i)
	C := p.l.C
	for s := range p.l.Segments() {
		clear(p.moms[s*C+ca : s*C+cb])
	}
	for _, bl := range p.blocks {
		lo, hi := max(bl.c0, ca), min(bl.c1, cb)
		dst := p.moms[bl.seg*C:]
		for c := lo; c < hi; c++ {
			dst[c] = dst[c].Merge(p.part[bl.off+c-bl.c0])
		}
	}
}

func (p *Plan[T]) reduceSums(i int) {
	ca, cb := p.chunk(i)
	C := p.l.C
	for s := range p.l.Segments() {
		clear(p.sums[s*C+ca : s*C+cb])
	}
	for _, bl := range p.blocks {
		lo, hi := max(bl.c0, ca), min(bl.c1, cb)
		dst := p.sums[bl.seg*C:]
		for c := lo; c < hi; c++ {
			q := p.part[bl.off+c-bl.c0]
			dst[c][0] += q.Mean
			dst[c][1] += q.M2
		}
	}
}
