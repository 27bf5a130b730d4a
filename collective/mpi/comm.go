//go:build mpi

package mpi

/*
#include <stdlib.h>
#include "bn_mpi.h"
*/
import "C"

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/gorgonia-bn/bn/collective"
	"github.com/gorgonia-bn/bn/collective/internal/kernel"
	"github.com/gorgonia-bn/bn/collective/internal/proto"
)

// gatherMax is the largest all-reduce, in bytes gathered per rank
// (len × size × element size), done as an all-gather and a local reduction
// in rank order; larger ones use MPI_Ireduce + MPI_Ibcast.
const gatherMax = 256 << 10

// stageMax is the largest buffer (in bytes) that is copied through C
// memory instead of being pinned and handed to MPI: for small calls the
// copy is cheaper than pinning, and a call that is abandoned (see wait)
// then leaves no Go memory in MPI's hands.
const stageMax = 256 << 10

// Polling: spin on MPI_Test for spinFor, then yield the CPU between tests
// until yieldFor, then sleep, doubling from minSleep to maxSleep. Init sets
// spinFor: defaultSpin, or 0 when more ranks than CPUs share the node (a
// spinning rank would take the CPU from the rank it waits for), or the
// duration in COLLECTIVE_MPI_SPIN.
const (
	defaultSpin = 200 * time.Microsecond
	yieldFor    = 2 * time.Millisecond
	minSleep    = 20 * time.Microsecond
	maxSleep    = time.Millisecond
)

var spinFor = defaultSpin

// comm is one rank's Communicator of an MPI communicator.
type comm struct {
	h      *C.bn_comm
	rank   int
	size   int
	parent *comm
	chain  []*comm // c, its parent, ... as in bn_set_chain

	tree []float64 // scratch of the Moments merges (owned by the call in progress)

	mu       sync.Mutex
	err      error // sticky failure
	closed   bool
	notified bool // this rank sent its one control message
	children map[*comm]struct{}
	goneErr  error  // a member left ...
	goneSeq  uint64 // ... after completing this many calls

	busy atomic.Bool
	seq  uint64        // calls started (owned by the calling goroutine)
	done atomic.Uint64 // calls completed
	// pending: a request of c was left posted in MPI (abandon). Its buffers
	// (the C memory below, pinned Go memory) are then never freed.
	pending atomic.Bool

	// Release of the MPI communicators and C memory (see Close, reap).
	// Guarded by mu:
	heard      []bool // a control message arrived from rank r (at most one each)
	nheard     int
	unclean    bool   // a message other than a clean gone, or gones that disagree
	peerSeq    uint64 // the seq of the first clean gone ...
	peerSeqSet bool   // ... received
	// Guarded by reaper's mutex:
	refs     int  // open sub-groups whose chain holds c (they poll c's control receive)
	released bool // bn_release freed c.h

	pin     *runtime.Pinner
	hdrSend unsafe.Pointer // C: one slot (header + slotCap bytes)
	hdrRecv unsafe.Pointer // C: size slots
	// The header exchange carries the data of small calls (see nextSlot):
	// slot is the payload room per rank of the next exchange, the same on
	// every rank; recent holds the payloads of the last calls it is
	// computed from; fused reports that the current call's data came with
	// its header.
	slot    int
	curSlot int // the current call's slot
	slotCap int
	recent  [slotHistory]int
	nrecent int
	fused   bool
	ints    unsafe.Pointer    // C: 4 × size int (counts and displacements)
	cnt64   unsafe.Pointer    // C: 2 × size int64 sent, 2 × size × size received
	stage   [2]unsafe.Pointer // C: staging buffers of small calls
	stCap   [2]int
	dummy   unsafe.Pointer // C: 16 bytes, the address of empty buffers
	hdrs    []proto.Header
	details []string
	counts  []int // all-to-all counts of every rank, 2 × size × size
}

// abandoned keeps the pins of collectives that were given up (their
// requests are still posted in MPI) until the process exits.
var abandoned struct {
	sync.Mutex
	pins []*runtime.Pinner
}

// registry holds every live comm, to close them at exit.
var registry struct {
	sync.Mutex
	comms map[*comm]struct{}
}

// reaper holds the closed communicators that are not (yet) released.
var reaper struct {
	sync.Mutex
	// closing: closed cleanly by this rank; released (MPI_Comm_free, C
	// memory freed) once every other member has closed cleanly too.
	closing []*comm
	// leaked: closed after a failure of the group (or with a call under
	// way, or with a member that left uncleanly): never freed, see Close.
	leaked []*comm
}

// cAllocs counts the live C allocations of cmalloc (for the tests).
var cAllocs atomic.Int64

func newComm(h *C.bn_comm, parent *comm) *comm {
	c := &comm{
		h:      h,
		rank:   int(C.bn_rank(h)),
		size:   int(C.bn_size(h)),
		parent: parent,
		pin:    new(runtime.Pinner),
	}
	var ph *C.bn_comm
	if parent != nil {
		ph = parent.h
	}
	C.bn_set_chain(h, ph)
	c.chain = append(c.chain, c)
	if parent != nil {
		c.chain = append(c.chain, parent.chain...)
	}
	if len(c.chain) > C.BN_MAX_CHAIN {
		c.chain = c.chain[:C.BN_MAX_CHAIN]
	}
	n := c.size
	c.hdrSend = cmalloc(hdrBytes)
	c.hdrRecv = cmalloc(n * hdrBytes)
	c.ints = cmalloc(4 * n * C.sizeof_int)
	c.dummy = cmalloc(16)
	c.hdrs = make([]proto.Header, n)
	c.details = make([]string, n)
	c.heard = make([]bool, n)
	reaper.Lock()
	for _, a := range c.chain[1:] {
		a.refs++
	}
	reaper.Unlock()
	registry.Lock()
	if registry.comms == nil {
		registry.comms = map[*comm]struct{}{}
	}
	registry.comms[c] = struct{}{}
	registry.Unlock()
	return c
}

func cmalloc(n int) unsafe.Pointer {
	p := C.calloc(C.size_t(max(n, 1)), 1)
	if p == nil {
		panic("mpi: out of C memory")
	}
	cAllocs.Add(1)
	return p
}

