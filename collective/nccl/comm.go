//go:build cuda

package nccl

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"runtime"
	"sync"
	"time"
	"unsafe"

	"github.com/gorgonia-bn/bn/collective"
	"github.com/gorgonia-bn/bn/collective/internal/kernel"
	"gorgonia.org/cu"
)

// Comm is one rank of an NCCL communicator. It implements
// collective.Communicator; see the package comment for buffers, streams,
// agreement checks and failures.
type Comm struct {
	st     *state
	stream cu.Stream // where collectives are enqueued
	async  bool      // a WithStream view: enqueue only, no checks, no wait
}

var _ collective.Communicator = (*Comm)(nil)

// state is shared by a Comm and its WithStream views.
type state struct {
	rank, size, device int
	opt                options
	pctx               cu.CUContext // primary context of device (retained)
	own                cu.Stream    // the stream the Comm owns

	mu       sync.Mutex
	h        unsafe.Pointer // ncclComm_t; nil once destroyed or aborted
	err      error          // sticky failure
	gone     error          // a peer of the in-process group closed
	goneAt   time.Time
	closed   bool
	busy     int
	inCall   bool // a goroutine is inside an NCCL call with h
	abortReq bool // abort h as soon as that call returns
	released bool
	grp      *group   // the in-process group, nil across processes
	children []*state // sub-communicators made by Split
	splits   int      // Split calls so far (to pair sub-groups in process)

	// Device scratch, used only by the (single) caller of collectives.
	stage    cu.DevicePtr
	stageCap int
	hdr      cu.DevicePtr
	hdrCap   int
	hdrHost  []float64

	// Host scratch of Moments all-reduces: every rank's triples, and the
	// tree's levels.
	momAll, momTree []float64
}

// group links the members of a NewInProcess group, so that Abort, a
// context error and Close reach all of them.
type group struct {
	mu      sync.Mutex
	members []*state
	subs    map[[2]int]*group // (split number, color) → sub-group
}

// Rank returns the rank of the caller in the communicator.
func (c *Comm) Rank() int { return c.st.rank }

// Size returns the number of ranks.
func (c *Comm) Size() int { return c.st.size }

// Device returns the CUDA device ordinal of the communicator.
func (c *Comm) Device() int { return c.st.device }

// Stream returns the stream the collectives of c are enqueued on.
func (c *Comm) Stream() cu.Stream { return c.stream }

// WithStream returns a view of c whose collectives are stream-ordered on s:
// they enqueue the NCCL call on s and return without waiting, take device
// buffers only (host buffers fail with ErrMismatch) and make no agreement
// checks. The view shares c's communicator: closing either closes both, and
// the collectives of the two must not run concurrently.
func (c *Comm) WithStream(s cu.Stream) *Comm {
	return &Comm{st: c.st, stream: s, async: true}
}

// ---------------------------------------------------------------- set-up

