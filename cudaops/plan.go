//go:build cuda || bncuda

package cudaops

import (
	"fmt"
	"unsafe"

	"github.com/gorgonia-bn/bn/internal/kern"
	"gorgonia.org/cu"
)

// Layout is an N×C×S tensor in row-major (NCHW) order — N samples, C
// channels, S the product of the spatial sizes — and the partition of its
// samples into segments: the CPU kernels' Layout.
type Layout = kern.Layout

// Launch geometry. See bn.cu.
const (
	planeThreads = 256 // PLANE_THREADS
	rowX, rowY   = 32, 8
	mergeThreads = 256 // 8 warps, one channel each
	stepThreads  = 256 // per-(segment, channel) kernels

	// planeMinS is the smallest spatial size that uses the plane
	// decomposition; smaller ones use the row decomposition.
	planeMinS = 32
	// targetBlocks is the number of blocks the partial-reduction kernels
	// aim for (when the tensor is large enough): about 8 resident blocks of
	// 256 threads on each of the 132 SMs of an H100. A constant, not the
	// device's SM count, so that results do not depend on the GPU model.
	targetBlocks = 1024
	// minPlaneChunk and minRowChunk bound the work of one block from below
	// (one group of 8 loads per thread).
	minPlaneChunk = planeThreads * 8
	minRowChunk   = rowY * 8
	maxChunkLen   = 1 << 30
	maxElems      = 1 << 50
)

// Plan is an execution plan for one Layout and element type on one CUDA
// context: the chunk table on the device, and scratch space for partial
// results and coefficients. Building a plan allocates device memory;
// running it does not (unless SetSegments needs a larger table).
//
// A Plan is used by one goroutine and one stream at a time: its scratch
// space is reused by every call, in stream order. Like Module, every method
// must run where the plan's CUDA context is current.
//
// Arrays indexed by (segment, channel) have K = Segments()·C entries, entry
// seg·C + c: moments are 3 float64 each (N, Mean, M2 — internal/kern's
// Moments), backward sums 2 float64 each (Σdy, Σdy·(x−μ)), every other
// statistic or coefficient 1 float64. γ, β, dγ and dβ have C elements of the
// plan's dtype.
type Plan struct {
	m      *Module
	dt     Dtype
	l      Layout
	row    bool
	ntiles int // row decomposition: column tiles of 32
	nq     int // chunks
	tab    []int64

	devTab  cu.DevicePtr
	tabCap  int
	part    cu.DevicePtr
	partCap int
	scr     cu.DevicePtr
	scrCap  int
	closed  bool
}

// NewPlan validates l, builds its chunk table and allocates the plan's
// device memory in the current context; it returns when the table is on the
// device, so the plan may be used on any stream. l.Seg is copied.
func NewPlan(m *Module, l Layout, dt Dtype) (*Plan, error) {
	if m == nil || !m.loaded {
		return nil, fmt.Errorf("%w: module", ErrClosed)
	}
	if dt != Float32 && dt != Float64 {
		return nil, fmt.Errorf("%w: dtype %v", ErrArg, dt)
	}
	if l.Seg != nil {
		l.Seg = append([]int(nil), l.Seg...)
	}
	p := &Plan{m: m, dt: dt, l: l}
	if err := p.build(); err != nil {
		return nil, err
	}
	if err := p.upload(cu.NoStream); err != nil {
		p.Close()
		return nil, err
	}
	// The table was copied on the legacy default stream, which a
	// non-blocking stream does not wait for: finish the copy here.
	if err := cu.NoStream.Synchronize(); err != nil {
		p.Close()
		return nil, fmt.Errorf("cudaops: synchronize after upload: %w", err)
	}
	return p, nil
}

// Layout returns the plan's layout (a copy).
func (p *Plan) Layout() Layout {
	l := p.l
	if l.Seg != nil {
		l.Seg = append([]int(nil), l.Seg...)
	}
	return l
}

// Dtype returns the element type the plan was built for.
func (p *Plan) Dtype() Dtype { return p.dt }

// K returns Segments()·C, the length of per-(segment, channel) arrays.
func (p *Plan) K() int { return p.l.Segments() * p.l.C }