func cfree(p *unsafe.Pointer) {
	if *p != nil {
		C.free(*p)
		cAllocs.Add(-1)
		*p = nil
	}
}

// freeBuffers frees c's C buffers (headers, counts, staging). Only when no
// request of c is posted and no call can start that uses them (c is
// closed and not busy).
func (c *comm) freeBuffers() {
	cfree(&c.hdrSend)
	cfree(&c.hdrRecv)
	c.slotCap = 0
	cfree(&c.ints)
	cfree(&c.cnt64)
	cfree(&c.dummy)
	for i := range c.stage {
		cfree(&c.stage[i])
		c.stCap[i] = 0
	}
}

// Rank returns the rank of the caller in the group.
func (c *comm) Rank() int { return c.rank }

// Size returns the number of ranks in the group.
func (c *comm) Size() int { return c.size }

// String returns e.g. "MPI rank 1 of 4".
func (c *comm) String() string { return fmt.Sprintf("MPI rank %d of %d", c.rank, c.size) }

func (c *comm) errorf(k proto.Kind, err error) error {
	return fmt.Errorf("collective/mpi: rank %d/%d: %s: %w", c.rank, c.size, k, err)
}

// mpiError is an error reported by an MPI function.
type mpiError struct {
	fn   string
	code int
	msg  string
}

// Error returns the MPI function, MPI_Error_string's text and the code.
func (e *mpiError) Error() string { return fmt.Sprintf("%s: %s (MPI error %d)", e.fn, e.msg, e.code) }

func newMPIError(fn string, rc C.int) error {
	var buf [256]C.char
	C.bn_error_string(rc, &buf[0], C.int(len(buf)))
	return &mpiError{fn: fn, code: int(rc), msg: C.GoString(&buf[0])}
}

// live guards every MPI call against MPI_Finalize.
func live() bool {
	env.live.RLock()
	if env.finalized {
		env.live.RUnlock()
		return false
	}
	return true
}

func unlive() { env.live.RUnlock() }

var errFinalized = fmt.Errorf("%w: MPI is finalized", collective.ErrClosed)

// ---- control messages ----

const (
	msgAbort = 1
	msgGone  = 2

	flagDeadline = 1
	flagCanceled = 2
	flagMismatch = 4
	flagUnclean  = 8 // gone: the sender closed with a call under way

	ctrlHeader = 16
)

// ctrlMsg is a control message: abort (with a reason), or gone (the
// sender left after completing seq calls).
type ctrlMsg struct {
	typ, flags byte
	sender     int
	seq        uint64
	reason     string
}

func (m *ctrlMsg) encode(buf []byte) int {
	buf[0], buf[1] = m.typ, m.flags
	reason := m.reason
	if len(reason) > len(buf)-ctrlHeader {
		reason = reason[:len(buf)-ctrlHeader]
	}
	binary.LittleEndian.PutUint16(buf[2:], uint16(len(reason)))
	binary.LittleEndian.PutUint32(buf[4:], uint32(m.sender))
	binary.LittleEndian.PutUint64(buf[8:], m.seq)
	return ctrlHeader + copy(buf[ctrlHeader:], reason)
}

func (m *ctrlMsg) decode(buf []byte) bool {
	n := int(binary.LittleEndian.Uint16(buf[2:]))
	if (buf[0] != msgAbort && buf[0] != msgGone) || ctrlHeader+n > len(buf) {
		return false
	}
	*m = ctrlMsg{
		typ:    buf[0],
		flags:  buf[1],
		sender: int(binary.LittleEndian.Uint32(buf[4:])),
		seq:    binary.LittleEndian.Uint64(buf[8:]),
		reason: string(buf[ctrlHeader : ctrlHeader+n]),
	}
	return true
}

// remoteCause is the cause of another process's abort: its text, and the
// context error it wraps, if any.
type remoteCause struct {
	msg string
	is  error
}

// Error returns the text the other process sent.
func (e *remoteCause) Error() string { return e.msg }

// Unwrap returns the context error the other process failed with, if any.
func (e *remoteCause) Unwrap() error { return e.is }

func (m *ctrlMsg) err() error {
	if m.typ == msgGone {
		return fmt.Errorf("%w: rank %d closed its communicator", collective.ErrPeerGone, m.sender)
	}
	cause := &remoteCause{msg: m.reason}
	switch {
	case m.flags&flagDeadline != 0:
		cause.is = context.DeadlineExceeded
	case m.flags&flagCanceled != 0:
		cause.is = context.Canceled
	case m.flags&flagMismatch != 0:
		cause.is = collective.ErrMismatch
	}
	return fmt.Errorf("%w by rank %d: %w", collective.ErrAborted, m.sender, cause)
}

// send sends m to every other member of c (once per communicator).
func (c *comm) send(m *ctrlMsg) {
	if c.size == 1 {
		return
	}
	var buf [C.BN_CTRL_MAX]byte
	n := m.encode(buf[:])
	if !live() {
		return
	}
	C.bn_notify(c.h, unsafe.Pointer(&buf[0]), C.int(n))
	unlive()
}

// takeCtrl handles a control message that arrived on c, if any, and
// reports whether there was one.
func (c *comm) takeCtrl() bool { return c.takeCtrlGuarded(true) }

