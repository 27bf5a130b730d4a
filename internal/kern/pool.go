package kern

import (
	"runtime"
	"sync"
	"sync/atomic"
)

// job is one parallel phase: items 0..n-1, each run exactly once.
type job interface{ run(i int) }

// forker runs a job over a fixed number of items on the shared workers and
// the calling goroutine. It is embedded in a Plan and reused: no allocation
// per call.
type forker struct {
	next atomic.Int64
	n    int64
	j    job
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

var (
	workOnce sync.Once
	workCh   chan *forker
)

func startWorkers() {
	w := runtime.GOMAXPROCS(0) - 1
	workCh = make(chan *forker) // unbuffered: a send succeeds only to an idle worker
	for range w {
		go func() {
			for f := range workCh {
				f.loop()
				f.wg.Done()
			}
		}()
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
	if threads > 1 {
		workOnce.Do(startWorkers)
	send:
		for range threads - 1 {
			f.wg.Add(1)
			select {
			case workCh <- f:
			default:
				f.wg.Done()
				break send
			}
		}
	}
	f.loop()
	f.wg.Wait()
	f.j = nil
}
