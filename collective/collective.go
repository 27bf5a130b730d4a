package collective

import "context"

// Communicator is one rank's handle on a group of ranks that run
// collective operations together.
//
// Every rank of the group must call the same collectives in the same order
// with compatible arguments; a backend detects disagreements and returns
// ErrMismatch on every rank rather than hanging or computing wrong numbers.
// The collectives of one Communicator must not be called concurrently
// (use Split for independent streams of collectives); Rank, Size, Abort
// and Close may be called from any goroutine at any time.
//
// A collective that returns an error other than for invalid arguments has
// left the group failed: later collectives of every member fail too. Every
// error wraps one of ErrAborted, ErrClosed, ErrMismatch, ErrPeerGone, or a
// context error.
type Communicator interface {
	// Rank returns the rank of the caller in the group, in [0, Size()).
	Rank() int
	// Size returns the number of ranks in the group.
	Size() int
	// AllReduce reduces buf element-wise over all ranks, in place. The
	// result is bitwise identical on every rank (the reduction order is
	// deterministic, e.g. rank order).
	AllReduce(ctx context.Context, buf Buffer, op ReduceOp) error
	// AllGather concatenates every rank's send into recv in rank order.
	// counts == nil: every rank sends len(send) values (which must be
	// equal) and len(recv) = Size()*len(send). counts != nil: counts[r] is
	// rank r's length (zero allowed; identical counts on every rank),
	// len(send) = counts[Rank()] and len(recv) = sum(counts).
	AllGather(ctx context.Context, send, recv Buffer, counts []int) error
	// Broadcast copies root's buf into the buf of every other rank.
	Broadcast(ctx context.Context, buf Buffer, root int) error
	// AllToAll sends sendCounts[r] values to rank r (consecutive blocks of
	// send, in rank order) and receives recvCounts[r] values from rank r
	// (consecutive blocks of recv). Rank r's sendCounts[s] must equal rank
	// s's recvCounts[r].
	AllToAll(ctx context.Context, send Buffer, sendCounts []int, recv Buffer, recvCounts []int) error
	// Barrier returns once every rank has called it.
	Barrier(ctx context.Context) error
	// Split partitions the group as MPI_Comm_split does: ranks with equal
	// color form a sub-group, ordered by (key, rank in this group). A
	// negative color (Undefined) joins no sub-group and returns (nil, nil).
	// Split is a collective of this group.
	Split(ctx context.Context, color, key int) (Communicator, error)
	// Abort makes every collective of every member of the group, pending or
	// future, fail with an error wrapping ErrAborted and err (err may be
	// nil).
	Abort(err error)
	// Close leaves the group. The other members' pending and future
	// collectives fail (with ErrPeerGone) instead of hanging; this
	// Communicator's fail with ErrClosed. Close is idempotent.
	Close() error
}
