package collective

import (
	"context"
	"fmt"
	"runtime/debug"
	"sync"
)

// Run creates an in-process group of size ranks and calls f on each rank in
// its own goroutine, errgroup-style. The first rank to fail (return a
// non-nil error or panic) aborts the group and cancels the context of the
// others, so that they return promptly from their collectives; Run then
// waits for every rank, closes the group and returns the first error
// (annotated with its rank). A panic in f is re-raised by Run after the
// other ranks have returned.
func Run(ctx context.Context, size int, f func(ctx context.Context, c Communicator) error) error {
	comms, err := NewInProcess(size)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)

	var (
		once   sync.Once
		first  error
		panicV any
		wg     sync.WaitGroup
	)
	fail := func(rank int, err error, p any) {
		once.Do(func() {
			first, panicV = fmt.Errorf("collective.Run: rank %d: %w", rank, err), p
			comms[rank].Abort(err)
			cancel(first)
		})
	}
	for r, c := range comms {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() {
				if p := recover(); p != nil {
					fail(r, fmt.Errorf("panic: %v", p), fmt.Sprintf("rank %d: %v\n\n%s", r, p, debug.Stack()))
				}
			}()
			if err := f(ctx, c); err != nil {
				fail(r, err, nil)
			}
		}()
	}
	wg.Wait()
	for _, c := range comms {
		c.Close()
	}
	if panicV != nil {
		panic(panicV)
	}
	return first
}
