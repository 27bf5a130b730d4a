//go:build mpi

package mpi_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/gorgonia-bn/bn/collective"
	"github.com/gorgonia-bn/bn/collective/mpi"
)

// liveHandles is the number of MPI communicator handles the backend
// created and has not freed.
func liveHandles(r mpi.Resources) int64 { return r.Created - r.Freed }

// settled waits (reaping) until ok(current resources) or 10 s pass, and
// returns the last resources seen.
func settled(ok func(mpi.Resources) bool) mpi.Resources {
	deadline := time.Now().Add(10 * time.Second)
	for {
		mpi.Reap()
		r := mpi.CurrentResources()
		if ok(r) || time.Now().After(deadline) {
			return r
		}
		time.Sleep(time.Millisecond)
	}
}

// TestSplitCloseReleases splits and closes sub-groups 200 times (some used
// for a collective, some with a nested sub-group closed after its parent)
// and checks that the backend's C wrappers, MPI communicator handles and C
// buffers do not grow: every orderly closed group is MPI_Comm_free'd.
func TestSplitCloseReleases(t *testing.T) {
	w := world(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := w.Barrier(ctx); err != nil {
		t.Fatal(err)
	}
	before := mpi.CurrentResources()
	const loops = 200
	for i := 0; i < loops; i++ {
		s, err := w.Split(ctx, 0, w.Rank())
		if err != nil {
			t.Fatalf("split %d: %v", i, err)
		}
		switch i % 4 {
		case 0:
			x := []float64{float64(s.Rank()), 1}
			if err := s.AllReduce(ctx, collective.Float64s(x), collective.Sum); err != nil {
				t.Fatalf("all-reduce %d: %v", i, err)
			}
		case 1:
			ss, err := s.Split(ctx, 0, -s.Rank())
			if err != nil {
				t.Fatalf("nested split %d: %v", i, err)
			}
			if err := ss.Barrier(ctx); err != nil {
				t.Fatalf("nested barrier %d: %v", i, err)
			}
			s.Close() // the parent first: released once ss is closed too
			ss.Close()
		case 2:
			x := make([]float64, 3*s.Size())
			if err := s.AllGather(ctx, collective.Float64s(make([]float64, 3)), collective.Float64s(x), nil); err != nil {
				t.Fatalf("all-gather %d: %v", i, err)
			}
		}
		s.Close()
	}
	// Every rank has closed every sub-group (and sent its closing
	// messages) once this returns; the messages may still be on their way.
	if err := w.Barrier(ctx); err != nil {
		t.Fatal(err)
	}
	after := settled(func(r mpi.Resources) bool {
		return r.Structs <= before.Structs && liveHandles(r) <= liveHandles(before) && r.CAllocs <= before.CAllocs
	})
	t.Logf("rank %d: before %+v, after %d split/close: %+v", w.Rank(), before, loops, after)
	if after.Structs > before.Structs {
		t.Errorf("rank %d: %d live communicator wrappers after %d split/close, %d before", w.Rank(), after.Structs, loops, before.Structs)
	}
	if liveHandles(after) > liveHandles(before) {
		t.Errorf("rank %d: %d live MPI communicator handles after %d split/close, %d before (created %d, freed %d)",
			w.Rank(), liveHandles(after), loops, liveHandles(before), after.Created-before.Created, after.Freed-before.Freed)
	}
	if after.CAllocs > before.CAllocs {
		t.Errorf("rank %d: %d live C buffers after %d split/close, %d before", w.Rank(), after.CAllocs, loops, before.CAllocs)
	}
	// 2 duplicates per group, 1.25 groups per loop, and the handle
	// MPI_Comm_split returns (freed at once).
	if got, want := after.Freed-before.Freed, int64(3*loops+3*loops/4); got < want {
		t.Errorf("rank %d: %d MPI_Comm_free's, want at least %d", w.Rank(), got, want)
	}
}

// TestCloseFailedGroup checks that a failed group's Close returns at once,
// frees the C buffers (no request is pending) and deliberately keeps the
// MPI communicators (one wrapper more than before).
func TestCloseFailedGroup(t *testing.T) {
	w := world(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := w.Barrier(ctx); err != nil {
		t.Fatal(err)
	}
	before := settled(func(mpi.Resources) bool { return true })
	s, err := w.Split(ctx, 0, w.Rank())
	if err != nil {
		t.Fatal(err)
	}
	if s.Rank() == 0 {
		s.Abort(errors.New("test: abort before closing"))
	}
	if err := w.Barrier(ctx); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	s.Close()
	if d := time.Since(start); d > time.Second {
		t.Errorf("Close of an aborted group took %v", d)
	}
	if err := w.Barrier(ctx); err != nil {
		t.Fatal(err)
	}
	after := settled(func(r mpi.Resources) bool { return r.CAllocs <= before.CAllocs })
	if after.CAllocs > before.CAllocs {
		t.Errorf("rank %d: %d live C buffers after closing an aborted group, %d before", w.Rank(), after.CAllocs, before.CAllocs)
	}
	if after.Structs != before.Structs+1 || liveHandles(after) != liveHandles(before)+2 {
		t.Errorf("rank %d: %d wrappers and %d handles after closing an aborted group, %d and %d before: want it kept (one more wrapper, two more handles)",
			w.Rank(), after.Structs, liveHandles(after), before.Structs, liveHandles(before))
	}
}

// TestCloseAbandonedKeepsBuffers: a rank whose call was given up (its
// deadline passed while the last rank had not arrived) keeps the C buffers
// MPI may still use after Close; the late rank, which posted nothing,
// frees them.
func TestCloseAbandonedKeepsBuffers(t *testing.T) {
	w := world(t)
	if w.Size() < 2 {
		t.Skip("needs 2 ranks")
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s, err := w.Split(ctx, 0, w.Rank())
	if err != nil {
		t.Fatal(err)
	}
	before := mpi.CurrentResources()
	late := s.Rank() == s.Size()-1
	x := make([]float64, 16)
	if late {
		time.Sleep(300 * time.Millisecond)
		if err := s.AllReduce(ctx, collective.Float64s(x), collective.Sum); err == nil {
			t.Error("the late rank's all-reduce succeeded")
		}
	} else {
		dctx, dcancel := context.WithTimeout(ctx, 50*time.Millisecond)
		err := s.AllReduce(dctx, collective.Float64s(x), collective.Sum)
		dcancel()
		if !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, collective.ErrAborted) {
			t.Errorf("got %v, want a deadline or abort error", err)
		}
	}
	if err := w.Barrier(ctx); err != nil {
		t.Fatal(err)
	}
	s.Close()
	after := mpi.CurrentResources()
	if late && after.CAllocs >= before.CAllocs {
		t.Errorf("late rank: %d C buffers after Close, %d before: want them freed", after.CAllocs, before.CAllocs)
	}
	if !late && after.CAllocs < before.CAllocs {
		// A rank that posted its header exchange and gave it up keeps
		// every buffer of the group.
		t.Errorf("rank %d: %d C buffers after Close, %d before: the abandoned call's buffers were freed", w.Rank(), after.CAllocs, before.CAllocs)
	}
}

// TestMismatchKindsMPI: rank 0 in an all-gather, the others in an
// all-reduce (both small, so both would be MPI_Iallgather's of different
// sizes without the header exchange): every rank gets ErrMismatch, quickly.
// Cold: the first call on the communicator (the header exchange carries no
// data); warm: after calls of that size, so that both calls carry their
// data in the header exchange.
func TestMismatchKindsMPI(t *testing.T) {
	for _, warm := range []bool{false, true} {
		t.Run(map[bool]string{false: "cold", true: "warm"}[warm], func(t *testing.T) { mismatchKinds(t, warm) })
	}
}

func mismatchKinds(t *testing.T, warm bool) {
	w := world(t)
	if w.Size() < 2 {
		t.Skip("needs 2 ranks")
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s, err := w.Split(ctx, 0, w.Rank())
	if err != nil {
		t.Fatal(err)
	}
	const n = 7 + 3*64
	if err := s.Barrier(ctx); err != nil {
		t.Fatal(err)
	}
	if warm {
		for i := 0; i < 2; i++ {
			x := make([]float64, n*s.Size())
			if err := s.AllGather(ctx, collective.Float64s(make([]float64, n)), collective.Float64s(x), nil); err != nil {
				t.Fatal(err)
			}
		}
		if fused, _ := mpi.LastFused(s); !fused {
			t.Error("the warm-up all-gather did not move its data with the header")
		}
	}
	start := time.Now()
	if s.Rank() == 0 {
		x := make([]float64, n*s.Size())
		err = s.AllGather(ctx, collective.Float64s(x[:n]), collective.Float64s(x), nil)
	} else {
		err = s.AllReduce(ctx, collective.Float64s(make([]float64, n)), collective.Sum)
	}
	d := time.Since(start)
	if !errors.Is(err, collective.ErrMismatch) {
		t.Errorf("rank %d: got %v, want ErrMismatch", w.Rank(), err)
	} else {
		t.Logf("rank %d: ErrMismatch after %v: %v", w.Rank(), d, err)
	}
	if d > 2*time.Second {
		t.Errorf("rank %d: the mismatch took %v to report", w.Rank(), d)
	}
	if err := w.Barrier(ctx); err != nil {
		t.Fatal(err)
	}
	s.Close()
}

// TestErrhandlers: the backend leaves MPI_COMM_WORLD's error handler as
// MPI's default (MPI_ERRORS_ARE_FATAL) and sets MPI_ERRORS_RETURN on its
// own communicators only.
func TestErrhandlers(t *testing.T) {
	w := world(t)
	if got := mpi.WorldErrhandlerIsFatal(); got != 1 {
		t.Errorf("MPI_COMM_WORLD's error handler is not MPI_ERRORS_ARE_FATAL (%d): Init changed it", got)
	}
	if got := mpi.ErrhandlerReturns(w); got != 1 {
		t.Errorf("the world communicator's error handlers are not MPI_ERRORS_RETURN (%d)", got)
	}
}

// childMain runs in a process started by runChild, as an MPI singleton.
func childMain(mode string) int {
	fail := func(format string, args ...any) int {
		fmt.Printf("CHILD-FAIL %s: %s\n", mode, fmt.Sprintf(format, args...))
		return 1
	}
	var appFinalize func() error
	if mode == "app" || mode == "appinitfail" {
		f, err := mpi.AppInit()
		if err != nil {
			return fail("application's MPI_Init_thread: %v", err)
		}
		appFinalize = f
		if got := mpi.WorldErrhandlerIsFatal(); got != 1 {
			return fail("MPI_COMM_WORLD's error handler after MPI_Init_thread: %d", got)
		}
	}
	switch mode {
	case "initfail":
		mpi.SetInitFail("local")
	case "appinitfail":
		mpi.SetInitFail("world")
	}
	err := mpi.Init()
	if mode == "app" {
		if err != nil {
			return fail("Init: %v", err)
		}
		if got := mpi.WorldErrhandlerIsFatal(); got != 1 {
			return fail("Init changed MPI_COMM_WORLD's error handler (fatal = %d)", got)
		}
		w, err := mpi.World()
		if err != nil {
			return fail("World: %v", err)
		}
		if got := mpi.ErrhandlerReturns(w); got != 1 {
			return fail("the backend's communicators do not return errors (%d)", got)
		}
		x := []float64{1}
		if err := w.AllReduce(context.Background(), collective.Float64s(x), collective.Sum); err != nil {
			return fail("all-reduce: %v", err)
		}
		w.Close()
		if err := mpi.Finalize(); err != nil {
			return fail("Finalize: %v", err)
		}
		if ini, fin := mpi.MPIState(); !ini || fin {
			return fail("after Finalize: MPI initialized %v, finalized %v; want the application's MPI left running", ini, fin)
		}
		if got := mpi.WorldErrhandlerIsFatal(); got != 1 {
			return fail("after Finalize: MPI_COMM_WORLD's error handler changed (fatal = %d)", got)
		}
		if r := mpi.CurrentResources(); r.Structs != 0 || liveHandles(r) != 0 {
			// The world was closed and released; the exit-code
			// communicator was not used for an agreement and is kept.
			if r.Structs != 1 || liveHandles(r) != 2 {
				return fail("after Finalize: %+v", r)
			}
		}
	} else {
		if err == nil {
			return fail("Init succeeded despite the injected failure")
		}
		ini, fin := mpi.MPIState()
		switch {
		case mode == "initfail" && !fin:
			return fail("after a failed Init: MPI initialized %v, finalized %v; want finalized", ini, fin)
		case mode == "appinitfail" && (!ini || fin):
			return fail("after a failed Init: MPI initialized %v, finalized %v; want the application's MPI left running", ini, fin)
		}
		if mode == "appinitfail" {
			if got := mpi.WorldErrhandlerIsFatal(); got != 1 {
				return fail("after a failed Init: MPI_COMM_WORLD's error handler changed (fatal = %d)", got)
			}
		}
		if r := mpi.CurrentResources(); r.Structs != 0 || liveHandles(r) != 0 {
			return fail("after a failed Init: %+v, want nothing held", r)
		}
	}
	if appFinalize != nil {
		if err := appFinalize(); err != nil {
			return fail("application's MPI_Finalize: %v", err)
		}
	}
	fmt.Printf("CHILD-OK %s\n", mode)
	return 0
}

// runChild runs this test binary as an MPI singleton (no mpirun
// environment) in child mode.
func runChild(t *testing.T, mode string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^$")
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "OMPI_ALLOW_RUN_AS_ROOT") || !(strings.HasPrefix(k, "OMPI_") || strings.HasPrefix(k, "PMIX_") ||
			strings.HasPrefix(k, "PMI_") || strings.HasPrefix(k, "OPAL_") || strings.HasPrefix(k, "ORTE_")) {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, "BN_MPI_TEST_CHILD="+mode)
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "CHILD-OK "+mode) {
		t.Errorf("child %s: %v\n%s", mode, err, out)
	}
}

// TestApplicationMPI runs, on rank 0, three singleton processes: one
// whose application initialized MPI before Init (Init must leave
// MPI_COMM_WORLD's error handler alone, and Finalize leave MPI running),
// one where Init fails after initializing MPI itself (MPI must be
// finalized, nothing held), and one where Init fails with the
// application's MPI (MPI left running, nothing held).
func TestApplicationMPI(t *testing.T) {
	w := world(t)
	if w.Rank() != 0 {
		return
	}
	for _, mode := range []string{"app", "initfail", "appinitfail"} {
		runChild(t, mode)
	}
}

// TestFusedExchange runs small all-reduces, all-gathers (with and without
// counts) and broadcasts several times on a fresh communicator and checks
// the results exactly, and that from the second call of a size on, the
// data moved with the header exchange (one MPI exchange per call).
func TestFusedExchange(t *testing.T) {
	w := world(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s, err := w.Split(ctx, 0, w.Rank())
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := w.Barrier(ctx); err != nil {
			t.Fatal(err)
		}
		s.Close()
	}()
	size, rank := s.Size(), s.Rank()
	check := func(what string, i int) {
		t.Helper()
		fused, slot := mpi.LastFused(s)
		if i > 0 && !fused {
			t.Errorf("%s, call %d: data not fused (next slot %d)", what, i, slot)
		}
	}
	for _, n := range []int{1, 7, 199, 3079} {
		for i := 0; i < 3; i++ {
			x := make([]float32, n)
			for j := range x {
				x[j] = float32(rank*n + j)
			}
			if err := s.AllReduce(ctx, collective.Float32s(x), collective.Sum); err != nil {
				t.Fatal(err)
			}
			check(fmt.Sprintf("all-reduce n=%d", n), i)
			for j := range x {
				if want := float32(size*(size-1)/2*n + size*j); x[j] != want {
					t.Fatalf("all-reduce n=%d: x[%d] = %v, want %v", n, j, x[j], want)
				}
			}
		}
		for i := 0; i < 3; i++ {
			send, recv := make([]float64, n), make([]float64, n*size)
			for j := range send {
				send[j] = float64(rank*1000000 + j)
			}
			if err := s.AllGather(ctx, collective.Float64s(send), collective.Float64s(recv), nil); err != nil {
				t.Fatal(err)
			}
			check(fmt.Sprintf("all-gather n=%d", n), i)
			for r := 0; r < size; r++ {
				for j := 0; j < n; j++ {
					if got, want := recv[r*n+j], float64(r*1000000+j); got != want {
						t.Fatalf("all-gather n=%d: recv[%d] = %v, want %v", n, r*n+j, got, want)
					}
				}
			}
		}
		for i := 0; i < 3; i++ {
			counts := make([]int, size)
			total := 0
			for r := range counts {
				counts[r] = (n + r) % (n + 1) // uneven, one zero when size > 1
				total += counts[r]
			}
			send, recv := make([]float32, counts[rank]), make([]float32, total)
			for j := range send {
				send[j] = float32(rank*100000 + j)
			}
			if err := s.AllGather(ctx, collective.Float32s(send), collective.Float32s(recv), counts); err != nil {
				t.Fatal(err)
			}
			check(fmt.Sprintf("all-gather with counts n=%d", n), i)
			off := 0
			for r := 0; r < size; r++ {
				for j := 0; j < counts[r]; j++ {
					if got, want := recv[off+j], float32(r*100000+j); got != want {
						t.Fatalf("all-gather with counts n=%d: recv[%d] = %v, want %v", n, off+j, got, want)
					}
				}
				off += counts[r]
			}
		}
		for i := 0; i < 3; i++ {
			root := (i + n) % size
			x := make([]float64, n)
			if rank == root {
				for j := range x {
					x[j] = float64(root*7 + j)
				}
			}
			if err := s.Broadcast(ctx, collective.Float64s(x), root); err != nil {
				t.Fatal(err)
			}
			check(fmt.Sprintf("broadcast n=%d", n), i)
			for j := range x {
				if want := float64(root*7 + j); x[j] != want {
					t.Fatalf("broadcast n=%d root %d: x[%d] = %v, want %v", n, root, j, x[j], want)
				}
			}
		}
	}
	// Too large for a slot (32 KiB): the separate data exchange, and the
	// next small call is still correct.
	big := make([]float64, 8192)
	for j := range big {
		big[j] = float64(rank)
	}
	if err := s.AllReduce(ctx, collective.Float64s(big), collective.Max); err != nil {
		t.Fatal(err)
	}
	if fused, _ := mpi.LastFused(s); fused {
		t.Error("a 64 KiB all-reduce was fused")
	}
	if big[0] != float64(size-1) || big[8191] != float64(size-1) {
		t.Errorf("large all-reduce: %v, %v, want %d", big[0], big[8191], size-1)
	}
}
