package bn

// SyncBN: batch statistics over the union of the mini-batches of every rank
// of a communicator group.
//
// Forward: every rank computes the moments (n, mean, M2) of its own samples
// per segment and channel; one all-gather brings everybody's to everybody,
// and each rank merges them in rank order with Chan's rule — the same
// float64 operations in the same order on every rank, so the statistics,
// the outputs' normalization and the running statistics are bitwise equal
// everywhere. Backward: the two per-channel sums Σdy and Σdy·(x−μ) are
// all-reduced (SUM) in one collective; dγ and dβ stay local (the
// data-parallel gradient reduction sums them once). Eval and frozen modes do
// no communication.
//
// Ghost layers normalize over the ghost groups of the concatenated global
// batch; their first forward (per op: Gorgonia batch sizes are fixed per
// graph) also all-gathers the batch sizes to place each rank's samples.
//
// Every payload carries a small header (layer index, channels, segments,
// step, batch size and offset) that every rank checks, so ranks that disagree — different channel
// counts, a rank that skips a layer or calls layers in another order — get
// ErrSync instead of wrong numbers. A rank with an empty batch still takes
// part; a global count of 1 in training is ErrTooFewValues on every rank,
// a global count of 0 leaves the running statistics untouched.

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/gorgonia-bn/bn/collective"
	"github.com/gorgonia-bn/bn/internal/kern"
)

// DefaultSyncTimeout bounds every collective of a synchronized layer unless
// WithSyncTimeout says otherwise.
const DefaultSyncTimeout = 5 * time.Minute

// WithCommunicator synchronizes the layer's batch statistics across the
// ranks of comm (SyncBN). Every rank must create its synchronized layers in
// the same order: the i-th layer created with a communicator is matched
// with the i-th layer of the same communicator on the other ranks.
func WithCommunicator(comm collective.Communicator) Option {
	return func(c *config) error {
		if comm == nil {
			return fmt.Errorf("%w: nil communicator", ErrOption)
		}
		if c.sync == nil {
			c.sync = &syncConfig{timeout: DefaultSyncTimeout}
		}
		c.sync.comm = comm
		return nil
	}
}

// WithSyncTimeout bounds each collective of a synchronized layer (default
// DefaultSyncTimeout); when it passes the forward or backward fails with an
// error instead of waiting forever for a rank that never comes.
func WithSyncTimeout(d time.Duration) Option {
	return func(c *config) error {
		if d <= 0 {
			return fmt.Errorf("%w: sync timeout must be positive, got %v", ErrOption, d)
		}
		if c.sync == nil {
			c.sync = &syncConfig{}
		}
		c.sync.timeout = d
		return nil
	}
}

// SetSyncContext sets the context the collectives of a synchronized layer
// run under (default context.Background()); cancelling it makes a pending
// forward or backward fail promptly.
func (l *Layer) SetSyncContext(ctx context.Context) {
	if l.cfg.sync == nil {
		return
	}
	l.mu.Lock()
	l.cfg.sync.base = ctx
	l.mu.Unlock()
}

// Communicator returns the communicator of a synchronized layer, or nil.
func (l *Layer) Communicator() collective.Communicator {
	if l.cfg.sync == nil {
		return nil
	}
	return l.cfg.sync.comm
}

var (
	syncMu      sync.Mutex
	syncIndices = map[collective.Communicator]int{}
)

// syncConfig is the synchronization of one layer.
type syncConfig struct {
	comm    collective.Communicator
	timeout time.Duration
	base    context.Context
	index   int // position of the layer among those created with comm

	send, recv []float64
	merged     []kern.Moments
}

// register gives the layer its index among the layers of its communicator.
func (sc *syncConfig) register() error {
	if sc.comm == nil {
		return fmt.Errorf("%w: WithSyncTimeout without WithCommunicator", ErrOption)
	}
	syncMu.Lock()
	sc.index = syncIndices[sc.comm]
	syncIndices[sc.comm]++
	syncMu.Unlock()
	return nil
}

func (sc *syncConfig) context() (context.Context, context.CancelFunc) {
	base := sc.base
	if base == nil {
		base = context.Background()
	}
	return context.WithTimeout(base, sc.timeout)
}

