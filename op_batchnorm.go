package bn

import (
	"fmt"
	"hash"
	"hash/fnv"
	"math"
	"sync"
	"sync/atomic"
	"weak"

	"github.com/chewxy/hm"
	"github.com/gorgonia-bn/bn/internal/engine"
	"github.com/gorgonia-bn/bn/internal/kern"
	_ "go4.org/unsafe/assume-no-moving-gc" // Gorgonia v0.9.18 panics at start-up on Go ≥ 1.22 without it.
	"gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// Mode selects the statistics a layer normalizes with. It can be switched
// at any time with SetMode; switching never touches the running statistics.
type Mode int

const (
	// Train normalizes with the statistics of the mini-batch and updates the
	// running statistics.
	Train Mode = iota
	// Eval normalizes with the running statistics.
	Eval
	// EvalBatchStats normalizes with the statistics of the mini-batch, at
	// inference: the running statistics are not updated.
	EvalBatchStats
	// Frozen normalizes with the running statistics during training: the
	// gradient is dx = γ·dy/√(running var+ε), γ and β stay trainable, the
	// running statistics are not updated.
	Frozen
)

// String returns the mode's name.
func (m Mode) String() string {
	switch m {
	case Train:
		return "train"
	case Eval:
		return "eval"
	case EvalBatchStats:
		return "eval-batch-stats"
	case Frozen:
		return "frozen"
	}
	return fmt.Sprintf("Mode(%d)", int(m))
}

// usesBatchStats reports whether a forward in mode m normalizes with batch
// statistics; without running statistics every mode does (as in PyTorch).
func (m Mode) usesBatchStats(track bool) bool {
	return m == Train || m == EvalBatchStats || !track
}

// Option configures a Layer. Options are validated by New: an invalid
// value, a nil Option or options that contradict each other are ErrOption.
// An option given twice takes the last value.
type Option func(*config) error

type config struct {
	eps, momentum float64
	momentumSet   bool // WithMomentum was given
	cumulative    bool
	affine, track bool
	ghost         int
	name          string
	autoName      bool // name made up by New (no WithName): not a sync key
	reuse         bool
	channelsLast  bool // WithChannelsLast (layout.go)
	sync          *syncConfig
	renorm        *RenormConfig // WithRenorm (renorm.go)
}

func defaults() config {
	return config{eps: 1e-5, momentum: 0.1, affine: true, track: true}
}

// WithEps sets ε, added to the variance for numerical stability (default
// 1e-5). It must be positive and finite.
func WithEps(eps float64) Option {
	return func(c *config) error {
		if !(eps > 0) || math.IsInf(eps, 0) {
			return fmt.Errorf("%w: eps must be positive and finite, got %v", ErrOption, eps)
		}
		c.eps = eps
		return nil
	}
}

// WithMomentum sets the weight of the new batch in the exponential moving
// average of the running statistics, r ← (1−m)·r + m·batch (default 0.1,
// PyTorch's convention). It must lie in [0, 1]. It contradicts
// WithCumulativeAverage: both together, in either order, are ErrOption.
func WithMomentum(m float64) Option {
	return func(c *config) error {
		if !(m >= 0 && m <= 1) {
			return fmt.Errorf("%w: momentum must be in [0,1], got %v", ErrOption, m)
		}
		if c.cumulative {
			return errMomentumAndCumulative
		}
		c.momentum, c.momentumSet = m, true
		return nil
	}
}

// WithCumulativeAverage makes the running statistics the plain average of
// the statistics of every training batch so far (PyTorch's momentum=None):
// the t-th batch is folded in with weight 1/t. It contradicts WithMomentum:
// both together, in either order, are ErrOption.
func WithCumulativeAverage() Option {
	return func(c *config) error {
		if c.momentumSet {
			return errMomentumAndCumulative
		}
		c.cumulative = true
		return nil
	}
}

var errMomentumAndCumulative = fmt.Errorf("%w: WithMomentum and WithCumulativeAverage contradict each other: the running statistics are either an exponential moving average with that momentum or the cumulative average of every batch; give one", ErrOption)

// WithAffine turns the learned per-channel scale γ and shift β on or off
// (default on). Without them y = x̂.
func WithAffine(on bool) Option {
	return func(c *config) error { c.affine = on; return nil }
}

// WithTrackRunningStats turns the running statistics on or off (default
// on). Without them every mode normalizes with batch statistics, as in
// PyTorch.
func WithTrackRunningStats(on bool) Option {
	return func(c *config) error { c.track = on; return nil }
}

// WithGhostBatch normalizes with the statistics of groups of size samples
// (ghost batch normalization, Hoffer et al. 2017): samples [0,size) form the
// first group, [size,2·size) the second, …; the last group may be smaller.
// The running statistics are updated once per call, from the union of all
// groups. size must be ≥ 1; 0 turns ghost batches off.
func WithGhostBatch(size int) Option {
	return func(c *config) error {
		if size < 0 {
			return fmt.Errorf("%w: ghost batch size must be ≥ 1 (or 0 for off), got %d", ErrOption, size)
		}
		c.ghost = size
		return nil
	}
}

// WithName names the layer; it prefixes the names of γ and β.
func WithName(name string) Option {
	return func(c *config) error { c.name = name; return nil }
}

// WithOutputReuse makes the layer's ops write every run's outputs (y, and
// in the backward dx and [dγ ; dβ]) into the tensors of their previous run
// instead of new ones (default off). Gorgonia's machines hand every op a new
// output on every run; on small tensors allocating it — fresh memory, page
// faults, garbage collection — costs more than the batch normalization
// itself (measured 2–3× the whole forward of a 1 MB input; see README).
// The price: a value of a previous run that is still held (y.Value(),
// gorgonia.Read) is overwritten by the next run, so copy what you keep.
func WithOutputReuse(on bool) Option {
	return func(c *config) error { c.reuse = on; return nil }
}

// output returns a tensor of the layer's dtype and
// the given shape for an op's result: a new one, or with WithOutputReuse
// the one *keep holds when it still fits (a later op may have reshaped it
// in place or turned it into a view; then a new one is kept).
func (l *Layer) output(keep *tensor.Tensor, shape tensor.Shape) tensor.Tensor {
	if l.cfg.reuse {
		if d, ok := (*keep).(*tensor.Dense); ok && d.Dtype() == l.dt && !d.IsView() && !d.RequiresIterator() &&
			d.Shape().Eq(shape) && d.DataSize() == shape.TotalSize() {
			return d
		}
	}
	t := tensor.New(tensor.Of(l.dt), tensor.WithShape(shape.Clone()...))
	if l.cfg.reuse {
		*keep = t
	}
	return t
}

var layerIDs atomic.Uint64

// Layer is a batch-normalization layer: it owns the learned per-channel γ
// (ones) and β (zeros) as graph nodes, the running mean (zeros) and variance
// (ones) as float64, the count of batches tracked, and the mode. Create it
// once per layer with New and call Apply on each input.
//
// The running statistics and the mode are read and written when the graph
// runs (by the forward op), so they can be changed between runs without
// rebuilding the graph. A Layer may be applied to several inputs (weight
// sharing); each application has its own op and saved statistics.
type Layer struct {
	g     *gorgonia.ExprGraph
	id    uint64
	c     int
	dt    tensor.Dtype
	cfg   config
	gamma *gorgonia.Node
	beta  *gorgonia.Node
	// groups is the number of sets of running statistics (domains); 1 for
	// plain batch norm. affGroups is the number of sets of γ/β: 1 or groups.
	groups, affGroups int

	// The state below is shared by the layer's copies in other graphs
	// (In): one owner, updated once per forward whichever graph runs.
	*layerState
}

// layerState is what a layer and its copies in other graphs (In) share.
type layerState struct {
	mu      sync.Mutex
	mode    Mode
	rmean   []float64 // groups·C
	rvar    []float64 // groups·C
	tracked []int64   // per group
	calls   uint64    // forward calls with batch statistics, for SyncBN's header
	obs     observer  // PreciseBN's collector, when active
	seg     segmenter // of the last ApplySegmented, for EmptyStep
	per     []kern.Moments
	family  []weak.Pointer[Layer] // the layer and its copies, for Sync (mu held)
}

// observer receives the merged batch moments (per group·C) of every forward
// that uses batch statistics.
type observer interface {
	observe(l *Layer, moms []kern.Moments)
}

// New creates a layer for inputs with the given number of channels and
// element type (tensor.Float32 or tensor.Float64) in graph g. channels must
// lie in [1, MaxChannels].
func New(g *gorgonia.ExprGraph, channels int, dt tensor.Dtype, opts ...Option) (*Layer, error) {
	return newLayer(g, channels, dt, 1, false, opts)
}

// newGrouped creates a layer with groups sets of running statistics and, if
// perGroupAffine, γ and β of shape (groups, C) instead of (C). It is applied
// with applySegmented, whose segmenter maps the samples of each batch to
// groups. It is the engine of package domainbn (engine.Funcs.NewGrouped).
// groups·channels must not exceed MaxChannels.
func newGrouped(g *gorgonia.ExprGraph, channels int, dt tensor.Dtype, groups int, perGroupAffine bool, opts ...Option) (*Layer, error) {
	if groups < 1 || groups > MaxChannels {
		return nil, fmt.Errorf("%w: groups must be in [1, %d], got %d", ErrOption, MaxChannels, groups)
	}
	return newLayer(g, channels, dt, groups, perGroupAffine, opts)
}

// MaxChannels bounds the channels of a layer (times its groups for a
// grouped layer, as package domainbn makes): a larger count is surely a mistake (a flattened feature size
// passed as channels, say), whose per-channel state would not fit in memory.
const MaxChannels = 1 << 24

// Groups returns the number of sets of running statistics: 1, or the number
// of statistics groups of a domain layer (package domainbn), whose
// RunningStats hold Groups()·Channels() values, group by group.
func (l *Layer) Groups() int { return l.groups }

// applySegmented is Apply with the samples of each batch assigned to
// segments by seg when the graph runs (see engine.segmenter).
func (l *Layer) applySegmented(x *gorgonia.Node, seg segmenter) (*gorgonia.Node, error) {
	if l == nil {
		return nil, fmt.Errorf("%w: ApplySegmented on a nil *Layer", ErrOption)
	}
	if isNil(seg) { // a nil pointer's Segments would panic when the graph runs
		return nil, fmt.Errorf("%w: nil segmenter", ErrOption)
	}
	if l.cfg.ghost > 0 {
		return nil, fmt.Errorf("%w: ghost batches cannot be combined with a segmenter", ErrOption)
	}
	return l.apply(x, seg)
}

// trackedGroups returns the number of training batches folded into each
// group's running statistics.
func (l *Layer) trackedGroups() []int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]int64(nil), l.tracked...)
}