// NewRank joins rank of a new communicator of size ranks identified by id
// (ncclCommInitRank), on CUDA device ordinal device. Every rank must call
// it; it blocks until all have.
func NewRank(id UniqueID, size, rank, device int, opts ...Option) (*Comm, error) {
	if err := load(); err != nil {
		return nil, err
	}
	if size < 1 || rank < 0 || rank >= size {
		return nil, fmt.Errorf("nccl: rank %d of %d: %w", rank, size, collective.ErrMismatch)
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	pctx, err := retain(device)
	if err != nil {
		return nil, err
	}
	if err := cu.PushCurrentCtx(pctx); err != nil {
		releaseDevice(device)
		return nil, fmt.Errorf("nccl: push context: %w", err)
	}
	defer cu.PopCurrentCtx()
	h, err := commInitRank(id, size, rank)
	if err != nil {
		releaseDevice(device)
		return nil, err
	}
	st, err := newState(h, pctx, makeOptions(opts))
	if err != nil {
		commDestroy(h)
		releaseDevice(device)
		return nil, err
	}
	return &Comm{st: st, stream: st.own}, nil
}

// New creates a communicator with the ranks of boot (one process, or at
// least one goroutine, per GPU), this rank on CUDA device ordinal device.
// Rank 0 creates the unique id and broadcasts it through boot; before that
// the ranks agree (an all-reduce) that all of them can load NCCL, so a rank
// without the library makes all of them fail instead of hanging.
func New(ctx context.Context, boot collective.Communicator, device int, opts ...Option) (*Comm, error) {
	localErr := load()
	if localErr == nil {
		if n, err := cu.NumDevices(); err != nil || device < 0 || device >= n {
			localErr = fmt.Errorf("nccl: no CUDA device %d (%d devices, %v)", device, n, err)
		}
	}
	flag := []float64{0}
	if localErr != nil {
		flag[0] = 1
	}
	if err := boot.AllReduce(ctx, collective.Float64s(flag), collective.Max); err != nil {
		return nil, fmt.Errorf("nccl: agreeing on set-up: %w", err)
	}
	if localErr != nil {
		return nil, localErr
	}
	if flag[0] != 0 {
		return nil, fmt.Errorf("nccl: another rank cannot use NCCL: %w", collective.ErrAborted)
	}
	msg := make([]float64, 1+idWords)
	if boot.Rank() == 0 {
		id, err := NewUniqueID()
		if err == nil {
			msg[0] = 1
			copy(msg[1:], id.Float64s())
		} else {
			localErr = err
		}
	}
	if err := boot.Broadcast(ctx, collective.Float64s(msg), 0); err != nil {
		return nil, fmt.Errorf("nccl: broadcasting the unique id: %w", err)
	}
	if localErr != nil {
		return nil, localErr
	}
	if msg[0] != 1 {
		return nil, fmt.Errorf("nccl: rank 0 could not create a unique id: %w", collective.ErrAborted)
	}
	id, err := UniqueIDFromFloat64s(msg[1:])
	if err != nil {
		return nil, err
	}
	return NewRank(id, boot.Size(), boot.Rank(), device, opts...)
}

// NewFromFile creates a communicator of size ranks whose unique id goes
// through the file path: rank 0 creates the id and writes it, the others
// wait (until ctx ends) for the file. Use a fresh path per job: a stale
// file from an earlier run would give the others a dead id.
func NewFromFile(ctx context.Context, path string, size, rank, device int, opts ...Option) (*Comm, error) {
	var id UniqueID
	var err error
	if rank == 0 {
		if id, err = NewUniqueID(); err != nil {
			return nil, err
		}
		if err = WriteUniqueID(path, id); err != nil {
			return nil, err
		}
	} else if id, err = ReadUniqueID(ctx, path); err != nil {
		return nil, err
	}
	return NewRank(id, size, rank, device, opts...)
}

// NewInProcess creates a communicator over the given CUDA devices
// (ncclCommInitAll) for one process that drives all of them: element i
// has rank i and device devices[i]. Use each from its own goroutine.
// NCCL rejects a device listed twice.
func NewInProcess(devices []int, opts ...Option) ([]*Comm, error) {
	if err := load(); err != nil {
		return nil, err
	}
	if len(devices) == 0 {
		return nil, fmt.Errorf("nccl: NewInProcess: no devices: %w", collective.ErrMismatch)
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	// ncclCommInitAll switches the thread's current device: restore it.
	saved, err := cu.CurrentContext()
	if err != nil {
		return nil, fmt.Errorf("nccl: current context: %w", err)
	}
	hs, err := commInitAll(devices)
	if e := cu.SetCurrentContext(saved); e != nil && err == nil {
		err = fmt.Errorf("nccl: restore context: %w", e)
	}
	if err != nil {
		for _, h := range hs {
			commDestroy(h)
		}
		return nil, err
	}
	o := makeOptions(opts)
	g := &group{}
	comms := make([]*Comm, len(devices))
	for i, d := range devices {
		st, err := func() (*state, error) {
			pctx, err := retain(d)
			if err != nil {
				return nil, err
			}
			if err := cu.PushCurrentCtx(pctx); err != nil {
				releaseDevice(d)
				return nil, fmt.Errorf("nccl: push context: %w", err)
			}
			defer cu.PopCurrentCtx()
			st, err := newState(hs[i], pctx, o)
			if err != nil {
				releaseDevice(d)
			}
			return st, err
		}()
		if err != nil {
			for _, c := range comms[:i] {
				c.Close()
			}
			for _, h := range hs[i:] {
				commDestroy(h)
			}
			return nil, err
		}
		st.grp = g
		g.members = append(g.members, st)
		comms[i] = &Comm{st: st, stream: st.own}
	}
	return comms, nil
}

func retain(device int) (cu.CUContext, error) {
	dev, err := cu.GetDevice(device)
	if err != nil {
		return cu.CUContext{}, fmt.Errorf("nccl: device %d: %w", device, err)
	}
	pctx, err := dev.RetainPrimaryCtx()
	if err != nil {
		return cu.CUContext{}, fmt.Errorf("nccl: device %d: primary context: %w", device, err)
	}
	return pctx, nil
}

func releaseDevice(device int) {
	if dev, err := cu.GetDevice(device); err == nil {
		dev.ReleasePrimaryCtx()
	}
}

// newState wraps a fresh NCCL communicator; the device's primary context
// must be current.
func newState(h unsafe.Pointer, pctx cu.CUContext, o options) (*state, error) {
	rank, size, device, err := commInfo(h)
	if err != nil {
		return nil, err
	}
	s, err := cu.MakeStream(cu.NonBlocking)
	if err != nil {
		return nil, fmt.Errorf("nccl: create stream: %w", err)
	}
	return &state{rank: rank, size: size, device: device, opt: o, pctx: pctx, own: s, h: h}, nil
}

// ------------------------------------------------------- call discipline

// enter starts a call: it locks the goroutine to its thread, makes the
// device's context current, checks that the communicator is usable and
// marks it busy. leave undoes all that.
func (c *Comm) enter(ctx context.Context) error {
	st := c.st
	runtime.LockOSThread()
	if err := cu.PushCurrentCtx(st.pctx); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("nccl: push context: %w", err)
	}
	st.mu.Lock()
	var err error
	switch {
	case st.closed:
		err = fmt.Errorf("nccl: %w", collective.ErrClosed)
	case st.err != nil:
		err = st.err
	case st.gone != nil:
		err = st.gone
	case st.busy > 0:
		st.mu.Unlock()
		err = c.failGroup(fmt.Errorf("nccl: rank %d made concurrent calls on one communicator: %w", st.rank, collective.ErrMismatch))
		st.mu.Lock()
	case ctx.Err() != nil:
		st.mu.Unlock()
		err = c.abortGroup(contextError(ctx))
		st.mu.Lock()
	}
	if err != nil {
		st.mu.Unlock()
		cu.PopCurrentCtx()
		runtime.UnlockOSThread()
		return err
	}
	st.busy++
	st.mu.Unlock()
	return nil
}

func (c *Comm) leave() {
	st := c.st
	st.mu.Lock()
	st.busy--
	rel := st.closed && st.busy == 0 && !st.released
	if rel {
		st.released = true
	}
	st.mu.Unlock()
	if rel {
		st.release()
	}
	cu.PopCurrentCtx()
	runtime.UnlockOSThread()
}

// nccl runs f, one or more NCCL calls, with the communicator, unless the
// communicator failed or closed. While f runs, an abort from another
// goroutine is deferred until f returns (so the communicator is never freed
// under a call that is about to use it) — or, if f is still inside NCCL
// after abortGrace (blocked connecting to a peer that never comes), done
// anyway: unblocking such a call is what ncclCommAbort is for. An error of
// f fails the group.
func (c *Comm) nccl(f func(h unsafe.Pointer) error) error {
	st := c.st
	st.mu.Lock()
	switch {
	case st.closed:
		st.mu.Unlock()
		return fmt.Errorf("nccl: %w", collective.ErrClosed)
	case st.err != nil:
		err := st.err
		st.mu.Unlock()
		return err
	case st.h == nil:
		st.mu.Unlock()
		return fmt.Errorf("nccl: communicator gone: %w", collective.ErrAborted)
	}
	h := st.h
	st.inCall = true
	st.mu.Unlock()

	ferr := f(h)

	st.mu.Lock()
	st.inCall = false
	if st.abortReq && st.h != nil {
		commAbort(st.h)
		st.h = nil
	}
	st.abortReq = false
	serr := st.err
	st.mu.Unlock()
	if ferr != nil {
		return c.abortGroup(ferr)
	}
	return serr
}

// abortGrace is how long an abort waits for an NCCL call in flight to
// return before aborting the communicator under it.
const abortGrace = 200 * time.Millisecond

// abortLocked aborts st's NCCL communicator now, or, if a goroutine is inside
// an NCCL call with it, when that call returns (at most abortGrace later).
// st.mu is held.
func (st *state) abortLocked() {
	if st.h == nil {
		return
	}
	if !st.inCall {
		commAbort(st.h)
		st.h = nil
		return
	}
	if st.abortReq {
		return
	}
	st.abortReq = true
	h := st.h
	time.AfterFunc(abortGrace, func() {
		st.mu.Lock()
		defer st.mu.Unlock()
		if st.abortReq && st.inCall && st.h == h {
			commAbort(h)
			st.h = nil
		}
	})
}

func contextError(ctx context.Context) error {
	err := ctx.Err()
	if cause := context.Cause(ctx); cause != nil && cause != err {
		return fmt.Errorf("%w: %w", err, cause)
	}
	return err
}

// abortState fails st (and its sub-communicators) with e, aborting its
// NCCL communicator if a call is in flight so that the call returns.
func abortState(st *state, e error) {
	st.mu.Lock()
	if st.err == nil {
		st.err = e
	}
	if st.busy > 0 {
		st.abortLocked()
	}
	children := append([]*state(nil), st.children...)
	st.mu.Unlock()
	for _, ch := range children {
		abortState(ch, e)
	}
}

// abortGroup fails the whole group (this rank only, across processes) with
// an error wrapping ErrAborted and cause, and returns that error.
func (c *Comm) abortGroup(cause error) error {
	var e error
	if cause == nil {
		e = fmt.Errorf("nccl: %w", collective.ErrAborted)
	} else {
		e = fmt.Errorf("nccl: %w: %w", collective.ErrAborted, cause)
	}
	return c.failGroup(e)
}

// failGroup fails the group (this rank only, across processes) with e and
// returns e.
func (c *Comm) failGroup(e error) error {
	st := c.st
	if st.grp == nil {
		abortState(st, e)
		return e
	}
	st.grp.mu.Lock()
	members := append([]*state(nil), st.grp.members...)
	st.grp.mu.Unlock()
	for _, m := range members {
		abortState(m, e)
	}
	return e
}

// Abort fails every pending and future collective of the group with an
// error wrapping ErrAborted and err. Across processes it reaches only this
// rank (see the package comment).
func (c *Comm) Abort(err error) { c.abortGroup(err) }

// Close leaves the communicator: its NCCL communicator is destroyed (or
// aborted, if a call is in flight or the group failed) and its memory
// freed. Later calls fail with ErrClosed. In a NewInProcess group the other
// members' later calls fail with ErrPeerGone, and a call of theirs that
// waits for this rank is given peerGrace to complete (the closed rank may
// have taken its part before closing), then aborted with ErrPeerGone.
// Close is idempotent.
func (c *Comm) Close() error {
	st := c.st
	st.mu.Lock()
	if st.closed {
		st.mu.Unlock()
		return nil
	}
	st.closed = true
	busy := st.busy > 0
	var h unsafe.Pointer
	if busy {
		st.abortLocked() // the call in flight returns ErrClosed
	} else {
		h = st.h
		st.h = nil
	}
	healthy := st.err == nil
	rel := !busy && !st.released
	if rel {
		st.released = true
	}
	st.mu.Unlock()

	var err error
	if h != nil {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		if e := cu.PushCurrentCtx(st.pctx); e == nil {
			defer cu.PopCurrentCtx()
		}
		if healthy {
			err = commDestroy(h)
		} else {
			err = commAbort(h)
		}
	}
	if st.grp != nil {
		gone := fmt.Errorf("nccl: rank %d closed: %w", st.rank, collective.ErrPeerGone)
		st.grp.mu.Lock()
		members := append([]*state(nil), st.grp.members...)
		st.grp.mu.Unlock()
		for _, m := range members {
			if m == st {
				continue
			}
			m.mu.Lock()
			if m.err == nil && m.gone == nil {
				m.gone, m.goneAt = gone, time.Now()
			}
			m.mu.Unlock()
		}
	}
	if rel {
		if e := st.release(); err == nil {
			err = e
		}
	}
	return err
}

// release frees the state's CUDA resources; the communicator is closed and
// idle.
func (st *state) release() error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if err := cu.PushCurrentCtx(st.pctx); err != nil {
		return fmt.Errorf("nccl: push context: %w", err)
	}
	var first error
	keep := func(err error) {
		if err != nil && first == nil {
			first = err
		}
	}
	for _, p := range []*cu.DevicePtr{&st.stage, &st.hdr} {
		if *p != 0 {
			keep(cu.MemFree(*p))
			*p = 0
		}
	}
	keep(st.own.Synchronize())
	keep(st.own.Destroy())
	cu.PopCurrentCtx()
	releaseDevice(st.device)
	if first != nil {
		return fmt.Errorf("nccl: release: %w", first)
	}
	return nil
}