// SetSegments replaces the per-sample segments (seg nil: one segment) and
// uploads the new chunk table on stream s, after the work already queued
// there. If the table or the scratch space must grow, s is synchronized
// before the old buffers are freed.
func (p *Plan) SetSegments(s cu.Stream, seg []int, nseg int) error {
	if p.closed {
		return ErrClosed
	}
	old := p.l
	if seg == nil {
		p.l.Seg = nil
	} else {
		p.l.Seg = append(p.l.Seg[:0:0], seg...)
	}
	p.l.NSeg = nseg
	if err := p.build(); err != nil {
		p.l = old
		if e := p.build(); e != nil {
			return fmt.Errorf("%w (and rebuilding the old layout: %v)", err, e)
		}
		return err
	}
	return p.upload(s)
}

// Close frees the plan's device memory. It does not synchronize: call it
// when the work queued with the plan is done.
func (p *Plan) Close() error {
	if p.closed {
		return nil
	}
	p.closed = true
	var first error
	for _, d := range []*cu.DevicePtr{&p.devTab, &p.part, &p.scr} {
		if *d != 0 {
			if err := cu.MemFree(*d); err != nil && first == nil {
				first = fmt.Errorf("cudaops: free: %w", err)
			}
			*d = 0
		}
	}
	return first
}

func (p *Plan) validate() error {
	l := p.l
	if l.N < 0 || l.C < 0 || l.S < 0 {
		return fmt.Errorf("%w: negative size in layout %d×%d×%d", ErrArg, l.N, l.C, l.S)
	}
	if l.S > 1<<31-1 {
		return fmt.Errorf("%w: spatial size %d ≥ 2³¹", ErrArg, l.S)
	}
	if l.N > 0 && l.C > 0 && l.S > 0 && (l.N > maxElems/l.C/l.S) {
		return fmt.Errorf("%w: layout %d×%d×%d too large", ErrArg, l.N, l.C, l.S)
	}
	ns := l.Segments()
	if l.Seg != nil {
		if len(l.Seg) != l.N {
			return fmt.Errorf("%w: %d segment ids for %d samples", ErrArg, len(l.Seg), l.N)
		}
		for i, g := range l.Seg {
			if g < 0 || g >= ns {
				return fmt.Errorf("%w: sample %d: segment %d not in [0, %d)", ErrArg, i, g, ns)
			}
		}
	}
	return nil
}

func ceilDiv(a, b int) int { return (a + b - 1) / b }

// build computes the chunk table: every run of consecutive samples of one
// segment is split into chunks of about equal size; the chunks are then
// grouped by segment (stable), followed by the Segments()+1 offsets of each
// segment's chunks.
func (p *Plan) build() error {
	if err := p.validate(); err != nil {
		return err
	}
	l := p.l
	ns := l.Segments()
	p.row = l.S < planeMinS
	p.ntiles = 0
	var unit, clen int // unit: index units per sample; clen: target chunk length
	if p.row {
		p.ntiles = ceilDiv(l.C*l.S, rowX)
		unit = 1
		per := ceilDiv(targetBlocks, max(p.ntiles, 1))
		clen = max(ceilDiv(l.N, per), minRowChunk)
	} else {
		unit = l.S
		per := ceilDiv(targetBlocks, max(l.C, 1))
		clen = max(ceilDiv(l.N*l.S, per), minPlaneChunk)
		clen = min(ceilDiv(clen, planeThreads)*planeThreads, maxChunkLen)
	}
	type chunk struct{ i0, i1, seg int }
	var chunks []chunk
	if l.C > 0 && l.S > 0 {
		for r0 := 0; r0 < l.N; {
			g := p.seg(r0)
			r1 := r0 + 1
			for r1 < l.N && p.seg(r1) == g {
				r1++
			}
			a, n := r0*unit, (r1-r0)*unit
			k := ceilDiv(n, clen)
			for j := range k {
				chunks = append(chunks, chunk{a + n*j/k, a + n*(j+1)/k, g})
			}
			r0 = r1
		}
	}
	p.nq = len(chunks)
	blocks := p.nq * l.C
	if p.row {
		blocks = p.nq * p.ntiles
	}
	if blocks > maxGrid {
		return fmt.Errorf("%w: layout %d×%d×%d needs %d blocks", ErrArg, l.N, l.C, l.S, blocks)
	}
	// Stable grouping by segment.
	start := make([]int, ns+1)
	for _, c := range chunks {
		start[c.seg+1]++
	}
	for g := range ns {
		start[g+1] += start[g]
	}
	tab := p.tab[:0]
	if need := 3*p.nq + ns + 1; cap(tab) < need {
		tab = make([]int64, 0, need)
	}
	tab = tab[:3*p.nq]
	next := append([]int(nil), start[:ns]...)
	for _, c := range chunks {
		q := next[c.seg]
		next[c.seg]++
		tab[3*q], tab[3*q+1], tab[3*q+2] = int64(c.i0), int64(c.i1), int64(c.seg)
	}
	for _, s := range start {
		tab = append(tab, int64(s))
	}
	p.tab = tab
	return nil
}

