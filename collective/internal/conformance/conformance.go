// Package conformance is the test suite every collective.Communicator
// backend must pass.
//
// The suite is written per rank: a case is a function that one rank runs
// with its Communicator, deriving its inputs from its rank, checking its
// outputs against values it computes itself, and returning an error that
// describes what went wrong on that rank. A [Harness] runs a case on every
// rank of a fresh group: the in-process harness runs all ranks as
// goroutines of the test, the MPI harness runs the calling process's rank
// (every process of the mpirun job runs the same test binary).
//
// Because all ranks run the same cases in the same order, a case must call
// the same collectives on every rank whatever its checks find; skipping
// depends on the group size only.
package conformance

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorgonia-bn/bn/collective"
	"github.com/gorgonia-bn/bn/collective/internal/kernel"
)

// Harness runs a test case on every rank of a fresh group.
type Harness interface {
	// Size returns the number of ranks of the groups the harness makes.
	Size() int
	// Run calls f on the rank(s) the harness drives, each with its
	// Communicator of a fresh group of Size() ranks and a context that
	// ends after a generous timeout, and reports the errors f returns to
	// t. When f fails on a rank, the harness aborts the group so that the
	// other ranks do not wait for it.
	Run(t *testing.T, f func(ctx context.Context, c collective.Communicator) error)
}

// RunRanks is Harness.Run for a group whose ranks all live in this process:
// it calls f on every rank of comms in its own goroutine with a context that
// ends after a minute, aborts the group when f fails on a rank, and closes
// every rank at the end.
func RunRanks[C collective.Communicator](t *testing.T, comms []C, f func(ctx context.Context, c collective.Communicator) error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var wg sync.WaitGroup
	for r, c := range comms {
		wg.Go(func() {
			if err := f(ctx, c); err != nil {
				t.Errorf("rank %d: %v", r, err)
				c.Abort(fmt.Errorf("rank %d failed its checks", r))
			}
		})
	}
	wg.Wait()
	for _, c := range comms {
		if err := c.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	}
}

// Options describes what a backend guarantees beyond the interface.
type Options struct {
	// SameProcess: all ranks share an address space, so the error a rank
	// passes to Abort (or its context error) is wrapped in the errors of the
	// other ranks and errors.Is finds it. Backends that cross process
	// boundaries only carry the message text.
	SameProcess bool
	// RankOrder: AllReduce results equal the reduction in rank order,
	// ((x0 op x1) op x2) op ..., for every length.
	RankOrder bool
	// MomentsTree: Moments results equal the fixed tree's
	// (kernel.MomentsTree) bit for bit, for every length.
	MomentsTree bool
	// Large is the "large" buffer length; 0 means 1<<20.
	Large int
	// Slack is how late (after a deadline, or after a rank fails) an error
	// may arrive; 0 means 2 s.
	Slack time.Duration
}

// Run runs the whole suite on the groups h makes.
func Run(t *testing.T, h Harness, o Options) {
	if o.Large == 0 {
		o.Large = 1 << 20
	}
	if o.Slack == 0 {
		o.Slack = 2 * time.Second
	}
	for _, c := range Cases(o) {
		t.Run(c.Name, func(t *testing.T) {
			if h.Size() < c.MinSize {
				t.Skipf("needs %d ranks, have %d", c.MinSize, h.Size())
			}
			h.Run(t, c.F)
		})
	}
}

// Case is one test of the suite.
type Case struct {
	Name    string
	MinSize int // skipped on smaller groups
	F       func(ctx context.Context, c collective.Communicator) error
}

