//go:build mpi

package main

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/gorgonia-bn/bn/collective"
	"github.com/gorgonia-bn/bn/collective/mpi"
)

// world is this MPI process, one worker of every data-parallel run.
type world struct{ c collective.Communicator }

// launch runs f in every MPI process (collective/mpi's RunMain: MPI is
// initialized and finalized, and the job exits with the largest exit
// code). A binary started without mpirun is a world of one process.
//
// It returns nil only if RunMain returns, which it does not: the job exits.
func launch(f func(w *world) error) error {
	mpi.RunMain(func(c collective.Communicator) int {
		if err := f(&world{c}); err != nil {
			// Host and wall-clock time, so that the ranks' reports of a
			// fault can be put side by side (.ci/multihost.sh does).
			host, _ := os.Hostname()
			fmt.Fprintf(os.Stderr, "rank %d on %s failed at %s: %v\n", c.Rank(), host, time.Now().Format("15:04:05.000"), err)
			return 1
		}
		return 0
	})
	return nil
}

// root reports whether this process prints and plots: rank 0.
func (w *world) root() bool { return w.c.Rank() == 0 }

// workers returns the number of workers of a data-parallel run: the number
// of MPI processes (the -workers flag is ignored).
func (w *world) workers(int) int { return w.c.Size() }

func (w *world) name(workers int) string {
	return fmt.Sprintf("MPI (%d processes)", w.c.Size())
}

// group runs this process's worker of a k-worker run; the result is
// complete on rank 0.
func (w *world) group(ctx context.Context, k int, f func(context.Context, collective.Communicator) (*runResult, error)) (*runResult, error) {
	if k != w.c.Size() {
		return nil, fmt.Errorf("%d workers in a world of %d processes", k, w.c.Size())
	}
	return f(ctx, w.c)
}

// single runs a one-worker run on rank 0 while the other processes wait.
func (w *world) single(ctx context.Context, f func() (*runResult, error)) (*runResult, error) {
	var res *runResult
	var err error
	if w.root() {
		res, err = f()
	}
	// Every process learns whether rank 0 succeeded.
	ok := []float64{0}
	if err != nil {
		ok[0] = 1
	}
	if berr := w.c.Broadcast(ctx, collective.Float64s(ok), 0); berr != nil && err == nil {
		err = berr
	}
	if err == nil && ok[0] != 0 {
		err = fmt.Errorf("the one-worker run failed on rank 0")
	}
	return res, err
}