func newLayer(g *gorgonia.ExprGraph, channels int, dt tensor.Dtype, groups int, affPerGroup bool, opts []Option) (*Layer, error) {
	if g == nil {
		return nil, fmt.Errorf("%w: nil graph", ErrOption)
	}
	if channels < 1 || channels > MaxChannels/groups {
		per := ""
		if groups > 1 {
			per = fmt.Sprintf(" with %d groups", groups)
		}
		return nil, fmt.Errorf("%w: channels must be in [1, %d]%s, got %d", ErrShape, MaxChannels/groups, per, channels)
	}
	if dt != tensor.Float32 && dt != tensor.Float64 {
		return nil, fmt.Errorf("%w: %v (want float32 or float64)", ErrDtype, dt)
	}
	cfg := defaults()
	for i, o := range opts {
		if o == nil {
			return nil, fmt.Errorf("%w: option %d of %d is nil", ErrOption, i, len(opts))
		}
		if err := o(&cfg); err != nil {
			return nil, err
		}
	}
	if err := cfg.checkRenorm(); err != nil {
		return nil, err
	}
	if cfg.sync != nil {
		sc := *cfg.sync // each layer its own buffers
		if err := sc.setup(cfg.name, cfg.name != ""); err != nil {
			return nil, err
		}
		cfg.sync = &sc
	}
	l := &Layer{g: g, id: layerIDs.Add(1), c: channels, dt: dt, cfg: cfg, groups: groups, affGroups: 1, layerState: &layerState{}}
	l.family = []weak.Pointer[Layer]{weak.Make(l)}
	if affPerGroup {
		l.affGroups = groups
	}
	if l.cfg.name == "" {
		l.cfg.name, l.cfg.autoName = fmt.Sprintf("bn%d", l.id), true
	}
	l.rmean = make([]float64, groups*channels)
	l.rvar = make([]float64, groups*channels)
	for i := range l.rvar {
		l.rvar[i] = 1
	}
	l.tracked = make([]int64, groups)
	if cfg.affine {
		shape := tensor.Shape{channels}
		if l.affGroups > 1 {
			shape = tensor.Shape{l.affGroups, channels}
		}
		l.gamma = gorgonia.NewTensor(g, dt, len(shape), gorgonia.WithShape(shape...), gorgonia.WithName(l.cfg.name+".gamma"), gorgonia.WithInit(gorgonia.Ones()))
		l.beta = gorgonia.NewTensor(g, dt, len(shape), gorgonia.WithShape(shape...), gorgonia.WithName(l.cfg.name+".beta"), gorgonia.WithInit(gorgonia.Zeroes()))
	}
	return l, nil
}