// takeCtrlGuarded is takeCtrl; guard false: the caller keeps MPI alive
// (releaseAll).
func (c *comm) takeCtrlGuarded(guard bool) bool {
	var buf [C.BN_CTRL_MAX]byte
	var ok C.int
	if guard && !live() {
		return false
	}
	rc := C.bn_ctrl_take(c.h, unsafe.Pointer(&buf[0]), &ok)
	if guard {
		unlive()
	}
	if rc != 0 {
		c.mu.Lock()
		c.unclean = true
		c.mu.Unlock()
		c.abort(fmt.Errorf("%w: %w", collective.ErrAborted, newMPIError("MPI_Irecv", rc)), nil)
		return false
	}
	if ok == 0 {
		return false
	}
	var m ctrlMsg
	valid := m.decode(buf[:])
	// Every member sends at most one control message on a communicator:
	// count them, for release.
	c.mu.Lock()
	switch {
	case !valid || m.sender < 0 || m.sender >= c.size || m.sender == c.rank || c.heard[m.sender]:
		c.unclean = true
	default:
		c.heard[m.sender] = true
		c.nheard++
		switch {
		case m.typ != msgGone || m.flags&flagUnclean != 0:
			c.unclean = true
		case !c.peerSeqSet:
			c.peerSeq, c.peerSeqSet = m.seq, true
		case m.seq != c.peerSeq:
			c.unclean = true
		}
	}
	c.mu.Unlock()
	if !valid {
		return true
	}
	switch m.typ {
	case msgAbort:
		c.abort(m.err(), nil)
	case msgGone:
		c.mu.Lock()
		if c.goneErr == nil || m.seq < c.goneSeq {
			c.goneErr, c.goneSeq = m.err(), m.seq
		}
		c.mu.Unlock()
	}
	return true
}

// abort fails c and its descendants with err. With m, it also sends m to
// the members of each of them that has not sent its control message.
func (c *comm) abort(err error, m *ctrlMsg) {
	c.mu.Lock()
	if c.err == nil {
		c.err = err
	}
	send := m != nil && !c.notified
	if send {
		c.notified = true
	}
	children := make([]*comm, 0, len(c.children))
	for ch := range c.children {
		children = append(children, ch)
	}
	c.mu.Unlock()
	if send {
		c.send(m)
	}
	for _, ch := range children {
		ch.abort(err, m)
	}
}

// failure returns the error of the current call (number c.seq-1) if c
// cannot complete it.
func (c *comm) failure(k proto.Kind) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case c.closed:
		return c.errorf(k, collective.ErrClosed)
	case c.err != nil:
		return c.errorf(k, c.err)
	case c.goneErr != nil && c.goneSeq < c.seq:
		c.err = c.goneErr
		return c.errorf(k, c.err)
	}
	return nil
}

// ctxFail aborts the group because ctx ended during a call.
func (c *comm) ctxFail(ctx context.Context, k proto.Kind) error {
	err := ctx.Err()
	if cause := context.Cause(ctx); cause != nil && cause != err {
		err = fmt.Errorf("%w: %w", err, cause)
	}
	m := &ctrlMsg{typ: msgAbort, sender: c.rank, reason: err.Error()}
	if errors.Is(err, context.DeadlineExceeded) {
		m.flags = flagDeadline
	} else {
		m.flags = flagCanceled
	}
	c.abort(fmt.Errorf("%w by rank %d: %w", collective.ErrAborted, c.rank, err), m)
	// Which ranks had joined is unknown here: every rank waits in one
	// non-blocking collective (Joined nil).
	return c.errorf(k, &collective.StallError{Rank: c.rank, Size: c.size, Call: k.String(), Seq: c.seq - 1, Err: err})
}

// mpiFail aborts the group after an MPI error.
func (c *comm) mpiFail(k proto.Kind, fn string, rc C.int) error {
	err := fmt.Errorf("%w: %w", collective.ErrAborted, newMPIError(fn, rc))
	c.abort(err, &ctrlMsg{typ: msgAbort, sender: c.rank, reason: err.Error()})
	c.abandon()
	return c.errorf(k, err)
}

// abandon gives up c's current request, if any: MPI keeps it posted, so
// its buffers stay pinned (Go memory) or allocated (C memory) for good.
func (c *comm) abandon() {
	c.pending.Store(true)
	if c.pin == nil {
		return
	}
	abandoned.Lock()
	abandoned.pins = append(abandoned.pins, c.pin)
	abandoned.Unlock()
	c.pin = nil
}

// wait polls c's current request until it completes (nil), or ctx ends, or
// the group fails, or MPI reports an error.
func (c *comm) wait(ctx context.Context, k proto.Kind) error {
	done := ctx.Done()
	var start time.Time
	sleep := minSleep
	for i := 0; ; i++ {
		var yield C.int
		var waited time.Duration
		if i > 0 {
			if i == 1 {
				start = time.Now()
			} else {
				waited = time.Since(start)
			}
			if waited > spinFor {
				yield = 1
			}
		}
		// The control messages only matter when something went wrong:
		// test them on every 32nd poll, and on every poll once waiting
		// gets long.
		skipCtrl := C.int(1)
		if i&31 == 31 || waited > yieldFor {
			skipCtrl = 0
		}
		if !live() {
			c.abandon()
			return c.errorf(k, errFinalized)
		}
		st := C.bn_poll(c.h, skipCtrl, yield)
		unlive()
		switch {
		case st < 0:
			return c.mpiFail(k, "MPI_Test", -st)
		case st == 1:
			return nil
		case st > 1:
			c.chain[st>>8-1].takeCtrl()
		}
		if err := c.failure(k); err != nil {
			c.abandon()
			return err
		}
		select {
		case <-done:
			c.abandon()
			return c.ctxFail(ctx, k)
		default:
		}
		if waited > yieldFor {
			time.Sleep(sleep)
			sleep = min(2*sleep, maxSleep)
		}
	}
}

// Fused exchanges. Every call starts with an MPI_Iallgather of one slot
// per rank: the 64-byte header and slot bytes of payload room. The slot
// size is a function of the calls the ranks agreed on so far (the largest
// payload of the last slotHistory calls that have one, up to slotMax), so
// it is the same on every rank and the exchange always matches in MPI,
// whatever each rank called: a mismatch is still found from the headers,
// on every rank. When the call's payload fits the slot (an all-gather's
// contribution, a small all-reduce's input, a broadcast root's buffer), it
// travels with the header and the call needs no second exchange; in a
// loop of calls of the same sizes, that is every call after the first.
const (
	hdrBytes    = proto.Words * 8
	slotMax     = 32 << 10
	slotHistory = 4
)