// Cases returns the cases of the suite, in the order Run runs them.
func Cases(o Options) []Case {
	if o.Large == 0 {
		o.Large = 1 << 20
	}
	if o.Slack == 0 {
		o.Slack = 2 * time.Second
	}
	var cs []Case
	add := func(name string, minSize int, f func(ctx context.Context, c collective.Communicator) error) {
		cs = append(cs, Case{name, minSize, f})
	}
	lengths := []int{0, 1, 7, 1000, 1<<14 + 3, o.Large}
	for _, dt := range []collective.Dtype{collective.Float32, collective.Float64} {
		for _, op := range []collective.ReduceOp{collective.Sum, collective.Max, collective.Min} {
			for _, n := range lengths {
				add(fmt.Sprintf("AllReduce/%v/%v/n=%d", dt, op, n), 1, func(ctx context.Context, c collective.Communicator) error {
					return dispatch(dt, func() error { return allReduceExact[float32](ctx, c, op, n) },
						func() error { return allReduceExact[float64](ctx, c, op, n) })
				})
			}
		}
		for _, n := range []int{1, 7, 1000, 1<<14 + 3, o.Large} {
			add(fmt.Sprintf("AllReduceDeterministic/%v/n=%d", dt, n), 1, func(ctx context.Context, c collective.Communicator) error {
				return dispatch(dt, func() error { return allReduceDeterministic[float32](ctx, c, n, o.RankOrder) },
					func() error { return allReduceDeterministic[float64](ctx, c, n, o.RankOrder) })
			})
		}
		for _, n := range []int{7, 1<<14 + 3, 1 << 17} {
			add(fmt.Sprintf("AllReduceNaNSignedZero/%v/n=%d", dt, n), 1, func(ctx context.Context, c collective.Communicator) error {
				return dispatch(dt, func() error { return allReduceNaN[float32](ctx, c, n) },
					func() error { return allReduceNaN[float64](ctx, c, n) })
			})
		}
		if dt == collective.Float64 {
			for _, n := range []int{0, 1, 7, 1000, 1<<14 + 3, o.Large / 3} {
				add(fmt.Sprintf("AllReduceMoments/n=%d", n), 1, func(ctx context.Context, c collective.Communicator) error {
					return allReduceMoments(ctx, c, n, o.MomentsTree)
				})
			}
		}
		for _, n := range []int{0, 1, 7, 1000, -1} {
			name := fmt.Sprintf("AllGather/%v/n=%d", dt, n)
			if n < 0 {
				name = fmt.Sprintf("AllGather/%v/total=%d", dt, o.Large)
			}
			add(name, 1, func(ctx context.Context, c collective.Communicator) error {
				m := n
				if m < 0 {
					m = o.Large / c.Size()
				}
				return dispatch(dt, func() error { return allGatherEqual[float32](ctx, c, m) },
					func() error { return allGatherEqual[float64](ctx, c, m) })
			})
		}
		for _, pat := range unevenPatterns {
			add(fmt.Sprintf("AllGatherUneven/%v/%s", dt, pat.name), 1, func(ctx context.Context, c collective.Communicator) error {
				counts := make([]int, c.Size())
				for r := range counts {
					counts[r] = pat.count(r, c.Size())
				}
				return dispatch(dt, func() error { return allGatherCounts[float32](ctx, c, counts) },
					func() error { return allGatherCounts[float64](ctx, c, counts) })
			})
		}
		for _, n := range []int{0, 1, 7, o.Large} {
			add(fmt.Sprintf("Broadcast/%v/n=%d", dt, n), 1, func(ctx context.Context, c collective.Communicator) error {
				return dispatch(dt, func() error { return broadcast[float32](ctx, c, n) },
					func() error { return broadcast[float64](ctx, c, n) })
			})
		}
		for _, pat := range allToAllPatterns {
			add(fmt.Sprintf("AllToAll/%v/%s", dt, pat.name), 1, func(ctx context.Context, c collective.Communicator) error {
				return dispatch(dt, func() error { return allToAll[float32](ctx, c, pat.count) },
					func() error { return allToAll[float64](ctx, c, pat.count) })
			})
		}
	}
	add("Barrier", 1, barrier)
	add("Split/EvenOddReversed", 1, splitEvenOdd)
	add("Split/Undefined", 1, splitUndefined)
	add("Split/Nested", 1, splitNested)
	add("Mixed", 1, mixed)
	add("Deadline/LateRank", 2, func(ctx context.Context, c collective.Communicator) error { return deadlineLateRank(ctx, c, o) })
	add("Deadline/AlreadyExpired", 1, func(ctx context.Context, c collective.Communicator) error { return deadlineExpired(ctx, c) })
	add("Cancel", 2, func(ctx context.Context, c collective.Communicator) error { return cancelRank(ctx, c, o) })
	add("Abort", 2, func(ctx context.Context, c collective.Communicator) error { return abortRank(ctx, c, o) })
	add("AbortSelf", 1, abortSelf)
	add("AbortReachesSubGroup", 2, func(ctx context.Context, c collective.Communicator) error { return abortSubGroup(ctx, c, o) })
	add("Close", 2, func(ctx context.Context, c collective.Communicator) error { return closeRank(ctx, c, o) })
	add("ConcurrentCalls", 2, concurrentCalls)
	for _, m := range mismatches {
		add("Mismatch/"+m.name, m.minSize, func(ctx context.Context, c collective.Communicator) error { return mismatch(ctx, c, m) })
	}
	return cs
}

// elem is the set of element types of the suite.
type elem interface{ float32 | float64 }

func dispatch(dt collective.Dtype, f32, f64 func() error) error {
	if dt == collective.Float32 {
		return f32()
	}
	return f64()
}

func buf[T elem](s []T) collective.Buffer {
	switch s := any(s).(type) {
	case []float32:
		return collective.Float32s(s)
	case []float64:
		return collective.Float64s(s)
	}
	panic("unreachable")
}

// ival is an integer-valued input in [-1000, 1000]: sums of up to 2^14 of
// them are exact in float32, so every reduction order gives the same
// result.
func ival(r, i int) float64 { return float64((r*7919+i*104729+13)%2001 - 1000) }

var scales = [...]float64{1e-4, 1e-3, 1e-2, 0.1, 1, 10, 100, 1e3, 1e4}

// fval is an input of mixed magnitudes and signs whose sums depend on the
// order of the additions.
func fval(r, i int) float64 {
	h := uint64(r)*0x9e3779b97f4a7c15 ^ uint64(i)*0xbf58476d1ce4e5b9
	h ^= h >> 31
	h *= 0x94d049bb133111eb
	h ^= h >> 29
	return (float64(h%2000001)/1000000 - 1) * scales[(i+3*r)%len(scales)]
}

// checked reports whether rank me checks element i of a result of length
// n: all elements of short results, every size-th element of long ones
// (sameOnAllRanks covers the rest).
func checked(i, n, me, size int) bool { return n < 4096 || i%size == me }

// gval encodes (rank, index) exactly in float32 for r < 16, i < 2^20.
func gval(r, i int) float64 { return float64(r)*(1<<20) + float64(i%(1<<20)) }

// errs collects the failures of a case on one rank.
type errs struct{ list []error }

func (e *errs) add(format string, args ...any) {
	if len(e.list) < 10 {
		e.list = append(e.list, fmt.Errorf(format, args...))
	}
}

func (e *errs) err() error { return errors.Join(e.list...) }

