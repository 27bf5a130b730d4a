package bn

// SyncBN: batch statistics over the union of the mini-batches of every rank
// of a communicator group.
//
// Forward: every rank computes the moments (n, mean, M2) of its own samples
// per segment and channel; one all-reduce whose operator is Chan's merge
// (collective.Moments) gives every rank the moments of the union — O(C)
// values per rank whatever the number of ranks, merged in an order fixed by
// the communicator, so the statistics, the outputs' normalization and the
// running statistics are bitwise equal everywhere. Backward: the two
// per-channel sums Σdy and Σdy·(x−μ) are all-reduced (SUM) in one
// collective; dγ and dβ stay local (the data-parallel gradient reduction
// sums them once). Eval and frozen modes do
// no communication.
//
// Ghost layers normalize over the ghost groups of the concatenated global
// batch; their first forward (per op: Gorgonia batch sizes are fixed per
// graph) also all-gathers the batch sizes to place each rank's samples.
//
// Layers are matched across ranks by an explicit key (WithSyncKey, or the
// layer's name), never by the order they are created in. Every payload
// carries a small header (key hash, channels, segments, step, batch size
// and offset, mode, segment-map hash) that every rank checks (in the
// forward as moment triples of the same all-reduce: see hdrTriples), so
// ranks that disagree — another layer at this point, other channel counts,
// one rank updating the running statistics and another not, domain layers
// with other switches — get ErrSync instead of wrong numbers. A wait that ends
// at the sync timeout says which layer, step and collective it waited in,
// which ranks had arrived where the communicator knows, and the likely
// causes. A rank with an empty batch still takes part (EmptyStep); a
// global count of 1 in training is ErrTooFewValues on every rank, a global
// count of 0 leaves the running statistics untouched.

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"math"
	"sync"
	"time"

	"github.com/gorgonia-bn/bn/collective"
	"github.com/gorgonia-bn/bn/internal/kern"
	"gorgonia.org/tensor"
)

// DefaultSyncTimeout bounds every collective of a synchronized layer unless
// WithSyncTimeout says otherwise.
const DefaultSyncTimeout = 5 * time.Minute

// WithCommunicator synchronizes the layer's batch statistics across the
// ranks of comm (SyncBN). Layers are matched across ranks by their key (see
// WithSyncKey), which a synchronized layer must have: WithName or
// WithSyncKey. Creating a layer costs no communication and creating one on
// a single rank (a validation graph, a graph rebuilt for a last partial
// batch) changes nothing for the others; only applying it in a mode that
// uses batch statistics makes it communicate.
func WithCommunicator(comm collective.Communicator) Option {
	return func(c *config) error {
		if comm == nil {
			return fmt.Errorf("%w: nil communicator", ErrOption)
		}
		if c.sync == nil {
			c.sync = &syncConfig{}
		}
		c.sync.comm = comm
		return nil
	}
}

// WithSyncKey sets the key that matches a synchronized layer with its peers
// on the other ranks (default: the layer's name, WithName). Every
// collective carries a hash of the key, and ranks whose keys differ — a
// layer applied on one rank only, layers applied in another order — get
// ErrSync naming both layers instead of mixing their statistics. Layers
// with equal keys on one communicator are the same layer as far as
// matching goes (a layer rebuilt in a new graph keeps its key); give
// distinct layers distinct keys. The key must not be empty.
func WithSyncKey(key string) Option {
	return func(c *config) error {
		if key == "" {
			return fmt.Errorf("%w: empty sync key", ErrOption)
		}
		if c.sync == nil {
			c.sync = &syncConfig{}
		}
		c.sync.key = key
		return nil
	}
}

// WithSyncTimeout bounds each collective of a synchronized layer (default
// DefaultSyncTimeout); when it passes the forward or backward fails with an
// error that says what it waited for, instead of waiting forever for a
// rank that never comes.
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

// SyncKey returns the key that matches a synchronized layer across ranks
// (see WithSyncKey), or "" for a layer that is not synchronized.
func (l *Layer) SyncKey() string {
	if l.cfg.sync == nil {
		return ""
	}
	return l.cfg.sync.key
}

// syncConfig is the synchronization of one layer.
type syncConfig struct {
	comm    collective.Communicator
	timeout time.Duration
	base    context.Context
	key     string  // matches the layer across ranks
	hash    float64 // keyHash(key)

	send, recv []float64
	hdr        [headerLen]float64 // this rank's forward header
	cfgHash    float64            // the layer's config hash (config.hash), computed once
	merged     []kern.Moments
}