// Name returns the layer's name.
func (l *Layer) Name() string { return l.cfg.name }

// Channels returns the number of channels C.
func (l *Layer) Channels() int { return l.c }

// Dtype returns the element type of the layer's inputs.
func (l *Layer) Dtype() tensor.Dtype { return l.dt }

// Gamma returns the scale γ, a node of shape (C), or nil without affine.
func (l *Layer) Gamma() *gorgonia.Node { return l.gamma }

// Beta returns the shift β, a node of shape (C), or nil without affine.
func (l *Layer) Beta() *gorgonia.Node { return l.beta }

// Learnables returns the trainable nodes, γ and β (none without affine).
func (l *Layer) Learnables() gorgonia.Nodes {
	if l.gamma == nil {
		return nil
	}
	return gorgonia.Nodes{l.gamma, l.beta}
}

// Mode returns the current mode.
func (l *Layer) Mode() Mode {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.mode
}

// SetMode switches the mode; it takes effect at the next run of the graph.
func (l *Layer) SetMode(m Mode) error {
	if m < Train || m > Frozen {
		return fmt.Errorf("%w: unknown mode %d", ErrOption, int(m))
	}
	l.mu.Lock()
	l.mode = m
	l.mu.Unlock()
	return nil
}

// RunningStats returns copies of the running mean and (unbiased) variance,
// of length C (groups·C for a domain layer).
func (l *Layer) RunningStats() (mean, variance []float64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]float64(nil), l.rmean...), append([]float64(nil), l.rvar...)
}

