// Package nccl is a collective.Communicator over NVIDIA's NCCL, for buffers
// in GPU memory.
//
// It is built with the build tag cuda (it uses gorgonia.org/cu, which needs
// cuda.h and libcuda to build). Without the tag, or when libnccl cannot be
// loaded at run time, every constructor returns an error wrapping
// collective.ErrNotBuilt.
//
// # Library
//
// NCCL is not needed to build: the package declares the few NCCL
// prototypes it uses and opens the library with dlopen at the first use —
// "libnccl.so.2" from the loader path, or the file named by the environment
// variable BN_NCCL_LIB. The Python wheels (nvidia-nccl-cu12, -cu13) ship
// the library inside site-packages, for example
//
//	export BN_NCCL_LIB=$(python3 -c 'import nvidia.nccl, os; print(os.path.join(nvidia.nccl.__path__[0], "lib", "libnccl.so.2"))')
//
// (or find it with `find / -name 'libnccl.so.2*'`).
//
// # Making communicators
//
//   - NewInProcess: one process drives several GPUs, one goroutine per GPU
//     (ncclCommInitAll).
//   - New: one process per GPU; the NCCL unique id is created by rank 0 and
//     broadcast through an existing collective.Communicator (the MPI
//     backend, say) as 32 float64 values holding 4 bytes each.
//   - NewFromFile: one process per GPU; rank 0 writes the id to a file on a
//     shared file system, the others wait for it.
//   - NewRank: the id is exchanged by the caller (NewUniqueID on rank 0).
//
// # Buffers, streams and CUDA contexts
//
// Device buffers (collective.Device) must be memory of the communicator's
// GPU. Host buffers are staged through device memory (copied in, reduced,
// copied out), so the Communicator passes the backend-agnostic conformance
// suite; that costs two copies, so give it device memory on hot paths.
//
// Each communicator owns a CUDA stream. Its collectives enqueue the NCCL
// call on that stream and wait for it (polling, so that the context's
// deadline and Abort are honoured), like every collective.Communicator.
// WithStream returns a view that enqueues on the caller's stream instead
// and returns without waiting: the stream-ordered variant for code whose
// kernels run on that stream. Every call locks the calling goroutine to its
// OS thread and pushes the primary context of the communicator's device for
// its duration, so callers need no CUDA context of their own.
//
// # Agreement checks
//
// NCCL cannot detect ranks that disagree about a collective: they hang or
// compute garbage. So, by default, every collective first all-reduces a
// small header (kind, dtype, lengths, op, root, a hash of the counts, and a
// flag for local argument errors) with MAX over the values and their
// negations; if the ranks disagree, all of them return ErrMismatch and the
// group stays failed, as the collective contract requires. This costs one
// small all-reduce per call (two for a checked AllToAll); Unchecked()
// removes it, and WithStream views never check.
//
// # Failures
//
// A context that ends while a rank waits makes it abort its NCCL
// communicator (ncclCommAbort) and return an error wrapping ErrAborted and
// the context error; so does Abort, and so do two calls made concurrently on
// one communicator (ErrMismatch). An abort never frees the communicator
// under an NCCL call another goroutine is making: it waits for the call to
// return, up to 200 ms (a call blocked that long is waiting for a peer that
// may never come, which is what ncclCommAbort is for). In a NewInProcess
// group, Abort, a context error, concurrent calls and Close also reach the
// other members (ErrAborted, ErrMismatch, ErrPeerGone), as in the in-process
// backend; a member waiting for a rank that closed gets 250 ms to complete
// (the closed rank may have done its part) before failing with ErrPeerGone.
// Across processes NCCL has no such channel: the other ranks see the failure
// only through their own deadlines (use contexts with deadlines).
//
// # Deviations from collective.Communicator
//
//   - Max and Min are NCCL's (CUDA's fmax and fmin): a NaN operand is
//     dropped and the sign of a zero result is unspecified, where the
//     interface asks for Go's max and min. Sum is exact to NCCL's order,
//     which is not rank order (but every rank gets the same bits).
//   - ncclCommInitRank and ncclCommSplit block until every rank has called
//     them; contexts are checked before, not during.
//   - Unchecked() and WithStream views skip the agreement checks: ranks that
//     disagree hang or compute garbage.
package nccl

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// UniqueID is NCCL's ncclUniqueId: 128 opaque bytes that identify a new
// communicator.
type UniqueID [128]byte

