// Package domainbn is domain-specific batch normalization: one layer that
// keeps statistics (and optionally γ/β) per domain, for training data that
// mixes domains (Chang et al., "Domain-Specific Batch Normalization for
// Unsupervised Domain Adaptation", 2019; Wu & Johnson, "Rethinking 'Batch'
// in BatchNorm", 2021, §5).
//
// One set of batch-normalization statistics fits none of several domains
// whose feature distributions differ. Wu & Johnson separate three choices,
// each a switch of this package (all on by default):
//
//   - domain-specific normalization in training (WithDomainNorm): the
//     samples of each domain in a batch are normalized with the statistics
//     of that domain's samples only, not of the whole batch;
//   - domain-specific population statistics (WithDomainStats): one set of
//     running statistics per domain, used at inference for that domain's
//     samples;
//   - domain-specific affine (WithDomainAffine): γ and β per domain, of shape
//     (D, C), instead of shared ones of shape (C).
//
// Their finding: training and population statistics must use the same split
// (both on, or both off); domain-specific statistics with shared
// normalization in training, or the converse, cost accuracy.
//
// Domains are chosen by explicit id, never by call order: SetDomain for a
// batch of one domain, SetDomainIDs for a batch that mixes domains (one id
// per sample). A domain absent from a batch keeps its running statistics bit
// for bit. Layers of one network usually share a Selector (WithSelector), so
// one call sets the domain of every layer.
//
// The layer is the grouped engine of package bn (a layer with one set of
// running statistics per group, whose samples a segmenter assigns): every mode (Train, Eval, EvalBatchStats, Frozen), symbolic
// differentiation for x and γ/β, float32 and float64, inputs of rank 2 to 5,
// synchronization across ranks (bn.WithCommunicator: each domain's moments
// are merged across ranks, whatever each rank's per-domain counts), PreciseBN
// (bn.Precise takes a *Layer, a bn.Normalizer) and AdaBN (AdaBN: re-estimate
// one domain's statistics from unlabeled data).
package domainbn

