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
	wg   sync.WaitGroup
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

// help runs f's current call as a helper if a slot is still open.
func (f *forker) help() bool {
	for {
		w := f.want.Load()
		if w <= 0 {
			return false
		}
		if f.want.CompareAndSwap(w, w-1) {
			break
		}
	}
	f.loop()
	f.done.Add(1)
	f.wg.Done() // the last access to f
	return true
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
const spinFor = 100 * time.Microsecond

var (
	workOnce sync.Once
	workCh   chan *forker           // unbuffered: a send succeeds only to a parked worker
	offer    atomic.Pointer[forker] // a call open to spinning workers
	spinning atomic.Int32           // workers spinning on offer
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
		f.help()
		spinning.Add(1)
		for t0 := time.Now(); ; {
			for range 64 {
				if p := offer.Load(); p != nil && p.help() {
					t0 = time.Now()
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
// caller included). Idle shared workers join; busy ones are not waited for,
// so concurrent callers (several ranks in one process) never deadlock.
func (f *forker) do(n, threads int, j job) {
	if n <= 0 {
		return
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
