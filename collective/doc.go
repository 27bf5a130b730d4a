// Package collective is the communication layer of distributed batch
// normalization: the Communicator interface, with the collective
// operations SyncBN and PreciseBN need (all-reduce, all-gather, broadcast,
// all-to-all, barrier, split), and an in-process backend. Besides sums,
// maxima and minima, AllReduce merges statistics: with the Moments op the
// buffer holds (n, mean, M2) triples, merged with Chan's rule in an order
// fixed by the backend, so a synchronized batch norm exchanges O(C) values
// per rank however many ranks there are.
//
// Backends:
//
//   - NewInProcess and Run (this package): ranks are goroutines of one
//     process. Used by tests and single-machine data parallelism.
//   - collective/mpi (build tag mpi, cgo): one rank per MPI process.
//   - collective/nccl (build tag cuda): device buffers on NVIDIA GPUs.
//
// A Buffer names the memory a collective uses (a host []float32 or
// []float64, or device memory) without copying or allocating:
//
//	sums := []float64{sumDy, sumDyXhat} // per channel, in a real layer
//	err := c.AllReduce(ctx, collective.Float64s(sums), collective.Sum)
//
// # Guarantees
//
// Every backend in this module:
//
//   - checks before moving data that all ranks called the same collective
//     with compatible arguments (lengths, dtypes, op, root, counts), and
//     otherwise returns an error wrapping ErrMismatch on every rank, so a
//     bug shows up as an error, never as a hang or wrong numbers;
//   - computes AllReduce deterministically: every rank gets the bitwise
//     identical result, and the same inputs give the same result in every
//     run (the in-process backend reduces in rank order,
//     ((x0 op x1) op x2) op ...);
//   - honours contexts: a rank whose context ends (deadline or
//     cancellation) while it waits returns an error wrapping ctx.Err() and
//     fails the group, so that the other ranks return an error wrapping
//     ErrAborted promptly instead of waiting for it forever;
//   - fails a group on Abort (ErrAborted, wrapping the cause) and Close
//     (ErrPeerGone for the other members), and propagates an abort of a
//     group to the sub-groups Split from it.
//
// A failed group stays failed: make a new one to continue. Errors wrap one
// of the sentinel errors below, or a context error; test them with
// errors.Is.
//
// The in-process backend does not allocate in steady state, and the MPI
// backend does not either for the small buffers SyncBN moves. See
// README.md for measurements.
package collective