func allReduceExact[T elem](ctx context.Context, c collective.Communicator, op collective.ReduceOp, n int) error {
	x := make([]T, n)
	for i := range x {
		x[i] = T(ival(c.Rank(), i))
	}
	if err := c.AllReduce(ctx, buf(x), op); err != nil {
		return err
	}
	var e errs
	for i := range x {
		if !checked(i, n, c.Rank(), c.Size()) {
			continue
		}
		want := ival(0, i)
		for r := 1; r < c.Size(); r++ {
			v := ival(r, i)
			switch op {
			case collective.Sum:
				want += v
			case collective.Max:
				want = max(want, v)
			case collective.Min:
				want = min(want, v)
			}
		}
		if x[i] != T(want) {
			e.add("element %d: got %v, want %v", i, x[i], want)
		}
	}
	if err := sameOnAllRanks(ctx, c, x); err != nil {
		e.add("%w", err)
	}
	return e.err()
}

// mval is rank r's moments of channel i: uneven counts (zero for some
// channels, and for every channel of rank 1 of groups of 3 or more: an
// empty rank), offset means (1e4 + a deviation) and sums of squares.
func mval(r, i, size int) (n, mean, m2 float64) {
	if size >= 3 && r == 1 {
		return 0, 0, 0
	}
	n = float64((r*31 + i*7) % 5) // 0 … 4
	if n == 0 {
		return 0, 0, 0
	}
	return n, 1e4 + fval(r, i), n * (1 + math.Abs(fval(r+7, i)))
}

// allReduceMoments checks a Moments reduction of n channels against the
// merge in rank order (within 1e-12 relative) and, with tree, against the
// fixed tree bit for bit; and that every rank has the same bits.
func allReduceMoments(ctx context.Context, c collective.Communicator, n int, tree bool) error {
	P := c.Size()
	x := make([]float64, 3*n)
	for i := range n {
		x[3*i], x[3*i+1], x[3*i+2] = mval(c.Rank(), i, P)
	}
	if err := c.AllReduce(ctx, collective.Float64s(x), collective.Moments); err != nil {
		return err
	}
	var e errs
	in := make([][]float64, P)
	for r := range in {
		in[r] = make([]float64, 3)
	}
	want, ref := make([]float64, 3), make([]float64, 3)
	tmp := make([]float64, 3*kernel.TreeDepth(P))
	for i := range n {
		if !checked(i, n, c.Rank(), P) {
			continue
		}
		clear(ref)
		for r := range P {
			in[r][0], in[r][1], in[r][2] = mval(r, i, P)
			kernel.MergeMoments(ref, in[r])
		}
		got := x[3*i : 3*i+3]
		if tree {
			kernel.MomentsTree(want, P, func(r int) []float64 { return in[r] }, tmp)
			for k := range want {
				if math.Float64bits(got[k]) != math.Float64bits(want[k]) {
					e.add("channel %d: got %v, want the fixed tree's %v", i, got, want)
					break
				}
			}
		}
		if got[0] != ref[0] || math.Abs(got[1]-ref[1]) > 1e-12*math.Abs(ref[1]) || math.Abs(got[2]-ref[2]) > 1e-12*ref[2] {
			e.add("channel %d: got %v, want ≈ the rank-order merge %v (1e-12 relative)", i, got, ref)
		}
	}
	if err := sameOnAllRanks(ctx, c, x); err != nil {
		e.add("%w", err)
	}
	return e.err()
}

func allReduceDeterministic[T elem](ctx context.Context, c collective.Communicator, n int, rankOrder bool) error {
	x := make([]T, n)
	for i := range x {
		x[i] = T(fval(c.Rank(), i))
	}
	if err := c.AllReduce(ctx, buf(x), collective.Sum); err != nil {
		return err
	}
	var e errs
	if rankOrder {
		for i := range x {
			if !checked(i, n, c.Rank(), c.Size()) {
				continue
			}
			want := T(fval(0, i))
			for r := 1; r < c.Size(); r++ {
				want += T(fval(r, i))
			}
			if math.Float64bits(float64(x[i])) != math.Float64bits(float64(want)) {
				e.add("element %d: got %v, want rank-order sum %v", i, x[i], want)
			}
		}
	} else {
		for i := range x {
			if !checked(i, n, c.Rank(), c.Size()) {
				continue
			}
			var want, mag float64
			for r := 0; r < c.Size(); r++ {
				v := float64(T(fval(r, i)))
				want += v
				mag += math.Abs(v)
			}
			if d := math.Abs(float64(x[i]) - want); d > 1e-5*mag {
				e.add("element %d: got %v, want ≈%v", i, x[i], want)
			}
		}
	}
	if err := sameOnAllRanks(ctx, c, x); err != nil {
		e.add("%w", err)
	}
	return e.err()
}

// sameOnAllRanks checks that x is bitwise identical on every rank.
func sameOnAllRanks[T elem](ctx context.Context, c collective.Communicator, x []T) error {
	h := uint64(14695981039346656037)
	for _, v := range x {
		h ^= math.Float64bits(float64(v))
		h *= 1099511628211
	}
	mine := make([]float64, 4)
	for k := range mine {
		mine[k] = float64(h >> (16 * k) & 0xffff)
	}
	all := make([]float64, 4*c.Size())
	if err := c.AllGather(ctx, collective.Float64s(mine), collective.Float64s(all), nil); err != nil {
		return err
	}
	for r := 0; r < c.Size(); r++ {
		for k := range mine {
			if all[4*r+k] != mine[k] {
				return fmt.Errorf("result differs between rank %d and rank %d", c.Rank(), r)
			}
		}
	}
	return nil
}

