package bn

// PreciseBN: exact population statistics.
//
// The running statistics a layer keeps in training are an exponential moving
// average of batch statistics. That is a poor estimate of the population
// statistics the network sees at inference: the average lags behind the
// weights (more so with a large learning rate) and over-weights the last
// batches. PreciseBN (Wu & Johnson, "Rethinking 'Batch' in BatchNorm", 2021;
// fvcore's precise_bn.py) recomputes them with the model frozen: it runs the
// forward pass over many batches and replaces each layer's running
// statistics with the mean and variance of every feature the layer saw.
//
// Here the statistics are exact, not an average of per-batch statistics:
// every batch contributes its (n, mean, M2) per channel and they are merged
// with Chan's rule, so each sample weighs the same whatever the batch sizes
// (law of total variance), in float64. During the pass every layer
// normalizes with its batch statistics (mode EvalBatchStats, as fvcore
// does), so a layer sees the inputs it sees in training; no running
// statistic changes until the end, and each layer's mode is restored,
// whether the pass succeeds or fails.
//
// Distributed: a synchronized layer already observes the statistics of the
// global batch; the other layers are merged across ranks once at the end
// when PreciseOptions.Comm is set, so every rank ends with bitwise-equal
// population statistics of the global data. The ranks agree, batch by
// batch, on when to stop (see PreciseOptions), so uneven batch sizes, data
// that ends early on one rank and a failing rank give every rank the same
// decision promptly.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"reflect"
	"strings"
	"time"

	"github.com/gorgonia-bn/bn/collective"
	"github.com/gorgonia-bn/bn/internal/kern"
)

// Errors of the PreciseBN pass, wrapped with details.
var (
	// ErrNoBatches reports a pass asked to run zero batches, or a data source
	// that had no batch at all.
	ErrNoBatches = errors.New("bn: precise statistics need at least one batch")
	// ErrDataEnded reports a data source that ended before the requested
	// number of batches.
	ErrDataEnded = errors.New("bn: data ended before the requested number of batches")
	// ErrNotReached reports layers the forward pass never reached; their
	// statistics are left untouched.
	ErrNotReached = errors.New("bn: layer not reached by the forward pass")
	// ErrReachedTwice reports a layer applied more than once in one forward
	// pass, whose statistics would mix two inputs.
	ErrReachedTwice = errors.New("bn: layer reached more than once in one forward pass")
	// ErrNonFinite reports population statistics that are NaN or infinite.
	ErrNonFinite = errors.New("bn: non-finite population statistics")
)

// Normalizer is anything that holds a batch-normalization layer: *Layer
// itself and the layers of package domainbn.
type Normalizer interface {
	BatchNorm() *Layer
}

// BatchNorm returns l, so that *Layer is a Normalizer.
func (l *Layer) BatchNorm() *Layer { return l }

// BatchFunc runs the forward pass of the model on batch i (i = 0, 1, …) —
// typically: set the input values, run the machine, reset it — and returns
// the number of samples in the batch. It returns io.EOF when the data has
// no batch i. (With PreciseOptions.Load, Load fetches batch i and run only
// runs the forward of the batch Load fetched.)
//
// Run only the forward: a TapeMachine of a training graph also runs the
// backward, which Precise does not need (and which, for synchronized
// layers, communicates). Run a machine of the forward subgraph,
// gorgonia.NewTapeMachine(g.SubgraphRoots(output)), or a forward graph
// built over the layers' copies (Layer.In). Gorgonia graphs have one batch
// size: for batches of several sizes (a last partial batch) see BySize.
type BatchFunc func(ctx context.Context, i int) (samples int, err error)