// The paths of a Moments all-reduce. pathAuto: the ranks' triples travel
// with the header exchange (or an MPI_Iallgather) up to gatherMax bytes in
// all, and every rank merges them over the fixed tree; above, an
// MPI_Ireduce to rank 0 with the non-commutative user op on (n, mean, M2)
// triples, then an MPI_Ibcast of its result. pathReduce forces the
// reduce-broadcast, pathAllReduce an MPI_Iallreduce with the user op (for
// the benchmarks that compare them; MPI does not promise that every rank
// of an MPI_Allreduce gets the same bits).
const (
	pathAuto = iota
	pathReduce
	pathAllReduce
)

// momentsPath is the path Moments all-reduces take (pathAuto but in
// benchmarks). Set it only between calls, to the same value on every rank.
var momentsPath = pathAuto

// separateHeader turns the fused exchange off (a 64-byte header exchange,
// then the data, as before it existed), for the benchmarks. Set it only
// between calls, to the same value on every rank.
var separateHeader bool

// payload describes what a call can send in its header exchange: bytes
// per rank (-1: nothing, the call is not fused), and src, this rank's data
// (empty on a broadcast's non-root ranks).
type payload struct {
	src   collective.Buffer
	bytes int
}

var noPayload = payload{bytes: -1}

// agreedPayload returns the per-rank payload of the call the ranks agreed
// on (hdrs), as every rank computes it, or -1 if the call has none.
func (c *comm) agreedPayload() int {
	h := &c.hdrs[0]
	esz := collective.Dtype(h.Dtype).Size()
	switch h.Kind {
	case proto.AllGather:
		n := 0
		for r := range c.hdrs {
			n = max(n, c.hdrs[r].Len)
		}
		return n * esz
	case proto.AllReduce:
		if h.Len*c.size*esz > gatherMax {
			return 0
		}
		return h.Len * esz
	case proto.Broadcast:
		return h.Len * esz
	}
	return -1
}

// nextSlot records the agreed call's payload and sets the next slot.
func (c *comm) nextSlot() {
	p := c.agreedPayload()
	if p < 0 {
		return
	}
	if p > slotMax {
		p = 0
	}
	c.recent[c.nrecent%slotHistory] = p
	c.nrecent++
	m := 0
	for _, v := range c.recent {
		m = max(m, v)
	}
	c.slot = (m + 63) &^ 63
}

// slotData returns the address of rank r's payload in the received slots.
func (c *comm) slotData(r int) unsafe.Pointer {
	return unsafe.Add(c.hdrRecv, r*(hdrBytes+c.curSlot)+hdrBytes)
}

// begin starts a call: it checks that c can run it, exchanges the headers
// of all ranks (with pl's data if it fits the slot: c.fused) and checks
// that they agree. On success the caller owns c until it calls end.
func (c *comm) begin(ctx context.Context, h *proto.Header, detail string, pl payload) error {
	k := h.Kind
	if !c.busy.CompareAndSwap(false, true) {
		// The calls can no longer be matched between ranks.
		err := fmt.Errorf("%w: rank %d made concurrent collective calls on one Communicator", collective.ErrMismatch, c.rank)
		c.abort(err, &ctrlMsg{typ: msgAbort, flags: flagMismatch, sender: c.rank, reason: err.Error()})
		return c.errorf(k, err)
	}
	if err := c.exchange(ctx, h, detail, pl); err != nil {
		c.end()
		return err
	}
	return nil
}

func (c *comm) exchange(ctx context.Context, h *proto.Header, detail string, pl payload) error {
	k := h.Kind
	h.Seq = c.seq
	c.seq++
	if err := c.failure(k); err != nil {
		return err
	}
	if ctx.Err() != nil {
		return c.ctxFail(ctx, k)
	}
	// Honour control messages that already arrived (an abort sent while
	// this rank was busy elsewhere) before joining the call.
	if !live() {
		return c.errorf(k, errFinalized)
	}
	st := C.bn_check_ctrl(c.h)
	unlive()
	if st < 0 {
		return c.mpiFail(k, "MPI_Test", -st)
	}
	if st > 0 {
		c.chain[st>>8-1].takeCtrl()
		if err := c.failure(k); err != nil {
			return err
		}
	}
	if !live() {
		return c.errorf(k, errFinalized)
	}
	// No request of c is posted here (a call given up fails c for good,
	// and failure returned above), so the slots can be reallocated.
	slot := c.slot
	if separateHeader {
		slot = 0
	}
	c.curSlot = slot
	if slot > c.slotCap {
		cfree(&c.hdrSend)
		cfree(&c.hdrRecv)
		c.hdrSend = cmalloc(hdrBytes + slot)
		c.hdrRecv = cmalloc(c.size * (hdrBytes + slot))
		c.slotCap = slot
	}
	h.Encode((*[proto.Words]int64)(c.hdrSend))
	// The decision is the same on every rank whose header agrees.
	c.fused = h.Fault == proto.OK && pl.bytes >= 0 && pl.bytes <= slot
	if c.fused && pl.src.Len() > 0 {
		toC(unsafe.Add(c.hdrSend, hdrBytes), pl.src)
	}
	rc := C.bn_iallgather(c.h, c.hdrSend, C.int((hdrBytes+slot)/8), c.hdrRecv, C.BN_I64)
	unlive()
	if rc != 0 {
		return c.mpiFail(k, "MPI_Iallgather", rc)
	}
	if err := c.wait(ctx, k); err != nil {
		return err
	}
	msg := ""
	for r := 0; r < c.size; r++ {
		w := (*[proto.Words]int64)(unsafe.Add(c.hdrRecv, r*(hdrBytes+slot)))
		if !c.hdrs[r].Decode(w) && msg == "" {
			msg = fmt.Sprintf("rank %d sent a malformed header", r)
		}
	}
	var f proto.Fault
	if msg == "" {
		c.details[c.rank] = detail
		msg, f = proto.Agree(c.hdrs, c.details)
		c.details[c.rank] = ""
	}
	if msg != "" {
		var err error
		if f == proto.Unsupported {
			err = fmt.Errorf("%w: %w: %s", collective.ErrMismatch, errors.ErrUnsupported, msg)
		} else {
			err = fmt.Errorf("%w: %s", collective.ErrMismatch, msg)
		}
		// Every rank reaches the same verdict: nobody needs telling.
		c.abort(err, nil)
		return c.errorf(k, err)
	}
	c.nextSlot()
	return nil
}