// SetRunningStats replaces the running mean and variance. Both must have the
// length RunningStats returns, be finite, and the variances non-negative.
func (l *Layer) SetRunningStats(mean, variance []float64) error {
	if err := l.checkStats(mean, variance); err != nil {
		return err
	}
	l.mu.Lock()
	copy(l.rmean, mean)
	copy(l.rvar, variance)
	l.mu.Unlock()
	return nil
}

func (l *Layer) checkStats(mean, variance []float64) error {
	n := l.groups * l.c
	if len(mean) != n || len(variance) != n {
		return fmt.Errorf("%w: running statistics of length %d and %d, want %d", ErrState, len(mean), len(variance), n)
	}
	for i := range mean {
		if math.IsNaN(mean[i]) || math.IsInf(mean[i], 0) || !(variance[i] >= 0) || math.IsInf(variance[i], 0) {
			return fmt.Errorf("%w: running statistics of channel %d are not finite or the variance is negative (mean %v, var %v)", ErrState, i, mean[i], variance[i])
		}
	}
	return nil
}

// NumBatchesTracked returns the number of training batches folded into the
// running statistics (of the first group for a domain layer).
func (l *Layer) NumBatchesTracked() int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.tracked[0]
}

// ResetRunningStats sets the running mean to 0, the variance to 1 and the
// counter to 0.
func (l *Layer) ResetRunningStats() {
	l.mu.Lock()
	defer l.mu.Unlock()
	clear(l.rmean)
	for i := range l.rvar {
		l.rvar[i] = 1
	}
	clear(l.tracked)
}

// Apply returns the node y = BN(x) for x of shape (N, C, …) with 2 to 5
// dimensions (NCHW layout; (N, …, C) with WithChannelsLast), of the
// layer's element type.
func (l *Layer) Apply(x *gorgonia.Node) (*gorgonia.Node, error) {
	if l == nil {
		return nil, fmt.Errorf("%w: Apply on a nil *Layer", ErrOption)
	}
	return l.apply(x, nil)
}

func (l *Layer) apply(x *gorgonia.Node, seg segmenter) (*gorgonia.Node, error) {
	if x == nil {
		return nil, fmt.Errorf("%w: nil input", ErrShape)
	}
	if x.Graph() != l.g {
		return nil, fmt.Errorf("%w: input belongs to another graph", ErrShape)
	}
	if err := l.checkShape(x.Shape()); err != nil {
		return nil, err
	}
	if x.Dtype() != l.dt {
		return nil, fmt.Errorf("%w: input is %v, layer is %v", ErrDtype, x.Dtype(), l.dt)
	}
	op := &fwdOp{l: l, rank: x.Dims(), id: opIDs.Add(1), seg: seg}
	if seg != nil {
		l.mu.Lock()
		l.seg = seg
		l.mu.Unlock()
	}
	if l.gamma == nil {
		return gorgonia.ApplyOp(op, x)
	}
	return gorgonia.ApplyOp(op, x, l.gamma, l.beta)
}

func (l *Layer) checkShape(s tensor.Shape) error {
	if len(s) < 2 || len(s) > 5 {
		return fmt.Errorf("%w: input must have 2 to 5 dimensions (%s), got shape %v", ErrShape, l.axesName(), s)
	}
	if ax := l.channelAxis(len(s)); s[ax] != l.c {
		return l.channelMismatch(s, ax)
	}
	return nil
}

// segmenter and segMap are the grouped engine's (package internal/engine):
// a segmenter assigns the samples of each batch to segments and maps every
// segment to its normalization set, statistics group and γ/β group.
type (
	segmenter = engine.Segmenter
	segMap    = engine.SegmentMap
)

func init() {
	engine.Register(engine.Funcs[*Layer, Option]{
		NewGrouped:         newGrouped,
		ApplySegmented:     (*Layer).applySegmented,
		ApplySegmentedReLU: (*Layer).applySegmentedReLU,
		Tracked:            (*Layer).trackedGroups,
	})
}

// normIdentity reports whether every segment is its own normalization set.
func normIdentity(m *segMap) bool {
	for s, v := range m.Norm {
		if v != s {
			return false
		}
	}
	return true
}

var opIDs atomic.Uint64

// saved is what one forward leaves for its backward.
type saved struct {
	batch bool
	nseg  int
	cnt   []float64      // per segment: global count
	mean  []float64      // per segment·C
	inv   []float64      // per segment·C: 1/√(var+ε)
	gam   []float64      // per segment·C: γ (γ·r with Batch Renormalization)
	scale []float64      // per segment·C: γ·inv
	shift []float64      // per segment·C: β (β + γ·d with Batch Renormalization)
	ren   [][2]float64   // per segment·C: Batch Renormalization's (r, d); empty: none (renorm.go)
	sm    segMap         // per segment: normalization set, statistics and γ/β groups
	nm    []kern.Moments // per segment·C: moments of its normalization set
	nmBuf []kern.Moments
	gs    [][2]float64 // per segment·C: sums over its normalization set
	gsBuf [][2]float64
	moms  []kern.Moments // per segment·C
	sums  [][2]float64   // per segment·C: (Σdy, Σdy·(x−μ)), global after sync
	dgb   []float64      // [dγ ; dβ] of the local batch, per affine group·C
	aff   []float64      // [γ ; β] as float64 (empty: no affine parameters)
	mode  Mode           // the mode of the forward
	n     int            // local batch size
	off   int            // first local sample's index in the global batch (ghost SyncBN)
	seg   []int          // per sample
	rseg  []int          // per row of a channels-last input (layout.go)
	// ptrs to backward scratch
	a, b, c []float64
}