import (
	"errors"
	"fmt"
	"sync"

	"github.com/gorgonia-bn/bn"
	"github.com/gorgonia-bn/bn/internal/engine"
	"gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// ErrDomain reports a domain id that is negative or not below the number of
// domains, a domain-id slice whose length differs from the batch size, a
// layer run before any domain was set, or layers of a different number of
// domains sharing a Selector. It is wrapped with details; test for it with
// errors.Is (after bn.Cause for errors returned by a Gorgonia machine).
var ErrDomain = errors.New("domainbn: invalid domain")

// eng is package bn's grouped engine (layers with one set of running
// statistics per group, applied to segmented batches).
var eng = engine.Get[*bn.Layer, bn.Option]()

// Option configures a Layer.
type Option func(*config) error

type config struct {
	norm, stats, affine bool
	bnOpts              []bn.Option
	sel                 *Selector
}

// WithDomainNorm turns domain-specific normalization in training on or off
// (default on). On: in the modes that use batch statistics (Train,
// EvalBatchStats), each domain's samples are normalized with the statistics
// of that domain's samples in the batch. Off: all samples of the batch are
// normalized together, as by a plain layer.
func WithDomainNorm(on bool) Option {
	return func(c *config) error { c.norm = on; return nil }
}

// WithDomainStats turns domain-specific population statistics on or off
// (default on). On: one set of running statistics per domain, updated from
// that domain's samples only and used (Eval, Frozen) for that domain's
// samples. Off: one shared set, updated from all samples of the batch.
func WithDomainStats(on bool) Option {
	return func(c *config) error { c.stats = on; return nil }
}

// WithDomainAffine turns domain-specific γ and β on or off (default on).
// On: γ and β have shape (D, C) and row d scales and shifts domain d's
// samples. Off: shared γ and β of shape (C). Without affine parameters
// (bn.WithAffine(false)) it has no effect.
func WithDomainAffine(on bool) Option {
	return func(c *config) error { c.affine = on; return nil }
}

// WithBN passes options to the underlying bn layer: bn.WithEps,
// bn.WithMomentum, bn.WithCumulativeAverage, bn.WithAffine,
// bn.WithTrackRunningStats, bn.WithName, bn.WithCommunicator,
// bn.WithSyncTimeout, bn.WithRenorm (Batch Renormalization towards each
// domain's running statistics, its schedule driven by that domain's count). bn.WithGhostBatch has no effect on a domain layer
// (its segments are the domains).
func WithBN(opts ...bn.Option) Option {
	return func(c *config) error {
		for _, o := range opts {
			if o == nil {
				return fmt.Errorf("%w: nil bn option", bn.ErrOption)
			}
		}
		c.bnOpts = append(c.bnOpts, opts...)
		return nil
	}
}

// WithSelector makes the layer take its domains from sel, which other layers
// may share: SetDomain and SetDomainIDs on sel, or on any layer using it,
// then choose the domains of all of them. sel must have as many domains as
// the layer. By default each layer has its own Selector.
func WithSelector(sel *Selector) Option {
	return func(c *config) error {
		if sel == nil {
			return fmt.Errorf("%w: nil selector", bn.ErrOption)
		}
		c.sel = sel
		return nil
	}
}

// Layer is a domain-specific batch-normalization layer over D domains. Create
// it with New, choose the domains of the next batch with SetDomain or
// SetDomainIDs, and call Apply on each input. It is a bn.Normalizer:
// BatchNorm returns the underlying layer, which holds the mode and the
// running statistics of every domain (and γ/β, see BatchNorm).
type Layer struct {
	l                   *bn.Layer
	d                   int
	norm, stats, affine bool
	sel                 *Selector
	synced              bool
}

// New creates a layer for inputs with the given number of channels, D =
// domains domains and element type dt (tensor.Float32 or tensor.Float64) in
// graph g. Errors of the options and of the grouped bn layer are returned as they
// are (bn.ErrOption, bn.ErrShape, bn.ErrDtype, …); domains < 1 is ErrDomain.
func New(g *gorgonia.ExprGraph, channels, domains int, dt tensor.Dtype, opts ...Option) (*Layer, error) {
	if domains < 1 {
		return nil, fmt.Errorf("%w: %d domains, want ≥ 1", ErrDomain, domains)
	}
	cfg := config{norm: true, stats: true, affine: true}
	for _, o := range opts {
		if o == nil {
			return nil, fmt.Errorf("%w: nil option", bn.ErrOption)
		}
		if err := o(&cfg); err != nil {
			return nil, err
		}
	}
	sel := cfg.sel
	if sel == nil {
		var err error
		if sel, err = NewSelector(domains); err != nil {
			return nil, err
		}
	} else if sel.Domains() != domains {
		return nil, fmt.Errorf("%w: selector of %d domains for a layer of %d", ErrDomain, sel.Domains(), domains)
	}
	// The engine keeps groups sets of running statistics, and γ/β per group
	// or shared. Per-domain γ/β need groups = D even when the statistics are
	// shared; then only group 0 is used.
	perDomainAffine := cfg.affine && domains > 1
	groups := 1
	if cfg.stats || perDomainAffine {
		groups = domains
	}
	l, err := eng.NewGrouped(g, channels, dt, groups, perDomainAffine, cfg.bnOpts...)
	if err != nil {
		return nil, err
	}
	perDomainAffine = perDomainAffine && l.Gamma() != nil // bn.WithAffine(false): no γ/β at all
	lay := &Layer{l: l, d: domains, norm: cfg.norm, stats: cfg.stats, affine: perDomainAffine,
		sel: sel, synced: l.Communicator() != nil}
	return lay, nil
}

// Apply returns the node y = BN(x) for x of shape (N, C, …) with 2 to 5
// dimensions (NCHW layout). The domains of x's samples are read from the
// layer's Selector each time the graph runs.
func (l *Layer) Apply(x *gorgonia.Node) (*gorgonia.Node, error) {
	return eng.ApplySegmented(l.l, x, &segmenter{l: l})
}

// BatchNorm returns the underlying bn layer (mode, running statistics of all
// domains as D·C slices, γ/β, state encoding), so that *Layer is a
// bn.Normalizer.
func (l *Layer) BatchNorm() *bn.Layer { return l.l }

// Domains returns the number of domains D.
func (l *Layer) Domains() int { return l.d }

// Channels returns the number of channels C.
func (l *Layer) Channels() int { return l.l.Channels() }

// Name returns the layer's name.
func (l *Layer) Name() string { return l.l.Name() }

// DomainNorm reports whether each domain is normalized with its own batch
// statistics.
func (l *Layer) DomainNorm() bool { return l.norm }

// DomainStats reports whether the layer keeps running statistics per domain.
func (l *Layer) DomainStats() bool { return l.stats }

// DomainAffine reports whether γ and β are per domain, of shape (D, C)
// (false with a single domain or without affine parameters).
func (l *Layer) DomainAffine() bool { return l.affine }

// Selector returns the selector the layer takes its domains from.
func (l *Layer) Selector() *Selector { return l.sel }

// SetDomain makes every sample of the next batches belong to domain d, for
// all layers sharing the layer's Selector.
func (l *Layer) SetDomain(d int) error { return l.sel.SetDomain(d) }

// SetDomainIDs gives the domain of each sample of the next batches (a copy
// is kept), for all layers sharing the layer's Selector. Its length must
// equal the batch size when the graph runs.
func (l *Layer) SetDomainIDs(ids []int) error { return l.sel.SetDomainIDs(ids) }

// Mode returns the mode of the underlying layer.
func (l *Layer) Mode() bn.Mode { return l.l.Mode() }

// SetMode switches the mode of the underlying layer (see bn.Mode).
func (l *Layer) SetMode(m bn.Mode) error { return l.l.SetMode(m) }

// Gamma returns the scale γ: a node of shape (D, C) with domain-specific
// affine, (C) otherwise, nil without affine.
func (l *Layer) Gamma() *gorgonia.Node {
	return l.l.Gamma()
}

// Beta returns the shift β, of the shape of γ.
func (l *Layer) Beta() *gorgonia.Node {
	return l.l.Beta()
}

// Learnables returns γ and β (none without affine).
func (l *Layer) Learnables() gorgonia.Nodes {
	return l.l.Learnables()
}

func (l *Layer) check(d int) error {
	if d < 0 || d >= l.d {
		return fmt.Errorf("%w: domain %d of a layer of %d domains", ErrDomain, d, l.d)
	}
	return nil
}

// statGroup and affGroup map a domain to its set of running statistics and
// of γ/β in the engine.
func (l *Layer) statGroup(d int) int {
	if l.stats {
		return d
	}
	return 0
}

func (l *Layer) affGroup(d int) int {
	if l.affine {
		return d
	}
	return 0
}

// RunningStats returns copies of domain d's running mean and (unbiased)
// variance, of length C. Without domain-specific statistics every domain
// returns the shared ones.
func (l *Layer) RunningStats(d int) (mean, variance []float64, err error) {
	if err := l.check(d); err != nil {
		return nil, nil, err
	}
	m, v := l.l.RunningStats()
	C, g := l.Channels(), l.statGroup(d)
	return m[g*C : (g+1)*C], v[g*C : (g+1)*C], nil
}

// SetRunningStats replaces domain d's running mean and variance (length C,
// finite, variances ≥ 0); the other domains are untouched. Without
// domain-specific statistics it replaces the shared ones.
func (l *Layer) SetRunningStats(d int, mean, variance []float64) error {
	if err := l.check(d); err != nil {
		return err
	}
	C, g := l.Channels(), l.statGroup(d)
	if len(mean) != C || len(variance) != C {
		return fmt.Errorf("%w: running statistics of length %d and %d, want %d", bn.ErrState, len(mean), len(variance), C)
	}
	// Read-modify-write of the whole D·C state: not atomic with a
	// concurrent forward of the same layer, like any change of state
	// between runs.
	m, v := l.l.RunningStats()
	copy(m[g*C:], mean)
	copy(v[g*C:], variance)
	return l.l.SetRunningStats(m, v)
}

// NumBatchesTracked returns the number of training batches folded into
// domain d's running statistics (the shared ones without domain-specific
// statistics).
func (l *Layer) NumBatchesTracked(d int) (int64, error) {
	if err := l.check(d); err != nil {
		return 0, err
	}
	return eng.Tracked(l.l)[l.statGroup(d)], nil
}

// Affine returns copies of domain d's γ and β as float64 (the shared ones
// without domain-specific affine), or nil, nil without affine.
func (l *Layer) Affine(d int) (gamma, beta []float64, err error) {
	if err := l.check(d); err != nil {
		return nil, nil, err
	}
	if l.Gamma() == nil {
		return nil, nil, nil
	}
	C, a := l.Channels(), l.affGroup(d)
	if gamma, err = row(l.Gamma(), a, C); err != nil {
		return nil, nil, err
	}
	if beta, err = row(l.Beta(), a, C); err != nil {
		return nil, nil, err
	}
	return gamma, beta, nil
}

// SetAffine replaces domain d's γ and β (length C, written in place into the
// parameters' values).
func (l *Layer) SetAffine(d int, gamma, beta []float64) error {
	if err := l.check(d); err != nil {
		return err
	}
	if l.Gamma() == nil {
		return fmt.Errorf("%w: layer %s has no affine parameters", bn.ErrState, l.Name())
	}
	C, a := l.Channels(), l.affGroup(d)
	if len(gamma) != C || len(beta) != C {
		return fmt.Errorf("%w: γ and β of length %d and %d, want %d", bn.ErrState, len(gamma), len(beta), C)
	}
	if err := setRow(l.Gamma(), a, C, gamma); err != nil {
		return err
	}
	return setRow(l.Beta(), a, C, beta)
}

// CopyDomain copies domain src's running statistics and γ/β into domain dst
// (each only where it is domain-specific), e.g. to start a new domain from a
// trained one before AdaBN. The batch counter is not copied.
func (l *Layer) CopyDomain(dst, src int) error {
	if err := l.check(dst); err != nil {
		return err
	}
	if err := l.check(src); err != nil {
		return err
	}
	if l.stats {
		m, v, _ := l.RunningStats(src)
		if err := l.SetRunningStats(dst, m, v); err != nil {
			return err
		}
	}
	if l.affine && l.Gamma() != nil {
		g, b, err := l.Affine(src)
		if err != nil {
			return err
		}
		return l.SetAffine(dst, g, b)
	}
	return nil
}

// row returns row a of length C of a parameter's value as float64.
func row(n *gorgonia.Node, a, C int) ([]float64, error) {
	v := n.Value()
	if v == nil {
		return nil, fmt.Errorf("%w: %s has no value", bn.ErrState, n.Name())
	}
	switch s := v.Data().(type) {
	case []float32:
		r := make([]float64, C)
		for i := range r {
			r[i] = float64(s[a*C+i])
		}
		return r, nil
	case []float64:
		return append([]float64(nil), s[a*C:(a+1)*C]...), nil
	}
	return nil, fmt.Errorf("%w: %s of type %T", bn.ErrDtype, n.Name(), v.Data())
}

func setRow(n *gorgonia.Node, a, C int, r []float64) error {
	v := n.Value()
	if v == nil {
		return fmt.Errorf("%w: %s has no value", bn.ErrState, n.Name())
	}
	switch s := v.Data().(type) {
	case []float32:
		for i, x := range r {
			s[a*C+i] = float32(x)
		}
		return nil
	case []float64:
		copy(s[a*C:(a+1)*C], r)
		return nil
	}
	return fmt.Errorf("%w: %s of type %T", bn.ErrDtype, n.Name(), v.Data())
}

// Selector holds the domains of the samples of the next batches. Layers
// created with the same Selector (WithSelector) share it. It is safe for
// concurrent use; the layers read it when the graph runs.
type Selector struct {
	d     int
	mu    sync.Mutex
	set   bool
	whole int   // the domain of every sample, when ids == nil
	ids   []int // per-sample domains
}

// NewSelector returns a selector over the given number of domains with no
// domain set: a layer run before SetDomain or SetDomainIDs fails with
// ErrDomain.
func NewSelector(domains int) (*Selector, error) {
	if domains < 1 {
		return nil, fmt.Errorf("%w: %d domains, want ≥ 1", ErrDomain, domains)
	}
	return &Selector{d: domains}, nil
}

// Domains returns the number of domains.
func (s *Selector) Domains() int { return s.d }

// SetDomain makes every sample of the next batches belong to domain d.
func (s *Selector) SetDomain(d int) error {
	if d < 0 || d >= s.d {
		return fmt.Errorf("%w: domain %d of %d", ErrDomain, d, s.d)
	}
	s.mu.Lock()
	s.set, s.whole, s.ids = true, d, nil
	s.mu.Unlock()
	return nil
}

// SetDomainIDs gives the domain of each sample of the next batches; a copy
// is kept. Every id must be in [0, D); the length must equal the batch size
// when the graph runs (checked then).
func (s *Selector) SetDomainIDs(ids []int) error {
	for i, d := range ids {
		if d < 0 || d >= s.d {
			return fmt.Errorf("%w: sample %d has domain %d of %d", ErrDomain, i, d, s.d)
		}
	}
	cp := append(make([]int, 0, len(ids)), ids...)
	s.mu.Lock()
	s.set, s.whole, s.ids = true, 0, cp
	s.mu.Unlock()
	return nil
}

// Selection returns what was set last: ok is false before any SetDomain or
// SetDomainIDs; ids is nil when every sample belongs to domain, otherwise a
// copy of the per-sample domains.
func (s *Selector) Selection() (domain int, ids []int, ok bool) {
	v := s.get()
	if v.ids != nil {
		ids = append(make([]int, 0, len(v.ids)), v.ids...)
	}
	return v.whole, ids, v.set
}

// selection is a snapshot of a Selector.
type selection struct {
	set   bool
	whole int
	ids   []int
}

func (s *Selector) get() selection {
	s.mu.Lock()
	defer s.mu.Unlock()
	return selection{set: s.set, whole: s.whole, ids: s.ids} // ids is never mutated
}

func (s *Selector) restore(v selection) {
	s.mu.Lock()
	s.set, s.whole, s.ids = v.set, v.whole, v.ids
	s.mu.Unlock()
}

// segmenter maps the samples of a batch to the engine's segments: one
// segment per domain present in the batch, in increasing domain order, so
// that an absent domain costs nothing and has no segment.
//
// Synchronized layers need the same segments on every rank (the i-th segment
// of every rank is merged with the i-th of the others): they always use one
// segment per domain; a domain absent on every rank is an empty set, which
// the engine leaves alone.
type segmenter struct {
	l   *Layer
	idx []int // domain → its segment + 1, 0 when it has none
}

func (sg *segmenter) Segments(n int, seg []int, m *engine.SegmentMap) (int, error) {
	l := sg.l
	v := l.sel.get()
	if n == 0 { // an empty batch (bn.EmptyStep): no sample needs a domain
		v = selection{set: true}
	}
	if !v.set {
		return 0, fmt.Errorf("%w: layer %s run before SetDomain or SetDomainIDs", ErrDomain, l.Name())
	}
	if v.ids != nil && len(v.ids) != n {
		return 0, fmt.Errorf("%w: %d domain ids for a batch of %d samples (layer %s)", ErrDomain, len(v.ids), n, l.Name())
	}
	domainOf := func(i int) int {
		if v.ids == nil {
			return v.whole
		}
		return v.ids[i]
	}
	sg.idx = grow(sg.idx, l.d)
	idx := sg.idx
	clear(idx)
	for i := range n {
		idx[domainOf(i)] = 1
	}
	if l.synced {
		for d := range idx {
			idx[d] = 1
		}
	}
	nseg := 0
	for d := range idx {
		if idx[d] != 0 {
			nseg++
			idx[d] = nseg
		}
	}
	m.Resize(nseg)
	for d, k := range idx {
		if k == 0 {
			continue
		}
		s := k - 1
		m.Norm[s], m.Stat[s], m.Aff[s] = s, l.statGroup(d), l.affGroup(d)
		if !l.norm {
			m.Norm[s] = 0
		}
	}
	for i := range seg[:n] {
		seg[i] = idx[domainOf(i)] - 1
	}
	return nseg, nil
}

func grow[E any](s []E, n int) []E {
	if cap(s) < n {
		return make([]E, n)
	}
	return s[:n]
}

// In returns the layer's copy for graph g (bn.Layer.In for domain layers):
// γ/β nodes of g over the same tensors, and the same running statistics of
// every domain, counters, mode, sync key and Selector — one owner, so a
// forward in any graph updates them once, and SetDomain/SetDomainIDs choose
// the domains of the next batch in every graph. Use it to evaluate a trained
// layer at another batch size or in a forward-only graph. In(g) on the
// layer's own graph returns l.
func (l *Layer) In(g *gorgonia.ExprGraph) (*Layer, error) {
	if l == nil {
		return nil, fmt.Errorf("%w: In on a nil *domainbn.Layer", bn.ErrOption)
	}
	c, err := l.l.In(g)
	if err != nil {
		return nil, err
	}
	if c == l.l {
		return l, nil
	}
	cp := *l
	cp.l = c
	return &cp, nil
}