// PreciseOptions configure Precise. The zero value runs batches until 10⁴
// samples have been seen, on one process.
//
// # Several ranks
//
// When Comm is set, or a layer given to Precise is synchronized
// (WithCommunicator), the ranks decide together, with a small collective
// per batch, when to stop, so that every rank runs the same batches and no
// rank waits in a collective for a rank that stopped:
//
//   - Batches: every rank runs Batches batches. If the data of any rank
//     ends before, every rank returns ErrDataEnded (naming the ranks).
//   - Samples: the count is global — the samples of all ranks together —
//     and every rank stops after the batch that brings it to Samples or
//     more, whatever each rank's batch sizes. If the data of any rank ends
//     first, every rank stops there and the statistics are those of the
//     batches run (as on one process); the report's GlobalSamples then is
//     below Samples.
//   - Data that ends at batch 0 on any rank is ErrNoBatches on every rank.
//   - A rank whose Load or run returns an error (or whose ctx ends) makes
//     every rank fail promptly: the other ranks return ErrSync naming it.
//     If synchronized layers take part, the failing rank first aborts
//     their communicators and Comm (a rank may be waiting in a layer's
//     collective), which leaves them unusable, as any failed collective
//     does.
//
// Where the data may end at different batches on different ranks and
// layers are synchronized, set Load: a rank only knows that its data ended
// when it asks for the next batch, and without Load that happens inside
// run, while the other ranks already wait in the synchronized layers'
// collectives of that batch. Without Load that case fails promptly on every
// rank with ErrSync (the communicators see mismatched collectives) instead
// of stopping cleanly.
//
// The collectives of the agreement run over Comm or, when Comm is nil, over
// the communicator of the synchronized layers (which then must all have
// the same one). Comm must contain every rank of every synchronized
// layer's communicator. Synchronized layers of the model that are not
// given to Precise are not seen: pass Comm then.
type PreciseOptions struct {
	// Batches is the number of batches to run (on every rank). If 0,
	// batches run until Samples samples have been seen. Setting both
	// Batches and Samples is an error.
	Batches int
	// Samples is the number of samples to see when Batches is 0 (default
	// 10⁴, as the paper advises); with several ranks, of all ranks
	// together. Data that ends first (io.EOF) is not an error: the
	// statistics are those of all the data, and the report says so
	// (PreciseReport.DataEnded, GlobalSamples).
	Samples int
	// Comm, if set, merges the statistics of the layers that are not
	// synchronized across the ranks of the communicator at the end, and
	// carries the ranks' agreement on when to stop (see above). Every rank
	// must call Precise with the same layers in the same order and the
	// same options. Without Comm, layers that are not synchronized end
	// with the statistics of their own rank's data.
	Comm collective.Communicator
	// Load, if set, is the first half of each batch: Load(ctx, i) fetches
	// batch i and sets the model's inputs, without running the model, and
	// returns its number of samples, or io.EOF when the data has no batch
	// i; run then runs the forward pass of that batch (its sample count is
	// not used, and io.EOF from it is an error). With several ranks the
	// ranks agree after Load, before any forward, so data that ends at
	// different batches on different ranks stops every rank cleanly.
	Load BatchFunc
	// SyncTimeout bounds each collective of the agreement and of the final
	// merge (several ranks only). A rank waits there while the others
	// fetch and run a batch, so it must exceed the slowest batch. Default:
	// the largest WithSyncTimeout of the synchronized layers, or
	// DefaultSyncTimeout.
	SyncTimeout time.Duration
	// Progress, if set, is called after every batch with the number of
	// batches done, the number of samples seen (of all ranks together, as
	// GlobalSamples) and the number of batches requested (0 when running
	// to a sample count).
	Progress func(batches, samples, total int)
}

// PreciseReport says what a Precise pass did.
type PreciseReport struct {
	// Batches is the number of batches run on this rank. It is the same
	// on every rank, except when Load is not set and the data of some ranks
	// ended at a batch the other ranks ran (Samples mode): those count it.
	Batches int
	// Samples is the number of samples this rank ran (local).
	Samples int
	// GlobalSamples is the number of samples of all ranks together that
	// the statistics come from, the same on every rank (on one process, or
	// with synchronized layers but no Comm: see PreciseOptions, the same
	// as Samples on one process).
	GlobalSamples int
	// DataEnded is set when, running to a sample count (Samples), the
	// data ended (io.EOF, on some rank) before Samples samples: the
	// statistics are those of every sample there was, GlobalSamples of
	// them, and Precise returns no error.
	DataEnded bool
	// Updated and NotReached name the layers whose statistics were replaced
	// and those the forward never reached (left untouched).
	Updated, NotReached []string
	// Populations holds the exact population statistics of the layers
	// named in Updated, in that order (see Population, MergePopulations).
	Populations []Population
}

