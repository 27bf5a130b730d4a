package collective

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/gorgonia-bn/bn/collective/internal/kernel"
	"github.com/gorgonia-bn/bn/collective/internal/proto"
)

// NewInProcess returns the Communicators of a new group of size ranks that
// live in this process, one per goroutine: element r has rank r.
//
// The ranks exchange data through shared memory. A collective is a
// rendezvous: each rank posts a description of its call, the last rank to
// arrive checks that all calls agree (see ErrMismatch) and commits the
// call, and then every rank moves its share of the data. Waiting ranks
// sleep on channels (no busy-waiting). Once committed, a collective
// completes on every rank; contexts, Abort and Close only affect ranks that
// are still waiting for the others.
//
// Failure semantics:
//   - A rank whose context ends while it waits in (or before entering) a
//     collective returns an error wrapping ctx.Err() and aborts the group:
//     every other rank waiting in, or later entering, a collective of the
//     group returns an error wrapping ErrAborted and the context error.
//   - Abort(err) fails the group with an error wrapping ErrAborted and err.
//   - Close fails the group for the other ranks with ErrPeerGone; the
//     closed Communicator itself returns ErrClosed.
//   - A mismatch fails the collective on every rank with ErrMismatch and
//     leaves the group failed (later calls return the same error), since
//     ranks that disagree once are no longer in step.
//
// Sub-groups made by Split are children of their group: an abort of a
// group (by Abort, a context, or a mismatch) also aborts all its
// sub-groups, recursively, with the same error. Close does not: closing the
// parent Communicator of a rank leaves its sub-group Communicators usable,
// as MPI_Comm_free does. Failures of a sub-group never reach its parent.
//
// In steady state AllReduce, AllGather, Broadcast, AllToAll and Barrier on
// host buffers do not allocate. AllReduce is deterministic: every rank gets
// the bitwise identical result of reducing the ranks' inputs from rank 0 to
// rank size-1, ((x0 op x1) op x2) op ..., whatever the timing; Moments
// merges over the fixed tree ((x0⊕x1)⊕(x2⊕x3))⊕... instead (see Moments).
func NewInProcess(size int) ([]Communicator, error) {
	if size < 1 {
		return nil, fmt.Errorf("collective: NewInProcess: group size %d < 1", size)
	}
	g := newGroup(size, nil)
	cs := make([]Communicator, size)
	for r := range cs {
		cs[r] = &inproc{g: g, rank: r}
	}
	return cs, nil
}

// parallelMin is the all-reduce length from which every rank reduces a
// slice of the result and writes it into every rank's buffer (one barrier
// after the rendezvous), instead of the last rank to arrive reducing all of
// it into a shared result that every rank copies (no barrier).
const parallelMin = 1 << 10

// foldBlock is the number of elements reduced at a time, so that the
// partial result stays in L1 while the inputs stream through.
const foldBlock = 2048

// group is the state shared by the members of one in-process group.
type group struct {
	size   int
	parent *group

	mu    sync.Mutex
	phase sync.Cond // intra-collective barriers of committed calls (L = mu)

	round   uint64 // committed collectives
	arrived int    // ranks posted in the current round
	slots   []slot
	hdrs    []proto.Header
	details []string

	err      error // sticky failure; nil while healthy
	open     int   // members not closed
	children map[*group]struct{}

	phaseArrived int
	phaseGen     uint64

	// all-reduce result, written in the committed round and copied out by
	// every rank before any rank can commit the next round.
	res32 []float32
	res64 []float64
	tree  []float64 // scratch of a Moments reduction
}

// slot is one rank's posted call.
type slot struct {
	posted     bool
	buf, recv  Buffer
	counts     []int // all-gather counts or all-to-all send counts
	recvCounts []int
	waiting    bool
	wake       chan struct{} // capacity 1
	sub        *inproc       // Split result
	tmp32      []float32     // owner's all-reduce block (owner only)
	tmp64      []float64
}