// setup validates the synchronization options of a layer named name
// (explicit: given by WithName) and fixes its key.
func (sc *syncConfig) setup(name string, explicit bool) error {
	if sc.comm == nil {
		what := "WithSyncTimeout"
		if sc.key != "" {
			what = "WithSyncKey"
		}
		return fmt.Errorf("%w: %s without WithCommunicator", ErrOption, what)
	}
	if sc.timeout == 0 {
		sc.timeout = DefaultSyncTimeout
	}
	if sc.key == "" && explicit {
		sc.key = name
	}
	if sc.key == "" {
		return fmt.Errorf("%w: a synchronized layer needs a key that is the same on every rank, to match it with its peers: give it WithName or WithSyncKey (layers are matched by key, not by the order they are created in)", ErrOption)
	}
	sc.hash = keyHash(sc.key)
	return nil
}

// keyHash maps a sync key to an integer below 2⁵² (exact in a float64
// header) and remembers the key for error messages.
func keyHash(key string) float64 {
	h := fnv.New64a()
	h.Write([]byte(key))
	v := float64(h.Sum64() % hashBelow)
	keyNames.LoadOrStore(v, key)
	return v
}

// keyNames maps the key hashes this process has seen to their keys, to
// name the layer another rank is at when the keys disagree.
var keyNames sync.Map

// describeKey names the layer of key hash v for an error message.
func describeKey(v float64) string {
	if k, ok := keyNames.Load(v); ok {
		return fmt.Sprintf("the layer or shuffle of key %q", k)
	}
	return fmt.Sprintf("a layer or shuffle whose key this process does not know (key hash %.0f)", v)
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
	headerLen   = 11         // forward: tag, key hash, C, segments, step, N, offset, mode, update, segment-map hash, config hash
	sumsHeader  = 5          // backward: 1, k, k², C, C² (k: a 16-bit key hash)
	ghostHeader = 1          // header-only exchange for ghost layers
)

// The forward's header travels as moment triples in the same Moments
// all-reduce as the statistics, so that checking it costs no collective.
// A value every rank must agree on goes as (1, v, 0): the merge of K such
// triples is (K, v, 0) bit for bit if they all equal v, and has M2 > 0 if
// any differs (two unequal integers below 2⁵² differ by ≥ 1, and M2 never
// decreases along a merge). An integer to be summed over the ranks goes as
// (v, 0, 0): counts add exactly. Only when a check fails (every rank sees
// the same merged bits, so all of them) do the ranks all-gather their
// headers to say which rank differs and how.
const (
	hdrTriples = 11 // tag, key hash, C, segments, step, update, segment-map hash, config hash; ΣN, Σoffset, ΣN·(K−1−r)
	hdrEqual   = 8  // the first hdrEqual triples must agree on every rank
)

// reduceMoments reduces the local moments (nseg·C) to the global ones with
// one Moments all-reduce and returns them.
//
// N and off are the local batch size and, for ghost layers, the offset of
// this rank's samples in the global batch; ghost layers check that the
// ranks' batches tile the global batch in rank order.
func (sc *syncConfig) reduceMoments(l *Layer, moms []kern.Moments, sm *segMap, C, N, off int, mode Mode) ([]kern.Moments, error) {
	nseg := len(sm.Norm)
	ctx, cancel := sc.context()
	defer cancel()
	K, me := sc.comm.Size(), sc.comm.Rank()
	step := float64(l.calls)
	sc.hdr = [headerLen]float64{tagForward, sc.hash, float64(C), float64(nseg), step, float64(N), float64(off), float64(mode), updates(l, mode), segMapHash(sm), sc.configHash(l)}
	h := &sc.hdr
	n := 3 * (hdrTriples + nseg*C)
	sc.send = grow(sc.send, n)
	p := sc.send
	for i, v := range [hdrEqual]float64{h[0], h[1], h[2], h[3], h[4], h[8], h[9], h[10]} {
		p[3*i], p[3*i+1], p[3*i+2] = 1, v, 0
	}
	for i, v := range [hdrTriples - hdrEqual]float64{float64(N), float64(off), float64(N * (K - 1 - me))} {
		j := 3 * (hdrEqual + i)
		p[j], p[j+1], p[j+2] = v, 0, 0
	}
	p = p[3*hdrTriples:]
	for i, m := range moms[:nseg*C] {
		p[3*i], p[3*i+1], p[3*i+2] = m.N, m.Mean, m.M2
	}
	if err := sc.comm.AllReduce(ctx, collective.Float64s(sc.send), collective.Moments); err != nil {
		return nil, sc.fail(l, "forward", step, err)
	}
	q := sc.send
	agree := true
	for i, v := range [hdrEqual]float64{h[0], h[1], h[2], h[3], h[4], h[8], h[9], h[10]} {
		agree = agree && q[3*i] == float64(K) && q[3*i+1] == v && q[3*i+2] == 0
	}
	// Ranks whose batches tile the global batch in rank order, off_r =
	// Σ_{s<r} N_s, have Σ_r off_r = Σ_s N_s·(K−1−s) (exact integer sums).
	if sumOff, wantOff := q[3*hdrEqual+3], q[3*hdrEqual+6]; l.cfg.ghost > 0 && sumOff != wantOff {
		agree = false
	}
	if !agree {
		return nil, sc.diagnose(ctx, l, C, nseg, step)
	}
	sc.merged = grow(sc.merged, nseg*C)
	q = q[3*hdrTriples:]
	for i := range sc.merged {
		sc.merged[i] = kern.Moments{N: q[3*i], Mean: q[3*i+1], M2: q[3*i+2]}
	}
	return sc.merged, nil
}