const (
	tagForward  = 0x42_4e_46 // "BNF"
	headerLen   = 7          // forward: tag, layer index, C, segments, step, N, offset
	sumsHeader  = 5          // backward: 1, index, index², C, C²
	ghostHeader = 1          // header-only exchange for ghost layers
)

// reduceMoments all-gathers the local moments (nseg·C) and returns the
// global ones, merged in rank order, and the global number of segments.
//
// N and off are the local batch size and, for ghost layers, the offset of
// this rank's samples in the global batch; ghost layers check that every
// rank's offset is the sum of the sizes of the ranks before it.
func (sc *syncConfig) reduceMoments(l *Layer, moms []kern.Moments, nseg, C, N, off int) ([]kern.Moments, error) {
	ctx, cancel := sc.context()
	defer cancel()
	K := sc.comm.Size()
	step := float64(l.calls)
	n := headerLen + 3*nseg*C
	sc.send = grow(sc.send, n)
	copy(sc.send, []float64{tagForward, float64(sc.index), float64(C), float64(nseg), step, float64(N), float64(off)})
	p := sc.send[headerLen:]
	for i, m := range moms[:nseg*C] {
		p[3*i], p[3*i+1], p[3*i+2] = m.N, m.Mean, m.M2
	}
	sc.recv = grow(sc.recv, K*n)
	if err := sc.comm.AllGather(ctx, collective.Float64s(sc.send), collective.Float64s(sc.recv), nil); err != nil {
		return nil, fmt.Errorf("%w: layer %s forward: %w", ErrSync, l.cfg.name, err)
	}
	sc.merged = grow(sc.merged, nseg*C)
	clear(sc.merged)
	sum := 0.0
	for r := range K {
		q := sc.recv[r*n : (r+1)*n]
		if err := sc.checkHeader(l, q[:headerLen], r, C, nseg, step, tagForward); err != nil {
			return nil, err
		}
		if l.cfg.ghost > 0 && q[6] != sum {
			return nil, fmt.Errorf("%w: ghost layer %s: rank %d places its batch at offset %v of the global batch, but the ranks before it hold %v samples: the per-rank batch sizes changed since this op's first run (use one graph per batch size on every rank)", ErrSync, l.cfg.name, r, q[6], sum)
		}
		sum += q[5]
		q = q[headerLen:]
		for i := range sc.merged {
			sc.merged[i] = sc.merged[i].Merge(kern.Moments{N: q[3*i], Mean: q[3*i+1], M2: q[3*i+2]})
		}
	}
	return sc.merged, nil
}

// ghostOffsets exchanges the local batch sizes of a ghost layer and
// returns this rank's offset in the concatenated global batch and its size,
// so that ghost groups are those of the concatenated batch.
func (sc *syncConfig) ghostOffsets(l *Layer, N, C int) (off, total int, err error) {
	ctx, cancel := sc.context()
	defer cancel()
	K := sc.comm.Size()
	step := float64(l.calls)
	sc.send = append(sc.send[:0], tagForward+ghostHeader, float64(sc.index), float64(C), -1, step, float64(N), -1)
	sc.recv = grow(sc.recv, K*headerLen)
	if err := sc.comm.AllGather(ctx, collective.Float64s(sc.send), collective.Float64s(sc.recv), nil); err != nil {
		return 0, 0, fmt.Errorf("%w: layer %s forward: %w", ErrSync, l.cfg.name, err)
	}
	for r := range K {
		h := sc.recv[r*headerLen : (r+1)*headerLen]
		if err := sc.checkHeader(l, h, r, C, -1, step, tagForward+ghostHeader); err != nil {
			return 0, 0, err
		}
		if r < sc.comm.Rank() {
			off += int(h[5])
		}
		total += int(h[5])
	}
	return off, total, nil
}

func (sc *syncConfig) checkHeader(l *Layer, h []float64, r, C, nseg int, step float64, tag int) error {
	if h[0] != float64(tag) || h[1] != float64(sc.index) || h[2] != float64(C) || (nseg >= 0 && h[3] != float64(nseg)) || h[4] != step {
		return fmt.Errorf("%w: layer %s (index %d, %d channels, %d segments, step %v) on rank %d, but rank %d sent tag %#x index %v, %v channels, %v segments, step %v: ranks must apply the same synchronized layers in the same order",
			ErrSync, l.cfg.name, sc.index, C, nseg, step, sc.comm.Rank(), r, int(h[0]), h[1], h[2], h[3], h[4])
	}
	return nil
}