func newGroup(size int, parent *group) *group {
	g := &group{
		size:    size,
		parent:  parent,
		slots:   make([]slot, size),
		hdrs:    make([]proto.Header, size),
		details: make([]string, size),
		open:    size,
	}
	g.phase.L = &g.mu
	for i := range g.slots {
		g.slots[i].wake = make(chan struct{}, 1)
	}
	return g
}

// inproc is one rank's Communicator of an in-process group.
type inproc struct {
	g      *group
	rank   int
	seq    uint64 // calls posted (guarded by g.mu)
	closed atomic.Bool
}

// call is what a rank posts for one collective.
type call struct {
	hdr        proto.Header
	detail     string
	buf, recv  Buffer
	counts     []int
	recvCounts []int
}

// Rank returns the rank of the caller in the group.
func (c *inproc) Rank() int { return c.rank }

// Size returns the number of ranks in the group.
func (c *inproc) Size() int { return c.g.size }

// String returns e.g. "in-process rank 1 of 4".
func (c *inproc) String() string {
	return fmt.Sprintf("in-process rank %d of %d", c.rank, c.g.size)
}

func (c *inproc) errorf(k proto.Kind, err error) error {
	return fmt.Errorf("collective: rank %d/%d: %s: %w", c.rank, c.g.size, k, err)
}

// hostFault checks that b is a valid host buffer.
func hostFault(b Buffer, what string) (proto.Fault, string) {
	if b.dev {
		return proto.Unsupported, what + " is device memory; the in-process backend needs host slices"
	}
	if b.dtype.Size() == 0 {
		return proto.BadDtype, fmt.Sprintf("%s has invalid dtype %v", what, b.dtype)
	}
	return proto.OK, ""
}

func (c *call) fault(f proto.Fault, detail string) {
	if c.hdr.Fault == proto.OK && f != proto.OK {
		c.hdr.Fault, c.detail = f, detail
	}
}

// pairFaults records the first fault of a call with a send and a recv
// buffer: host buffers of one dtype, the call's own check of the counts
// (f, d), buffers that do not overlap.
func (c *call) pairFaults(send, recv Buffer, f proto.Fault, d string) {
	c.fault(hostFault(send, "send"))
	c.fault(hostFault(recv, "recv"))
	if recv.dtype != send.dtype {
		c.fault(proto.BadRecvDtype, fmt.Sprintf("send is %v, recv is %v", send.dtype, recv.dtype))
	}
	c.fault(f, d)
	if overlaps(send, recv) {
		c.fault(proto.Overlap, "send and recv overlap")
	}
}

// AllReduce reduces buf element-wise over all ranks, in place.
func (c *inproc) AllReduce(ctx context.Context, buf Buffer, op ReduceOp) error {
	cl := call{hdr: proto.Header{Kind: proto.AllReduce, Dtype: int(buf.dtype), Op: int(op), Len: buf.n}, buf: buf}
	cl.fault(hostFault(buf, "buffer"))
	if !op.valid() {
		cl.fault(proto.BadOp, fmt.Sprintf("invalid reduce op %v", op))
	} else {
		cl.fault(proto.CheckOp(int(op), int(buf.dtype), buf.n))
	}
	if err := c.enter(ctx, &cl); err != nil {
		return err
	}
	g, n := c.g, buf.n
	if g.size == 1 || n == 0 {
		return nil
	}
	if n >= parallelMin {
		// Rank r reduces the r-th slice of every rank's buffer and writes
		// the result into all of them: nobody else reads or writes that
		// slice until everyone passes the barrier.
		lo, hi := n*c.rank/g.size, n*(c.rank+1)/g.size
		me := &g.slots[c.rank]
		if op == Moments {
			t := n / 3 // whole triples per rank
			lo, hi = 3*(t*c.rank/g.size), 3*(t*(c.rank+1)/g.size)
			if me.tmp64 == nil {
				me.tmp64 = make([]float64, momentsBlock*(1+kernel.TreeDepth(g.size)))
			}
			momentsScatter(me.tmp64, g.slots, lo, hi)
			g.phaseWait()
			return nil
		}
		switch buf.dtype {
		case Float32:
			if me.tmp32 == nil {
				me.tmp32 = make([]float32, foldBlock)
			}
			foldScatter(kernel.Op(op), me.tmp32, g.slots, lo, hi, Buffer.Float32s)
		case Float64:
			if me.tmp64 == nil {
				me.tmp64 = make([]float64, foldBlock)
			}
			foldScatter(kernel.Op(op), me.tmp64, g.slots, lo, hi, Buffer.Float64s)
		}
		g.phaseWait()
		return nil
	}
	switch buf.dtype {
	case Float32:
		copy(buf.f32, g.res32[:n])
	case Float64:
		copy(buf.f64, g.res64[:n])
	}
	return nil
}

