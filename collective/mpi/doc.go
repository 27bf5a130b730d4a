// Package mpi is the MPI backend of package collective: a
// collective.Communicator over MPI processes, one rank per process.
//
// It is compiled only with the build tag mpi (cgo, Open MPI through
// pkg-config "ompi"; add the tag mpich to use pkg-config "mpich"
// instead). Without the tag the package is a stub: World and Init return
// an error wrapping collective.ErrNotBuilt, Main runs the tests, and
// RunMain runs its function as the single rank of an in-process group.
//
// # Running
//
// A program calls RunMain (or Main from TestMain) and is started by
// mpirun; a binary started without mpirun is a valid world of one rank:
//
//	func main() {
//		mpi.RunMain(func(world collective.Communicator) int {
//			// ... collectives on world ...
//			return 0
//		})
//	}
//
//	go build -tags mpi ./cmd/train
//	mpirun -np 4 --bind-to none --mca mpi_yield_when_idle 1 ./train
//
// Tests: go test -tags mpi -p 1 -exec 'mpirun -np 4 --oversubscribe' ./collective/mpi
//
// # Semantics
//
// MPI_Init_thread (MPI_THREAD_MULTIPLE) and MPI_Finalize run on one locked
// OS thread; collectives run on the caller's goroutine and thread.
// The backend's communicators use MPI_ERRORS_RETURN (MPI_COMM_WORLD keeps
// its error handler), and MPI errors become Go errors with
// MPI_Error_string's text.
//
// Each collective first all-gathers a 64-byte header describing every
// rank's call (collective, dtype, lengths, op, root, a hash of the counts,
// call number), and all ranks check the headers the same way, so mismatched
// calls fail with collective.ErrMismatch on every rank instead of hanging
// or corrupting memory. All-to-all also exchanges the counts. The data
// then moves with nonblocking MPI collectives, except for small calls:
// the header exchange has a payload slot per rank, sized from the calls
// the ranks already agreed on (the largest payload of the last 4 calls, up
// to 32 KiB, so the same on every rank and the exchange always matches in
// MPI), and an all-gather's contribution, a small all-reduce's input or a
// broadcast root's buffer that fits travels with the header: a loop of
// calls of the same sizes takes one MPI exchange per call after the first.
//
// AllReduce is deterministic and bitwise identical on every rank: up to
// 256 KiB gathered (len × size × element size), every rank all-gathers the
// inputs and reduces them in rank order, which gives exactly the in-process
// backend's result; above, MPI_Ireduce to rank 0 with non-commutative
// reduction ops (so MPI keeps the rank order, in a tree of its choosing)
// followed by MPI_Ibcast.
//
// # Deadlines, Abort and Close
//
// MPI collectives cannot be cancelled, so the backend posts nonblocking
// collectives and polls them, watching the context: MPI_Test in a loop for
// 200 µs (0 when more ranks than CPUs share the node; the environment
// variable COLLECTIVE_MPI_SPIN, e.g. "50us", overrides), then with
// sched_yield until 2 ms, then sleeping from 20 µs up to 1 ms. Each communicator has a
// duplicate on which control messages travel: when a rank's context ends,
// or it calls Abort, it tells every member (and the members of its
// sub-groups), whose pending and future collectives then fail with
// collective.ErrAborted; Close tells them it left (collective.ErrPeerGone
// for calls it did not take part in). A collective that was abandoned this
// way stays posted in MPI and the communicator stays failed; buffers up to
// 256 KiB are copied through C memory and are safe to reuse, larger ones
// stay pinned and MPI may still write into them.
//
// At exit, RunMain agrees on the exit code (the maximum over the ranks),
// then calls MPI_Finalize, which Open MPI completes even with abandoned
// collectives. If this rank exits with a non-zero code and the other ranks
// do not all reach the agreement within ExitGrace (a rank that hangs
// outside collectives, or a cut link), or MPI_Finalize does not return
// within ExitGrace, it calls MPI_Abort, which ends the whole job with the
// exit code. A rank that exits or crashes without RunMain makes mpirun end
// the job.
//
// # Resources
//
// Close frees the communicator's C buffers at once unless a call is under
// way or was given up with its request still posted in MPI (those buffers
// are kept until the process exits). The two MPI communicators behind a
// Communicator (MPI_Comm_dup's) and their C wrapper are MPI_Comm_free'd
// after an orderly close of the whole group: every member closed it, with
// no failure and no call pending, after the same number of completed
// calls. Each member's Close sends one closing message; once a rank has
// received them all, nothing more can arrive on the communicators, and
// later Close and Split calls (of any Communicator of the process) free
// them. So Split/Close in a loop runs in bounded memory. A parent is freed
// only after its sub-groups are closed. Where the group failed (Abort, a
// deadline, a mismatch, an MPI error), or a member never closes, the
// handles are deliberately kept rather than freed (a departed member may
// still have messages in flight, which a reused communicator id could
// receive, and a Close must never wait for peers): MPI_Finalize reclaims
// them.
//
// If the application initialized MPI before Init, the backend leaves
// MPI_COMM_WORLD's error handler alone (it sets MPI_ERRORS_RETURN on its
// own communicators only), and Finalize does not call MPI_Finalize: it
// frees what can be freed safely and cancels the backend's control
// receives. If Init fails after initializing MPI itself, it calls
// MPI_Finalize.
package mpi