// peerGrace is how long a call that waits for a peer of the in-process
// group that closed may still complete.
const peerGrace = 250 * time.Millisecond

// wait waits, polling, for the work queued on c's stream; the context, a
// failure of the group and NCCL's asynchronous errors end it early.
func (c *Comm) wait(ctx context.Context) error {
	st := c.st
	var timer *time.Timer
	for i := 0; ; i++ {
		// The stream also drains when NCCL kernels end because the
		// communicator was aborted: check the group after every poll.
		qerr := c.stream.Query()
		st.mu.Lock()
		serr, h, gone, goneAt := st.err, st.h, st.gone, st.goneAt
		if st.closed {
			serr = fmt.Errorf("nccl: %w", collective.ErrClosed)
		}
		var aerr error
		if serr == nil && h != nil {
			aerr = commAsyncError(h)
		}
		st.mu.Unlock()
		if serr != nil {
			return serr
		}
		if aerr != nil {
			return c.abortGroup(aerr)
		}
		if qerr == nil {
			return nil
		}
		if !errors.Is(qerr, cu.NotReady) {
			return c.abortGroup(fmt.Errorf("CUDA stream: %w", qerr))
		}
		if gone != nil && time.Since(goneAt) > peerGrace {
			abortState(st, gone)
			return gone
		}
		if i < 64 {
			if ctx.Err() != nil {
				return c.abortGroup(contextError(ctx))
			}
			runtime.Gosched()
			continue
		}
		d := min(time.Duration(i-63)*20*time.Microsecond, time.Millisecond)
		if timer == nil {
			timer = time.NewTimer(d)
			defer timer.Stop()
		} else {
			timer.Reset(d)
		}
		select {
		case <-ctx.Done():
			return c.abortGroup(contextError(ctx))
		case <-timer.C:
		}
	}
}

