//go:build !mpi

package main

import (
	"context"
	"fmt"
	"sync"

	"github.com/gorgonia-bn/bn/collective"
)

// world runs the workers of a run as goroutines of this process, over the
// in-process backend.
type world struct{}

// launch runs f in this process and returns its error.
func launch(f func(w *world) error) error {
	return f(&world{})
}

// root reports whether this process prints and plots: always.
func (w *world) root() bool { return true }

// workers returns the number of workers of a data-parallel run: as asked.
func (w *world) workers(asked int) int { return asked }

func (w *world) name(workers int) string {
	return fmt.Sprintf("in-process (%d goroutines)", workers)
}

// group runs f on k workers and returns rank 0's result. The first worker
// to fail aborts the others (collective.Run).
func (w *world) group(ctx context.Context, k int, f func(context.Context, collective.Communicator) (*runResult, error)) (*runResult, error) {
	var (
		mu  sync.Mutex
		res *runResult
	)
	err := collective.Run(ctx, k, func(ctx context.Context, c collective.Communicator) error {
		r, err := f(ctx, c)
		if err == nil && c.Rank() == 0 {
			mu.Lock()
			res = r
			mu.Unlock()
		}
		return err
	})
	return res, err
}

// single runs a one-worker run.
func (w *world) single(ctx context.Context, f func() (*runResult, error)) (*runResult, error) {
	return f()
}
