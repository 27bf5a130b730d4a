package collective

import (
	"context"
	"errors"
	"fmt"
)

// Sentinel errors. Errors returned by Communicators wrap one of them (test
// with errors.Is); errors caused by a context wrap ctx.Err(), so that
// errors.Is(err, context.DeadlineExceeded) and errors.Is(err,
// context.Canceled) work.
var (
	// ErrAborted: a member of the group called Abort, or a member's
	// collective failed (its context ended, say), which aborts the group.
	// The error also wraps the cause where the backend can carry it.
	ErrAborted = errors.New("aborted")
	// ErrClosed: the Communicator was closed by its own rank.
	ErrClosed = errors.New("communicator closed")
	// ErrMismatch: the ranks disagree about a collective (different
	// collectives, lengths, dtypes, ops, roots or counts), or a rank passed
	// invalid arguments. Every rank of the call gets it, and the group is
	// unusable afterwards.
	ErrMismatch = errors.New("mismatched collective call")
	// ErrPeerGone: another member closed its Communicator (or its process
	// left), so the group can no longer complete collectives.
	ErrPeerGone = errors.New("peer left the group")
	// ErrNotBuilt: the backend was not compiled into this binary (for
	// example the MPI backend without -tags mpi).
	ErrNotBuilt = errors.New("backend not built")
)

// contextError returns ctx.Err(), also wrapping context.Cause(ctx) when it
// says more.
func contextError(ctx context.Context) error {
	err := ctx.Err()
	if cause := context.Cause(ctx); cause != nil && cause != err {
		return fmt.Errorf("%w: %w", err, cause)
	}
	return err
}