func allReduceNaN[T elem](ctx context.Context, c collective.Communicator, n int) error {
	var e errs
	for _, op := range []collective.ReduceOp{collective.Sum, collective.Max, collective.Min} {
		x := make([]T, n)
		for i := range x {
			x[i] = T(ival(c.Rank(), i))
		}
		// Element nanAt is NaN on the last rank; element 0 is -0 on the
		// last rank and +0 on the others.
		nanAt, last := n/2, c.Rank() == c.Size()-1
		x[0] = 0
		if last {
			x[nanAt] = T(math.NaN())
			x[0] = T(math.Copysign(0, -1))
		}
		if err := c.AllReduce(ctx, buf(x), op); err != nil {
			return err
		}
		if v := x[nanAt]; v == v {
			e.add("%v: element %d = %v, want NaN (one rank had NaN)", op, nanAt, v)
		}
		for i := range x {
			if i != nanAt && x[i] != x[i] {
				e.add("%v: element %d is NaN", op, i)
				break
			}
		}
		// Go semantics: -0 + +0 = +0, max(-0, +0) = +0, min(-0, +0) = -0.
		wantNeg := c.Size() == 1 || op == collective.Min
		if x[0] != 0 || math.Signbit(float64(x[0])) != wantNeg {
			e.add("%v of -0 and +0: got %v (sign bit %v), want sign bit %v", op, x[0], math.Signbit(float64(x[0])), wantNeg)
		}
	}
	return e.err()
}

func allGatherEqual[T elem](ctx context.Context, c collective.Communicator, n int) error {
	send := make([]T, n)
	for i := range send {
		send[i] = T(gval(c.Rank(), i))
	}
	recv := make([]T, n*c.Size())
	for i := range recv {
		recv[i] = -1
	}
	if err := c.AllGather(ctx, buf(send), buf(recv), nil); err != nil {
		return err
	}
	var e errs
	for r := 0; r < c.Size(); r++ {
		for i := 0; i < n; i++ {
			if got, want := recv[r*n+i], T(gval(r, i)); got != want {
				e.add("recv[%d] (rank %d, element %d): got %v, want %v", r*n+i, r, i, got, want)
			}
		}
	}
	return e.err()
}

var unevenPatterns = []struct {
	name  string
	count func(r, size int) int
}{
	{"some-zero", func(r, size int) int { return (r*3 + 1) % 4 }},
	{"all-zero", func(r, size int) int { return 0 }},
	{"only-last", func(r, size int) int {
		if r == size-1 {
			return 5
		}
		return 0
	}},
	{"growing", func(r, size int) int { return 1000*r + 1 }},
}

func allGatherCounts[T elem](ctx context.Context, c collective.Communicator, counts []int) error {
	send := make([]T, counts[c.Rank()])
	for i := range send {
		send[i] = T(gval(c.Rank(), i))
	}
	total := 0
	for _, k := range counts {
		total += k
	}
	recv := make([]T, total)
	if err := c.AllGather(ctx, buf(send), buf(recv), counts); err != nil {
		return err
	}
	var e errs
	off := 0
	for r, k := range counts {
		for i := 0; i < k; i++ {
			if got, want := recv[off+i], T(gval(r, i)); got != want {
				e.add("recv[%d] (rank %d, element %d): got %v, want %v", off+i, r, i, got, want)
			}
		}
		off += k
	}
	return e.err()
}

func broadcast[T elem](ctx context.Context, c collective.Communicator, n int) error {
	var e errs
	for root := 0; root < c.Size(); root++ {
		if n > 4096 && root != 0 && root != c.Size()-1 {
			continue // long buffers: first and last root only
		}
		x := make([]T, n)
		for i := range x {
			x[i] = T(gval(c.Rank(), i))
		}
		if err := c.Broadcast(ctx, buf(x), root); err != nil {
			return err
		}
		for i := range x {
			if got, want := x[i], T(gval(root, i)); got != want {
				e.add("root %d: element %d: got %v, want %v", root, i, got, want)
				break
			}
		}
	}
	return e.err()
}

var allToAllPatterns = []struct {
	name  string
	count func(src, dst, size int) int // values src sends to dst
}{
	{"uneven", func(src, dst, size int) int { return (src + 2*dst) % 3 }},
	{"shift-1", func(src, dst, size int) int {
		if dst == (src+1)%size {
			return 7
		}
		return 0
	}},
	{"reverse", func(src, dst, size int) int {
		if dst == size-1-src {
			return 5 + src
		}
		return 0
	}},
	{"dense", func(src, dst, size int) int { return 100 }},
	{"empty", func(src, dst, size int) int { return 0 }},
}

// aval encodes (source, destination, index) exactly.
func aval(src, dst, j, size int) float64 { return float64((src*size+dst)*1000 + j) }

func allToAll[T elem](ctx context.Context, c collective.Communicator, count func(src, dst, size int) int) error {
	size, me := c.Size(), c.Rank()
	sendCounts, recvCounts := make([]int, size), make([]int, size)
	var send, recv []T
	for r := 0; r < size; r++ {
		sendCounts[r] = count(me, r, size)
		recvCounts[r] = count(r, me, size)
		for j := 0; j < sendCounts[r]; j++ {
			send = append(send, T(aval(me, r, j, size)))
		}
	}
	n := 0
	for _, k := range recvCounts {
		n += k
	}
	recv = make([]T, n)
	if send == nil {
		send = []T{}
	}
	if err := c.AllToAll(ctx, buf(send), sendCounts, buf(recv), recvCounts); err != nil {
		return err
	}
	var e errs
	off := 0
	for r := 0; r < size; r++ {
		for j := 0; j < recvCounts[r]; j++ {
			if got, want := recv[off+j], T(aval(r, me, j, size)); got != want {
				e.add("value %d from rank %d: got %v, want %v", j, r, got, want)
			}
		}
		off += recvCounts[r]
	}
	return e.err()
}