// goOp holds the methods of gorgonia.Op that every op of this package
// answers alike: computed in Go, into a new value, no input overwritten.
type goOp struct{}

func (goOp) ReturnsPtr() bool     { return false }
func (goOp) CallsExtern() bool    { return false }
func (goOp) OverwritesInput() int { return -1 }

// firstShape is InferShape for ops whose output has their first input's
// shape.
func firstShape(op gorgonia.Op, in []gorgonia.DimSizer) (tensor.Shape, error) {
	if len(in) != op.Arity() {
		return nil, fmt.Errorf("%w: %v takes %d inputs, got %d", ErrShape, op, op.Arity(), len(in))
	}
	s, ok := in[0].(tensor.Shape)
	if !ok {
		return nil, fmt.Errorf("%w: cannot infer the shape of %v", ErrShape, in[0])
	}
	return s.Clone(), nil
}

// fwdOp is the forward Gorgonia op of one application of a layer.
type fwdOp struct {
	goOp
	l    *Layer
	rank int
	id   uint64
	seg  segmenter

	plan any           // *kern.Plan[float32] or *kern.Plan[float64]
	out  tensor.Tensor // the last output (WithOutputReuse)
	//lint:ignore U1000 used by op_cuda.go (tags cuda, bncuda)
	dev any // *cudaState (CUDA builds): the op's device plan and buffers

	// SyncBN with ghost batches: this rank's place in the global batch.
	ghostKnown                   bool
	ghostN, ghostOff, ghostTotal int
	s                            saved
	done                         bool // a forward has run: the backward may use s
}

func (op *fwdOp) Arity() int {
	if op.l.gamma == nil {
		return 1
	}
	return 3
}

func (op *fwdOp) Type() hm.Type {
	a := hm.TypeVariable('a')
	x := gorgonia.TensorType{Dims: op.rank, Of: a}
	if op.l.gamma == nil {
		return hm.NewFnType(x, x)
	}
	p := gorgonia.TensorType{Dims: op.l.gamma.Dims(), Of: a}
	return hm.NewFnType(x, p, p, x)
}

func (op *fwdOp) InferShape(in ...gorgonia.DimSizer) (tensor.Shape, error) {
	if len(in) != op.Arity() {
		return nil, fmt.Errorf("%w: %v takes %d inputs, got %d", ErrShape, op, op.Arity(), len(in))
	}
	xs, ok := in[0].(tensor.Shape)
	if !ok {
		return nil, fmt.Errorf("%w: cannot infer the shape of %v", ErrShape, in[0])
	}
	if err := op.l.checkShape(xs); err != nil {
		return nil, err
	}
	if len(in) == 3 {
		want := op.l.gamma.Shape()
		for _, p := range in[1:] {
			ps, ok := p.(tensor.Shape)
			if !ok || !ps.Eq(want) {
				return nil, fmt.Errorf("%w: γ and β must have shape %v, got %v", ErrShape, want, p)
			}
		}
	}
	return xs.Clone(), nil
}

func (op *fwdOp) WriteHash(h hash.Hash) {
	fmt.Fprintf(h, "bn.BatchNorm/%d/%d", op.l.id, op.id)
}
func (op *fwdOp) Hashcode() uint32 { return hashOf(op) }
func (op *fwdOp) String() string   { return "BatchNorm(" + op.l.cfg.name + ")" }

func hashOf(op gorgonia.Op) uint32 {
	h := fnv.New32a()
	op.WriteHash(h)
	return h.Sum32()
}

// Do computes y = BN(x).
func (op *fwdOp) Do(in ...gorgonia.Value) (gorgonia.Value, error) {
	x, err := op.checkInputs(in)
	if err != nil {
		return nil, err
	}
	y := op.l.output(&op.out, x.Shape())
	if err := op.forward(in, y); err != nil {
		return nil, err
	}
	return y, nil
}

// UsePreallocDo computes y = BN(x) into prealloc, which must have x's shape
// and type.
func (op *fwdOp) UsePreallocDo(prealloc gorgonia.Value, in ...gorgonia.Value) (gorgonia.Value, error) {
	x, err := op.checkInputs(in)
	if err != nil {
		return nil, err
	}
	if err := checkLike(prealloc, x, "preallocated output"); err != nil {
		return nil, err
	}
	if err := op.forward(in, prealloc.(tensor.Tensor)); err != nil {
		return nil, err
	}
	return prealloc, nil
}