// diagnose runs after a forward whose merged header shows that the ranks
// disagree (every rank sees it, from the same bits): the ranks all-gather
// their headers and each finds which rank differs and how. It always
// returns an error wrapping ErrSync.
func (sc *syncConfig) diagnose(ctx context.Context, l *Layer, C, nseg int, step float64) error {
	K := sc.comm.Size()
	sc.recv = grow(sc.recv, K*headerLen)
	if err := sc.comm.AllGather(ctx, collective.Float64s(sc.hdr[:]), collective.Float64s(sc.recv), nil); err != nil {
		return sc.fail(l, "forward (diagnosing a header mismatch)", step, err)
	}
	sum := 0.0
	for r := range K {
		q := sc.recv[r*headerLen : (r+1)*headerLen]
		if err := sc.checkHeader(l, q, r, C, nseg, step, tagForward); err != nil {
			return err
		}
		if l.cfg.ghost > 0 && q[6] != sum {
			return fmt.Errorf("%w: ghost layer %q: rank %d places its batch at offset %v of the global batch, but the ranks before it hold %v samples: the per-rank batch sizes changed since this op's first run (use one graph per batch size on every rank)", ErrSync, sc.key, r, q[6], sum)
		}
		sum += q[5]
	}
	return fmt.Errorf("%w: layer %q (%d channels, %d segments, step %v) on rank %d: the merged forward headers show that the ranks disagree, but the gathered headers do not say how", ErrSync, sc.key, C, nseg, step, sc.comm.Rank())
}

