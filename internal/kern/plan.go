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
	ablocks []block   // blocks of Apply: blocks, or for S = 1 runs of whole rows
	part    []Moments // per block and channel: moments, or (Σdy, Σdy·(x−μ)) in (Mean, M2)
	chunks  int       // channel chunks of the reduction phase
	// direct: each (segment, channel) has one block, whose partial
	// result is the result: the blocks write it out and there is no
	// reduction. empty lists the segments without samples.
	direct bool
	empty  []int
	f      forker

	// arguments of the running phase
	phase      int
	stream     bool // Apply's plane passes use streaming stores
	x, dy, out []T
	mean       []float64 // per segment·C
	a, b, c    []float64 // per segment·C
	moms       []Moments // per segment·C, reduction output
	sums       [][2]float64
	relu       reluJob[T] // the fused passes (fused.go)
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

// rowMinWidth is the narrowest block of channels of an S = 1 layout (rows
// of channels) unless C itself is narrower.
const rowMinWidth = 64

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
	p.ablocks = p.ablocks[:0]
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
		} else if l.S == 1 {
			// Rows of channels: blocks of whole columns (all the rows of
			// the segment run) when they stay at least rowMinWidth wide,
			// so that no partial moments need merging; else blocks of
			// rowMinWidth channels and as many rows as fit the target.
			// Widths are multiples of 16 (a 64-byte line of float32)
			// where possible: no two blocks write into one line.
			rows := r1 - r0
			nb := max(1, (rows*l.C+target-1)/target) // blocks per run
			cc := (l.C + nb - 1) / nb
			if cc < rowMinWidth {
				cc = min(l.C, rowMinWidth)
			} else if cc < l.C {
				cc = min(l.C, (cc+15)&^15)
			}
			nn := rows
			if rows*cc > 2*target {
				nn = max(1, target/cc)
			}
			for n := r0; n < r1; n += nn {
				for c := 0; c < l.C; c += cc {
					add(block{n0: n, n1: min(n+nn, r1), c0: c, c1: min(c+cc, l.C), s0: 0, s1: 1, seg: seg})
				}
			}
			// Apply is element-wise: any blocks give the same result. It
			// gets runs of whole rows, contiguous in memory: column blocks
			// written by two cores were measured ~1.6× slower than one.
			an := max(1, target/max(l.C, 1))
			for n := r0; n < r1; n += an {
				p.ablocks = append(p.ablocks, block{n0: n, n1: min(n+an, r1), c0: 0, c1: l.C, s0: 0, s1: 1, seg: seg})
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
	if l.S != 1 {
		p.ablocks = append(p.ablocks, p.blocks...)
	}
	if cap(p.part) < off {
		p.part = make([]Moments, off)
	}
	p.part = p.part[:off]
	p.chunks = min(l.C, 4*p.threads)
	// Coverage of every (segment, channel) by the blocks.
	nseg := l.Segments()
	cover := make([]int32, nseg*l.C)
	p.direct = true
	for _, b := range p.blocks {
		for c := b.c0; c < b.c1; c++ {
			k := b.seg*l.C + c
			if cover[k]++; cover[k] > 1 {
				p.direct = false
			}
		}
	}
	p.empty = p.empty[:0]
	for s := range nseg {
		if l.C > 0 && cover[s*l.C] == 0 {
			p.empty = append(p.empty, s)
		}
	}
}

// streamMin is the size in bytes of an Apply output from which its plane
// passes use streaming stores, where the vector loops have them
// (inner_stream_amd64.go). Streaming makes the pass itself faster from a
// few MiB on, but sends y to memory, where its reader — the next layer —
// must fetch it again. BenchmarkKern's fwdnext (forward, then the
// statistics pass of a next layer over y) was 20–25 % slower streamed at 8
// and 17 MB, 4 % faster at 51 MB and 24 % faster at 103 MB (Intel,
// 2026-12-03); at 51 MB the forward alone gains 25 %.
var streamMin = 32 << 20

// serialReduce is the number of partial results below which the reduction
// runs on the calling goroutine: a phase of its own costs more than the
// merges (a few ns each) whenever a worker has to be woken.
const serialReduce = 1 << 14

func (p *Plan[T]) run(i int) {
	switch p.phase {
	case phaseStats:
		p.blockStats(i)
	case phaseReduceStats, phaseReduceSums:
		p.reduceRange(p.chunk(i))
	case phaseSums:
		p.blockSums(i)
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
	p.f.doThen(len(p.blocks), p.threads, p)
	p.reduce(phaseReduceStats)
}

// BackwardSums computes, for every (segment, channel), Σdy and Σdy·(x−μ)
// into sums[seg·C+c], with μ = mean[seg·C+c].
func (p *Plan[T]) BackwardSums(x, dy []T, mean []float64, sums [][2]float64) {
	p.x, p.dy, p.mean, p.sums = x, dy, mean, sums
	p.phase = phaseSums
	p.f.doThen(len(p.blocks), p.threads, p)
	p.reduce(phaseReduceSums)
}

// reduce ends Stats (phase phaseReduceStats) or BackwardSums
// (phaseReduceSums) after their block phase: either the blocks wrote the
// results themselves (direct; the segments without samples get zeros), or
// their partial results are merged — on the caller when they are few.
func (p *Plan[T]) reduce(phase int) {
	p.phase = phase
	C := p.l.C
	switch {
	case p.direct:
		for _, s := range p.empty {
			if phase == phaseReduceStats {
				clear(p.moms[s*C : s*C+C])
			} else {
				clear(p.sums[s*C : s*C+C])
			}
		}
	case len(p.part) < serialReduce:
		p.reduceRange(0, C)
	default:
		p.f.doThen(p.chunks, p.threads, p)
	}
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
	p.stream = p.l.S != 1 && streams[T](len(out))
	p.phase = phaseApply
	p.f.do(len(p.ablocks), p.threads, p)
	p.release()
}

// chunk returns the channel range of reduction item i.
func (p *Plan[T]) chunk(i int) (int, int) {
	C := p.l.C
	return i * C / p.chunks, (i + 1) * C / p.chunks
}

// reduceRange merges the partial results of channels [ca, cb) of every
// segment, block after block: the order depends only on the layout.
func (p *Plan[T]) reduceRange(ca, cb int) {
	if p.phase == phaseReduceSums {
		p.reduceSumsRange(ca, cb)
		return
	}
	p.reduceStatsRange(ca, cb)
}

func (p *Plan[T]) reduceStatsRange(ca, cb int) {
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

func (p *Plan[T]) reduceSumsRange(ca, cb int) {
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