func barrier(ctx context.Context, c collective.Communicator) error {
	// The ranks leave a first barrier together, then rank 0 sleeps: the
	// others must wait for it in the second. The margin (half the delay)
	// absorbs a rank that is scheduled late on a loaded machine.
	const delay = 200 * time.Millisecond
	if err := c.Barrier(ctx); err != nil {
		return err
	}
	if c.Rank() == 0 {
		time.Sleep(delay)
	}
	start := time.Now()
	if err := c.Barrier(ctx); err != nil {
		return err
	}
	if c.Rank() != 0 && c.Size() > 1 {
		if d := time.Since(start); d < delay/2 {
			return fmt.Errorf("barrier returned after %v, before rank 0 (which slept %v) arrived", d, delay)
		}
	}
	return c.Barrier(ctx)
}

// checkSub checks a sub-group made by Split against the members (parent
// ranks, in sub-group rank order) it should have.
func checkSub(ctx context.Context, parent, sub collective.Communicator, members []int) error {
	if sub == nil {
		return fmt.Errorf("split returned nil, want a group of %v", members)
	}
	if sub.Size() != len(members) {
		return fmt.Errorf("sub-group size %d, want %d (members %v)", sub.Size(), len(members), members)
	}
	if want := indexOf(members, parent.Rank()); sub.Rank() != want {
		return fmt.Errorf("sub-group rank %d, want %d (members %v)", sub.Rank(), want, members)
	}
	got := make([]float64, sub.Size())
	if err := sub.AllGather(ctx, collective.Float64s([]float64{float64(parent.Rank())}), collective.Float64s(got), nil); err != nil {
		return err
	}
	for i, m := range members {
		if got[i] != float64(m) {
			return fmt.Errorf("sub-group members %v, want %v", got, members)
		}
	}
	x := []float64{float64(parent.Rank())}
	if err := sub.AllReduce(ctx, collective.Float64s(x), collective.Sum); err != nil {
		return err
	}
	want := 0
	for _, m := range members {
		want += m
	}
	if x[0] != float64(want) {
		return fmt.Errorf("sub-group sum %v, want %d", x[0], want)
	}
	return nil
}

func indexOf(s []int, v int) int {
	for i, x := range s {
		if x == v {
			return i
		}
	}
	return -1
}

func splitEvenOdd(ctx context.Context, c collective.Communicator) error {
	sub, err := c.Split(ctx, c.Rank()%2, -c.Rank())
	if err != nil {
		return err
	}
	defer closeComm(sub)
	var members []int // same parity, descending rank (key = -rank)
	for r := c.Size() - 1; r >= 0; r-- {
		if r%2 == c.Rank()%2 {
			members = append(members, r)
		}
	}
	if err := checkSub(ctx, c, sub, members); err != nil {
		return err
	}
	// The parent still works alongside its sub-groups.
	x := []float32{1}
	if err := c.AllReduce(ctx, collective.Float32s(x), collective.Sum); err != nil {
		return err
	}
	if x[0] != float32(c.Size()) {
		return fmt.Errorf("parent sum after Split: got %v, want %d", x[0], c.Size())
	}
	return nil
}

func closeComm(c collective.Communicator) {
	if c != nil {
		c.Close()
	}
}

func splitUndefined(ctx context.Context, c collective.Communicator) error {
	color := 7
	if c.Rank() == 0 {
		color = collective.Undefined
	}
	sub, err := c.Split(ctx, color, 0)
	if err != nil {
		return err
	}
	defer closeComm(sub)
	if c.Rank() == 0 {
		if sub != nil {
			return fmt.Errorf("split with color Undefined returned %v, want nil", sub)
		}
		return nil
	}
	var members []int
	for r := 1; r < c.Size(); r++ {
		members = append(members, r)
	}
	return checkSub(ctx, c, sub, members)
}

