package kern

import (
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// job is one parallel phase: items 0..n-1, each run exactly once.
type job interface{ run(i int) }

// forker runs a job over a fixed number of items on the shared workers and
// the calling goroutine. It is embedded in a Plan and reused: no allocation
// per call.
//
// Helpers join a call by claiming one of its open slots (want). The caller
// reserves the slots in wg before it opens them and, once it has run out of
// items itself, withdraws those nobody claimed: it never waits for a helper
// that has not started, so concurrent callers (several ranks in one
// process) never deadlock, and a late or absent helper only costs speed.
type forker struct {
	next atomic.Int64
	n    int64
	j    job
	want atomic.Int32 // helper slots still open in the current call
	done atomic.Int32 // helpers of the current call that have finished
	// spin tells the helpers of the current call whether to watch offer
	// once done (see spinAfter), more whether a phase follows; both set
	// before the slots open.
	spin, more atomic.Bool
	wg         sync.WaitGroup
}

func (f *forker) loop() {
	for {
		i := f.next.Add(1) - 1
		if i >= f.n {
			return
		}
		f.j.run(int(i))
	}
}

// help runs f's current call as a helper if a slot is still open. It
// reports whether it did and, if so, whether the helper should spin
// afterwards (the call's spin flag); a helper that should is counted in
// spinning before the caller can see it done, so that the caller's next
// call, which may follow at once, finds it.
func (f *forker) help() (ok, spin bool) {
	for {
		w := f.want.Load()
		if w <= 0 {
			return false, false
		}
		if f.want.CompareAndSwap(w, w-1) {
			break
		}
	}
	f.loop()
	spin = f.spin.Load()
	helped.Add(1)
	if spin {
		spinning.Add(1)
		if !f.more.Load() {
			spinsAfterLast.Add(1)
		}
	}
	f.done.Add(1)
	f.wg.Done() // the last access to f
	return true, spin
}

// Waking a parked goroutine was measured to take 85–560 µs on small VMs
// (the wake of an idle OS thread), longer than a whole phase on a small
// tensor, while the phases of one pass follow each other within
// microseconds. So a worker that has finished a call watches offer for
// spinFor before it parks on workCh, and a caller waits up to spinFor for
// its helpers to finish before it blocks. Both spins are bounded in time,
// whatever happens; the Go scheduler preempts them like any loop.
// (runtime.Gosched in the worker's spin was tried: a yielded goroutine was
// often not rescheduled for tens of µs, and a third of the calls missed
// their helper.)
//
// In a model, though, what follows the last phase of an op is other ops
// (a matrix product, the solver), and a worker spinning then holds the
// core they need: in an MLP training step the spin was measured at 3.1 %
// of the CPU, ten times the normalization itself (issue 19). So a worker spins only after a call
// whose caller said another phase follows at once (the statistics pass
// before its apply pass, the backward sums before dx), or after a last
// phase when the recent gaps between a last phase and the next call were
// shorter than spinFor (back-to-back layers, benchmarks: see spinAfter).
// Otherwise it parks as soon as it is done, and a worker woken for a call
// that has already ended parks again at once.
const spinFor = 100 * time.Microsecond

// shortGapsToSpin is the number of consecutive short gaps (< spinFor)
// between a last phase and the next call after which workers spin after
// last phases too; one long gap stops it.
const shortGapsToSpin = 2

var (
	epoch     = time.Now()
	lastEnd   atomic.Int64 // ns since epoch at the end of the last "last" call; 0: none pending
	shortGaps atomic.Int32 // consecutive short gaps after last calls, saturating
)

func now() int64 { return int64(time.Since(epoch)) + 1 }

// noteStart records, at the start of a call, the gap since the last call
// that ended an op.
func noteStart() {
	e := lastEnd.Swap(0)
	if e == 0 {
		return
	}
	if time.Duration(now()-e) < spinFor {
		if shortGaps.Load() < shortGapsToSpin {
			shortGaps.Add(1)
		}
	} else {
		shortGaps.Store(0)
	}
}

// spinAfter reports whether the helpers of a call should spin once done:
// always when another phase follows (more), else when the last gaps after
// an op's end were short.
func spinAfter(more bool) bool {
	return more || shortGaps.Load() >= shortGapsToSpin
}

var (
	workOnce sync.Once
	workCh   chan *forker           // unbuffered: a send succeeds only to a parked worker
	offer    atomic.Pointer[forker] // a call open to spinning workers
	spinning atomic.Int32           // workers spinning on offer

	// Counters for the tests: calls a worker helped, and those of them
	// that had no phase after them and were followed by a spin.
	helped, spinsAfterLast atomic.Int64
)

func startWorkers() {
	w := runtime.GOMAXPROCS(0) - 1
	workCh = make(chan *forker)
	for range w {
		go worker()
	}
}

func worker() {
	for f := range workCh {
		if _, spin := f.help(); !spin {
			continue // park: other work (or none) follows
		}
		// Spinning (counted by help): watch offer for spinFor after the
		// last call helped, unless that call ended its pass.
	watch:
		for t0 := time.Now(); ; {
			for range 64 {
				if p := offer.Load(); p != nil {
					switch ok, spin := p.help(); {
					case ok && spin:
						spinning.Add(-1) // help counted this spin again
						t0 = time.Now()
					case ok:
						break watch
					}
				}
			}
			if time.Since(t0) > spinFor {
				break
			}
		}
		spinning.Add(-1)
	}
}

// do runs j.run(i) for i in [0, n), using up to threads goroutines (the
// caller included), as the last phase of a pass: what follows is other
// work, and the helpers park once done unless such gaps have been short
// lately (see spinFor). Idle shared workers join; busy ones are not waited
// for, so concurrent callers (several ranks in one process) never deadlock.
func (f *forker) do(n, threads int, j job) { f.call(n, threads, j, false) }

// doThen is do for a phase that the caller follows within microseconds by
// another call (the next phase of the same pass): the helpers wait for it
// spinning.
func (f *forker) doThen(n, threads int, j job) { f.call(n, threads, j, true) }

func (f *forker) call(n, threads int, j job, more bool) {
	if n <= 0 {
		return
	}
	noteStart()
	if !more {
		defer func() { lastEnd.Store(now()) }()
	}
	f.n, f.j = int64(n), j
	f.next.Store(0)
	if threads > n {
		threads = n
	}
	if threads <= 1 {
		f.loop()
		f.j = nil
		return
	}
	workOnce.Do(startWorkers)
	need := int32(threads - 1)
	f.spin.Store(spinAfter(more))
	f.more.Store(more)
	f.done.Store(0)
	f.wg.Add(int(need))
	f.want.Store(need)
	wake := need
	if s := spinning.Load(); s > 0 && offer.CompareAndSwap(nil, f) {
		wake -= min(s, need)
	}
send:
	for range wake {
		select {
		case workCh <- f:
		default:
			break send
		}
	}
	f.loop()
	// Withdraw the slots nobody claimed; the helpers that did are running
	// and will be done as soon as they find no item left.
	offer.CompareAndSwap(f, nil)
	w := f.want.Swap(0)
	if w > 0 {
		f.wg.Add(-int(w))
	}
	if claimed := need - w; claimed > 0 {
		for t0 := time.Now(); f.done.Load() < claimed; {
			for i := 0; i < 64 && f.done.Load() < claimed; i++ {
			}
			if time.Since(t0) > spinFor {
				break
			}
		}
	}
	f.wg.Wait()
	f.j = nil
}