func (p *Plan) seg(n int) int {
	if p.l.Seg == nil {
		return 0
	}
	return p.l.Seg[n]
}

// partBytes is the size of the partial results: 3 float64 per (chunk,
// channel) in the plane decomposition, per (chunk, column) in the row one.
func (p *Plan) partBytes() int {
	w := p.l.C
	if p.row {
		w = p.l.C * p.l.S
	}
	return 24 * p.nq * w
}

// Scratch slots, in float64 units of K each.
const (
	scrMom    = 0 // 3K
	scrMean   = 3 // K
	scrInvStd = 4 // K
	scrA      = 5 // K
	scrB      = 6 // K
	scrC      = 7 // K
	scrSums   = 8 // 2K
	scrSlots  = 10
)

func (p *Plan) scratch(slot int) cu.DevicePtr {
	return p.scr + cu.DevicePtr(8*slot*p.K())
}

// grow makes *d hold at least n bytes, synchronizing s before freeing.
func grow(d *cu.DevicePtr, capacity *int, n int, s cu.Stream, synced *bool) error {
	if n <= *capacity && *d != 0 {
		return nil
	}
	if *d != 0 {
		if !*synced {
			if err := s.Synchronize(); err != nil {
				return fmt.Errorf("cudaops: synchronize before realloc: %w", err)
			}
			*synced = true
		}
		if err := cu.MemFree(*d); err != nil {
			return fmt.Errorf("cudaops: free: %w", err)
		}
		*d, *capacity = 0, 0
	}
	ptr, err := cu.MemAlloc(int64(max(n, 256)))
	if err != nil {
		return fmt.Errorf("cudaops: alloc %d bytes: %w", n, err)
	}
	*d, *capacity = ptr, max(n, 256)
	return nil
}

// upload sizes the device buffers and copies the chunk table on s.
func (p *Plan) upload(s cu.Stream) error {
	synced := false
	if err := grow(&p.devTab, &p.tabCap, 8*len(p.tab), s, &synced); err != nil {
		return err
	}
	if err := grow(&p.part, &p.partCap, p.partBytes(), s, &synced); err != nil {
		return err
	}
	if err := grow(&p.scr, &p.scrCap, 8*scrSlots*p.K(), s, &synced); err != nil {
		return err
	}
	// From pageable memory the driver stages the copy before returning, so
	// p.tab may change afterwards; the transfer itself is ordered on s.
	if err := cu.MemcpyHtoDAsync(p.devTab, unsafe.Pointer(&p.tab[0]), int64(8*len(p.tab)), s); err != nil {
		return fmt.Errorf("cudaops: upload chunk table: %w", err)
	}
	return nil
}

func (p *Plan) segStart() cu.DevicePtr { return p.devTab + cu.DevicePtr(8*3*p.nq) }

func (p *Plan) check(names []string, ptrs ...cu.DevicePtr) error {
	if p.closed {
		return ErrClosed
	}
	if !p.m.loaded {
		return fmt.Errorf("%w: module unloaded", ErrClosed)
	}
	for i, d := range ptrs {
		if d == 0 {
			return fmt.Errorf("%w: %s is a nil device pointer", ErrArg, names[i])
		}
	}
	return nil
}