// preciseCollector accumulates the moments a layer observes.
type preciseCollector struct {
	total []kern.Moments // groups·C
	seen  int            // observations in the current batch
	ever  bool
}

func (p *preciseCollector) observe(l *Layer, moms []kern.Moments) {
	for i, m := range moms {
		p.total[i] = p.total[i].Merge(m)
	}
	p.seen++
	p.ever = true
}

// Precise replaces the running statistics of layers with the exact
// population statistics of the features they see while run executes the
// forward pass over a number of batches (see the package documentation
// above and PreciseOptions, also for several ranks). The stored variance is
// unbiased, M2/(n−1), as for the moving average.
//
// Errors: ErrOption (nil or repeated layers, layers without running
// statistics, nil run, contradictory options), ErrNoBatches, ErrDataEnded
// (with the number of batches run), ErrReachedTwice, ErrNonFinite, ErrSync
// (another rank failed, or a collective did), any error of run or Load:
// then no layer is changed. ErrNotReached: the layers that were reached are
// updated, the others left as they were, and the report names both.
// Whatever happens, every layer's mode is restored.
func Precise(ctx context.Context, layers []Normalizer, run BatchFunc, opt PreciseOptions) (PreciseReport, error) {
	var rep PreciseReport
	ls, verr := checkPrecise(ctx, layers, run, &opt)
	if ctx == nil {
		ctx = context.Background()
	}
	ag, err := newPreciseAgreement(ls, opt)
	if err != nil {
		return rep, errors.Join(verr, err)
	}
	// Install the collectors (no running statistic changes before the end);
	// restore every layer's mode and observer on the way out.
	cols := make([]*preciseCollector, len(ls))
	modes := make([]Mode, len(ls))
	installed := 0
	defer func() {
		for i, l := range ls[:installed] {
			l.mu.Lock()
			l.mode, l.obs = modes[i], nil
			l.mu.Unlock()
		}
	}()
	for i, l := range ls {
		if verr != nil {
			break
		}
		cols[i] = &preciseCollector{total: make([]kern.Moments, l.groups*l.c)}
		l.mu.Lock()
		busy := l.obs != nil
		if !busy {
			modes[i] = l.mode
			l.mode = EvalBatchStats
			l.obs = cols[i]
		}
		l.mu.Unlock()
		if busy {
			verr = fmt.Errorf("%w: precise statistics: layer %s is in another Precise pass", ErrOption, l.Name())
			break
		}
		installed++
	}
	// With several ranks a rank with bad arguments tells the others, which
	// would otherwise wait for it.
	if ag != nil {
		if _, err := ag.decide(ctx, phaseStart, 0, verr, false, 0); err != nil {
			return rep, err
		}
	} else if verr != nil {
		return rep, verr
	}

	// data ended at batch b on the ranks ended (nil: this process).
	ended := func(b int, ranks []int) error {
		who := "the data source"
		if ranks != nil {
			who = fmt.Sprintf("the data of ranks %v", ranks)
		}
		if b == 0 {
			return fmt.Errorf("%w: %s has no batch", ErrNoBatches, who)
		}
		if opt.Batches > 0 {
			return fmt.Errorf("%w: got %d of %d batches (%s ended)", ErrDataEnded, b, opt.Batches, who)
		}
		rep.DataEnded = true
		return nil // running to a sample count: use what there is
	}
	b := 0 // the batch the ranks stopped at
	for ; ; b++ {
		if opt.Batches > 0 && b >= opt.Batches || opt.Batches == 0 && rep.GlobalSamples >= opt.Samples {
			break
		}
		var lerr error // this rank's failure in this batch
		if err := ctx.Err(); err != nil {
			lerr = err
		}
		n, eof := 0, false
		if opt.Load != nil {
			if lerr == nil {
				var err error
				n, err = opt.Load(ctx, b)
				switch {
				case errors.Is(err, io.EOF):
					eof = true
				case err != nil:
					lerr = fmt.Errorf("bn: precise statistics, loading batch %d: %w", b, Cause(err))
				case n < 0:
					lerr = fmt.Errorf("%w: precise statistics: Load returned %d samples for batch %d", ErrOption, n, b)
				}
			}
			if ag != nil {
				res, err := ag.decide(ctx, phaseLoad, b, lerr, eof, n)
				if err != nil {
					return rep, err
				}
				if len(res.ended) > 0 {
					if err := ended(b, res.ended); err != nil {
						return rep, err
					}
					break
				}
			} else if lerr != nil {
				return rep, lerr
			} else if eof {
				if err := ended(b, nil); err != nil {
					return rep, err
				}
				break
			}
		}
		if lerr != nil && ag != nil && ag.synced && opt.Load == nil {
			// The other ranks may be in a synchronized layer's collective of
			// this batch, which this rank will not join.
			ag.abort(lerr)
			return rep, lerr
		}
		if lerr == nil {
			for _, c := range cols {
				c.seen = 0
			}
			m, err := run(ctx, b)
			switch {
			case opt.Load == nil && errors.Is(err, io.EOF):
				eof = true
			case err != nil:
				lerr = fmt.Errorf("bn: precise statistics, batch %d: %w", b, Cause(err))
			case opt.Load == nil && m < 0:
				lerr = fmt.Errorf("%w: precise statistics: run returned %d samples for batch %d", ErrOption, m, b)
			case opt.Load == nil:
				n = m
			}
			for i, c := range cols {
				if lerr == nil && !eof && c.seen > 1 {
					lerr = fmt.Errorf("%w: %s, %d times in batch %d", ErrReachedTwice, ls[i].Name(), c.seen, b)
				}
			}
			if lerr != nil && ag != nil && ag.synced {
				// Other ranks may be waiting in a synchronized layer's
				// collective of this batch, which this rank will not join.
				ag.abort(lerr)
				return rep, lerr
			}
		}
		global := n
		if ag != nil {
			res, err := ag.decide(ctx, phaseRun, b, lerr, eof, n)
			if err != nil {
				return rep, err
			}
			global = res.samples
			if len(res.ended) > 0 {
				if !eof { // this rank ran the batch: its statistics hold it
					rep.Batches++
					rep.Samples += n
				}
				rep.GlobalSamples += global
				if err := ended(b, res.ended); err != nil {
					return rep, err
				}
				break
			}
		} else if lerr != nil {
			return rep, lerr
		} else if eof {
			if err := ended(b, nil); err != nil {
				return rep, err
			}
			break
		}
		if global <= 0 && opt.Batches == 0 {
			// Every rank sees the same count and fails here.
			return rep, fmt.Errorf("%w: precise statistics: batch %d has no samples on any rank: the pass would never reach %d samples", ErrOption, b, opt.Samples)
		}
		rep.Batches++
		rep.Samples += n
		rep.GlobalSamples += global
		if opt.Progress != nil {
			opt.Progress(rep.Batches, rep.GlobalSamples, opt.Batches)
		}
	}
	if opt.Comm != nil {
		mctx, cancel := context.WithTimeout(ctx, ag.timeout)
		err := mergeAcrossRanks(mctx, opt.Comm, ls, cols)
		cancel()
		if err != nil {
			ag.abort(err)
			return rep, err
		}
	}
	// Check everything before changing anything; with several ranks, every
	// rank changes its layers or none does.
	var cerr error
	for i, l := range ls {
		if !cols[i].ever || cerr != nil {
			continue
		}
		for k, m := range cols[i].total {
			if m.N > 1 && (math.IsNaN(m.Mean) || math.IsInf(m.Mean, 0) || math.IsNaN(m.M2) || math.IsInf(m.M2, 0)) {
				cerr = fmt.Errorf("%w: layer %s, channel %d: mean %v, M2 %v", ErrNonFinite, l.Name(), k, m.Mean, m.M2)
				break
			}
		}
	}
	if ag != nil {
		if _, err := ag.decide(ctx, phaseFinish, b, cerr, false, 0); err != nil {
			return rep, err
		}
	} else if cerr != nil {
		return rep, cerr
	}
	for i, l := range ls {
		if !cols[i].ever {
			rep.NotReached = append(rep.NotReached, l.Name())
			continue
		}
		l.mu.Lock()
		for k, m := range cols[i].total {
			if m.N > 1 { // a group (domain) without data keeps its statistics
				l.rmean[k], l.rvar[k] = m.Mean, m.UnbiasedVar()
			}
		}
		l.mu.Unlock()
		rep.Updated = append(rep.Updated, l.Name())
		rep.Populations = append(rep.Populations, populationOf(l, cols[i].total))
	}
	if len(rep.NotReached) > 0 {
		return rep, fmt.Errorf("%w: %s", ErrNotReached, strings.Join(rep.NotReached, ", "))
	}
	return rep, nil
}

