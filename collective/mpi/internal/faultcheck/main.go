// Command faultcheck makes one rank of an MPI job fail and checks that the
// others get an error in time and that the job ends. .ci/mpi-tests.sh runs
// it as
//
//	mpirun -np 4 faultcheck -mode MODE
//
// where the last rank, after a first successful all-reduce,
//
//	ok:    behaves (the job must exit 0)
//	exit:  calls os.Exit(3) (mpirun ends the job)
//	error: returns exit code 1 from RunMain's function (RunMain aborts the
//	       world, the others' all-reduce fails with ErrAborted)
//	leave: returns 0 early (the others' all-reduce fails with ErrPeerGone,
//	       or with ErrAborted if another survivor saw it first and exited)
//	hang:  never comes back (the others' 2 s deadline fires; they exit 1,
//	       and MPI_Abort the job after mpi.ExitGrace; a survivor whose
//	       deadline fires a moment after another's may get ErrAborted
//	       from that one's exit first)
//
// while the others wait in a second all-reduce. The others print
// "FAULT-DETECTED rank R after D: ERR" on stderr and exit with 1, or
// print "FAULT-WRONG ..." and exit with 4 if the error is late (> 30 s)
// or of the wrong kind.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/gorgonia-bn/bn/collective"
	"github.com/gorgonia-bn/bn/collective/mpi"
)

func main() {
	mode := flag.String("mode", "ok", "ok, exit, error, leave or hang")
	flag.Parse()
	mpi.ExitGrace = 5 * time.Second
	mpi.RunMain(func(w collective.Communicator) int { return run(w, *mode) })
}

func run(w collective.Communicator, mode string) int {
	ctx := context.Background()
	x := make([]float32, 1000)
	if err := w.AllReduce(ctx, collective.Float32s(x), collective.Sum); err != nil {
		fmt.Fprintln(os.Stderr, "first all-reduce:", err)
		return 4
	}
	if w.Rank() == w.Size()-1 && mode != "ok" {
		time.Sleep(200 * time.Millisecond)
		switch mode {
		case "exit":
			os.Exit(3)
		case "error":
			return 1
		case "leave":
			return 0
		case "hang":
			select {}
		}
		fmt.Fprintln(os.Stderr, "unknown mode", mode)
		return 4
	}
	deadline := time.Minute
	if mode == "hang" {
		deadline = 2 * time.Second
	}
	dctx, cancel := context.WithTimeout(ctx, deadline)
	defer cancel()
	start := time.Now()
	err := w.AllReduce(dctx, collective.Float32s(x), collective.Sum)
	d := time.Since(start).Round(time.Millisecond)
	var want error
	switch mode {
	case "ok":
		if err != nil {
			fmt.Fprintf(os.Stderr, "FAULT-WRONG rank %d: %v\n", w.Rank(), err)
			return 4
		}
		return 0
	case "error":
		want = collective.ErrAborted
	case "leave":
		want = collective.ErrPeerGone
	case "hang":
		want = context.DeadlineExceeded
	}
	// A survivor that sees another survivor's exit before its own fault
	// (leave) or deadline (hang) is aborted by it: in time, and correct.
	ok := errors.Is(err, want) || ((mode == "leave" || mode == "hang") && errors.Is(err, collective.ErrAborted))
	if !ok || d > 30*time.Second {
		fmt.Fprintf(os.Stderr, "FAULT-WRONG rank %d after %v: got %v, want an error wrapping %v within 30s\n", w.Rank(), d, err, want)
		return 4
	}
	fmt.Fprintf(os.Stderr, "FAULT-DETECTED rank %d after %v: %v\n", w.Rank(), d, err)
	return 1
}