// ---------------------------------------------------------- agreement

// Kinds of collectives in the agreement header.
const (
	kindAllReduce = iota + 1
	kindAllGather
	kindBroadcast
	kindAllToAll
	kindBarrier
	kindSplit
	kindFlag
)

const hdrLen = 6 // kind, dtype, length, op/root, hash, bad

var kindNames = map[float64]string{kindAllReduce: "AllReduce", kindAllGather: "AllGather",
	kindBroadcast: "Broadcast", kindAllToAll: "AllToAll", kindBarrier: "Barrier", kindSplit: "Split"}

// growDev makes *p hold n bytes; the stream is idle when it is called.
func growDev(p *cu.DevicePtr, capacity *int, n int) error {
	if n <= *capacity && *p != 0 {
		return nil
	}
	if *p != 0 {
		if err := cu.MemFree(*p); err != nil {
			return fmt.Errorf("nccl: free scratch: %w", err)
		}
		*p, *capacity = 0, 0
	}
	n = max(n, 1024)
	d, err := cu.MemAlloc(int64(n))
	if err != nil {
		return fmt.Errorf("nccl: allocate %d bytes of scratch: %w", n, err)
	}
	*p, *capacity = d, n
	return nil
}

// maxAgree all-reduces vals (float64) with MAX in place through the
// header scratch and waits.
func (c *Comm) maxAgree(ctx context.Context, vals []float64) error {
	st := c.st
	if err := growDev(&st.hdr, &st.hdrCap, 8*len(vals)); err != nil {
		return c.abortGroup(err)
	}
	if err := cu.MemcpyHtoDAsync(st.hdr, unsafe.Pointer(&vals[0]), int64(8*len(vals)), c.stream); err != nil {
		return c.abortGroup(fmt.Errorf("copy header: %w", err))
	}
	if err := c.nccl(func(h unsafe.Pointer) error {
		return allReduce(uintptr(st.hdr), uintptr(st.hdr), len(vals), ncclFloat64, ncclMax, h, streamPtr(c.stream))
	}); err != nil {
		return err
	}
	if err := c.wait(ctx); err != nil {
		return err
	}
	if err := cu.MemcpyDtoH(unsafe.Pointer(&vals[0]), st.hdr, int64(8*len(vals))); err != nil {
		return c.abortGroup(fmt.Errorf("copy header back: %w", err))
	}
	return nil
}

// agree checks that every rank makes the same call: hdr (hdrLen values,
// non-negative integers below 2⁵³) must be equal on every rank and every
// bad flag 0. local is this rank's own argument error, if any. On
// disagreement every rank returns ErrMismatch (this rank's local error if
// it has one) and the communicator stays failed.
func (c *Comm) agree(ctx context.Context, hdr [hdrLen]float64, local error) error {
	st := c.st
	if st.opt.unchecked || c.async {
		return local
	}
	if local != nil {
		hdr[hdrLen-1] = 1
	}
	if len(st.hdrHost) < 2*hdrLen {
		st.hdrHost = make([]float64, 2*hdrLen)
	}
	v := st.hdrHost[:2*hdrLen]
	for i, x := range hdr {
		v[i], v[hdrLen+i] = x, -x
	}
	if err := c.maxAgree(ctx, v); err != nil {
		return err
	}
	var diff error
	for i := range hdrLen {
		hi, lo := v[i], -v[hdrLen+i]
		if hi != lo || (i == hdrLen-1 && hi != 0) {
			what := [...]string{"the collective", "the dtype", "the length", "the op or root", "the counts", "the arguments (some rank's are invalid)"}[i]
			diff = fmt.Errorf("nccl: %s: ranks disagree on %s (values %v to %v): %w",
				kindNames[hdr[0]], what, lo, hi, collective.ErrMismatch)
			break
		}
	}
	if diff == nil {
		return nil
	}
	if local != nil {
		diff = local
	}
	st.mu.Lock()
	if st.err == nil {
		st.err = diff
	}
	st.mu.Unlock()
	return diff
}