func ptrs(vs ...any) []unsafe.Pointer {
	out := make([]unsafe.Pointer, len(vs))
	for i, v := range vs {
		switch v := v.(type) {
		case cu.DevicePtr:
			out[i] = unsafe.Pointer(&v)
		case int64:
			out[i] = unsafe.Pointer(&v)
		case float64:
			out[i] = unsafe.Pointer(&v)
		default:
			panic(fmt.Sprintf("cudaops: kernel argument of type %T", v))
		}
	}
	return out
}

// partials launches the partial-reduction kernel k (stats or sums).
func (p *Plan) partials(s cu.Stream, plane, row typed, args ...any) error {
	if p.nq == 0 {
		return nil
	}
	C, S := int64(p.l.C), int64(p.l.S)
	if p.row {
		f, name := p.m.typedFn(p.dt, row)
		args = append(args, C, S, int64(p.ntiles))
		return launch(f, name, p.nq*p.ntiles, rowX, rowY, s, ptrs(args...)...)
	}
	f, name := p.m.typedFn(p.dt, plane)
	args = append(args, C, S)
	return launch(f, name, p.nq*p.l.C, planeThreads, 1, s, ptrs(args...)...)
}

// w is the number of partials per (chunk, channel).
func (p *Plan) w() int64 {
	if p.row {
		return int64(p.l.S)
	}
	return 1
}

func (p *Plan) mergeGrid() int { return ceilDiv(p.l.C*32, mergeThreads) }