// checkPrecise validates the arguments of Precise and returns the layers.
func checkPrecise(ctx context.Context, layers []Normalizer, run BatchFunc, opt *PreciseOptions) ([]*Layer, error) {
	ls := make([]*Layer, 0, len(layers))
	var errs []error
	bad := func(format string, a ...any) {
		errs = append(errs, fmt.Errorf("%w: precise statistics: "+format, append([]any{ErrOption}, a...)...))
	}
	if ctx == nil {
		bad("nil context")
	}
	if run == nil {
		bad("nil BatchFunc")
	}
	if opt.Batches < 0 || opt.Samples < 0 {
		bad("negative batch or sample count (Batches %d, Samples %d)", opt.Batches, opt.Samples)
	}
	if opt.Batches > 0 && opt.Samples > 0 {
		bad("both Batches (%d) and Samples (%d) set: say one", opt.Batches, opt.Samples)
	}
	if opt.SyncTimeout < 0 {
		bad("negative SyncTimeout %v", opt.SyncTimeout)
	}
	if opt.Batches == 0 && opt.Samples == 0 {
		opt.Samples = 10000
	}
	if len(layers) == 0 {
		bad("no layers")
	}
	for i, n := range layers {
		if isNil(n) {
			bad("layer %d is nil", i)
			continue
		}
		l := n.BatchNorm()
		if l == nil {
			bad("layer %d (%T) has no batch-normalization layer (BatchNorm returned nil)", i, n)
			continue
		}
		if !l.cfg.track {
			bad("layer %s has no running statistics (WithTrackRunningStats(false)): it normalizes with batch statistics in every mode, so population statistics would never be used", l.Name())
			continue
		}
		for _, o := range ls {
			if o.layerState == l.layerState { // the same layer, or its copy in another graph (In)
				bad("layer %s listed twice", o.Name())
			}
		}
		ls = append(ls, l)
	}
	if len(errs) > 0 {
		return ls, errors.Join(errs...)
	}
	return ls, nil
}