func mismatch(format string, args ...any) error {
	return fmt.Errorf("nccl: "+format+": %w", append(args, collective.ErrMismatch)...)
}

func hashInts(xs []int) float64 {
	if xs == nil {
		return 1 << 52
	}
	h := fnv.New64a()
	var b [8]byte
	for _, x := range xs {
		for i := range b {
			b[i] = byte(uint64(x) >> (8 * i))
		}
		h.Write(b[:])
	}
	return float64(h.Sum64() & (1<<52 - 1))
}

// ------------------------------------------------------------ buffers

func ncclType(dt collective.Dtype) int {
	if dt == collective.Float64 {
		return ncclFloat64
	}
	return ncclFloat32
}

// checkBuf validates one buffer: a valid dtype, and for a device buffer,
// memory the driver knows (unless unchecked) — an invalid pointer would
// fault on the GPU instead of failing here.
func (c *Comm) checkBuf(b collective.Buffer, what string) error {
	if b.Dtype().Size() == 0 {
		return mismatch("%s: invalid buffer %v", what, b)
	}
	ptr, dev := b.DevicePtr()
	if !dev {
		if c.async {
			return fmt.Errorf("nccl: %s: host buffer %v on a stream-ordered view: %w: %w", what, b, collective.ErrMismatch, errors.ErrUnsupported)
		}
		return nil
	}
	if c.st.opt.unchecked || c.async || b.Len() == 0 {
		return nil
	}
	size, base, err := cu.DevicePtr(ptr).AddressRange()
	if err != nil {
		return fmt.Errorf("nccl: %s: %v is not device memory of this context (%v): %w: %w", what, b, err, collective.ErrMismatch, errors.ErrUnsupported)
	}
	if uintptr(ptr)+uintptr(b.Len()*b.Dtype().Size()) > uintptr(base)+uintptr(size) {
		return mismatch("%s: %v extends past its allocation", what, b)
	}
	return nil
}

// span returns the address range of b's memory (host or device).
func span(b collective.Buffer) (lo, hi uintptr, dev bool) {
	n := uintptr(b.Len() * b.Dtype().Size())
	if p, ok := b.DevicePtr(); ok {
		return p, p + n, true
	}
	p := uintptr(hostPtr(b))
	return p, p + n, false
}

// overlap reports (as an ErrMismatch) send and recv buffers whose memory
// overlaps, which the collective contract forbids.
func overlap(what string, send, recv collective.Buffer) error {
	a0, a1, ad := span(send)
	b0, b1, bd := span(recv)
	if ad == bd && a0 < a1 && b0 < b1 && a0 < b1 && b0 < a1 {
		return mismatch("%s: send %v and recv %v overlap", what, send, recv)
	}
	return nil
}

// staging maps the host buffers of one call to device memory: a device
// buffer maps to itself, host buffers to consecutive parts of the stage.
type staging struct {
	c    *Comm
	bufs []collective.Buffer
	ptrs []uintptr
}

// stageIn places bufs (copying the contents of those with in[i]) on the
// device, on c's stream.
func (c *Comm) stageIn(bufs []collective.Buffer, in []bool) (*staging, error) {
	st := c.st
	total := 0
	for _, b := range bufs {
		if !b.IsDevice() {
			total += (b.Len()*b.Dtype().Size() + 255) &^ 255
		}
	}
	if total > 0 {
		if err := growDev(&st.stage, &st.stageCap, total); err != nil {
			return nil, c.abortGroup(err)
		}
	}
	s := &staging{c: c, bufs: bufs, ptrs: make([]uintptr, len(bufs))}
	off := 0
	for i, b := range bufs {
		if p, dev := b.DevicePtr(); dev {
			s.ptrs[i] = p
			continue
		}
		s.ptrs[i] = uintptr(st.stage) + uintptr(off)
		n := b.Len() * b.Dtype().Size()
		if in[i] && n > 0 {
			if err := cu.MemcpyHtoDAsync(cu.DevicePtr(s.ptrs[i]), hostPtr(b), int64(n), c.stream); err != nil {
				return nil, c.abortGroup(fmt.Errorf("stage in: %w", err))
			}
		}
		off += (n + 255) &^ 255
	}
	return s, nil
}

// out copies the host buffer i back from the device (the stream is idle).
func (s *staging) out(i int) error {
	b := s.bufs[i]
	if b.IsDevice() || b.Len() == 0 {
		return nil
	}
	if err := cu.MemcpyDtoH(hostPtr(b), cu.DevicePtr(s.ptrs[i]), int64(b.Len()*b.Dtype().Size())); err != nil {
		return s.c.abortGroup(fmt.Errorf("stage out: %w", err))
	}
	return nil
}

func hostPtr(b collective.Buffer) unsafe.Pointer {
	if f := b.Float32s(); len(f) > 0 {
		return unsafe.Pointer(&f[0])
	}
	if f := b.Float64s(); len(f) > 0 {
		return unsafe.Pointer(&f[0])
	}
	return nil
}

// streamPtr returns the CUstream handle of s (cu.Stream wraps exactly it).
func streamPtr(s cu.Stream) unsafe.Pointer { return *(*unsafe.Pointer)(unsafe.Pointer(&s)) }