// fold sets dst = slots[0] op slots[1] op ... op slots[size-1], element by
// element over the posted buffers, in rank order.
func fold[T kernel.Float](op kernel.Op, dst []T, slots []slot, host func(Buffer) []T) {
	for b := 0; b < len(dst); b += foldBlock {
		e := min(b+foldBlock, len(dst))
		d := dst[b:e]
		copy(d, host(slots[0].buf)[b:e])
		for s := 1; s < len(slots); s++ {
			kernel.Apply(op, d, host(slots[s].buf)[b:e])
		}
	}
}

// momentsBlock is the number of values (a multiple of 3) a Moments
// reduction merges at a time.
const momentsBlock = 3 * 256

// momentsTree sets dst to the fixed-tree merge (kernel.MomentsTree) of the
// elements [lo, lo+len(dst)) of the posted buffers, using tmp as scratch.
func momentsTree(dst []float64, slots []slot, lo int, tmp []float64) {
	kernel.MomentsTree(dst, len(slots), func(r int) []float64 { return slots[r].buf.f64[lo:] }, tmp)
}

// momentsScatter merges the triples [lo, hi) of the posted buffers over
// the fixed tree, a block at a time in tmp (momentsBlock values of result,
// then the tree's scratch), and writes the result into every posted buffer.
func momentsScatter(tmp []float64, slots []slot, lo, hi int) {
	for b := lo; b < hi; b += momentsBlock {
		e := min(b+momentsBlock, hi)
		d := tmp[:e-b]
		momentsTree(d, slots, b, tmp[momentsBlock:])
		for s := range slots {
			copy(slots[s].buf.f64[b:e], d)
		}
	}
}

// foldScatter reduces the elements [lo, hi) of the posted buffers in rank
// order, a block at a time in tmp, and writes the result back into every
// posted buffer.
func foldScatter[T kernel.Float](op kernel.Op, tmp []T, slots []slot, lo, hi int, host func(Buffer) []T) {
	for b := lo; b < hi; b += len(tmp) {
		e := min(b+len(tmp), hi)
		d := tmp[:e-b]
		copy(d, host(slots[0].buf)[b:e])
		for s := 1; s < len(slots); s++ {
			kernel.Apply(op, d, host(slots[s].buf)[b:e])
		}
		for s := range slots {
			copy(host(slots[s].buf)[b:e], d)
		}
	}
}

// AllGather concatenates every rank's send into recv in rank order.
func (c *inproc) AllGather(ctx context.Context, send, recv Buffer, counts []int) error {
	cl := call{
		hdr:    proto.Header{Kind: proto.AllGather, Dtype: int(send.dtype), Len: send.n, RecvLen: recv.n},
		buf:    send,
		recv:   recv,
		counts: counts,
	}
	f, d := proto.CheckAllGather(&cl.hdr, counts, c.rank, c.g.size)
	cl.pairFaults(send, recv, f, d)
	if err := c.enter(ctx, &cl); err != nil {
		return err
	}
	g := c.g
	off := 0
	for s := range g.slots {
		src := g.slots[s].buf
		switch recv.dtype {
		case Float32:
			copy(recv.f32[off:off+src.n], src.f32)
		case Float64:
			copy(recv.f64[off:off+src.n], src.f64)
		}
		off += src.n
	}
	if g.size > 1 {
		g.phaseWait() // the others may still read our send
	}
	return nil
}

