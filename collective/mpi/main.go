//go:build mpi

package mpi

/*
#include "bn_mpi.h"
*/
import "C"

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/gorgonia-bn/bn/collective"
	"github.com/gorgonia-bn/bn/collective/internal/proto"
)

// Built reports whether the package was compiled with MPI (build tag mpi).
const Built = true

// ExitGrace is how long RunMain and Main wait, when this rank exits with a
// non-zero code, for the other ranks to agree on the exit code, and (for
// any code) for MPI_Finalize, before calling MPI_Abort. Set it before
// calling them.
var ExitGrace = 10 * time.Second

var env struct {
	once    sync.Once
	err     error
	already bool // MPI was initialized by someone else: do not finalize
	world   *comm
	exit    *comm // agrees on the exit code
	agreed  bool  // the exit code agreement completed on env.exit

	live      sync.RWMutex // read-held around MPI calls
	finalized bool
	fin       chan chan error
}

// Init initializes MPI with MPI_THREAD_MULTIPLE, once, on an OS thread it
// keeps locked until Finalize. Calling it again returns the first result.
//
// If the application initialized MPI itself (before Init), Init uses it
// as it is: it does not change MPI_COMM_WORLD's error handler (the backend
// sets MPI_ERRORS_RETURN only on its own duplicates of MPI_COMM_WORLD),
// and Finalize does not finalize MPI.
//
// If Init fails after MPI is initialized, it frees what it created and, if
// it initialized MPI itself, calls MPI_Finalize before returning the error
// (waiting for it at most ExitGrace, since MPI_Finalize may wait for the
// other ranks; it then returns anyway and MPI_Finalize goes on in the
// background). An application that initialized MPI keeps it.
func Init() error {
	env.once.Do(func() {
		ready := make(chan error, 1)
		env.fin = make(chan chan error)
		go owner(ready)
		env.err = <-ready
	})
	return env.err
}

// initFail makes Init fail at the named step ("world": after the first
// MPI_Comm_dup, "local": after every communicator was made), for the
// tests.
var initFail string

// owner initializes MPI, and later finalizes it, on its locked thread.
func owner(ready chan<- error) {
	runtime.LockOSThread() // for good: MPI_Finalize must run on this thread
	var provided, already C.int
	if rc := C.bn_init(&provided, &already); rc != 0 {
		// MPI_Init_thread failed: MPI is not initialized (or is the
		// application's), nothing to undo.
		ready <- fmt.Errorf("mpi: %w", newMPIError("MPI_Init_thread", rc))
		return
	}
	env.already = already != 0
	var w, x *C.bn_comm
	var local C.int
	err := func() error {
		if provided < C.bn_thread_multiple() {
			return errors.New("mpi: the MPI library does not provide MPI_THREAD_MULTIPLE")
		}
		if rc := C.bn_create_ops(); rc != 0 {
			return fmt.Errorf("mpi: %w", newMPIError("MPI_Op_create", rc))
		}
		if rc := C.bn_world(&w); rc != 0 {
			return fmt.Errorf("mpi: %w", newMPIError("MPI_Comm_dup", rc))
		}
		if initFail == "world" {
			return errors.New("mpi: test: injected failure after the first MPI_Comm_dup")
		}
		if rc := C.bn_world(&x); rc != 0 {
			return fmt.Errorf("mpi: %w", newMPIError("MPI_Comm_dup", rc))
		}
		if rc := C.bn_local_size(w, &local); rc != 0 {
			return fmt.Errorf("mpi: %w", newMPIError("MPI_Comm_split_type", rc))
		}
		if initFail == "local" {
			return errors.New("mpi: test: injected failure after the communicators were made")
		}
		return nil
	}()
	if err != nil {
		initFailed(ready, err, w, x)
		return
	}
	spinFor = pollSpin(int(local))
	env.world, env.exit = newComm(w, nil), newComm(x, nil)
	registry.Lock()
	delete(registry.comms, env.exit)
	registry.Unlock()
	ready <- nil
	reply := <-env.fin
	if env.already {
		releaseAll()
		reply <- nil
		return
	}
	if rc := C.bn_finalize(); rc != 0 {
		reply <- fmt.Errorf("mpi: %w", newMPIError("MPI_Finalize", rc))
		return
	}
	reply <- nil
}