func checkLike(v gorgonia.Value, like tensor.Tensor, what string) error {
	return checkOut(v, like.Shape(), like.Dtype(), what)
}

// checkOut checks that v is a tensor of the given shape and type.
func checkOut(v gorgonia.Value, shape tensor.Shape, dt tensor.Dtype, what string) error {
	t, ok := v.(tensor.Tensor)
	if !ok || v.Dtype() != dt || !t.Shape().Eq(shape) {
		return fmt.Errorf("%w: %s is %T %v of %v, want %v of %v", ErrShape, what, v, v.Shape(), v.Dtype(), shape, dt)
	}
	return nil
}

func (op *fwdOp) checkInputs(in []gorgonia.Value) (tensor.Tensor, error) {
	if len(in) != op.Arity() {
		return nil, fmt.Errorf("%w: %v takes %d inputs, got %d", ErrShape, op, op.Arity(), len(in))
	}
	x, ok := in[0].(tensor.Tensor)
	if !ok {
		return nil, fmt.Errorf("%w: input is %T, want a tensor", ErrDtype, in[0])
	}
	if x.Dtype() != op.l.dt {
		return nil, fmt.Errorf("%w: input is %v, layer is %v", ErrDtype, x.Dtype(), op.l.dt)
	}
	if err := op.l.checkShape(x.Shape()); err != nil {
		return nil, err
	}
	if len(in) == 3 {
		for i, p := range in[1:] {
			if p.Dtype() != op.l.dt || !p.Shape().Eq(op.l.gamma.Shape()) {
				return nil, fmt.Errorf("%w: %s is %v of %v, want %v of %v", ErrShape, [2]string{"γ", "β"}[i], p.Shape(), p.Dtype(), op.l.gamma.Shape(), op.l.dt)
			}
		}
	}
	return x, nil
}

func (op *fwdOp) forward(in []gorgonia.Value, y tensor.Tensor) error {
	if op.l.dt == tensor.Float32 {
		return forward[float32](op, in, y)
	}
	return forward[float64](op, in, y)
}

// data returns the elements of v in row-major order.
func data[T kern.Float](v gorgonia.Value) ([]T, error) {
	t, ok := v.(tensor.Tensor)
	if !ok {
		return nil, fmt.Errorf("%w: %T is not a tensor", ErrDtype, v)
	}
	if d, ok := t.(*tensor.Dense); ok && d.RequiresIterator() {
		t = d.Materialize()
	}
	s, ok := t.Data().([]T)
	if !ok {
		return nil, fmt.Errorf("%w: %v", ErrDtype, t.Dtype())
	}
	return s, nil
}

func grow[E any](s []E, n int) []E {
	if cap(s) < n {
		return make([]E, n)
	}
	return s[:n]
}

func layoutOf(s tensor.Shape) (n, c, sp int) {
	sp = 1
	for _, d := range s[2:] {
		sp *= d
	}
	return s[0], s[1], sp
}

// planFor returns the op's plan for T and layout l, rebuilding it when the
// shape or segments changed.
func planFor[T kern.Float](op *fwdOp, l kern.Layout) *kern.Plan[T] {
	p, ok := op.plan.(*kern.Plan[T])
	if ok {
		pl := p.Layout()
		if pl.N == l.N && pl.C == l.C && pl.S == l.S {
			if pl.Segments() != l.Segments() || !equalInts(pl.Seg, l.Seg) {
				p.SetSegments(l.Seg, l.NSeg)
			}
			return p
		}
	}
	p = kern.NewPlan[T](l, 0)
	op.plan = p
	return p
}