// Broadcast copies root's buf into every other rank's buf.
func (c *inproc) Broadcast(ctx context.Context, buf Buffer, root int) error {
	cl := call{hdr: proto.Header{Kind: proto.Broadcast, Dtype: int(buf.dtype), Root: root, Len: buf.n}, buf: buf}
	cl.fault(hostFault(buf, "buffer"))
	cl.fault(proto.CheckRoot(root, c.g.size))
	if err := c.enter(ctx, &cl); err != nil {
		return err
	}
	g := c.g
	if g.size == 1 {
		return nil
	}
	if c.rank != root {
		src := g.slots[root].buf
		switch buf.dtype {
		case Float32:
			copy(buf.f32, src.f32)
		case Float64:
			copy(buf.f64, src.f64)
		}
	}
	g.phaseWait() // root's buf must outlive the copies
	return nil
}

// AllToAll sends sendCounts[r] consecutive values of send to rank r and
// receives recvCounts[r] consecutive values of recv from rank r.
func (c *inproc) AllToAll(ctx context.Context, send Buffer, sendCounts []int, recv Buffer, recvCounts []int) error {
	cl := call{
		hdr:        proto.Header{Kind: proto.AllToAll, Dtype: int(send.dtype), Len: send.n, RecvLen: recv.n},
		buf:        send,
		recv:       recv,
		counts:     sendCounts,
		recvCounts: recvCounts,
	}
	f, d := proto.CheckAllToAll(&cl.hdr, sendCounts, recvCounts, c.g.size)
	cl.pairFaults(send, recv, f, d)
	if err := c.enter(ctx, &cl); err != nil {
		return err
	}
	g := c.g
	roff := 0
	for s := range g.slots {
		n := recvCounts[s]
		src := &g.slots[s]
		soff := 0
		for _, k := range src.counts[:c.rank] {
			soff += k
		}
		switch recv.dtype {
		case Float32:
			copy(recv.f32[roff:roff+n], src.buf.f32[soff:soff+n])
		case Float64:
			copy(recv.f64[roff:roff+n], src.buf.f64[soff:soff+n])
		}
		roff += n
	}
	if g.size > 1 {
		g.phaseWait()
	}
	return nil
}

// Barrier returns once every rank has called it.
func (c *inproc) Barrier(ctx context.Context) error {
	cl := call{hdr: proto.Header{Kind: proto.Barrier}}
	return c.enter(ctx, &cl)
}

// Split partitions the group as MPI_Comm_split does.
func (c *inproc) Split(ctx context.Context, color, key int) (Communicator, error) {
	if color < 0 {
		color = Undefined
	}
	cl := call{hdr: proto.Header{Kind: proto.Split, Root: color, Key: key}}
	if err := c.enter(ctx, &cl); err != nil {
		return nil, err
	}
	g := c.g
	g.mu.Lock()
	sub := g.slots[c.rank].sub
	g.slots[c.rank].sub = nil
	g.mu.Unlock()
	if sub == nil {
		return nil, nil
	}
	return sub, nil
}

// Abort fails every pending and future collective of the group, and of its
// sub-groups, with an error wrapping ErrAborted and err.
func (c *inproc) Abort(err error) {
	var cause error
	if err != nil {
		cause = fmt.Errorf("%w by rank %d: %w", ErrAborted, c.rank, err)
	} else {
		cause = fmt.Errorf("%w by rank %d", ErrAborted, c.rank)
	}
	g := c.g
	g.mu.Lock()
	g.failLocked(cause, true)
	g.mu.Unlock()
}

// Close leaves the group: the other members' pending and future
// collectives fail with ErrPeerGone, and this Communicator's with
// ErrClosed. Closing twice is a no-op.
func (c *inproc) Close() error {
	if c.closed.Swap(true) {
		return nil
	}
	g := c.g
	g.mu.Lock()
	g.failLocked(fmt.Errorf("%w: rank %d closed its communicator", ErrPeerGone, c.rank), false)
	g.open--
	last := g.open == 0
	g.mu.Unlock()
	if last && g.parent != nil {
		p := g.parent
		p.mu.Lock()
		delete(p.children, g)
		p.mu.Unlock()
	}
	return nil
}