// isNil reports whether v is nil or holds a nil pointer, map, slice,
// channel or func (whose methods may dereference it).
func isNil(v any) bool {
	if v == nil {
		return true
	}
	switch r := reflect.ValueOf(v); r.Kind() {
	case reflect.Pointer, reflect.Map, reflect.Slice, reflect.Chan, reflect.Func, reflect.Interface:
		return r.IsNil()
	}
	return false
}

// The agreement of the ranks of a Precise pass: one all-gather of a small
// record per rank at each decision point — at the start, after each Load
// (with PreciseOptions.Load), after each batch's forward, and at the end —
// from which every rank computes the same decision.
type preciseAgreement struct {
	decider collective.Communicator   // Comm, or the synchronized layers' one
	others  []collective.Communicator // other communicators of synchronized layers
	synced  bool                      // synchronized layers take part
	timeout time.Duration
	conf    [4]float64 // Batches, Samples, layers, Load set: must agree
	send    []float64
	recv    []float64
}

const (
	preciseTag = 0x50_42_4e // "PBN"
	recordLen  = 10         // tag, phase, batch, failed, ended, samples, conf[4]
)

const (
	phaseStart = iota
	phaseLoad
	phaseRun
	phaseFinish
)

var phaseNames = [...]string{"start", "load", "run", "finish"}