func splitNested(ctx context.Context, c collective.Communicator) error {
	// First halves (low ranks, high ranks), then each half by parity.
	half := c.Size() / 2
	a, err := c.Split(ctx, boolInt(c.Rank() >= half), c.Rank())
	if err != nil {
		return err
	}
	defer closeComm(a)
	b, err := a.Split(ctx, c.Rank()%2, c.Rank())
	if err != nil {
		return err
	}
	defer closeComm(b)
	var members []int
	for r := 0; r < c.Size(); r++ {
		if (r >= half) == (c.Rank() >= half) && r%2 == c.Rank()%2 {
			members = append(members, r)
		}
	}
	return checkSub(ctx, c, b, members)
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// mixed runs a long deterministic sequence of different collectives, to
// catch state leaking from one call into the next.
func mixed(ctx context.Context, c collective.Communicator) error {
	size, me := c.Size(), c.Rank()
	for it := 0; it < 300; it++ {
		n := []int{0, 3, 64, 1<<14 + 1}[it%4]
		switch it % 5 {
		case 0, 3:
			x := make([]float32, n)
			for i := range x {
				x[i] = float32(ival(me, i+it))
			}
			if err := c.AllReduce(ctx, collective.Float32s(x), collective.Sum); err != nil {
				return err
			}
			for i := range x {
				want := 0.0
				for r := 0; r < size; r++ {
					want += ival(r, i+it)
				}
				if x[i] != float32(want) {
					return fmt.Errorf("iteration %d: all-reduce element %d: got %v, want %v", it, i, x[i], want)
				}
			}
		case 1:
			send := make([]float64, n)
			for i := range send {
				send[i] = gval(me, i+it)
			}
			recv := make([]float64, n*size)
			if err := c.AllGather(ctx, collective.Float64s(send), collective.Float64s(recv), nil); err != nil {
				return err
			}
			for i := range recv {
				if want := gval(i/max(n, 1), i%max(n, 1)+it); recv[i] != want {
					return fmt.Errorf("iteration %d: all-gather element %d: got %v, want %v", it, i, recv[i], want)
				}
			}
		case 2:
			root := it % size
			x := make([]float64, n)
			for i := range x {
				x[i] = gval(me, i)
			}
			if err := c.Broadcast(ctx, collective.Float64s(x), root); err != nil {
				return err
			}
			for i := range x {
				if x[i] != gval(root, i) {
					return fmt.Errorf("iteration %d: broadcast element %d: got %v, want %v", it, i, x[i], gval(root, i))
				}
			}
		case 4:
			if err := allToAll[float32](ctx, c, allToAllPatterns[it%len(allToAllPatterns)].count); err != nil {
				return fmt.Errorf("iteration %d: %w", it, err)
			}
		}
	}
	return nil
}

func within(d, bound time.Duration) error {
	if d > bound {
		return fmt.Errorf("error took %v, want at most %v", d, bound)
	}
	return nil
}

// deadlineLateRank: the last rank arrives long after the others' deadline.
// The others must fail with a deadline error within the deadline (plus
// slack), the late rank promptly with ErrAborted.
func deadlineLateRank(ctx context.Context, c collective.Communicator, o Options) error {
	const deadline = 300 * time.Millisecond
	x := []float32{1, 2, 3}
	if c.Rank() == c.Size()-1 {
		time.Sleep(deadline + 500*time.Millisecond)
		start := time.Now()
		err := c.AllReduce(ctx, collective.Float32s(x), collective.Sum)
		if !errors.Is(err, collective.ErrAborted) && !errors.Is(err, collective.ErrPeerGone) {
			return fmt.Errorf("late rank: got %v, want ErrAborted", err)
		}
		if o.SameProcess && !errors.Is(err, context.DeadlineExceeded) {
			return fmt.Errorf("late rank: %v does not wrap context.DeadlineExceeded", err)
		}
		return within(time.Since(start), o.Slack)
	}
	dctx, cancel := context.WithTimeout(ctx, deadline)
	defer cancel()
	start := time.Now()
	err := c.AllReduce(dctx, collective.Float32s(x), collective.Sum)
	if !errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("got %v, want an error wrapping context.DeadlineExceeded", err)
	}
	if err := within(time.Since(start), deadline+o.Slack); err != nil {
		return err
	}
	// The group is failed for good.
	err = c.Barrier(ctx)
	if !errors.Is(err, collective.ErrAborted) {
		return fmt.Errorf("barrier after a deadline: got %v, want ErrAborted", err)
	}
	return nil
}

// deadlineExpired: a rank whose context has already ended fails at once
// and the group fails with it.
func deadlineExpired(ctx context.Context, c collective.Communicator) error {
	if c.Rank() == 0 {
		dctx, cancel := context.WithDeadline(ctx, time.Now().Add(-time.Second))
		defer cancel()
		err := c.Barrier(dctx)
		if !errors.Is(err, context.DeadlineExceeded) {
			return fmt.Errorf("got %v, want context.DeadlineExceeded", err)
		}
		return nil
	}
	err := c.Barrier(ctx)
	if !errors.Is(err, collective.ErrAborted) {
		return fmt.Errorf("got %v, want ErrAborted (rank 0's context had expired)", err)
	}
	return nil
}

// cancelRank: rank 0 cancels its context while waiting for the last rank.
func cancelRank(ctx context.Context, c collective.Communicator, o Options) error {
	x := make([]float64, 10)
	switch c.Rank() {
	case 0:
		cctx, cancel := context.WithCancel(ctx)
		time.AfterFunc(100*time.Millisecond, cancel)
		err := c.AllReduce(cctx, collective.Float64s(x), collective.Max)
		if !errors.Is(err, context.Canceled) {
			return fmt.Errorf("got %v, want context.Canceled", err)
		}
	case c.Size() - 1:
		// Never arrives.
	default:
		start := time.Now()
		err := c.AllReduce(ctx, collective.Float64s(x), collective.Max)
		if !errors.Is(err, collective.ErrAborted) {
			return fmt.Errorf("got %v, want ErrAborted (rank 0 was canceled)", err)
		}
		if o.SameProcess && !errors.Is(err, context.Canceled) {
			return fmt.Errorf("%v does not wrap context.Canceled", err)
		}
		return within(time.Since(start), 100*time.Millisecond+o.Slack)
	}
	return nil
}

var errBoom = errors.New("boom: rank failed on purpose")

// abortRank: the last rank aborts while the others wait in a collective.
func abortRank(ctx context.Context, c collective.Communicator, o Options) error {
	if c.Rank() == c.Size()-1 {
		time.Sleep(100 * time.Millisecond)
		c.Abort(errBoom)
		err := c.Barrier(ctx)
		if !errors.Is(err, collective.ErrAborted) {
			return fmt.Errorf("after Abort: got %v, want ErrAborted", err)
		}
		return nil
	}
	start := time.Now()
	x := make([]float32, 1000)
	err := c.AllReduce(ctx, collective.Float32s(x), collective.Sum)
	if !errors.Is(err, collective.ErrAborted) || !strings.Contains(err.Error(), errBoom.Error()) {
		return fmt.Errorf("got %v, want ErrAborted with %q", err, errBoom)
	}
	if o.SameProcess && !errors.Is(err, errBoom) {
		return fmt.Errorf("%v does not wrap the Abort error", err)
	}
	if err := within(time.Since(start), 100*time.Millisecond+o.Slack); err != nil {
		return err
	}
	// Future calls fail too.
	if err := c.Barrier(ctx); !errors.Is(err, collective.ErrAborted) {
		return fmt.Errorf("later barrier: got %v, want ErrAborted", err)
	}
	return nil
}

