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

// StallError is the error of a rank whose wait for the other ranks of a
// collective ended — its context's deadline passed or it was cancelled —
// before every rank had joined the call. It wraps the context's error (so
// errors.Is(err, context.DeadlineExceeded) holds) and says what was awaited,
// so that a user can tell a rank that never came from a slow network.
// Backends return it wrapped (find it with errors.As); the other ranks of the
// group get ErrAborted wrapping the same StallError.
type StallError struct {
	// Rank is the rank that stopped waiting; Size the size of the group.
	Rank, Size int
	// Call names the collective ("all-gather", …); Seq is its number among
	// the calls of the communicator (0 for the first).
	Call string
	Seq  uint64
	// Joined lists, in increasing order, the ranks that had joined the call
	// when the wait ended (Rank among them). It is nil where the backend
	// cannot know (MPI: every rank waits in one non-blocking collective).
	Joined []int
	// Err is the context's error.
	Err error
}

// Missing returns the ranks that had not joined the call, or nil when
// Joined is unknown.
func (e *StallError) Missing() []int {
	if e.Joined == nil {
		return nil
	}
	var m []int
	j := 0
	for r := range e.Size {
		if j < len(e.Joined) && e.Joined[j] == r {
			j++
			continue
		}
		m = append(m, r)
	}
	return m
}

func (e *StallError) Error() string {
	if e.Joined == nil {
		return fmt.Sprintf("rank %d stopped waiting in %s #%d for the other ranks of %d (which had joined is unknown to this backend): %v", e.Rank, e.Call, e.Seq, e.Size, e.Err)
	}
	return fmt.Sprintf("rank %d stopped waiting in %s #%d: ranks %v of %d had joined, ranks %v had not: %v", e.Rank, e.Call, e.Seq, e.Joined, e.Size, e.Missing(), e.Err)
}

// Unwrap returns the context's error.
func (e *StallError) Unwrap() error { return e.Err }