// initFailed undoes a failed Init on the owner thread: it frees the
// communicators w and x (if made; nothing was sent on them) and the ops,
// and finalizes MPI if Init initialized it, then sends err on ready (at
// once if the application initialized MPI, else once MPI_Finalize returns
// or after ExitGrace, whichever comes first).
func initFailed(ready chan<- error, err error, w, x *C.bn_comm) {
	for _, c := range []*C.bn_comm{w, x} {
		if c != nil {
			C.bn_drop(c)
		}
	}
	C.bn_free_ops()
	if env.already {
		ready <- err
		return
	}
	var once sync.Once
	report := func(err error) { once.Do(func() { ready <- err }) }
	t := time.AfterFunc(ExitGrace, func() {
		report(fmt.Errorf("%w (MPI_Finalize after the failure did not return within %v)", err, ExitGrace))
	})
	if rc := C.bn_finalize(); rc != 0 {
		err = fmt.Errorf("%w; then %w", err, newMPIError("MPI_Finalize", rc))
	}
	t.Stop()
	report(err)
}

// releaseAll runs at Finalize when the application initialized MPI (and
// keeps using it): it frees the backend's MPI objects that it can free
// safely, and cancels the control receives of the others. No MPI call of
// the backend runs concurrently (env.finalized is set, and Finalize waited
// for the calls under way).
//
//   - Communicators closed cleanly by every member are released (reap);
//     those still open, or closed in a failed group, or whose peers' closing
//     messages have not arrived, are leaked (see Close), but no receive of
//     the backend stays posted: the application's MPI_Finalize does not
//     find them. Collectives given up earlier (abandoned) cannot be
//     cancelled and stay posted.
//   - The exit-code communicator is freed if the exit-code agreement
//     completed (no other traffic uses it).
//   - The reduction ops are freed (an abandoned MPI_Ireduce that uses one
//     completes normally).
func releaseAll() {
	reapGuarded(false)
	reaper.Lock()
	registry.Lock()
	var all []*comm
	for c := range registry.comms {
		all = append(all, c)
	}
	all = append(all, reaper.closing...)
	all = append(all, reaper.leaked...)
	registry.Unlock()
	reaper.Unlock()
	for _, c := range all {
		C.bn_cancel_ctrl(c.h)
	}
	if x := env.exit; x != nil {
		if env.agreed && !x.pending.Load() && C.bn_release(x.h) != 0 {
			x.freeBuffers()
		} else {
			C.bn_cancel_ctrl(x.h)
		}
	}
	C.bn_free_ops()
}

// pollSpin returns how long to spin before yielding, for localRanks ranks
// on this node.
func pollSpin(localRanks int) time.Duration {
	if v := os.Getenv("COLLECTIVE_MPI_SPIN"); v != "" {
		if d, err := time.ParseDuration(v); err == nil && d >= 0 {
			return d
		}
		fmt.Fprintf(os.Stderr, "mpi: ignoring COLLECTIVE_MPI_SPIN=%q: want a duration such as 200us\n", v)
	}
	if localRanks > runtime.NumCPU() {
		return 0
	}
	return defaultSpin
}

// World initializes MPI if needed and returns the Communicator of all the
// processes of the job (a duplicate of MPI_COMM_WORLD). Every call returns
// the same Communicator.
func World() (collective.Communicator, error) {
	if err := Init(); err != nil {
		return nil, err
	}
	return env.world, nil
}

// Finalize finalizes MPI (if Init initialized it). Afterwards every
// collective fails with collective.ErrClosed. RunMain and Main call it.
// If the application initialized MPI, Finalize leaves it initialized and
// releases the backend's MPI objects instead (see releaseAll).
func Finalize() error {
	if Init() != nil {
		return nil
	}
	env.live.Lock()
	if env.finalized {
		env.live.Unlock()
		return nil
	}
	env.finalized = true
	env.live.Unlock()
	reply := make(chan error)
	env.fin <- reply
	return <-reply
}