func equalInts(a, b []int) bool {
	if len(a) != len(b) || (a == nil) != (b == nil) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// segments computes the op's segments for a batch of n samples into s.seg
// (nil for a single segment) and s.sm, and returns their number.
// For ghost layers, off and total place the n local samples in the global
// batch (a synchronized layer's concatenation of every rank's batch).
func (op *fwdOp) segments(n, off, total int) (seg []int, nseg int, err error) {
	s := &op.s
	switch {
	case op.seg != nil:
		s.seg = grow(s.seg, n)
		nseg, err = op.seg.Segments(n, s.seg, &s.sm)
		if err != nil {
			return nil, 0, err
		}
		if len(s.sm.Norm) != nseg || len(s.sm.Stat) != nseg || len(s.sm.Aff) != nseg {
			return nil, 0, fmt.Errorf("%w: segment map of %d/%d/%d entries for %d segments", ErrShape, len(s.sm.Norm), len(s.sm.Stat), len(s.sm.Aff), nseg)
		}
		for i, g := range s.seg {
			if g < 0 || g >= nseg {
				return nil, 0, fmt.Errorf("%w: sample %d in segment %d of %d", ErrShape, i, g, nseg)
			}
		}
		for i := range nseg {
			if s.sm.Norm[i] < 0 || s.sm.Norm[i] >= nseg || s.sm.Stat[i] < 0 || s.sm.Stat[i] >= op.l.groups || s.sm.Aff[i] < 0 || s.sm.Aff[i] >= op.l.affGroups {
				return nil, 0, fmt.Errorf("%w: segment %d maps to norm %d, stat %d, aff %d", ErrShape, i, s.sm.Norm[i], s.sm.Stat[i], s.sm.Aff[i])
			}
		}
		return s.seg, nseg, nil
	case op.l.cfg.ghost > 0 && op.l.cfg.ghost < total:
		s.seg = grow(s.seg, n)
		nseg = kern.GhostSegments(s.seg, op.l.cfg.ghost, off, total)
		s.sm.Resize(nseg)
		for i := range nseg {
			s.sm.Norm[i], s.sm.Stat[i], s.sm.Aff[i] = i, 0, 0
		}
		return s.seg, nseg, nil
	}
	s.sm.Resize(1)
	s.sm.Norm[0], s.sm.Stat[0], s.sm.Aff[0] = 0, 0, 0
	return nil, 1, nil
}

// The forward of one op, on any device, is four steps: begin (host: mode,
// segments, layout), the statistics pass over x (device: per-segment
// moments, only when batch statistics are used), statistics (host: the
// collective, μ, 1/σ, the running statistics, the per-segment scale and
// shift) and the apply pass (device: y = (x−μ)·scale + shift). The CPU path
// below and the CUDA path (op_cuda.go) run the same host steps.

func forward[T kern.Float](op *fwdOp, in []gorgonia.Value, yv tensor.Tensor) error {
	x, err := data[T](in[0])
	if err != nil {
		return err
	}
	y, err := data[T](yv)
	if err != nil {
		return err
	}
	if err := setAffine[T](op, in); err != nil {
		return err
	}
	lay, err := op.begin(in[0].Shape())
	if err != nil {
		return err
	}
	plan := planFor[T](op, lay)
	s := &op.s
	if s.batch {
		plan.Stats(x, s.moms)
	}
	if err := op.statistics(in[0].Shape()); err != nil {
		return err
	}
	plan.Apply(x, nil, y, s.mean, nil, s.scale, s.shift)
	op.done = true
	return nil
}

// setAffine copies γ and β (in[1], in[2]; none when the layer has no affine
// parameters) into s.aff as float64.
func setAffine[T kern.Float](op *fwdOp, in []gorgonia.Value) error {
	s := &op.s
	if len(in) != 3 {
		s.aff = s.aff[:0]
		return nil
	}
	gamma, err := data[T](in[1])
	if err != nil {
		return err
	}
	beta, err := data[T](in[2])
	if err != nil {
		return err
	}
	n := len(gamma)
	s.aff = grow(s.aff, 2*n)
	for i := range n {
		s.aff[i], s.aff[n+i] = float64(gamma[i]), float64(beta[i])
	}
	return nil
}

// begin starts a forward of an input of the given shape: it reads the mode,
// places a synchronized ghost layer's samples in the global batch, computes
// the segments and sizes s.moms for the statistics pass. It returns the
// layout the device passes run on.
func (op *fwdOp) begin(shape tensor.Shape) (kern.Layout, error) {
	l := op.l
	N, C, S, rows := l.view(shape)
	l.mu.Lock()
	mode := l.mode
	l.mu.Unlock()
	s := &op.s
	op.done = false
	s.mode, s.n, s.off = mode, N, 0
	s.batch = mode.usesBatchStats(l.cfg.track)
	total := N
	if s.batch && l.cfg.sync != nil && l.cfg.ghost > 0 {
		// The batch size of an op is fixed: place this rank's samples in
		// the global batch once (reduceMoments checks it every step).
		if !op.ghostKnown || op.ghostN != N {
			var err error
			if op.ghostOff, op.ghostTotal, err = l.cfg.sync.ghostOffsets(l, N, C, mode); err != nil {
				return kern.Layout{}, err
			}
			op.ghostN, op.ghostKnown = N, true
		}
		s.off, total = op.ghostOff, op.ghostTotal
	}
	seg, nseg, err := op.segments(N, s.off, total)
	if err != nil {
		return kern.Layout{}, err
	}
	if s.batch {
		s.moms = grow(s.moms, nseg*C)
	}
	s.nseg = nseg
	if rows != 1 { // channels-last: the kernels see N·rows rows of C values
		seg = s.perRow(seg, rows)
	}
	return kern.Layout{N: N * rows, C: C, S: S, Seg: seg, NSeg: nseg}, nil
}

// statistics runs after the statistics pass filled s.moms (batch
// statistics) and before the apply pass: it merges the moments across ranks
// (SyncBN), computes each segment's μ and 1/σ (from the batch or the
// running statistics), folds the batch into the running statistics, and
// sets the per-segment scale γ/σ and shift β of the apply pass. shape is the
// local input's, for error messages.
func (op *fwdOp) statistics(shape tensor.Shape) error {
	l, s := op.l, &op.s
	C, nseg := l.c, s.nseg
	if s.batch && l.cfg.sync != nil {
		var err error
		if s.moms, err = l.cfg.sync.reduceMoments(l, s.moms, &s.sm, C, s.n, s.off, s.mode); err != nil {
			return err
		}
	}
	s.resize(nseg, C)
	if s.batch {
		if err := l.batchStats(s, s.moms, C, s.mode, shape); err != nil {
			return err
		}
	} else {
		l.mu.Lock()
		for sg := range nseg {
			g := s.sm.Stat[sg]
			s.cnt[sg] = 0
			for c := range C {
				s.mean[sg*C+c] = l.rmean[g*C+c]
				s.inv[sg*C+c] = 1 / math.Sqrt(l.rvar[g*C+c]+l.cfg.eps)
			}
		}
		l.mu.Unlock()
	}
	na := len(s.aff) / 2
	for sg := range nseg {
		a := s.sm.Aff[sg]
		for c := range C {
			i := sg*C + c
			g, b := 1.0, 0.0
			if na > 0 {
				g, b = s.aff[a*C+c], s.aff[na+a*C+c]
			}
			if len(s.ren) > 0 { // Batch Renormalization: γ·r for γ, β + γ·d for β
				g, b = g*s.ren[i][0], b+g*s.ren[i][1]
			}
			s.gam[i], s.scale[i], s.shift[i] = g, g*s.inv[i], b
		}
	}
	return nil
}

// resize sizes the per-segment state for nseg segments of C channels.
func (s *saved) resize(nseg, C int) {
	k := nseg * C
	s.nseg = nseg
	s.cnt = grow(s.cnt, nseg)
	s.mean, s.inv, s.gam = grow(s.mean, k), grow(s.inv, k), grow(s.gam, k)
	s.scale, s.shift = grow(s.scale, k), grow(s.shift, k)
	s.ren = s.ren[:0]
}

// batchStats turns the (global) batch moments of each segment into the
// mean and 1/σ each segment is normalized with, checks the counts, and
// folds the moments into the running statistics (Train) and the PreciseBN
// observer. shape is the local input's, for the error message (nil: a rank
// without samples).
func (l *Layer) batchStats(s *saved, moms []kern.Moments, C int, mode Mode, shape tensor.Shape) error {
	k := s.nseg * C
	s.nmBuf = grow(s.nmBuf, 2*k)
	s.nm = normMoments(s.nmBuf, moms[:k], &s.sm, C)
	for sg := range s.nseg {
		n := s.nm[sg*C].N
		if n == 1 {
			return fmt.Errorf("%w: 1 value per channel in segment %d of the batch (local shape %v; layer %s, mode %v)", ErrTooFewValues, sg, shape, l.cfg.name, mode)
		}
		s.cnt[sg] = n
	}
	for i, m := range s.nm[:k] {
		if m.N == 0 { // an empty set (absent domain): nothing to normalize
			s.mean[i], s.inv[i] = 0, 0
			continue
		}
		s.mean[i], s.inv[i] = m.Mean, kern.InvStd(m, l.cfg.eps)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.calls++
	l.renormLocked(s, mode) // before the running statistics move
	if update := mode == Train && l.cfg.track; update || l.obs != nil {
		l.foldLocked(moms[:k], s.nseg, C, s.sm.Stat, update)
	}
	return nil
}

// normMoments returns, for each segment·C, the moments of the segment's
// normalization set: moms itself when every segment is normalized alone.
func normMoments(dst, moms []kern.Moments, m *segMap, C int) []kern.Moments {
	if normIdentity(m) {
		return moms
	}
	nseg := len(m.Norm)
	set, out := dst[:nseg*C], dst[nseg*C:]
	clear(set)
	for sg, g := range m.Norm {
		for c := range C {
			set[g*C+c] = set[g*C+c].Merge(moms[sg*C+c])
		}
	}
	for sg, g := range m.Norm {
		copy(out[sg*C:sg*C+C], set[g*C:g*C+C])
	}
	return out
}

// foldLocked merges the batch moments of the segments of each group and
// folds them into the running statistics (update) and/or hands them to the
// PreciseBN observer. l.mu is held.
func (l *Layer) foldLocked(moms []kern.Moments, nseg, C int, group []int, update bool) {
	l.per = grow(l.per, l.groups*C)
	per := l.per
	if nseg == 1 && l.groups == 1 {
		per = moms[:C]
	} else {
		clear(per)
		for sg := range nseg {
			g := group[sg]
			for c := range C {
				per[g*C+c] = per[g*C+c].Merge(moms[sg*C+c])
			}
		}
	}
	if l.obs != nil {
		l.obs.observe(l, per)
	}
	if !update {
		return
	}
	for g := range l.groups {
		if per[g*C].N <= 1 {
			continue
		}
		l.tracked[g]++
		w := l.cfg.momentum
		if l.cfg.cumulative {
			w = 1 / float64(l.tracked[g])
		}
		kern.UpdateRunning(l.rmean[g*C:g*C+C], l.rvar[g*C:g*C+C], per[g*C:g*C+C], w)
	}
}