// end releases c after a call.
func (c *comm) end() {
	if c.pin != nil {
		c.pin.Unpin()
	}
	c.busy.Store(false)
}

// complete records a successful call.
func (c *comm) complete() { c.done.Add(1) }

// ---- buffers ----

func dtypeCode(d collective.Dtype) C.int {
	switch d {
	case collective.Float32:
		return C.BN_F32
	case collective.Float64:
		return C.BN_F64
	}
	return 0
}

// hostFault checks that b is a host buffer MPI can address.
func hostFault(b collective.Buffer, what string) (proto.Fault, string) {
	switch {
	case b.IsDevice():
		return proto.Unsupported, what + " is device memory; the MPI backend needs host slices"
	case b.Dtype().Size() == 0:
		return proto.BadDtype, fmt.Sprintf("%s has invalid dtype %v", what, b.Dtype())
	case b.Len() > math.MaxInt32:
		return proto.TooLarge, fmt.Sprintf("%s has %d values, MPI counts are 32-bit", what, b.Len())
	}
	return proto.OK, ""
}

func fault(h *proto.Header, detail *string, f proto.Fault, d string) {
	if h.Fault == proto.OK && f != proto.OK {
		h.Fault, *detail = f, d
	}
}

// pairFaults records the first fault of a call with a send and a recv
// buffer: host buffers of one dtype, the call's own check of the counts
// (f, d), buffers that do not overlap.
func pairFaults(h *proto.Header, detail *string, send, recv collective.Buffer, f proto.Fault, d string) {
	sf, sd := hostFault(send, "send")
	fault(h, detail, sf, sd)
	rf, rd := hostFault(recv, "recv")
	fault(h, detail, rf, rd)
	if recv.Dtype() != send.Dtype() {
		fault(h, detail, proto.BadRecvDtype, fmt.Sprintf("send is %v, recv is %v", send.Dtype(), recv.Dtype()))
	}
	fault(h, detail, f, d)
	if h.Fault == proto.OK && overlaps(send, recv) {
		fault(h, detail, proto.Overlap, "send and recv overlap")
	}
}

// addr returns the address of b's first element, pinned until end (or for
// good if the call is abandoned); empty buffers get a dummy C address.
func (c *comm) addr(b collective.Buffer) unsafe.Pointer {
	var p unsafe.Pointer
	switch b.Dtype() {
	case collective.Float32:
		if s := b.Float32s(); len(s) > 0 {
			p = unsafe.Pointer(&s[0])
		}
	case collective.Float64:
		if s := b.Float64s(); len(s) > 0 {
			p = unsafe.Pointer(&s[0])
		}
	}
	if p == nil {
		return c.dummy
	}
	if c.pin == nil {
		c.pin = new(runtime.Pinner)
	}
	c.pin.Pin(p)
	return p
}

// overlaps reports whether two host buffers share memory.
func overlaps(a, b collective.Buffer) bool {
	lo1, hi1 := span(a)
	lo2, hi2 := span(b)
	return lo1 < hi2 && lo2 < hi1
}

func span(b collective.Buffer) (lo, hi uintptr) {
	switch {
	case b.IsDevice():
	case b.Dtype() == collective.Float32 && b.Len() > 0:
		s := b.Float32s()
		lo = uintptr(unsafe.Pointer(unsafe.SliceData(s)))
		return lo, lo + uintptr(len(s))*4
	case b.Dtype() == collective.Float64 && b.Len() > 0:
		s := b.Float64s()
		lo = uintptr(unsafe.Pointer(unsafe.SliceData(s)))
		return lo, lo + uintptr(len(s))*8
	}
	return 0, 0
}

// staging returns C staging buffer i with room for n bytes.
func (c *comm) staging(i, n int) unsafe.Pointer {
	if n > c.stCap[i] {
		if c.stage[i] != nil {
			C.free(c.stage[i])
		}
		c.stCap[i] = n + n/4
		c.stage[i] = cmalloc(c.stCap[i])
	}
	return c.stage[i]
}

// toC copies the host buffer b to C memory at p.
func toC(p unsafe.Pointer, b collective.Buffer) {
	switch b.Dtype() {
	case collective.Float32:
		copy(unsafe.Slice((*float32)(p), b.Len()), b.Float32s())
	case collective.Float64:
		copy(unsafe.Slice((*float64)(p), b.Len()), b.Float64s())
	}
}

// fromCAt copies n values of C memory at p to the host buffer b at off.
func fromCAt(b collective.Buffer, off, n int, p unsafe.Pointer) {
	switch b.Dtype() {
	case collective.Float32:
		copy(b.Float32s()[off:off+n], unsafe.Slice((*float32)(p), n))
	case collective.Float64:
		copy(b.Float64s()[off:off+n], unsafe.Slice((*float64)(p), n))
	}
}

// fromC copies C memory at p to the host buffer b.
func fromC(b collective.Buffer, p unsafe.Pointer) {
	switch b.Dtype() {
	case collective.Float32:
		copy(b.Float32s(), unsafe.Slice((*float32)(p), b.Len()))
	case collective.Float64:
		copy(b.Float64s(), unsafe.Slice((*float64)(p), b.Len()))
	}
}

func bytesOf(b collective.Buffer) int { return b.Len() * b.Dtype().Size() }

// cints returns the i-th block of size C ints of c.ints.
func (c *comm) cints(i int) (*C.int, []C.int) {
	s := unsafe.Slice((*C.int)(c.ints), 4*c.size)[i*c.size : (i+1)*c.size]
	return &s[0], s
}

// post runs a posting function and waits for its request.
func (c *comm) post(ctx context.Context, k proto.Kind, fn string, rc C.int) error {
	if rc != 0 {
		return c.mpiFail(k, fn, rc)
	}
	return c.wait(ctx, k)
}

// ---- collectives ----