// finish waits for the enqueued work (unless c is a stream-ordered view)
// and copies the outputs back.
func (c *Comm) finish(ctx context.Context, s *staging, outs ...int) error {
	if c.async {
		return nil
	}
	if err := c.wait(ctx); err != nil {
		return err
	}
	for _, i := range outs {
		if err := s.out(i); err != nil {
			return err
		}
	}
	return nil
}

// -------------------------------------------------------- collectives

// AllReduce reduces buf element-wise over all ranks, in place (Sum, Max,
// Min or Moments). Every rank gets the same bits; the reduction order is
// NCCL's, not rank order. Moments (host float64 buffers only; a device
// buffer is ErrMismatch wrapping errors.ErrUnsupported on every rank) is an
// ncclAllGather of the triples merged on the host over the fixed tree of
// the other backends: NCCL has no user-defined reductions. Max and Min are NCCL's, i.e. CUDA's fmax and fmin: unlike
// Go's max and min (collective.ReduceOp's contract) a NaN operand is
// dropped, and the sign of a zero result is unspecified.
func (c *Comm) AllReduce(ctx context.Context, buf collective.Buffer, op collective.ReduceOp) error {
	if err := c.enter(ctx); err != nil {
		return err
	}
	defer c.leave()
	local := c.checkBuf(buf, "AllReduce")
	var nop int
	switch op {
	case collective.Sum:
		nop = ncclSum
	case collective.Max:
		nop = ncclMax
	case collective.Min:
		nop = ncclMin
	case collective.Moments:
		if local == nil {
			if buf.IsDevice() {
				local = fmt.Errorf("nccl: AllReduce: the moments reduction needs a host buffer, got %v: %w: %w", buf, collective.ErrMismatch, errors.ErrUnsupported)
			} else if buf.Dtype() != collective.Float64 || buf.Len()%3 != 0 {
				local = mismatch("AllReduce: the moments reduction needs float64 (n, mean, M2) triples, got %v", buf)
			}
		}
	default:
		local = errors.Join(local, mismatch("AllReduce: invalid op %v", op))
	}
	if err := c.agree(ctx, [hdrLen]float64{kindAllReduce, float64(buf.Dtype()), float64(buf.Len()), float64(op)}, local); err != nil {
		return err
	}
	if buf.Len() == 0 {
		return nil
	}
	if op == collective.Moments {
		return c.allReduceMoments(ctx, buf)
	}
	s, err := c.stageIn([]collective.Buffer{buf}, []bool{true})
	if err != nil {
		return err
	}
	if err := c.nccl(func(h unsafe.Pointer) error {
		return allReduce(s.ptrs[0], s.ptrs[0], buf.Len(), ncclType(buf.Dtype()), nop, h, streamPtr(c.stream))
	}); err != nil {
		return err
	}
	return c.finish(ctx, s, 0)
}

// allReduceMoments is the Moments all-reduce of a host buffer: NCCL has no
// user-defined reductions, and no built-in one merges (n, mean, M2) exactly
// (summing Σx and Σx² loses the digits of offset data), so every rank's
// triples are all-gathered (ncclAllGather) and each rank merges them on
// the host over the fixed tree of kernel.MomentsTree: the bits of the
// in-process and MPI backends, the same on every rank, at an all-gather's
// cost — P·3C values received per rank.
func (c *Comm) allReduceMoments(ctx context.Context, buf collective.Buffer) error {
	st := c.st
	n := buf.Len()
	st.momAll = growHost(st.momAll, n*st.size)
	all := collective.Float64s(st.momAll)
	s, err := c.stageIn([]collective.Buffer{all}, []bool{false})
	if err != nil {
		return err
	}
	sendPtr := s.ptrs[0] + uintptr(st.rank*n*8)
	if err := cu.MemcpyHtoDAsync(cu.DevicePtr(sendPtr), hostPtr(buf), int64(n*8), c.stream); err != nil {
		return c.abortGroup(fmt.Errorf("stage in: %w", err))
	}
	sp := streamPtr(c.stream)
	if err := c.nccl(func(h unsafe.Pointer) error {
		return allGather(sendPtr, s.ptrs[0], n, ncclType(collective.Float64), h, sp)
	}); err != nil {
		return err
	}
	if err := c.finish(ctx, s, 0); err != nil {
		return err
	}
	st.momTree = growHost(st.momTree, n*kernel.TreeDepth(st.size))
	kernel.MomentsTree(buf.Float64s(), st.size, func(r int) []float64 { return st.momAll[r*n : (r+1)*n] }, st.momTree)
	return nil
}

func growHost(s []float64, n int) []float64 {
	if cap(s) < n {
		return make([]float64, n)
	}
	return s[:n]
}