// roundResult is what the ranks decided in a round.
type roundResult struct {
	failed, ended []int // ranks whose step failed, whose data ended
	samples       int   // sum of the ranks' samples
}

// newPreciseAgreement returns the agreement of a pass over layers, or nil
// on one process.
func newPreciseAgreement(ls []*Layer, opt PreciseOptions) (*preciseAgreement, error) {
	a := &preciseAgreement{decider: opt.Comm, timeout: opt.SyncTimeout}
	var maxTimeout time.Duration
	for _, l := range ls {
		if l.cfg.sync == nil {
			continue
		}
		a.synced = true
		c := l.cfg.sync.comm
		maxTimeout = max(maxTimeout, l.cfg.sync.timeout)
		if opt.Comm != nil && c.Size() > opt.Comm.Size() {
			return nil, fmt.Errorf("%w: precise statistics: layer %s is synchronized over %d ranks, PreciseOptions.Comm has %d: Comm must contain every rank of the layers' communicators", ErrOption, l.Name(), c.Size(), opt.Comm.Size())
		}
		switch {
		case a.decider == nil:
			a.decider = c
		case c == a.decider:
		case opt.Comm == nil:
			return nil, fmt.Errorf("%w: precise statistics: the layers are synchronized over different communicators; set PreciseOptions.Comm to one of all their ranks, over which the ranks agree when to stop", ErrOption)
		default:
			seen := false
			for _, o := range a.others {
				seen = seen || o == c
			}
			if !seen {
				a.others = append(a.others, c)
			}
		}
	}
	if a.decider == nil {
		return nil, nil
	}
	if a.timeout == 0 {
		a.timeout = maxTimeout
	}
	if a.timeout == 0 {
		a.timeout = DefaultSyncTimeout
	}
	load := 0.0
	if opt.Load != nil {
		load = 1
	}
	a.conf = [4]float64{float64(opt.Batches), float64(opt.Samples), float64(len(ls)), load}
	return a, nil
}

// abort makes the pending and future collectives of every rank on the
// pass's communicators fail, so that no rank waits for this one.
func (a *preciseAgreement) abort(err error) {
	a.decider.Abort(err)
	for _, c := range a.others {
		c.Abort(err)
	}
}

// decide runs a round and turns its result into this rank's error: its own
// failure, or ErrSync when another rank failed or the round did. On a
// failed collective it aborts the other communicators of the pass.
func (a *preciseAgreement) decide(ctx context.Context, phase, b int, lerr error, eof bool, n int) (roundResult, error) {
	res, err := a.round(ctx, phase, b, lerr, eof, n)
	switch {
	case err != nil:
		a.abort(err)
		if lerr != nil {
			return res, lerr
		}
		return res, err
	case lerr != nil:
		return res, lerr
	case len(res.failed) > 0:
		what := [...]string{
			phaseStart:  "rejected the arguments of Precise",
			phaseLoad:   fmt.Sprintf("failed to load batch %d", b),
			phaseRun:    fmt.Sprintf("failed in batch %d", b),
			phaseFinish: "found non-finite statistics",
		}[phase]
		return res, fmt.Errorf("%w: precise statistics: ranks %v %s; see their errors", ErrSync, res.failed, what)
	}
	return res, nil
}