// LibraryEnv names the environment variable that overrides DefaultLibrary.
const LibraryEnv = "BN_NCCL_LIB"

// DefaultLibrary is the library opened when LibraryEnv is unset.
const DefaultLibrary = "libnccl.so.2"

// ErrLibrary: libnccl could not be opened, or lacks a symbol. It comes
// wrapped together with collective.ErrNotBuilt.
var ErrLibrary = errors.New("nccl: library not available")

// Option configures a communicator.
type Option func(*options)

type options struct {
	unchecked bool
}

// Unchecked turns off the agreement checks (see the package comment): one
// small all-reduce less per collective, but ranks that disagree hang or
// compute garbage instead of failing with ErrMismatch.
func Unchecked() Option { return func(o *options) { o.unchecked = true } }

//lint:ignore U1000 used by comm.go (tag cuda)
func makeOptions(opts []Option) options {
	var o options
	for _, f := range opts {
		f(&o)
	}
	return o
}

// idWords is the number of float64 values of an encoded UniqueID.
const idWords = len(UniqueID{}) / 4

// Float64s encodes id as 32 float64 values, each holding 4 bytes as an
// integer in [0, 2³²): exact in any float64 transport, NaN-free.
func (id UniqueID) Float64s() []float64 {
	out := make([]float64, idWords)
	for i := range out {
		out[i] = float64(binary.LittleEndian.Uint32(id[4*i:]))
	}
	return out
}

// UniqueIDFromFloat64s decodes the result of Float64s.
func UniqueIDFromFloat64s(v []float64) (UniqueID, error) {
	var id UniqueID
	if len(v) != idWords {
		return id, fmt.Errorf("nccl: %d values for a unique id, want %d", len(v), idWords)
	}
	for i, f := range v {
		if f < 0 || f >= 1<<32 || f != float64(uint32(f)) {
			return id, fmt.Errorf("nccl: value %d of an encoded unique id is %v", i, f)
		}
		binary.LittleEndian.PutUint32(id[4*i:], uint32(f))
	}
	return id, nil
}

// WriteUniqueID writes id to path atomically (a temporary file in the same
// directory, then a rename), so that a reader never sees half of it.
func WriteUniqueID(path string, id UniqueID) error {
	f, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("nccl: write unique id: %w", err)
	}
	tmp := f.Name()
	_, err = f.Write(id[:])
	if e := f.Close(); err == nil {
		err = e
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("nccl: write unique id: %w", err)
	}
	return nil
}

// ReadUniqueID waits until path holds a unique id (written by
// WriteUniqueID) and returns it; it gives up when ctx ends.
func ReadUniqueID(ctx context.Context, path string) (UniqueID, error) {
	var id UniqueID
	wait := time.Millisecond
	for {
		b, err := os.ReadFile(path)
		if err == nil {
			if len(b) != len(id) {
				return id, fmt.Errorf("nccl: %s: %d bytes, want %d", path, len(b), len(id))
			}
			copy(id[:], b)
			return id, nil
		}
		if !errors.Is(err, os.ErrNotExist) {
			return id, fmt.Errorf("nccl: read unique id: %w", err)
		}
		select {
		case <-ctx.Done():
			return id, fmt.Errorf("nccl: waiting for %s: %w", path, ctx.Err())
		case <-time.After(wait):
		}
		wait = min(2*wait, 100*time.Millisecond)
	}
}