// ghostOffsets exchanges the local batch sizes of a ghost layer and
// returns this rank's offset in the concatenated global batch and its size,
// so that ghost groups are those of the concatenated batch.
func (sc *syncConfig) ghostOffsets(l *Layer, N, C int, mode Mode) (off, total int, err error) {
	ctx, cancel := sc.context()
	defer cancel()
	K := sc.comm.Size()
	step := float64(l.calls)
	sc.hdr = [headerLen]float64{tagForward + ghostHeader, sc.hash, float64(C), -1, step, float64(N), -1, float64(mode), updates(l, mode), 0, sc.configHash(l)}
	sc.recv = grow(sc.recv, K*headerLen)
	if err := sc.comm.AllGather(ctx, collective.Float64s(sc.hdr[:]), collective.Float64s(sc.recv), nil); err != nil {
		return 0, 0, sc.fail(l, "ghost placement", step, err)
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
	if h[0] != float64(tag) || h[1] != sc.hash || h[2] != float64(C) || (nseg >= 0 && h[3] != float64(nseg)) || h[4] != step || h[8] != sc.hdr[8] || h[9] != sc.hdr[9] || h[10] != sc.hdr[10] {
		what := "ranks must apply the same synchronized layers in the same order, in modes that use batch statistics"
		switch {
		case h[0] != float64(tag):
			what = fmt.Sprintf("rank %d is in another exchange (tag %#x, this rank %#x): a ghost layer's batch sizes changed on some ranks, or the ranks run different graphs", r, int(h[0]), tag)
		case h[1] != sc.hash:
			what = fmt.Sprintf("rank %d is at %s: the ranks apply different synchronized layers here (a layer applied on some ranks only, or in another order)", r, describeKey(h[1]))
		case h[2] != float64(C):
			what = fmt.Sprintf("rank %d's layer has %v channels", r, h[2])
		case nseg >= 0 && h[3] != float64(nseg):
			what = fmt.Sprintf("rank %d has %v segments (domain layers whose options differ between ranks?)", r, h[3])
		case h[10] != sc.hdr[10]:
			what = fmt.Sprintf("rank %d's layer has other statistics options (ε, momentum or cumulative average, running-statistics tracking, Batch Renormalization limits): the ranks would normalize differently or their running statistics would part (create the layer with the same options on every rank)", r)
		case h[9] != sc.hdr[9]:
			what = fmt.Sprintf("rank %d maps its segments to other normalization sets, statistics groups or γ/β groups (domain layers whose switches differ between ranks?)", r)
		case h[8] != sc.hdr[8]:
			what = fmt.Sprintf("rank %d's layer is in mode %v, this rank's in mode %v: only some ranks would update the running statistics, which would then differ between ranks (set the same mode on every rank)", r, Mode(h[7]), Mode(sc.hdr[7]))
		case h[4] != step:
			what = fmt.Sprintf("rank %d is at step %v of this layer: a rank ran this layer with batch statistics more often (a forward in Train on one rank only, or EmptyStep not called for every step)", r, h[4])
		}
		return fmt.Errorf("%w: layer %q (%d channels, %d segments, step %v) on rank %d: %s",
			ErrSync, sc.key, C, nseg, step, sc.comm.Rank(), what)
	}
	return nil
}

// hash returns a hash of the map below 2⁵² (exact in a float64 header).
func segMapHash(m *segMap) float64 {
	h := fnv.New64a()
	var b [8]byte
	for _, v := range [][]int{m.Norm, m.Stat, m.Aff} {
		for _, x := range v {
			binary.LittleEndian.PutUint64(b[:], uint64(x))
			h.Write(b[:])
		}
		h.Write([]byte{0xff})
	}
	return float64(h.Sum64() % hashBelow)
}

// configHash returns l's config hash, computed on first use (the options
// are fixed once the layer exists).
func (sc *syncConfig) configHash(l *Layer) float64 {
	if sc.cfgHash == 0 {
		sc.cfgHash = l.cfg.hash() + 1
	}
	return sc.cfgHash
}

// hash returns a hash below 2⁵² (exact in a float64 header) of the options
// that make the ranks' outputs or running statistics differ if they differ
// between ranks: ε, momentum or cumulative average, tracking, and Batch
// Renormalization's limits and schedule.
func (c *config) hash() float64 {
	h := fnv.New64a()
	var b [8]byte
	put := func(v float64) {
		binary.LittleEndian.PutUint64(b[:], math.Float64bits(v))
		h.Write(b[:])
	}
	flag := func(on bool) float64 {
		if on {
			return 1
		}
		return 0
	}
	put(c.eps)
	put(c.momentum)
	put(flag(c.cumulative))
	put(flag(c.track))
	if r := c.renorm; r != nil {
		for _, v := range []float64{r.RMax, r.DMax, float64(r.Warmup), float64(r.RMaxRamp), float64(r.DMaxRamp)} {
			put(v)
		}
	}
	return float64(h.Sum64() % hashBelow)
}

// updates is 1 when a forward of l in mode m folds the batch into the
// running statistics, 0 otherwise: ranks must agree on it, or their running
// statistics part.
func updates(l *Layer, m Mode) float64 {
	if m == Train && l.cfg.track {
		return 1
	}
	return 0
}

// reduceSums all-reduces (SUM) the per-segment backward sums, with a header
// of (1, k, k², channels, channels²), k a 16-bit hash of the key, whose
// sums prove every rank sent the same layer (and stay exact integers below
// 2⁵³ for up to 2²⁰ ranks).
func (sc *syncConfig) reduceSums(l *Layer, s *saved) error {
	ctx, cancel := sc.context()
	defer cancel()
	C := l.c
	k := s.nseg * C
	n := sumsHeader + 2*k
	sc.send = grow(sc.send, n)
	idx, c := float64(uint64(sc.hash)%(1<<16)+1), float64(C)
	copy(sc.send, []float64{1, idx, idx * idx, c, c * c})
	for i, v := range s.sums[:k] {
		sc.send[sumsHeader+2*i], sc.send[sumsHeader+2*i+1] = v[0], v[1]
	}
	step := float64(l.calls) - 1 // the step of the forward this backward follows
	if err := sc.comm.AllReduce(ctx, collective.Float64s(sc.send), collective.Sum); err != nil {
		return sc.fail(l, "backward", step, err)
	}
	K := sc.send[0]
	h := sc.send[:sumsHeader]
	// Σa = K·m and Σa² = K·m² hold only if every a equals m.
	if K != float64(sc.comm.Size()) || h[1] != K*idx || h[2] != K*idx*idx || h[3] != K*c || h[4] != K*c*c {
		return fmt.Errorf("%w: layer %q backward: ranks disagree on the layer or its channel count (header sums %v on rank %d): ranks must run the same synchronized layers in the same order", ErrSync, sc.key, h, sc.comm.Rank())
	}
	for i := range s.sums[:k] {
		s.sums[i] = [2]float64{sc.send[sumsHeader+2*i], sc.send[sumsHeader+2*i+1]}
	}
	return nil
}

// fail wraps the error of a collective of the layer with what this rank
// waited for and, when it waited in vain, the likely causes.
func (sc *syncConfig) fail(l *Layer, what string, step float64, err error) error {
	return fmt.Errorf("%w: layer %q %s (step %v) on rank %d%s: %w", ErrSync, sc.key, what, step, sc.comm.Rank(), stallDiagnosis(err, sc.timeout), err)
}

// stallDiagnosis says, for the error of a collective whose wait for the
// other ranks ran past the sync timeout, which ranks had arrived and why
// the others may not have; "" for other errors.
func stallDiagnosis(err error, timeout time.Duration) string {
	var st *collective.StallError
	if !errors.As(err, &st) || !errors.Is(err, context.DeadlineExceeded) {
		return ""
	}
	who := "which ranks had arrived is unknown with this communicator"
	if st.Joined != nil {
		who = fmt.Sprintf("ranks %v had arrived, ranks %v had not", st.Joined, st.Missing())
	}
	return fmt.Sprintf(": no answer within the sync timeout (%v): %s. Likely causes: a rank whose layer is in Eval or Frozen mode (they do not communicate), a rank that stopped, crashed or is still busy, a synchronized layer or shuffle applied on some ranks only, or a rank without samples that did not call EmptyStep", timeout, who)
}

// EmptyStep lets a rank that has no samples in this step take part in the
// collectives of its synchronized layers, which the other ranks wait for:
// Gorgonia cannot hold a tensor with a zero-length batch, so such a rank
// calls EmptyStep instead of running its graph. It runs each layer's
// forward, in the order given (the order the graph applies them), on an
// empty batch — the code path of a rank with data, with zero counts — so
// it folds the global statistics into its running statistics exactly as
// the other ranks do (they stay bitwise equal), and, if backward is set,
// contributes zero sums to each backward, in reverse order. Layers whose
// mode uses running statistics are skipped, as their ops would be. A layer
// applied with ApplySegmented (package domainbn) asks the segmenter of its
// last application for the segments of an empty batch. Layers that are not
// synchronized, nil layers, and ghost layers (whose groups depend on every
// rank's batch size) are an error (ErrOption) before anything is sent.
func EmptyStep(layers []*Layer, backward bool) error {
	for i, l := range layers {
		switch {
		case l == nil:
			return fmt.Errorf("%w: EmptyStep: layer %d is nil", ErrOption, i)
		case l.cfg.sync == nil:
			return fmt.Errorf("%w: EmptyStep: layer %s is not synchronized (no WithCommunicator): there is nobody to take part with", ErrOption, l.cfg.name)
		case l.cfg.ghost > 0:
			return fmt.Errorf("%w: EmptyStep does not support ghost layers (%s): the ghost groups of the global batch depend on every rank's batch size", ErrOption, l.cfg.name)
		case l.groups > 1 && l.lastSeg() == nil:
			return fmt.Errorf("%w: EmptyStep: layer %s has %d statistics groups but was never applied with a segmenter (a domainbn layer's Apply): apply it in this rank's graph first", ErrOption, l.cfg.name, l.groups)
		}
	}
	ops := make([]*fwdOp, len(layers))
	for i, l := range layers {
		op := &fwdOp{l: l, seg: l.lastSeg()}
		if err := op.emptyForward(); err != nil {
			return err
		}
		ops[i] = op
	}
	if !backward {
		return nil
	}
	for i := len(ops) - 1; i >= 0; i-- {
		op := ops[i]
		if !op.s.batch {
			continue
		}
		op.s.sums = grow(op.s.sums, op.s.nseg*op.l.c)
		clear(op.s.sums)
		if err := op.l.cfg.sync.reduceSums(op.l, &op.s); err != nil {
			return err
		}
	}
	return nil
}

// lastSeg returns the segmenter of the layer's last ApplySegmented, or nil.
func (l *Layer) lastSeg() segmenter {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.seg
}

// emptyForward is the forward of op on a batch of no samples: the host
// steps of every forward (begin, statistics) with zero moments and no
// device passes.
func (op *fwdOp) emptyForward() error {
	if _, err := op.begin(tensor.Shape{0, op.l.c}); err != nil {
		return err
	}
	if !op.s.batch {
		return nil
	}
	clear(op.s.moms)
	return op.statistics(nil)
}