// round exchanges this rank's record — whether its step failed, whether its
// data ended, its samples — with every rank, first over the synchronized
// layers' other communicators (so that a rank that stopped meets, there, a
// rank still in a layer's collective: a mismatch every rank sees at once),
// then over the decider, and checks that the ranks are at the same point
// with the same options.
func (a *preciseAgreement) round(ctx context.Context, phase, b int, lerr error, eof bool, n int) (roundResult, error) {
	var res roundResult
	if ctx.Err() != nil {
		ctx = context.WithoutCancel(ctx) // report the cancellation to the others
	}
	ctx, cancel := context.WithTimeout(ctx, a.timeout)
	defer cancel()
	failed, ended := 0.0, 0.0
	if lerr != nil {
		failed = 1
	}
	if eof {
		ended = 1
	}
	a.send = append(a.send[:0], preciseTag, float64(phase), float64(b), failed, ended, float64(n))
	a.send = append(a.send, a.conf[:]...)
	for i, c := range append(a.others, a.decider) {
		K := c.Size()
		a.recv = grow(a.recv, K*recordLen)
		if err := c.AllGather(ctx, collective.Float64s(a.send), collective.Float64s(a.recv), nil); err != nil {
			return res, fmt.Errorf("%w: precise statistics, %s of batch %d: %w", ErrSync, phaseNames[phase], b, err)
		}
		for r := range K {
			p := a.recv[r*recordLen : (r+1)*recordLen]
			if p[0] != preciseTag || p[1] != a.send[1] || p[2] != a.send[2] {
				return res, fmt.Errorf("%w: precise statistics: rank %d is not at the %s of batch %d (record %v): ranks that call different collectives (different layers, a layer applied on some ranks only, data that ended at a different batch on one rank while the others ran it: see PreciseOptions.Load)", ErrSync, r, phaseNames[phase], b, p[:3])
			}
			if [4]float64(p[6:10]) != a.conf {
				return res, fmt.Errorf("%w: precise statistics: rank %d has other options (Batches, Samples, layers, Load set) %v than this rank %v", ErrSync, r, p[6:10], a.conf)
			}
			if i < len(a.others) {
				continue // the decider's records decide
			}
			if p[3] != 0 {
				res.failed = append(res.failed, r)
			}
			if p[4] != 0 {
				res.ended = append(res.ended, r)
			}
			res.samples += int(p[5])
		}
	}
	return res, nil
}

// mergeAcrossRanks merges the totals of the layers that are not
// synchronized (synchronized ones already saw the global batches) over the
// ranks, with one Moments all-reduce of every such layer's (n, mean, M2)
// and a reached flag (a triple (1, 0, 0) if the layer ran on the rank, an
// empty one otherwise: the merged count is the number of ranks it ran on).
// Every rank gets the same bits (the collective's fixed merge order).
func mergeAcrossRanks(ctx context.Context, comm collective.Communicator, ls []*Layer, cols []*preciseCollector) error {
	var size int
	for i, l := range ls {
		if l.cfg.sync == nil {
			size += 3 + 3*len(cols[i].total)
		}
	}
	if size == 0 {
		return nil
	}
	buf := make([]float64, 0, size)
	for i, l := range ls {
		if l.cfg.sync != nil {
			continue
		}
		reached := 0.0
		if cols[i].ever {
			reached = 1
		}
		buf = append(buf, reached, 0, 0)
		for _, m := range cols[i].total {
			buf = append(buf, m.N, m.Mean, m.M2)
		}
	}
	if err := comm.AllReduce(ctx, collective.Float64s(buf), collective.Moments); err != nil {
		return fmt.Errorf("%w: precise statistics across ranks: %w", ErrSync, err)
	}
	off := 0
	for i, l := range ls {
		if l.cfg.sync != nil {
			continue
		}
		n := len(cols[i].total)
		p := buf[off:]
		total := make([]kern.Moments, n)
		for k := range n {
			total[k] = kern.Moments{N: p[3+3*k], Mean: p[4+3*k], M2: p[5+3*k]}
		}
		cols[i].total, cols[i].ever = total, p[0] != 0
		off += 3 + 3*n
	}
	return nil
}