// abortSelf: Abort also fails the caller's own later calls, in a group of
// any size.
func abortSelf(ctx context.Context, c collective.Communicator) error {
	if c.Rank() == 0 {
		c.Abort(nil)
	}
	err := c.Barrier(ctx)
	if c.Size() == 1 || c.Rank() == 0 {
		if !errors.Is(err, collective.ErrAborted) {
			return fmt.Errorf("got %v, want ErrAborted", err)
		}
		return nil
	}
	// Other ranks either finish the barrier (if it completed before the
	// abort) or see the abort; either way the next call fails.
	if err != nil && !errors.Is(err, collective.ErrAborted) {
		return fmt.Errorf("got %v, want nil or ErrAborted", err)
	}
	return nil
}

// abortSubGroup: aborting a group fails the collectives of its sub-groups.
func abortSubGroup(ctx context.Context, c collective.Communicator, o Options) error {
	sub, err := c.Split(ctx, 0, c.Rank())
	if err != nil {
		return err
	}
	defer closeComm(sub)
	if c.Rank() == 0 {
		time.Sleep(100 * time.Millisecond)
		c.Abort(errBoom)
		return nil
	}
	start := time.Now()
	err = sub.AllReduce(ctx, collective.Float64s(make([]float64, 5)), collective.Sum)
	if !errors.Is(err, collective.ErrAborted) || !strings.Contains(err.Error(), errBoom.Error()) {
		return fmt.Errorf("sub-group: got %v, want ErrAborted with %q", err, errBoom)
	}
	return within(time.Since(start), 100*time.Millisecond+o.Slack)
}

// closeRank: the last rank closes its Communicator while the others wait.
func closeRank(ctx context.Context, c collective.Communicator, o Options) error {
	if c.Rank() == c.Size()-1 {
		time.Sleep(100 * time.Millisecond)
		if err := c.Close(); err != nil {
			return fmt.Errorf("close: %v", err)
		}
		if err := c.Close(); err != nil {
			return fmt.Errorf("second close: %v", err)
		}
		err := c.Barrier(ctx)
		if !errors.Is(err, collective.ErrClosed) {
			return fmt.Errorf("after Close: got %v, want ErrClosed", err)
		}
		return nil
	}
	start := time.Now()
	err := c.AllGather(ctx, collective.Float32s([]float32{1}), collective.Float32s(make([]float32, c.Size())), nil)
	if !errors.Is(err, collective.ErrPeerGone) {
		return fmt.Errorf("got %v, want ErrPeerGone", err)
	}
	return within(time.Since(start), 100*time.Millisecond+o.Slack)
}

// A mismatch case: call runs a rank's side of a disagreeing collective.
type mismatchCase struct {
	name    string
	minSize int
	call    func(ctx context.Context, c collective.Communicator) error
}

func last(c collective.Communicator) bool { return c.Rank() == c.Size()-1 }

