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
// population statistics of the global data.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"strings"

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
// no batch i.
type BatchFunc func(ctx context.Context, i int) (samples int, err error)

// PreciseOptions configure Precise. The zero value runs batches until 10⁴
// samples have been seen, on one process.
type PreciseOptions struct {
	// Batches is the number of batches to run. If 0, batches run until
	// Samples samples have been seen.
	Batches int
	// Samples is the number of samples to see when Batches is 0 (default
	// 10⁴, as the paper advises).
	Samples int
	// Comm, if set, merges the statistics of the layers that are not
	// synchronized across the ranks of the communicator at the end. Every
	// rank must call Precise with the same layers in the same order.
	Comm collective.Communicator
	// Progress, if set, is called after every batch with the number of
	// batches and samples done and the number of batches requested (0 when
	// running to a sample count).
	Progress func(batches, samples, total int)
}

// PreciseReport says what a Precise pass did.
type PreciseReport struct {
	Batches int // batches run
	Samples int // samples seen (on this rank)
	// Updated and NotReached name the layers whose statistics were replaced
	// and those the forward never reached (left untouched).
	Updated, NotReached []string
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
// above and PreciseOptions). The stored variance is unbiased, M2/(n−1), as
// for the moving average.
//
// Errors: ErrNoBatches, ErrDataEnded (with the number of batches run),
// ErrReachedTwice, ErrNonFinite, any error of run or of the communicator:
// then no layer is changed. ErrNotReached: the layers that were reached are
// updated, the others left as they were, and the report names both.
// Whatever happens, every layer's mode is restored.
func Precise(ctx context.Context, layers []Normalizer, run BatchFunc, opt PreciseOptions) (PreciseReport, error) {
	var rep PreciseReport
	if opt.Batches < 0 || opt.Samples < 0 {
		return rep, fmt.Errorf("%w: negative batch or sample count", ErrOption)
	}
	if opt.Batches == 0 && opt.Samples == 0 {
		opt.Samples = 10000
	}
	ls := make([]*Layer, len(layers))
	cols := make([]*preciseCollector, len(layers))
	for i, n := range layers {
		ls[i] = n.BatchNorm()
		for _, o := range ls[:i] {
			if o == ls[i] {
				return rep, fmt.Errorf("%w: layer %s listed twice", ErrOption, o.Name())
			}
		}
	}
	// Install the collectors; restore everything on the way out.
	modes := make([]Mode, len(ls))
	for i, l := range ls {
		cols[i] = &preciseCollector{total: make([]kern.Moments, l.groups*l.c)}
		l.mu.Lock()
		modes[i] = l.mode
		l.mode = EvalBatchStats
		l.obs = cols[i]
		l.mu.Unlock()
	}
	defer func() {
		for i, l := range ls {
			l.mu.Lock()
			l.mode, l.obs = modes[i], nil
			l.mu.Unlock()
		}
	}()

	for b := 0; opt.Batches == 0 && rep.Samples < opt.Samples || b < opt.Batches; b++ {
		if err := ctx.Err(); err != nil {
			return rep, err
		}
		for _, c := range cols {
			c.seen = 0
		}
		n, err := run(ctx, b)
		if errors.Is(err, io.EOF) {
			if b == 0 {
				return rep, fmt.Errorf("%w: the data source has no batch", ErrNoBatches)
			}
			if opt.Batches > 0 {
				return rep, fmt.Errorf("%w: got %d of %d batches", ErrDataEnded, b, opt.Batches)
			}
			break // running to a sample count: use what there is
		}
		if err != nil {
			return rep, fmt.Errorf("bn: precise statistics, batch %d: %w", b, err)
		}
		for i, c := range cols {
			if c.seen > 1 {
				return rep, fmt.Errorf("%w: %s, %d times in batch %d", ErrReachedTwice, ls[i].Name(), c.seen, b)
			}
		}
		rep.Batches++
		rep.Samples += n
		if opt.Progress != nil {
			opt.Progress(rep.Batches, rep.Samples, opt.Batches)
		}
	}
	if rep.Batches == 0 {
		return rep, ErrNoBatches
	}
	if opt.Comm != nil {
		if err := mergeAcrossRanks(ctx, opt.Comm, ls, cols); err != nil {
			return rep, err
		}
	}
	// Check everything before changing anything.
	for i, l := range ls {
		if !cols[i].ever {
			continue
		}
		for k, m := range cols[i].total {
			if m.N > 1 && (math.IsNaN(m.Mean) || math.IsInf(m.Mean, 0) || math.IsNaN(m.M2) || math.IsInf(m.M2, 0)) {
				return rep, fmt.Errorf("%w: layer %s, channel %d: mean %v, M2 %v", ErrNonFinite, l.Name(), k, m.Mean, m.M2)
			}
		}
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
	}
	if len(rep.NotReached) > 0 {
		return rep, fmt.Errorf("%w: %s", ErrNotReached, strings.Join(rep.NotReached, ", "))
	}
	return rep, nil
}

// mergeAcrossRanks merges, in rank order, the totals of the layers that are
// not synchronized (synchronized ones already saw the global batches), with
// one all-gather of every such layer's (n, mean, M2) and a reached flag.
func mergeAcrossRanks(ctx context.Context, comm collective.Communicator, ls []*Layer, cols []*preciseCollector) error {
	var size int
	for i, l := range ls {
		if l.cfg.sync == nil {
			size += 1 + 3*len(cols[i].total)
		}
	}
	if size == 0 {
		return nil
	}
	send := make([]float64, 0, size)
	for i, l := range ls {
		if l.cfg.sync != nil {
			continue
		}
		reached := 0.0
		if cols[i].ever {
			reached = 1
		}
		send = append(send, reached)
		for _, m := range cols[i].total {
			send = append(send, m.N, m.Mean, m.M2)
		}
	}
	K := comm.Size()
	recv := make([]float64, K*size)
	if err := comm.AllGather(ctx, collective.Float64s(send), collective.Float64s(recv), nil); err != nil {
		return fmt.Errorf("%w: precise statistics across ranks: %w", ErrSync, err)
	}
	off := 0
	for i, l := range ls {
		if l.cfg.sync != nil {
			continue
		}
		n := len(cols[i].total)
		total := make([]kern.Moments, n)
		ever := false
		for r := range K {
			p := recv[r*size+off:]
			ever = ever || p[0] != 0
			for k := range n {
				total[k] = total[k].Merge(kern.Moments{N: p[1+3*k], Mean: p[2+3*k], M2: p[3+3*k]})
			}
		}
		cols[i].total, cols[i].ever = total, ever
		off += 1 + 3*n
	}
	return nil
}