// enter posts cl for this rank and waits until every rank has posted its
// call (nil: the call is committed and the caller moves its data) or the
// group fails (the error to return).
func (c *inproc) enter(ctx context.Context, cl *call) error {
	k := cl.hdr.Kind
	if c.closed.Load() {
		return c.errorf(k, ErrClosed)
	}
	g := c.g
	if ctx.Err() != nil {
		err := contextError(ctx)
		g.mu.Lock()
		g.failLocked(fmt.Errorf("%w by rank %d: %w", ErrAborted, c.rank, err), true)
		g.mu.Unlock()
		return c.errorf(k, err)
	}

	g.mu.Lock()
	if g.err != nil {
		err := g.err
		g.mu.Unlock()
		return c.errorf(k, err)
	}
	s := &g.slots[c.rank]
	if s.posted {
		// Another goroutine of this rank is in a collective: the calls can
		// no longer be matched between ranks.
		err := fmt.Errorf("%w: rank %d made concurrent collective calls on one Communicator", ErrMismatch, c.rank)
		g.failLocked(err, true)
		g.mu.Unlock()
		return c.errorf(k, err)
	}
	s.posted = true
	cl.hdr.Seq = c.seq
	c.seq++
	s.buf, s.recv, s.counts, s.recvCounts = cl.buf, cl.recv, cl.counts, cl.recvCounts
	g.hdrs[c.rank] = cl.hdr
	g.details[c.rank] = cl.detail
	round := g.round
	g.arrived++
	if g.arrived == g.size {
		g.arrived = 0
		if err := g.commitLocked(); err != nil {
			g.failLocked(err, true)
			g.mu.Unlock()
			return c.errorf(k, err)
		}
		g.round++
		g.wakeLocked()
		g.mu.Unlock()
		return nil
	}

	done := ctx.Done()
	for {
		// A committed call completes even if the group failed since.
		if g.round != round {
			g.mu.Unlock()
			return nil
		}
		if c.closed.Load() {
			g.mu.Unlock()
			return c.errorf(k, ErrClosed)
		}
		if g.err != nil {
			err := g.err
			g.mu.Unlock()
			return c.errorf(k, err)
		}
		s.waiting = true
		g.mu.Unlock()
		select {
		case <-s.wake:
			g.mu.Lock()
		case <-done:
			g.mu.Lock()
			if g.round == round && g.err == nil && !c.closed.Load() {
				s.waiting = false
				var joined []int
				for r := range g.slots {
					if g.slots[r].posted {
						joined = append(joined, r)
					}
				}
				err := &StallError{Rank: c.rank, Size: g.size, Call: k.String(), Seq: cl.hdr.Seq, Joined: joined, Err: contextError(ctx)}
				g.failLocked(fmt.Errorf("%w by rank %d: %w", ErrAborted, c.rank, err), true)
				g.mu.Unlock()
				return c.errorf(k, err)
			}
		}
		s.waiting = false
	}
}

// wakeLocked wakes every waiting rank.
func (g *group) wakeLocked() {
	for i := range g.slots {
		s := &g.slots[i]
		if s.waiting {
			s.waiting = false
			select {
			case s.wake <- struct{}{}:
			default:
			}
		}
	}
}

// failLocked records err as the group's failure (the first failure wins)
// and wakes the waiting ranks. With propagate it also fails every
// sub-group, recursively (locking parent before child).
func (g *group) failLocked(err error, propagate bool) {
	if g.err == nil {
		g.err = err
		g.wakeLocked()
	}
	if propagate {
		for ch := range g.children {
			ch.mu.Lock()
			ch.failLocked(err, true)
			ch.mu.Unlock()
		}
	}
}