// reduceSums all-reduces (SUM) the per-segment backward sums, with a header
// of (1, index, index², channels, channels²) whose sums prove every rank
// sent the same layer.
func (sc *syncConfig) reduceSums(l *Layer, s *saved) error {
	ctx, cancel := sc.context()
	defer cancel()
	C := l.c
	k := s.nseg * C
	n := sumsHeader + 2*k
	sc.send = grow(sc.send, n)
	idx, c := float64(sc.index+1), float64(C)
	copy(sc.send, []float64{1, idx, idx * idx, c, c * c})
	for i, v := range s.sums[:k] {
		sc.send[sumsHeader+2*i], sc.send[sumsHeader+2*i+1] = v[0], v[1]
	}
	if err := sc.comm.AllReduce(ctx, collective.Float64s(sc.send), collective.Sum); err != nil {
		return fmt.Errorf("%w: layer %s backward: %w", ErrSync, l.cfg.name, err)
	}
	K := sc.send[0]
	h := sc.send[:sumsHeader]
	// Σa = K·m and Σa² = K·m² hold only if every a equals m.
	if K != float64(sc.comm.Size()) || h[1] != K*idx || h[2] != K*idx*idx || h[3] != K*c || h[4] != K*c*c {
		return fmt.Errorf("%w: layer %s backward: ranks disagree on the layer or its channel count (header sums %v on rank %d): ranks must run the same synchronized layers in the same order", ErrSync, l.cfg.name, h, sc.comm.Rank())
	}
	for i := range s.sums[:k] {
		s.sums[i] = [2]float64{sc.send[sumsHeader+2*i], sc.send[sumsHeader+2*i+1]}
	}
	return nil
}

// EmptyStep lets a rank that has no samples in this step take part in the
// collectives of its synchronized layers, which the other ranks wait for:
// Gorgonia cannot hold a tensor with a zero-length batch, so such a rank
// calls EmptyStep instead of running its graph. It contributes empty
// statistics to each layer's forward, in the order given (the order the
// graph applies them), folds the global statistics into its running
// statistics exactly as the other ranks do (they stay bitwise equal), and,
// if backward is set, contributes zero sums to each backward, in reverse
// order. Layers that are not synchronized, or whose mode uses running
// statistics, are skipped, as their ops would be. For a layer made by
// NewGrouped the segments are taken to be its groups. Ghost layers are not
// supported (ErrOption).
func EmptyStep(layers []*Layer, backward bool) error {
	states := make([]*saved, len(layers))
	for i, l := range layers {
		s, err := l.emptyForward()
		if err != nil {
			return err
		}
		states[i] = s
	}
	if !backward {
		return nil
	}
	for i := len(layers) - 1; i >= 0; i-- {
		if s := states[i]; s != nil {
			clear(s.sums)
			if err := layers[i].cfg.sync.reduceSums(layers[i], s); err != nil {
				return err
			}
		}
	}
	return nil
}

func (l *Layer) emptyForward() (*saved, error) {
	mode := l.Mode()
	if l.cfg.sync == nil || !mode.usesBatchStats(l.cfg.track) {
		return nil, nil
	}
	C, nseg := l.c, l.groups
	if l.cfg.ghost > 0 {
		return nil, fmt.Errorf("%w: EmptyStep does not support ghost layers (%s): the ghost groups of the global batch depend on every rank's batch size", ErrOption, l.cfg.name)
	}
	s := &saved{}
	s.sm.Resize(nseg)
	for i := range nseg {
		s.sm.Norm[i], s.sm.Stat[i], s.sm.Aff[i] = i, min(i, l.groups-1), 0
	}
	moms, err := l.cfg.sync.reduceMoments(l, make([]kern.Moments, nseg*C), nseg, C, 0, 0)
	if err != nil {
		return nil, err
	}
	s.resize(nseg, C)
	s.sums = make([][2]float64, nseg*C)
	if err := l.batchStats(s, moms, C, mode, nil); err != nil {
		return nil, err
	}
	return s, nil
}