// AllReduce reduces buf element-wise over all ranks, in place.
func (c *comm) AllReduce(ctx context.Context, buf collective.Buffer, op collective.ReduceOp) error {
	h := proto.Header{Kind: proto.AllReduce, Dtype: int(buf.Dtype()), Op: int(op), Len: buf.Len()}
	var detail string
	f, d := hostFault(buf, "buffer")
	fault(&h, &detail, f, d)
	if h.Fault == proto.OK {
		f, d := proto.CheckOp(int(op), int(buf.Dtype()), buf.Len())
		fault(&h, &detail, f, d)
	}
	path := momentsPath
	if op != collective.Moments {
		path = pathAuto
	}
	pl := noPayload
	if esz := buf.Dtype().Size(); h.Fault == proto.OK && buf.Len()*c.size*esz <= gatherMax && path == pathAuto {
		pl = payload{src: buf, bytes: buf.Len() * esz}
	}
	if err := c.begin(ctx, &h, detail, pl); err != nil {
		return err
	}
	defer c.end()
	n, k := buf.Len(), h.Kind
	if n == 0 || c.size == 1 {
		c.complete()
		return nil
	}
	if c.fused {
		switch {
		case op == collective.Moments:
			c.tree = grow(c.tree, n*kernel.TreeDepth(c.size))
			kernel.MomentsTree(buf.Float64s(), c.size, func(r int) []float64 { return unsafe.Slice((*float64)(c.slotData(r)), n) }, c.tree)
		case buf.Dtype() == collective.Float32:
			foldSlots(c, kernel.Op(op), buf.Float32s())
		default:
			foldSlots(c, kernel.Op(op), buf.Float64s())
		}
		c.complete()
		return nil
	}
	dt, esz := dtypeCode(buf.Dtype()), buf.Dtype().Size()
	if !live() {
		return c.errorf(k, errFinalized)
	}
	if path == pathAllReduce {
		p := c.addr(buf)
		rc := C.bn_iallreduce(c.h, p, C.int(n), dt, C.int(op))
		unlive()
		if err := c.post(ctx, k, "MPI_Iallreduce", rc); err != nil {
			return err
		}
	} else if total := n * c.size * esz; total <= gatherMax && path != pathReduce {
		in, all := c.staging(0, n*esz), c.staging(1, total)
		toC(in, buf)
		rc := C.bn_iallgather(c.h, in, C.int(n), all, dt)
		unlive()
		if err := c.post(ctx, k, "MPI_Iallgather", rc); err != nil {
			return err
		}
		switch {
		case op == collective.Moments:
			g := unsafe.Slice((*float64)(all), n*c.size)
			c.tree = grow(c.tree, n*kernel.TreeDepth(c.size))
			kernel.MomentsTree(buf.Float64s(), c.size, func(r int) []float64 { return g[r*n : (r+1)*n] }, c.tree)
		case buf.Dtype() == collective.Float32:
			foldGathered(kernel.Op(op), buf.Float32s(), unsafe.Slice((*float32)(all), n*c.size))
		default:
			foldGathered(kernel.Op(op), buf.Float64s(), unsafe.Slice((*float64)(all), n*c.size))
		}
	} else {
		p := c.addr(buf)
		rc := C.bn_ireduce(c.h, p, C.int(n), dt, C.int(op), 0)
		unlive()
		if err := c.post(ctx, k, "MPI_Ireduce", rc); err != nil {
			return err
		}
		if !live() {
			return c.errorf(k, errFinalized)
		}
		rc = C.bn_ibcast(c.h, p, C.int(n), dt, 0)
		unlive()
		if err := c.post(ctx, k, "MPI_Ibcast", rc); err != nil {
			return err
		}
	}
	c.complete()
	return nil
}

// foldGathered sets dst to the rank-order reduction of the len(dst)-long
// blocks of all.
func foldGathered[T kernel.Float](op kernel.Op, dst, all []T) {
	n := len(dst)
	copy(dst, all[:n])
	for off := n; off < len(all); off += n {
		kernel.Apply(op, dst, all[off:off+n])
	}
}

// foldSlots sets dst to the rank-order reduction of the ranks' payloads
// in the received slots (as foldGathered).
func foldSlots[T kernel.Float](c *comm, op kernel.Op, dst []T) {
	n := len(dst)
	copy(dst, unsafe.Slice((*T)(c.slotData(0)), n))
	for r := 1; r < c.size; r++ {
		kernel.Apply(op, dst, unsafe.Slice((*T)(c.slotData(r)), n))
	}
}

// AllGather concatenates every rank's send into recv in rank order.
func (c *comm) AllGather(ctx context.Context, send, recv collective.Buffer, counts []int) error {
	h := proto.Header{Kind: proto.AllGather, Dtype: int(send.Dtype()), Len: send.Len(), RecvLen: recv.Len()}
	var detail string
	f, d := proto.CheckAllGather(&h, counts, c.rank, c.size)
	pairFaults(&h, &detail, send, recv, f, d)
	pl := noPayload
	if h.Fault == proto.OK {
		n := send.Len()
		for _, m := range counts {
			n = max(n, m)
		}
		pl = payload{src: send, bytes: n * send.Dtype().Size()}
	}
	if err := c.begin(ctx, &h, detail, pl); err != nil {
		return err
	}
	defer c.end()
	k := h.Kind
	if recv.Len() == 0 {
		c.complete()
		return nil
	}
	if c.fused {
		off := 0
		for r := 0; r < c.size; r++ {
			n := send.Len()
			if counts != nil {
				n = counts[r]
			}
			fromCAt(recv, off, n, c.slotData(r))
			off += n
		}
		c.complete()
		return nil
	}
	dt := dtypeCode(send.Dtype())
	staged := bytesOf(recv) <= stageMax
	var sp, rp unsafe.Pointer
	if staged {
		sp, rp = c.staging(0, bytesOf(send)), c.staging(1, bytesOf(recv))
		toC(sp, send)
	} else {
		sp, rp = c.addr(send), c.addr(recv)
	}
	if !live() {
		return c.errorf(k, errFinalized)
	}
	var rc C.int
	if counts == nil {
		rc = C.bn_iallgather(c.h, sp, C.int(send.Len()), rp, dt)
	} else {
		cp, cs := c.cints(0)
		dp, ds := c.cints(1)
		off := 0
		for r, n := range counts {
			cs[r], ds[r] = C.int(n), C.int(off)
			off += n
		}
		rc = C.bn_iallgatherv(c.h, sp, C.int(send.Len()), rp, cp, dp, dt)
	}
	unlive()
	if err := c.post(ctx, k, "MPI_Iallgather", rc); err != nil {
		return err
	}
	if staged {
		fromC(recv, rp)
	}
	c.complete()
	return nil
}