// commitLocked runs on the last rank to arrive, with every call posted. It
// checks that the calls agree and prepares the data phase.
func (g *group) commitLocked() error {
	for i := range g.slots {
		g.slots[i].posted = false
	}
	msg, f := proto.Agree(g.hdrs, g.details)
	if msg == "" {
		msg = g.agreeCounts()
	}
	if msg != "" {
		if f == proto.Unsupported {
			return fmt.Errorf("%w: %w: %s", ErrMismatch, errors.ErrUnsupported, msg)
		}
		return fmt.Errorf("%w: %s", ErrMismatch, msg)
	}
	h := &g.hdrs[0]
	switch h.Kind {
	case proto.AllReduce:
		n := h.Len
		if g.size == 1 || n == 0 {
			return nil
		}
		if n >= parallelMin {
			return nil // every rank reduces a slice (see AllReduce)
		}
		op := kernel.Op(h.Op)
		if op == kernel.MomentsOp {
			g.res64 = grow(g.res64, n)
			g.tree = grow(g.tree, n*kernel.TreeDepth(g.size))
			momentsTree(g.res64, g.slots, 0, g.tree)
			return nil
		}
		switch Dtype(h.Dtype) {
		case Float32:
			g.res32 = grow(g.res32, n)
			fold(op, g.res32, g.slots, Buffer.Float32s)
		case Float64:
			g.res64 = grow(g.res64, n)
			fold(op, g.res64, g.slots, Buffer.Float64s)
		}
	case proto.Split:
		g.splitLocked()
	}
	return nil
}

// agreeCounts compares the counts that are not in the headers.
func (g *group) agreeCounts() string {
	h := &g.hdrs[0]
	switch {
	case h.Kind == proto.AllGather && h.Counted:
		for r := 1; r < g.size; r++ {
			if !slices.Equal(g.slots[r].counts, g.slots[0].counts) {
				return fmt.Sprintf("rank %d passes counts %v, rank 0 passes %v", r, g.slots[r].counts, g.slots[0].counts)
			}
		}
	case h.Kind == proto.AllToAll:
		for r := 0; r < g.size; r++ {
			for s := 0; s < g.size; s++ {
				if got, want := g.slots[r].counts[s], g.slots[s].recvCounts[r]; got != want {
					return fmt.Sprintf("rank %d sends %d values to rank %d, which expects %d", r, got, s, want)
				}
			}
		}
	}
	return ""
}

// splitLocked makes the sub-groups of a Split round.
func (g *group) splitLocked() {
	type member struct{ key, rank int }
	byColor := map[int][]member{}
	for r := range g.hdrs {
		if color := g.hdrs[r].Root; color >= 0 {
			byColor[color] = append(byColor[color], member{g.hdrs[r].Key, r})
		}
	}
	for _, ms := range byColor {
		slices.SortFunc(ms, func(a, b member) int {
			return cmp.Or(cmp.Compare(a.key, b.key), cmp.Compare(a.rank, b.rank))
		})
		sub := newGroup(len(ms), g)
		if g.children == nil {
			g.children = map[*group]struct{}{}
		}
		g.children[sub] = struct{}{}
		for i, m := range ms {
			g.slots[m.rank].sub = &inproc{g: sub, rank: i}
		}
	}
}

// phaseWait is a barrier inside a committed collective. It cannot be
// interrupted: every rank of a committed collective is already past its
// only blocking point and reaches it after a bounded amount of copying.
func (g *group) phaseWait() {
	g.mu.Lock()
	gen := g.phaseGen
	g.phaseArrived++
	if g.phaseArrived == g.size {
		g.phaseArrived = 0
		g.phaseGen++
		g.phase.Broadcast()
	} else {
		for gen == g.phaseGen {
			g.phase.Wait()
		}
	}
	g.mu.Unlock()
}

// overlaps reports whether two host buffers share memory.
func overlaps(a, b Buffer) bool {
	lo1, hi1 := a.span()
	lo2, hi2 := b.span()
	return lo1 < hi2 && lo2 < hi1
}

func grow[T any](s []T, n int) []T {
	if cap(s) < n {
		return make([]T, n, n+n/4)
	}
	return s[:n]
}