// AllGather concatenates every rank's send into recv in rank order (see
// collective.Communicator). Equal counts use ncclAllGather; uneven counts
// one ncclBroadcast per rank in an NCCL group.
func (c *Comm) AllGather(ctx context.Context, send, recv collective.Buffer, counts []int) error {
	if err := c.enter(ctx); err != nil {
		return err
	}
	defer c.leave()
	st := c.st
	local := errors.Join(c.checkBuf(send, "AllGather send"), c.checkBuf(recv, "AllGather recv"))
	if local == nil && send.Dtype() != recv.Dtype() {
		local = mismatch("AllGather: send is %v, recv %v", send.Dtype(), recv.Dtype())
	}
	if local == nil {
		local = overlap("AllGather", send, recv)
	}
	var hdr [hdrLen]float64
	if counts == nil {
		if local == nil && recv.Len() != st.size*send.Len() {
			local = mismatch("AllGather: recv has %d elements, want %d·%d", recv.Len(), st.size, send.Len())
		}
		hdr = [hdrLen]float64{kindAllGather, float64(send.Dtype()), float64(send.Len()), 0, hashInts(nil)}
	} else {
		total := 0
		if len(counts) != st.size {
			local = errors.Join(local, mismatch("AllGather: %d counts for %d ranks", len(counts), st.size))
		} else {
			for r, n := range counts {
				if n < 0 {
					local = errors.Join(local, mismatch("AllGather: count %d of rank %d", n, r))
				}
				total += n
			}
			if local == nil && (send.Len() != counts[st.rank] || recv.Len() != total) {
				local = mismatch("AllGather: send %d, recv %d elements for counts %v", send.Len(), recv.Len(), counts)
			}
		}
		hdr = [hdrLen]float64{kindAllGather, float64(send.Dtype()), float64(max(total, 0)), 1, hashInts(counts)}
	}
	if err := c.agree(ctx, hdr, local); err != nil {
		return err
	}
	if recv.Len() == 0 {
		return nil
	}
	// Stage recv only; a host send is copied into its slot of recv (NCCL's
	// in-place form).
	s, err := c.stageIn([]collective.Buffer{recv}, []bool{false})
	if err != nil {
		return err
	}
	dt, esz := ncclType(send.Dtype()), send.Dtype().Size()
	off := st.rank * send.Len()
	if counts != nil {
		off = 0
		for _, n := range counts[:st.rank] {
			off += n
		}
	}
	sendPtr, sendDev := send.DevicePtr()
	if !sendDev {
		sendPtr = s.ptrs[0] + uintptr(off*esz)
		if send.Len() > 0 {
			if err := cu.MemcpyHtoDAsync(cu.DevicePtr(sendPtr), hostPtr(send), int64(send.Len()*esz), c.stream); err != nil {
				return c.abortGroup(fmt.Errorf("stage in: %w", err))
			}
		}
	}
	sp := streamPtr(c.stream)
	err = c.nccl(func(h unsafe.Pointer) error {
		if counts == nil {
			return allGather(sendPtr, s.ptrs[0], send.Len(), dt, h, sp)
		}
		if err := groupStart(); err != nil {
			return err
		}
		var gerr error
		pos := 0
		for r, n := range counts {
			if n > 0 && gerr == nil {
				src := s.ptrs[0] + uintptr(pos*esz)
				if r == st.rank {
					src = sendPtr
				}
				gerr = broadcast(src, s.ptrs[0]+uintptr(pos*esz), n, dt, r, h, sp)
			}
			pos += n
		}
		if err := groupEnd(h); gerr == nil {
			gerr = err
		}
		return gerr
	})
	if err != nil {
		return err
	}
	return c.finish(ctx, s, 0)
}

// Broadcast copies root's buf into the buf of every other rank.
func (c *Comm) Broadcast(ctx context.Context, buf collective.Buffer, root int) error {
	if err := c.enter(ctx); err != nil {
		return err
	}
	defer c.leave()
	local := c.checkBuf(buf, "Broadcast")
	if root < 0 || root >= c.st.size {
		local = errors.Join(local, mismatch("Broadcast: root %d of %d ranks", root, c.st.size))
	}
	if err := c.agree(ctx, [hdrLen]float64{kindBroadcast, float64(buf.Dtype()), float64(buf.Len()), float64(max(root, 0))}, local); err != nil {
		return err
	}
	if buf.Len() == 0 {
		return nil
	}
	s, err := c.stageIn([]collective.Buffer{buf}, []bool{c.st.rank == root})
	if err != nil {
		return err
	}
	if err := c.nccl(func(h unsafe.Pointer) error {
		return broadcast(s.ptrs[0], s.ptrs[0], buf.Len(), ncclType(buf.Dtype()), root, h, streamPtr(c.stream))
	}); err != nil {
		return err
	}
	return c.finish(ctx, s, 0)
}

