//go:build !mpi

package mpi

import (
	"fmt"
	"os"
	"strconv"
	"time"

	"github.com/gorgonia-bn/bn/collective"
)

// Built reports whether the package was compiled with MPI (build tag mpi).
const Built = false

// ExitGrace is how long RunMain and Main wait for the other ranks at exit
// (unused without MPI).
var ExitGrace = 10 * time.Second

var errNotBuilt = fmt.Errorf("mpi: built without MPI: rebuild with -tags mpi: %w", collective.ErrNotBuilt)

// Init reports that MPI is not compiled in: an error wrapping
// collective.ErrNotBuilt.
func Init() error { return errNotBuilt }

// World reports that MPI is not compiled in: an error wrapping
// collective.ErrNotBuilt.
func World() (collective.Communicator, error) { return nil, errNotBuilt }

// Finalize does nothing without MPI.
func Finalize() error { return nil }

// RunMain runs f as the only rank of an in-process group and exits with
// its code, so that programs run unchanged, as one rank, without MPI. If
// the process was started by mpirun with more than one rank, RunMain
// prints that MPI is not compiled in and exits with 2 instead.
func RunMain(f func(world collective.Communicator) int) {
	if n := launchedSize(); n > 1 {
		fmt.Fprintf(os.Stderr, "%v (started as one of %d ranks)\n", errNotBuilt, n)
		os.Exit(2)
	}
	comms, err := collective.NewInProcess(1)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	code := f(comms[0])
	comms[0].Close()
	os.Exit(code)
}

// Main runs the tests: call it from TestMain. Without MPI, tests that need
// World should skip when it returns collective.ErrNotBuilt.
func Main(m interface{ Run() int }) { os.Exit(m.Run()) }

// launchedSize returns the world size announced by an MPI launcher, or 0.
func launchedSize() int {
	for _, v := range []string{"OMPI_COMM_WORLD_SIZE", "PMI_SIZE"} {
		if n, err := strconv.Atoi(os.Getenv(v)); err == nil {
			return n
		}
	}
	return 0
}