// RunMain initializes MPI, runs f with the world Communicator, and exits
// the process with the largest of the ranks' exit codes:
//
//   - if f returns non-zero, the world and every Communicator split from it
//     are aborted first, so that the other ranks' collectives fail promptly;
//     if f returns 0, they are closed, so that collectives the other ranks
//     still expect from this one fail with collective.ErrPeerGone;
//   - the ranks then agree on the exit code (MPI_Allreduce MAX over a
//     private communicator) and call MPI_Finalize. A rank that exits with
//     a non-zero code waits at most ExitGrace for the others (then calls
//     MPI_Abort), a rank that exits with 0 waits as long as they need;
//     MPI_Finalize gets ExitGrace too.
//
// If MPI cannot be initialized, RunMain prints the error and exits with 2.
func RunMain(f func(world collective.Communicator) int) {
	if err := Init(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	os.Exit(shutdown(f(env.world)))
}

// Main runs the tests of a package under MPI: call it from TestMain,
//
//	func TestMain(m *testing.M) { mpi.Main(m) }
//
// and run the test binary with mpirun. It is RunMain(m.Run), except that
// the standard output of ranks other than 0 is held back and printed (each
// line prefixed with its rank) only if the job fails, so that a passing
// run prints one report (output held by a rank that is killed, e.g. by
// MPI_Abort, is lost). Set COLLECTIVE_MPI_OUTPUT=all to see every rank's
// output as it happens.
func Main(m interface{ Run() int }) {
	if err := Init(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	var held func() []byte
	if env.world.rank != 0 && os.Getenv("COLLECTIVE_MPI_OUTPUT") != "all" {
		held = holdStdout()
	}
	code := m.Run()
	var out []byte
	if held != nil {
		out = held()
	}
	code = shutdown(code)
	if code != 0 && len(out) > 0 {
		prefix := fmt.Sprintf("[rank %d] ", env.world.rank)
		var b strings.Builder
		for _, line := range strings.SplitAfter(string(out), "\n") {
			if line != "" {
				b.WriteString(prefix + line)
			}
		}
		os.Stdout.WriteString(b.String())
	}
	os.Exit(code)
}

// holdStdout redirects os.Stdout into memory until the returned function
// is called, which restores it and returns what was written.
func holdStdout() func() []byte {
	r, w, err := os.Pipe()
	if err != nil {
		return func() []byte { return nil }
	}
	orig := os.Stdout
	os.Stdout = w
	var buf bytes.Buffer
	done := make(chan struct{})
	go func() {
		io.Copy(&buf, r)
		close(done)
	}()
	return func() []byte {
		os.Stdout = orig
		w.Close()
		<-done
		r.Close()
		return buf.Bytes()
	}
}

// shutdown ends this rank's part of the job and returns the agreed exit
// code.
func shutdown(code int) int {
	w := env.world
	registry.Lock()
	comms := make([]*comm, 0, len(registry.comms))
	for c := range registry.comms {
		comms = append(comms, c)
	}
	registry.Unlock()
	if code != 0 {
		w.Abort(fmt.Errorf("rank %d is exiting with code %d", w.rank, code))
	}
	for _, c := range comms {
		c.Close()
	}
	ctx := context.Background()
	if code != 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, ExitGrace)
		defer cancel()
	}
	agreed, err := agree(ctx, code)
	if err != nil {
		fmt.Fprintf(os.Stderr, "mpi: rank %d: the ranks did not agree on an exit code (%v): MPI_Abort(%d)\n", w.rank, err, max(code, 1))
		C.bn_abort(C.int(max(code, 1)))
	}
	done := make(chan error, 1)
	go func() { done <- Finalize() }()
	select {
	case err := <-done:
		if err != nil {
			fmt.Fprintf(os.Stderr, "mpi: rank %d: %v\n", w.rank, err)
			return max(agreed, 1)
		}
	case <-time.After(ExitGrace):
		fmt.Fprintf(os.Stderr, "mpi: rank %d: MPI_Finalize did not return in %v: MPI_Abort(%d)\n", w.rank, ExitGrace, max(agreed, 1))
		C.bn_abort(C.int(max(agreed, 1)))
	}
	return agreed
}

// agree returns the maximum of the ranks' codes.
func agree(ctx context.Context, code int) (int, error) {
	x := env.exit
	buf := (*C.int)(x.dummy)
	*buf = C.int(code)
	if !live() {
		return code, errFinalized
	}
	rc := C.bn_iallreduce_max_int(x.h, buf)
	unlive()
	if err := x.post(ctx, proto.AllReduce, "MPI_Iallreduce", rc); err != nil {
		return code, err
	}
	env.agreed = true
	return int(*buf), nil
}