// Stats computes the moments (N, Mean, M2) of every (segment, channel) of x
// into mom (K×3 float64). Segments without samples get zero moments.
// Two launches.
func (p *Plan) Stats(s cu.Stream, x, mom cu.DevicePtr) error {
	if err := p.check([]string{"x", "mom"}, x, mom); err != nil {
		return err
	}
	return p.stats(s, x, mom, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
}

func (p *Plan) stats(s cu.Stream, x, mom, gamma, beta cu.DevicePtr, eps float64, mean, invstd, scale, shift, rmean, rvar cu.DevicePtr, w float64) error {
	if err := p.partials(s, kStatsPlane, kStatsRow, x, p.devTab, p.part); err != nil {
		return err
	}
	f, name := p.m.typedFn(p.dt, kMergeStats)
	return launch(f, name, p.mergeGrid(), mergeThreads, 1, s, ptrs(
		p.part, p.segStart(), int64(p.l.C), p.w(), int64(p.l.Segments()), mom,
		gamma, beta, eps, mean, invstd, scale, shift, rmean, rvar, w)...)
}

// Finalize computes from K moments, for every (segment, channel):
// mean, invstd = 1/√(M2/N + eps), scale = γ·invstd and shift = β (γ = 1 and
// β = 0 where gamma, beta are 0). Each output is optional (0: not written).
// To use running statistics instead of batch ones, pass moments
// (1, running mean, running var). One launch.
func (p *Plan) Finalize(s cu.Stream, mom, gamma, beta cu.DevicePtr, eps float64, mean, invstd, scale, shift cu.DevicePtr) error {
	if err := p.check([]string{"mom"}, mom); err != nil {
		return err
	}
	f, name := p.m.typedFn(p.dt, kFinalize)
	K := p.K()
	return launch(f, name, ceilDiv(K, stepThreads), stepThreads, 1, s, ptrs(
		mom, int64(K), int64(p.l.C), gamma, beta, eps, mean, invstd, scale, shift)...)
}

// Apply computes element-wise, with the coefficients of the element's
// (segment, channel) k, in float64:
//
//	out = a[k]·dy + b[k]·(x − mean[k]) + c[k]
//
// dy may be 0 (then a is ignored): the forward pass y = (x−μ)·scale + shift
// is Apply(s, x, 0, y, μ, 0, scale, shift). out may alias x or dy. One
// launch.
func (p *Plan) Apply(s cu.Stream, x, dy, out, mean, a, b, c cu.DevicePtr) error {
	if err := p.check([]string{"x", "out", "mean", "b", "c"}, x, out, mean, b, c); err != nil {
		return err
	}
	if dy != 0 && a == 0 {
		return fmt.Errorf("%w: a is a nil device pointer with dy", ErrArg)
	}
	return p.apply(s, x, dy, out, mean, a, b, c)
}

func (p *Plan) apply(s cu.Stream, x, dy, out, mean, a, b, c cu.DevicePtr) error {
	if p.nq == 0 {
		return nil
	}
	C, S := int64(p.l.C), int64(p.l.S)
	if p.row {
		f, name := p.m.typedFn(p.dt, kApplyRow)
		return launch(f, name, p.nq*p.ntiles, rowX, rowY, s, ptrs(
			x, dy, out, p.devTab, C, S, int64(p.ntiles), mean, a, b, c)...)
	}
	f, name := p.m.typedFn(p.dt, kApplyPlane)
	return launch(f, name, p.nq*p.l.C, planeThreads, 1, s, ptrs(
		x, dy, out, p.devTab, C, S, mean, a, b, c)...)
}

// BackwardSums computes, for every (segment, channel), Σdy and Σdy·(x−μ)
// into sums (K×2 float64), with μ = mean[k]. Two launches.
func (p *Plan) BackwardSums(s cu.Stream, x, dy, mean, sums cu.DevicePtr) error {
	if err := p.check([]string{"x", "dy", "mean", "sums"}, x, dy, mean, sums); err != nil {
		return err
	}
	return p.sums(s, x, dy, mean, sums, 0, 0, 0, 0, 0, 0, 0, 0)
}

func (p *Plan) sums(s cu.Stream, x, dy, mean, sums, invstd, dgamma, dbeta, mom, gamma, a, b, c cu.DevicePtr) error {
	if err := p.partials(s, kSumsPlane, kSumsRow, x, dy, p.devTab, mean, p.part); err != nil {
		return err
	}
	f, name := p.m.typedFn(p.dt, kMergeSums)
	return launch(f, name, p.mergeGrid(), mergeThreads, 1, s, ptrs(
		p.part, p.segStart(), int64(p.l.C), p.w(), int64(p.l.Segments()), sums,
		invstd, dgamma, dbeta, mom, gamma, a, b, c)...)
}

// BackwardCoeffs computes the coefficients of dx = a·dy + b·(x−μ) + c from
// K backward sums (all-reduced over ranks in SyncBN), the K moments whose
// counts N are the global ones, γ (0: 1) and the forward's invstd:
//
//	a = γ·invstd, b = −a·invstd²·Σdy(x−μ)/N, c = −a·Σdy/N
//
// One launch.
func (p *Plan) BackwardCoeffs(s cu.Stream, sums, mom, gamma, invstd, a, b, c cu.DevicePtr) error {
	if err := p.check([]string{"sums", "mom", "invstd", "a", "b", "c"}, sums, mom, invstd, a, b, c); err != nil {
		return err
	}
	f, name := p.m.typedFn(p.dt, kBwdCoeffs)
	K := p.K()
	return launch(f, name, ceilDiv(K, stepThreads), stepThreads, 1, s, ptrs(
		sums, mom, int64(K), int64(p.l.C), gamma, invstd, a, b, c)...)
}

// UpdateRunning folds K moments into running statistics (K float64 each):
// r ← (1−w)·r + w·stat with the unbiased variance M2/(N−1); entries with
// N ≤ 1 are left unchanged. One launch.
func (p *Plan) UpdateRunning(s cu.Stream, mom, runMean, runVar cu.DevicePtr, w float64) error {
	if err := p.check([]string{"mom", "runMean", "runVar"}, mom, runMean, runVar); err != nil {
		return err
	}
	return p.m.UpdateRunning(s, mom, p.K(), runMean, runVar, w)
}

// UpdateRunning is Plan.UpdateRunning for k entries.
func (m *Module) UpdateRunning(s cu.Stream, mom cu.DevicePtr, k int, runMean, runVar cu.DevicePtr, w float64) error {
	if !m.loaded {
		return ErrClosed
	}
	if mom == 0 || runMean == 0 || runVar == 0 || k < 0 {
		return fmt.Errorf("%w: UpdateRunning", ErrArg)
	}
	return launch(m.un[kUpdateRunning], untypedNames[kUpdateRunning], ceilDiv(k, stepThreads), stepThreads, 1, s,
		ptrs(mom, int64(k), runMean, runVar, w)...)
}

// MergeMoments merges ranks sets of k moments, in[r·k + i] (3 float64
// each), in rank order into out[i]: the cross-rank step of SyncBN after an
// all-gather of every rank's moments, and the accumulation step of
// PreciseBN. out may be in (the set of rank 0). One launch.
func (m *Module) MergeMoments(s cu.Stream, in cu.DevicePtr, ranks, k int, out cu.DevicePtr) error {
	if !m.loaded {
		return ErrClosed
	}
	if in == 0 || out == 0 || ranks < 0 || k < 0 {
		return fmt.Errorf("%w: MergeMoments", ErrArg)
	}
	return launch(m.un[kMergeMoments], untypedNames[kMergeMoments], ceilDiv(k, stepThreads), stepThreads, 1, s,
		ptrs(in, int64(ranks), int64(k), out)...)
}

// FwdArgs are the device buffers of Plan.Forward.
type FwdArgs struct {
	X, Y        cu.DevicePtr // N·C·S elements; Y may be X
	Gamma, Beta cu.DevicePtr // C elements; 0: γ = 1, β = 0
	Eps         float64

	// Optional outputs (0: kept in the plan's scratch space, valid until
	// the plan's next call): the K moments (3 float64 each), and the mean
	// and invstd (K float64 each) that Backward needs.
	Moments, Mean, InvStd cu.DevicePtr

	// Optional running statistics (K float64 each), updated with Momentum
	// (see UpdateRunning) when RunMean is not 0.
	RunMean, RunVar cu.DevicePtr
	Momentum        float64
}

// Forward is the training-mode forward pass with batch statistics of each
// segment: Stats, Finalize and the running-statistics update fused in one
// merge kernel, then Apply. Three launches.
func (p *Plan) Forward(s cu.Stream, a FwdArgs) error {
	if err := p.check([]string{"X", "Y"}, a.X, a.Y); err != nil {
		return err
	}
	if (a.RunMean == 0) != (a.RunVar == 0) {
		return fmt.Errorf("%w: RunMean and RunVar must both be set or both be 0", ErrArg)
	}
	mom, mean, invstd := a.Moments, a.Mean, a.InvStd
	if mom == 0 {
		mom = p.scratch(scrMom)
	}
	if mean == 0 {
		mean = p.scratch(scrMean)
	}
	if invstd == 0 {
		invstd = p.scratch(scrInvStd)
	}
	scale, shift := p.scratch(scrB), p.scratch(scrC)
	if err := p.stats(s, a.X, mom, a.Gamma, a.Beta, a.Eps, mean, invstd, scale, shift, a.RunMean, a.RunVar, a.Momentum); err != nil {
		return err
	}
	return p.apply(s, a.X, 0, a.Y, mean, 0, scale, shift)
}

// BwdArgs are the device buffers of Plan.Backward.
type BwdArgs struct {
	X, Dy, Dx cu.DevicePtr // N·C·S elements; Dx may be Dy
	Gamma     cu.DevicePtr // C elements; 0: γ = 1

	// The forward's K moments (their counts N are used), mean and invstd.
	Moments, Mean, InvStd cu.DevicePtr

	// Optional outputs: the K local backward sums (2 float64 each), and
	// dγ = Σ_seg invstd·Σdy(x−μ), dβ = Σ_seg Σdy over non-empty segments
	// (C elements each, overwritten).
	Sums, DGamma, DBeta cu.DevicePtr
}

// Backward is the training-mode backward pass through batch statistics of
// each segment: BackwardSums, dγ, dβ and BackwardCoeffs fused in one merge
// kernel, then Apply. Three launches.
func (p *Plan) Backward(s cu.Stream, a BwdArgs) error {
	if err := p.check([]string{"X", "Dy", "Dx", "Moments", "Mean", "InvStd"}, a.X, a.Dy, a.Dx, a.Moments, a.Mean, a.InvStd); err != nil {
		return err
	}
	sums := a.Sums
	if sums == 0 {
		sums = p.scratch(scrSums)
	}
	ca, cb, cc := p.scratch(scrA), p.scratch(scrB), p.scratch(scrC)
	if err := p.sums(s, a.X, a.Dy, a.Mean, sums, a.InvStd, a.DGamma, a.DBeta, a.Moments, a.Gamma, ca, cb, cc); err != nil {
		return err
	}
	return p.apply(s, a.X, a.Dy, a.Dx, a.Mean, ca, cb, cc)
}