var mismatches = []mismatchCase{
	{"Length", 2, func(ctx context.Context, c collective.Communicator) error {
		n := 8
		if c.Rank() == 0 {
			n = 7
		}
		return c.AllReduce(ctx, collective.Float32s(make([]float32, n)), collective.Sum)
	}},
	{"Dtype", 2, func(ctx context.Context, c collective.Communicator) error {
		if last(c) {
			return c.AllReduce(ctx, collective.Float64s(make([]float64, 4)), collective.Sum)
		}
		return c.AllReduce(ctx, collective.Float32s(make([]float32, 4)), collective.Sum)
	}},
	{"Op", 2, func(ctx context.Context, c collective.Communicator) error {
		op := collective.Sum
		if last(c) {
			op = collective.Max
		}
		return c.AllReduce(ctx, collective.Float32s(make([]float32, 4)), op)
	}},
	{"Kind", 2, func(ctx context.Context, c collective.Communicator) error {
		if last(c) {
			return c.Broadcast(ctx, collective.Float32s(make([]float32, 4)), 0)
		}
		return c.AllReduce(ctx, collective.Float32s(make([]float32, 4)), collective.Sum)
	}},
	{"KindBarrier", 2, func(ctx context.Context, c collective.Communicator) error {
		if last(c) {
			return c.Barrier(ctx)
		}
		return c.AllGather(ctx, collective.Float64s(make([]float64, 2)), collective.Float64s(make([]float64, 2*c.Size())), nil)
	}},
	{"Root", 2, func(ctx context.Context, c collective.Communicator) error {
		root := 0
		if last(c) {
			root = 1
		}
		return c.Broadcast(ctx, collective.Float64s(make([]float64, 3)), root)
	}},
	{"BadRoot", 1, func(ctx context.Context, c collective.Communicator) error {
		return c.Broadcast(ctx, collective.Float64s(make([]float64, 3)), c.Size())
	}},
	{"BadOp", 1, func(ctx context.Context, c collective.Communicator) error {
		return c.AllReduce(ctx, collective.Float64s(make([]float64, 3)), collective.ReduceOp(0))
	}},
	{"MomentsFloat32", 1, func(ctx context.Context, c collective.Communicator) error {
		return c.AllReduce(ctx, collective.Float32s(make([]float32, 3)), collective.Moments)
	}},
	{"MomentsNotTriples", 1, func(ctx context.Context, c collective.Communicator) error {
		n := 6
		if last(c) {
			n = 4
		}
		return c.AllReduce(ctx, collective.Float64s(make([]float64, n)), collective.Moments)
	}},
	{"MomentsVsSum", 2, func(ctx context.Context, c collective.Communicator) error {
		op := collective.Moments
		if last(c) {
			op = collective.Sum
		}
		return c.AllReduce(ctx, collective.Float64s(make([]float64, 6)), op)
	}},
	{"ZeroBuffer", 1, func(ctx context.Context, c collective.Communicator) error {
		return c.AllReduce(ctx, collective.Buffer{}, collective.Sum)
	}},
	{"DeviceBuffer", 1, func(ctx context.Context, c collective.Communicator) error {
		if last(c) {
			return c.AllReduce(ctx, collective.Device(0x1000, 4, collective.Float32), collective.Sum)
		}
		return c.AllReduce(ctx, collective.Float32s(make([]float32, 4)), collective.Sum)
	}},
	{"AllGatherLength", 2, func(ctx context.Context, c collective.Communicator) error {
		n := 3
		if last(c) {
			n = 4
		}
		return c.AllGather(ctx, collective.Float32s(make([]float32, n)), collective.Float32s(make([]float32, n*c.Size())), nil)
	}},
	{"AllGatherRecvLength", 1, func(ctx context.Context, c collective.Communicator) error {
		m := 3 * c.Size()
		if last(c) {
			m--
		}
		return c.AllGather(ctx, collective.Float32s(make([]float32, 3)), collective.Float32s(make([]float32, m)), nil)
	}},
	{"AllGatherRecvDtype", 1, func(ctx context.Context, c collective.Communicator) error {
		return c.AllGather(ctx, collective.Float32s(make([]float32, 3)), collective.Float64s(make([]float64, 3*c.Size())), nil)
	}},
	{"AllGatherCounts", 2, func(ctx context.Context, c collective.Communicator) error {
		counts := make([]int, c.Size())
		for r := range counts {
			counts[r] = 2
		}
		if last(c) {
			counts[0], counts[c.Size()-1] = 3, 1 // same total, different split
		}
		return c.AllGather(ctx, collective.Float32s(make([]float32, counts[c.Rank()])), collective.Float32s(make([]float32, 2*c.Size())), counts)
	}},
	{"AllGatherCountsVsNil", 2, func(ctx context.Context, c collective.Communicator) error {
		counts := make([]int, c.Size())
		for r := range counts {
			counts[r] = 2
		}
		if last(c) {
			counts = nil
		}
		return c.AllGather(ctx, collective.Float32s(make([]float32, 2)), collective.Float32s(make([]float32, 2*c.Size())), counts)
	}},
	{"AllGatherNegativeCount", 1, func(ctx context.Context, c collective.Communicator) error {
		counts := make([]int, c.Size())
		counts[0] = -1
		return c.AllGather(ctx, collective.Float32s(nil), collective.Float32s(nil), counts)
	}},
	{"AllToAllTranspose", 2, func(ctx context.Context, c collective.Communicator) error {
		counts := make([]int, c.Size())
		for r := range counts {
			counts[r] = 1
		}
		recvCounts := append([]int(nil), counts...)
		if last(c) {
			recvCounts[0], recvCounts[1] = 2, 0 // expects 2 from rank 0, which sends 1
		}
		return c.AllToAll(ctx, collective.Float32s(make([]float32, c.Size())), counts,
			collective.Float32s(make([]float32, c.Size())), recvCounts)
	}},
	{"AllGatherOverlap", 1, func(ctx context.Context, c collective.Communicator) error {
		mem := make([]float32, 2*c.Size()+2)
		return c.AllGather(ctx, collective.Float32s(mem[1:3]), collective.Float32s(mem[:2*c.Size()]), nil)
	}},
	{"AllToAllOverlap", 1, func(ctx context.Context, c collective.Communicator) error {
		counts := make([]int, c.Size())
		for r := range counts {
			counts[r] = 1
		}
		x := make([]float64, c.Size())
		return c.AllToAll(ctx, collective.Float64s(x), counts, collective.Float64s(x), counts)
	}},
	{"AllToAllSendLength", 1, func(ctx context.Context, c collective.Communicator) error {
		counts := make([]int, c.Size())
		for r := range counts {
			counts[r] = 1
		}
		return c.AllToAll(ctx, collective.Float32s(make([]float32, c.Size()+1)), counts,
			collective.Float32s(make([]float32, c.Size())), counts)
	}},
}

// mismatch: every rank must get ErrMismatch, and the group stays failed.
func mismatch(ctx context.Context, c collective.Communicator, m mismatchCase) error {
	err := m.call(ctx, c)
	if !errors.Is(err, collective.ErrMismatch) {
		return fmt.Errorf("got %v, want ErrMismatch", err)
	}
	if m.name == "DeviceBuffer" && last(c) && !errors.Is(err, errors.ErrUnsupported) {
		return fmt.Errorf("device buffer: %v does not wrap errors.ErrUnsupported", err)
	}
	if err2 := c.Barrier(ctx); !errors.Is(err2, collective.ErrMismatch) && !errors.Is(err2, collective.ErrAborted) {
		return fmt.Errorf("after a mismatch, barrier got %v, want the group failed", err2)
	}
	return nil
}

// concurrentCalls: two goroutines of rank 0 call collectives on the same
// Communicator at once; that fails the group on every rank with
// ErrMismatch.
func concurrentCalls(ctx context.Context, c collective.Communicator) error {
	if c.Rank() != 0 {
		time.Sleep(300 * time.Millisecond)
		if err := c.Barrier(ctx); !errors.Is(err, collective.ErrMismatch) {
			return fmt.Errorf("got %v, want ErrMismatch (rank 0 made concurrent calls)", err)
		}
		return nil
	}
	errc := make(chan error, 2)
	go func() { errc <- c.Barrier(ctx) }()
	time.Sleep(100 * time.Millisecond)
	go func() { errc <- c.Barrier(ctx) }()
	var e errs
	concurrent := false
	for range 2 {
		err := <-errc
		if !errors.Is(err, collective.ErrMismatch) {
			e.add("got %v, want ErrMismatch", err)
		}
		concurrent = concurrent || (err != nil && strings.Contains(err.Error(), "concurrent"))
	}
	if !concurrent {
		e.add("no error mentions the concurrent calls")
	}
	return e.err()
}