// Broadcast copies root's buf into every other rank's buf.
func (c *comm) Broadcast(ctx context.Context, buf collective.Buffer, root int) error {
	h := proto.Header{Kind: proto.Broadcast, Dtype: int(buf.Dtype()), Root: root, Len: buf.Len()}
	var detail string
	f, d := hostFault(buf, "buffer")
	fault(&h, &detail, f, d)
	f, d = proto.CheckRoot(root, c.size)
	fault(&h, &detail, f, d)
	pl := noPayload
	if h.Fault == proto.OK {
		pl.bytes = bytesOf(buf)
		if c.rank == root {
			pl.src = buf
		}
	}
	if err := c.begin(ctx, &h, detail, pl); err != nil {
		return err
	}
	defer c.end()
	k := h.Kind
	if buf.Len() == 0 || c.size == 1 {
		c.complete()
		return nil
	}
	if c.fused {
		if c.rank != root {
			fromCAt(buf, 0, buf.Len(), c.slotData(root))
		}
		c.complete()
		return nil
	}
	staged := bytesOf(buf) <= stageMax
	var p unsafe.Pointer
	if staged {
		p = c.staging(0, bytesOf(buf))
		if c.rank == root {
			toC(p, buf)
		}
	} else {
		p = c.addr(buf)
	}
	if !live() {
		return c.errorf(k, errFinalized)
	}
	rc := C.bn_ibcast(c.h, p, C.int(buf.Len()), dtypeCode(buf.Dtype()), C.int(root))
	unlive()
	if err := c.post(ctx, k, "MPI_Ibcast", rc); err != nil {
		return err
	}
	if staged && c.rank != root {
		fromC(buf, p)
	}
	c.complete()
	return nil
}

// AllToAll exchanges blocks of send and recv between all pairs of ranks.
func (c *comm) AllToAll(ctx context.Context, send collective.Buffer, sendCounts []int, recv collective.Buffer, recvCounts []int) error {
	h := proto.Header{Kind: proto.AllToAll, Dtype: int(send.Dtype()), Len: send.Len(), RecvLen: recv.Len()}
	var detail string
	f, d := proto.CheckAllToAll(&h, sendCounts, recvCounts, c.size)
	pairFaults(&h, &detail, send, recv, f, d)
	if err := c.begin(ctx, &h, detail, noPayload); err != nil {
		return err
	}
	defer c.end()
	k := h.Kind
	n := c.size
	// Exchange the counts and check that rank r sends rank s what s
	// expects.
	if c.cnt64 == nil {
		c.cnt64 = cmalloc((2*n + 2*n*n) * 8)
		c.counts = make([]int, 2*n*n)
	}
	mine := unsafe.Slice((*int64)(c.cnt64), 2*n+2*n*n)
	for r := 0; r < n; r++ {
		mine[r], mine[n+r] = int64(sendCounts[r]), int64(recvCounts[r])
	}
	if !live() {
		return c.errorf(k, errFinalized)
	}
	rc := C.bn_iallgather(c.h, c.cnt64, C.int(2*n), unsafe.Add(c.cnt64, 2*n*8), C.BN_I64)
	unlive()
	if err := c.post(ctx, k, "MPI_Iallgather", rc); err != nil {
		return err
	}
	for i, v := range mine[2*n:] {
		c.counts[i] = int(v)
	}
	if msg := proto.AgreeAllToAll(
		func(r int) []int { return c.counts[2*n*r : 2*n*r+n] },
		func(r int) []int { return c.counts[2*n*r+n : 2*n*(r+1)] }, n); msg != "" {
		err := fmt.Errorf("%w: %s", collective.ErrMismatch, msg)
		c.abort(err, nil)
		return c.errorf(k, err)
	}
	scp, sc := c.cints(0)
	sdp, sd := c.cints(1)
	rcp, rcs := c.cints(2)
	rdp, rd := c.cints(3)
	so, ro := 0, 0
	for r := 0; r < n; r++ {
		sc[r], sd[r], rcs[r], rd[r] = C.int(sendCounts[r]), C.int(so), C.int(recvCounts[r]), C.int(ro)
		so += sendCounts[r]
		ro += recvCounts[r]
	}
	staged := max(bytesOf(send), bytesOf(recv)) <= stageMax
	var sp, rp unsafe.Pointer
	if staged {
		sp, rp = c.staging(0, bytesOf(send)), c.staging(1, bytesOf(recv))
		toC(sp, send)
	} else {
		sp, rp = c.addr(send), c.addr(recv)
	}
	if !live() {
		return c.errorf(k, errFinalized)
	}
	rc = C.bn_ialltoallv(c.h, sp, scp, sdp, rp, rcp, rdp, dtypeCode(send.Dtype()))
	unlive()
	if err := c.post(ctx, k, "MPI_Ialltoallv", rc); err != nil {
		return err
	}
	if staged {
		fromC(recv, rp)
	}
	c.complete()
	return nil
}

// Barrier returns once every rank has called it (the header exchange is
// the barrier).
func (c *comm) Barrier(ctx context.Context) error {
	h := proto.Header{Kind: proto.Barrier}
	if err := c.begin(ctx, &h, "", noPayload); err != nil {
		return err
	}
	c.complete()
	c.end()
	return nil
}