// AllToAll sends sendCounts[r] values to rank r and receives recvCounts[r]
// from rank r (ncclSend/ncclRecv in an NCCL group; the own block is a
// device copy). The checked form also all-gathers every rank's sendCounts
// to verify the transpose rule.
func (c *Comm) AllToAll(ctx context.Context, send collective.Buffer, sendCounts []int, recv collective.Buffer, recvCounts []int) error {
	if err := c.enter(ctx); err != nil {
		return err
	}
	defer c.leave()
	st := c.st
	local := errors.Join(c.checkBuf(send, "AllToAll send"), c.checkBuf(recv, "AllToAll recv"))
	if local == nil && send.Dtype() != recv.Dtype() {
		local = mismatch("AllToAll: send is %v, recv %v", send.Dtype(), recv.Dtype())
	}
	if local == nil {
		local = overlap("AllToAll", send, recv)
	}
	countsOK := len(sendCounts) == st.size && len(recvCounts) == st.size
	if !countsOK {
		local = errors.Join(local, mismatch("AllToAll: %d send and %d recv counts for %d ranks", len(sendCounts), len(recvCounts), st.size))
	} else {
		ns, nr := 0, 0
		for r := range st.size {
			if sendCounts[r] < 0 || recvCounts[r] < 0 {
				local = errors.Join(local, mismatch("AllToAll: negative count for rank %d", r))
			}
			ns += sendCounts[r]
			nr += recvCounts[r]
		}
		if local == nil && (send.Len() != ns || recv.Len() != nr) {
			local = mismatch("AllToAll: send %d, recv %d elements for counts summing to %d, %d", send.Len(), recv.Len(), ns, nr)
		}
	}
	if err := c.agree(ctx, [hdrLen]float64{kindAllToAll, float64(send.Dtype())}, local); err != nil {
		return err
	}
	if !st.opt.unchecked && !c.async {
		// Every rank's send counts, then a second agreement on the check.
		n := st.size * st.size
		m := make([]float64, n)
		if countsOK {
			for r, x := range sendCounts {
				m[st.rank*st.size+r] = float64(x) + 1
			}
		}
		if err := c.maxAgree(ctx, m); err != nil { // a MAX over disjoint rows is an all-gather
			return err
		}
		var bad error
		for s := range st.size {
			if got := m[s*st.size+st.rank] - 1; countsOK && got != float64(recvCounts[s]) {
				bad = mismatch("AllToAll: rank %d sends %v values to rank %d, which expects %d", s, got, st.rank, recvCounts[s])
				break
			}
		}
		if err := c.agree(ctx, [hdrLen]float64{kindFlag}, bad); err != nil {
			return err
		}
	}
	if send.Len() == 0 && recv.Len() == 0 {
		return nil
	}
	sg, err := c.stageIn([]collective.Buffer{send, recv}, []bool{true, false})
	if err != nil {
		return err
	}
	dt, esz, sp := ncclType(send.Dtype()), send.Dtype().Size(), streamPtr(c.stream)
	soff, roff := 0, 0
	for r := range st.rank {
		soff += sendCounts[r]
		roff += recvCounts[r]
	}
	if n := sendCounts[st.rank]; n > 0 {
		if err := cu.MemcpyDtoDAsync(cu.DevicePtr(sg.ptrs[1]+uintptr(roff*esz)), cu.DevicePtr(sg.ptrs[0]+uintptr(soff*esz)), int64(n*esz), c.stream); err != nil {
			return c.abortGroup(fmt.Errorf("own block: %w", err))
		}
	}
	if st.size > 1 {
		err := c.nccl(func(h unsafe.Pointer) error {
			if err := groupStart(); err != nil {
				return err
			}
			var gerr error
			so, ro := 0, 0
			for r := range st.size {
				if r != st.rank && gerr == nil {
					if n := sendCounts[r]; n > 0 {
						gerr = sendTo(sg.ptrs[0]+uintptr(so*esz), n, dt, r, h, sp)
					}
					if n := recvCounts[r]; n > 0 && gerr == nil {
						gerr = recvFrom(sg.ptrs[1]+uintptr(ro*esz), n, dt, r, h, sp)
					}
				}
				so += sendCounts[r]
				ro += recvCounts[r]
			}
			if err := groupEnd(h); gerr == nil {
				gerr = err
			}
			return gerr
		})
		if err != nil {
			return err
		}
	}
	return c.finish(ctx, sg, 1)
}

// Barrier returns once every rank has called it (an all-reduce of the
// agreement header, or of one value when unchecked).
func (c *Comm) Barrier(ctx context.Context) error {
	if err := c.enter(ctx); err != nil {
		return err
	}
	defer c.leave()
	st := c.st
	if !st.opt.unchecked && !c.async {
		return c.agree(ctx, [hdrLen]float64{kindBarrier}, nil)
	}
	if err := growDev(&st.hdr, &st.hdrCap, 8); err != nil {
		return c.abortGroup(err)
	}
	if err := c.nccl(func(h unsafe.Pointer) error {
		return allReduce(uintptr(st.hdr), uintptr(st.hdr), 1, ncclFloat64, ncclMax, h, streamPtr(c.stream))
	}); err != nil {
		return err
	}
	return c.finish(ctx, nil)
}

// Split partitions the communicator (ncclCommSplit, NCCL ≥ 2.18): ranks
// with equal color form a sub-communicator, ordered by (key, rank); a
// negative color joins none and returns (nil, nil). The sub-communicator
// uses the same device and options and a stream of its own. ncclCommSplit
// blocks until every rank has called it; ctx is checked before.
func (c *Comm) Split(ctx context.Context, color, key int) (collective.Communicator, error) {
	if err := c.enter(ctx); err != nil {
		return nil, err
	}
	defer c.leave()
	st := c.st
	var local error
	if !hasSplit() {
		local = fmt.Errorf("nccl: Split needs ncclCommSplit (NCCL ≥ 2.18): %w: %w", collective.ErrMismatch, errors.ErrUnsupported)
	}
	if err := c.agree(ctx, [hdrLen]float64{kindSplit}, local); err != nil {
		return nil, err
	}
	if c.async {
		if err := c.stream.Synchronize(); err != nil {
			return nil, c.abortGroup(err)
		}
	}
	ncolor := color
	if color < 0 {
		ncolor = noColor
	}
	var nh unsafe.Pointer
	if err := c.nccl(func(h unsafe.Pointer) (err error) {
		nh, err = commSplit(h, ncolor, key)
		return err
	}); err != nil {
		if nh != nil {
			commDestroy(nh)
		}
		return nil, err
	}
	st.splits++
	if color < 0 || nh == nil {
		return nil, nil
	}
	pctx, err := retain(st.device)
	if err != nil {
		commDestroy(nh)
		return nil, err
	}
	sub, err := newState(nh, pctx, st.opt)
	if err != nil {
		commDestroy(nh)
		releaseDevice(st.device)
		return nil, err
	}
	if st.grp != nil {
		g := st.grp
		g.mu.Lock()
		if g.subs == nil {
			g.subs = map[[2]int]*group{}
		}
		k := [2]int{st.splits, color}
		sg := g.subs[k]
		if sg == nil {
			sg = &group{}
			g.subs[k] = sg
		}
		g.mu.Unlock()
		sg.mu.Lock()
		sg.members = append(sg.members, sub)
		sg.mu.Unlock()
		sub.grp = sg
	}
	st.mu.Lock()
	st.children = append(st.children, sub)
	failed := st.err
	st.mu.Unlock()
	if failed != nil {
		abortState(sub, failed)
	}
	return &Comm{st: sub, stream: sub.own}, nil
}