// Split partitions the group with MPI_Comm_split. The header exchange
// first makes sure every rank has arrived, so that the blocking
// MPI_Comm_split (and MPI_Comm_dup) cannot wait for a rank that never
// comes.
func (c *comm) Split(ctx context.Context, color, key int) (collective.Communicator, error) {
	reap()
	if color < 0 {
		color = collective.Undefined
	}
	if color > math.MaxInt32 || key > math.MaxInt32 || key < math.MinInt32 {
		// Keep the call collective: every rank learns of the fault.
		h := proto.Header{Kind: proto.Split, Fault: proto.TooLarge}
		return nil, c.begin(ctx, &h, fmt.Sprintf("color %d or key %d does not fit MPI's int", color, key), noPayload)
	}
	h := proto.Header{Kind: proto.Split, Root: color, Key: key}
	if err := c.begin(ctx, &h, "", noPayload); err != nil {
		return nil, err
	}
	defer c.end()
	if !live() {
		return nil, c.errorf(h.Kind, errFinalized)
	}
	var nh *C.bn_comm
	rc := C.bn_split(c.h, C.int(color), C.int(key), &nh)
	unlive()
	if rc != 0 {
		return nil, c.mpiFail(h.Kind, "MPI_Comm_split", rc)
	}
	c.complete()
	if nh == nil {
		return nil, nil
	}
	ch := newComm(nh, c)
	c.mu.Lock()
	if c.children == nil {
		c.children = map[*comm]struct{}{}
	}
	c.children[ch] = struct{}{}
	err := c.err
	c.mu.Unlock()
	if err != nil {
		ch.abort(err, nil)
	}
	return ch, nil
}

// Abort fails every pending and future collective of every member of the
// group and its sub-groups with an error wrapping ErrAborted and err.
func (c *comm) Abort(err error) {
	reason := "aborted"
	var cause error
	if err != nil {
		reason = err.Error()
		cause = fmt.Errorf("%w by rank %d: %w", collective.ErrAborted, c.rank, err)
	} else {
		cause = fmt.Errorf("%w by rank %d", collective.ErrAborted, c.rank)
	}
	m := &ctrlMsg{typ: msgAbort, sender: c.rank, reason: reason}
	if errors.Is(err, context.DeadlineExceeded) {
		m.flags = flagDeadline
	} else if errors.Is(err, context.Canceled) {
		m.flags = flagCanceled
	}
	c.abort(cause, m)
}

// Close leaves the group: the other members' collectives that this rank
// did not take part in fail with ErrPeerGone, and this Communicator's with
// ErrClosed. It never waits for the other members.
//
// Resources. Close frees this rank's C buffers of the communicator at
// once, unless a call is under way (another goroutine's) or was given up
// with its request still posted in MPI (a deadline, an abort): MPI may
// still read and write those buffers, so they are kept until the process
// exits. The MPI communicators (two MPI_Comm_dup's) and their C wrapper
// are freed (MPI_Comm_free) only after an orderly close of the whole group:
// this rank and every other member closed it with no failure and no call
// pending, all after the same number of completed calls. Each member then
// sends exactly one control message (gone), so once this rank has received
// one from every other member, no more traffic can arrive on either
// communicator, and a reused communicator id cannot receive a stray
// message. Those messages arrive after Close returns: they are taken, and
// the communicator released, by later calls of Close or Split on any
// communicator of this process (so a Split/Close loop runs in bounded
// memory). A parent is released only once its sub-groups are closed (they
// watch its control messages). Where the group failed (Abort, a deadline,
// a mismatch, an MPI error), a member left early or never closes, or a call
// was under way, the handles are deliberately leaked rather than freed:
// MPI_Comm_free is collective in the standard, a departed peer may still
// have messages in flight, and a close must never wait for peers that may
// be gone. MPI_Finalize reclaims them. (Open MPI and MPICH implement
// MPI_Comm_free of an intra-communicator without communication, so
// freeing on one rank before the others do never blocks.)
func (c *comm) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	send := c.err == nil && !c.notified
	c.notified = true
	c.mu.Unlock()
	// From here on, a call that starts fails before touching MPI or the
	// buffers. One that started earlier (on another goroutine) is busy;
	// one that was given up left pending set before it cleared busy.
	pending := c.busy.Load() || c.pending.Load()
	if send {
		m := &ctrlMsg{typ: msgGone, sender: c.rank, seq: c.done.Load()}
		if pending {
			m.flags = flagUnclean
		}
		c.send(m)
	}
	if !pending {
		c.freeBuffers()
	}
	if p := c.parent; p != nil {
		p.mu.Lock()
		delete(p.children, c)
		p.mu.Unlock()
	}
	registry.Lock()
	delete(registry.comms, c)
	registry.Unlock()
	reaper.Lock()
	if !pending {
		// c no longer polls its ancestors' control receives.
		for _, a := range c.chain[1:] {
			a.refs--
		}
	}
	if send && !pending {
		reaper.closing = append(reaper.closing, c)
	} else {
		reaper.leaked = append(reaper.leaked, c)
	}
	reaper.Unlock()
	reap()
	return nil
}

// reap takes the control messages that arrived on the cleanly closed
// communicators and releases those whose whole group has closed cleanly
// (see Close).
func reap() { reapGuarded(true) }

// reapGuarded is reap; guard false: the caller keeps MPI alive
// (releaseAll).
func reapGuarded(guard bool) {
	reaper.Lock()
	defer reaper.Unlock()
	for progress := true; progress; {
		progress = false
		keep := reaper.closing[:0]
		for _, c := range reaper.closing {
			for c.takeCtrlGuarded(guard) {
			}
			c.mu.Lock()
			all := c.nheard == c.size-1
			sameSeq := c.size == 1 || c.peerSeq == c.done.Load()
			failed := c.err != nil || c.unclean || all && !sameSeq
			ready := all && sameSeq
			c.mu.Unlock()
			switch {
			case failed:
				reaper.leaked = append(reaper.leaked, c)
				continue
			case ready && c.refs == 0 && (!guard || live()):
				ok := C.bn_release(c.h) != 0
				if guard {
					unlive()
				}
				if ok {
					c.released = true
					progress = true
					continue
				}
			}
			keep = append(keep, c)
		}
		clear(reaper.closing[len(keep):])
		reaper.closing = keep
	}
}

var _ collective.Communicator = (*comm)(nil)

func grow[T any](s []T, n int) []T {
	if cap(s) < n {
		return make([]T, n, n+n/4)
	}
	return s[:n]
}
