package main

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand"
	"time"

	"github.com/gorgonia-bn/bn"
	"github.com/gorgonia-bn/bn/collective"
	"github.com/gorgonia-bn/bn/examples/internal/cnn"
	"github.com/gorgonia-bn/bn/examples/internal/mnist"
	"gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// runConfig is one training run.
type runConfig struct {
	name      string
	workers   int  // data-parallel workers K
	batch     int  // samples per worker and step
	syncBN    bool // BN statistics over all workers' samples
	steps     int
	lr, mom   float64 // SGD with momentum
	evalEvery int     // steps between evaluations on the subset (0: at the end only)
	evalBatch int
	seed      int64 // weights of rank 0 and the data order
	dtype     tensor.Dtype
	act       cnn.Activation // after every convolution and its BN
	depth     int            // extra 7×7 blocks conv → BN → act (cnn.Config.Depth)
	precise   bool           // after training, also evaluate with the population statistics (bn.Precise)

	syncTimeout time.Duration // bounds every collective (the BN layers' and the data-parallel ones)
	checkpoint  string        // file rank 0 writes every ckptEvery steps ("": none)
	ckptEvery   int
	resume      string // checkpoint to start from ("": from scratch)
}

// timeout is the bound on each collective: cfg.syncTimeout, or about a
// year when a brokendeadline build switches the deadline off.
func (cfg runConfig) timeout() time.Duration {
	if deadlineDisabled() {
		return 365 * 24 * time.Hour
	}
	if cfg.syncTimeout <= 0 {
		return bn.DefaultSyncTimeout
	}
	return cfg.syncTimeout
}

// bound returns ctx limited to one collective's timeout.
func (cfg runConfig) bound(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, cfg.timeout())
}

// collectiveErr describes a failed data-parallel collective; a deadline
// says what it means, as the BN layers' errors do.
func (cfg runConfig) collectiveErr(what string, step int, err error) error {
	at := ""
	if step >= 0 {
		at = fmt.Sprintf(" (step %d)", step)
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("%s: %s%s: no answer within the sync timeout (%v): a rank stopped, crashed, is unreachable or still busy: %w",
			cfg.name, what, at, cfg.timeout(), err)
	}
	return fmt.Errorf("%s: %s%s: %w", cfg.name, what, at, err)
}

// runResult is what one run measured (on rank 0: the losses are the
// global batch's, the accuracies the whole evaluation set's).
type runResult struct {
	cfg      runConfig
	loss     []float64 // training loss of each step: mean over the global batch
	evalStep []int     // steps after which the test set was evaluated
	testAcc  []float64 // accuracy on the evaluation subset after evalStep
	finalAcc float64   // accuracy on the test set after training
	params   []float64 // final learnables
	stats    []float64 // final running statistics (runningStats order)
	train    time.Duration

	// With cfg.precise: the population statistics of every BN layer over
	// the training images (runningStats order; popImages of them), and
	// the test accuracy with them instead of the running statistics.
	pop       []float64
	popImages int
	popAcc    float64
	layers    []string // the BN layers' names
	channels  []int    // and their channel counts
}

// data is what every worker reads.
type data struct {
	train, test, evalSet *mnist.Set // evalSet: the periodic evaluation subset
}

// worker trains one replica: rank comm.Rank() of comm.Size() workers, or
// the only worker when comm is nil. Every worker of a run calls it with the
// same configuration. logf prints progress (rank 0 only).
func worker(ctx context.Context, comm collective.Communicator, cfg runConfig, d *data, logf func(string, ...any)) (*runResult, error) {
	rank, K := 0, 1
	if comm != nil {
		rank, K = comm.Rank(), comm.Size()
	}
	if K != cfg.workers {
		return nil, fmt.Errorf("%s: %d workers in the group, configured for %d", cfg.name, K, cfg.workers)
	}
	if rank != 0 {
		logf = func(string, ...any) {}
	}
	// Each rank draws its own weights; Broadcast makes them rank 0's.
	w, err := newWeights(cfg.dtype, cfg.seed+int64(rank)*7919, cfg.depth)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", cfg.name, err)
	}
	var bnComm collective.Communicator
	if cfg.syncBN {
		bnComm = comm
	}
	tn, err := newNet(w, cfg.act, cfg.batch, bnComm, true, bn.WithSyncTimeout(cfg.timeout()))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", cfg.name, err)
	}
	defer tn.Close()
	for _, l := range tn.BNs {
		l.SetSyncContext(ctx)
	}
	var dp *bn.DataParallel
	if comm != nil {
		// Every worker's loss is the mean over its own samples and all hold
		// equally many: averaged gradients are those of the global mean.
		if dp, err = bn.NewDataParallel(comm, tn.Learnables, bn.GradMean); err != nil {
			return nil, err
		}
	}
	solver := gorgonia.NewMomentum(gorgonia.WithLearnRate(cfg.lr), gorgonia.WithMomentum(cfg.mom))
	ev := &evaluator{w: w, train: tn, comm: comm, nets: map[int]*cnn.Net{}, cfg: cfg}
	defer ev.close()

	start := 0
	if cfg.resume != "" {
		if start, err = resume(ctx, comm, tn, cfg, logf); err != nil {
			return nil, err
		}
	}
	if dp != nil {
		bctx, cancel := cfg.bound(ctx)
		err := dp.Broadcast(bctx, 0)
		cancel()
		if err != nil {
			return nil, cfg.collectiveErr("broadcast of the parameters", -1, err)
		}
	}
	res := &runResult{cfg: cfg}
	global := K * cfg.batch
	rng := rand.New(rand.NewSource(cfg.seed)) // the same order on every worker
	var order []int
	local := make([]float64, 0, cfg.steps)
	report := max(1, cfg.steps/10)
	// A resumed run skips the samples of the steps done.
	for step := 0; step < start; step++ {
		if len(order) < global {
			order = rng.Perm(d.train.Len())
		}
		order = order[global:]
	}
	t0 := time.Now()
	var evalTime time.Duration
	for step := start; step < cfg.steps; step++ {
		if len(order) < global {
			order = rng.Perm(d.train.Len())
		}
		idx := order[rank*cfg.batch : (rank+1)*cfg.batch]
		order = order[global:]
		if err := tn.Run(d.train, idx); err != nil {
			return nil, fmt.Errorf("%s: step %d: %w", cfg.name, step, bn.Cause(err))
		}
		loss, err := tn.LossValue()
		if err != nil {
			return nil, fmt.Errorf("%s: step %d: %w", cfg.name, step, err)
		}
		local = append(local, loss)
		if dp != nil {
			sctx, cancel := cfg.bound(ctx)
			err = dp.Step(sctx, solver)
			cancel()
			if err != nil {
				return nil, cfg.collectiveErr("gradient all-reduce", step, err)
			}
		} else if err = solver.Step(gorgonia.NodesToValueGrads(tn.Learnables)); err != nil {
			return nil, fmt.Errorf("%s: step %d: %w", cfg.name, step, err)
		}
		done := step + 1
		if rank == 0 && cfg.checkpoint != "" && cfg.ckptEvery > 0 && done%cfg.ckptEvery == 0 {
			if err := saveCheckpoint(tn, cfg, done, logf); err != nil {
				return nil, err
			}
		}
		if done%report == 0 || done == cfg.steps {
			// The global loss of the steps since the last report: the mean
			// of the workers' local means.
			win := local[len(res.loss):]
			lctx, cancel := cfg.bound(ctx)
			err := allReduceMean(lctx, comm, win)
			cancel()
			if err != nil {
				return nil, cfg.collectiveErr("loss all-reduce", step, err)
			}
			res.loss = append(res.loss, win...)
			logf("%-14s step %5d/%d  loss %.4f  (%.1f s)", cfg.name, done, cfg.steps, mean(win), time.Since(t0).Seconds())
		}
		if cfg.evalEvery > 0 && done%cfg.evalEvery == 0 || done == cfg.steps {
			e0 := time.Now()
			acc, err := ev.accuracy(ctx, d.evalSet, cfg.evalBatch)
			if err != nil {
				return nil, cfg.collectiveErr("evaluation", step, err)
			}
			evalTime += time.Since(e0)
			res.evalStep, res.testAcc = append(res.evalStep, done), append(res.testAcc, acc)
			logf("%-14s step %5d/%d  test accuracy (%d images) %.2f%%", cfg.name, done, cfg.steps, d.evalSet.Len(), 100*acc)
		}
	}
	res.train = time.Since(t0) - evalTime
	acc, err := ev.accuracy(ctx, d.test, cfg.evalBatch)
	if err != nil {
		return nil, cfg.collectiveErr("evaluation", -1, err)
	}
	res.finalAcc = acc
	res.params, res.stats = tn.Values(), runningStats(tn)
	for _, l := range tn.BNs {
		res.layers, res.channels = append(res.layers, l.Name()), append(res.channels, l.Channels())
	}
	logf("%-14s done: test accuracy (%d images) %.2f%%, training %.1f s", cfg.name, d.test.Len(), 100*acc, res.train.Seconds())
	if cfg.precise {
		p0 := time.Now()
		if res.pop, res.popImages, err = ev.population(ctx, d.train, cfg.evalBatch); err != nil {
			return nil, cfg.collectiveErr("population statistics", -1, err)
		}
		if res.popAcc, err = ev.accuracyWith(ctx, d.test, cfg.evalBatch, res.pop); err != nil {
			return nil, cfg.collectiveErr("evaluation with the population statistics", -1, err)
		}
		logf("%-14s population statistics over %d training images: test accuracy %.2f%% (running statistics %.2f%%), %.1f s",
			cfg.name, res.popImages, 100*res.popAcc, 100*acc, time.Since(p0).Seconds())
	}
	return res, nil
}

// evaluator measures test accuracy with the running statistics (bn.Eval),
// each worker on its share of the images, with rank 0's running
// statistics (per-worker BN leaves every worker its own; SyncBN's are
// identical everywhere).
type evaluator struct {
	w     *cnn.Weights
	train *cnn.Net
	comm  collective.Communicator
	nets  map[int]*cnn.Net // by batch size
	cfg   runConfig        // the timeout of each collective
}

func (e *evaluator) close() {
	for _, n := range e.nets {
		n.Close()
	}
}

func (e *evaluator) net(batch int) (*cnn.Net, error) {
	if n, ok := e.nets[batch]; ok {
		return n, nil
	}
	n, err := newNet(e.w, e.cfg.act, batch, nil, false)
	if err != nil {
		return nil, err
	}
	if err := n.SetMode(bn.Eval); err != nil {
		return nil, err
	}
	e.nets[batch] = n
	return n, nil
}

func (e *evaluator) accuracy(ctx context.Context, set *mnist.Set, batch int) (float64, error) {
	return e.accuracyWith(ctx, set, batch, runningStats(e.train))
}

// accuracyWith is the accuracy with the BN layers normalizing with stats
// (runningStats order): rank 0's, broadcast to every worker.
func (e *evaluator) accuracyWith(ctx context.Context, set *mnist.Set, batch int, stats []float64) (float64, error) {
	rank, K := 0, 1
	if e.comm != nil {
		rank, K = e.comm.Rank(), e.comm.Size()
	}
	stats = append([]float64(nil), stats...)
	if e.comm != nil {
		bctx, cancel := e.cfg.bound(ctx)
		err := e.comm.Broadcast(bctx, collective.Float64s(stats), 0)
		cancel()
		if err != nil {
			return 0, err
		}
	}
	lo, hi := rank*set.Len()/K, (rank+1)*set.Len()/K
	ok := 0
	for i := lo; i < hi; i += batch {
		j := min(i+batch, hi)
		n, err := e.net(j - i)
		if err != nil {
			return 0, err
		}
		if err := n.CopyAffine(e.train); err != nil {
			return 0, err
		}
		off := 0
		for _, l := range n.BNs {
			C := l.Channels()
			if err := l.SetRunningStats(stats[off:off+C], stats[off+C:off+2*C]); err != nil {
				return 0, err
			}
			off += 2 * C
		}
		idx := mnist.Range(j)[i:]
		c, err := n.Classify(set, idx)
		if err != nil {
			return 0, err
		}
		ok += c
	}
	counts := []float64{float64(ok)}
	if e.comm != nil {
		actx, cancel := e.cfg.bound(ctx)
		err := e.comm.AllReduce(actx, collective.Float64s(counts), collective.Sum)
		cancel()
		if err != nil {
			return 0, err
		}
	}
	return counts[0] / float64(set.Len()), nil
}

// population returns the population statistics of every BN layer over the
// training images set, in runningStats order, and the number of images
// they are over. They are the statistics each layer sees at inference,
// computed layer by layer with bn.Precise on a forward-only evaluation net
// of the given batch: when layer k's pass runs, the layers before it
// already normalize with their population statistics (bn.Eval), as at test
// time; the layer itself normalizes its batch with the batch's statistics
// during the pass, which changes nothing before it. Each worker runs an
// equal share of whole batches (images [rank·nb·batch, (rank+1)·nb·batch),
// nb = ⌊N/(K·batch)⌋; the rest of the images is left out and the count
// says so) and bn.Precise merges the workers' moments exactly (Comm).
func (e *evaluator) population(ctx context.Context, set *mnist.Set, batch int) ([]float64, int, error) {
	rank, K := 0, 1
	if e.comm != nil {
		rank, K = e.comm.Rank(), e.comm.Size()
	}
	nb := set.Len() / (K * batch)
	if nb == 0 {
		return nil, 0, fmt.Errorf("%d training images, fewer than one batch of %d per worker (%d workers)", set.Len(), batch, K)
	}
	n, err := e.net(batch)
	if err != nil {
		return nil, 0, err
	}
	if err := n.CopyBN(e.train); err != nil { // γ, β; the running statistics are replaced layer by layer
		return nil, 0, err
	}
	if err := n.SetMode(bn.Eval); err != nil {
		return nil, 0, err
	}
	base := rank * nb * batch
	all := mnist.Range(set.Len())
	for k, l := range n.BNs {
		_, err := bn.Precise(ctx, []bn.Normalizer{l}, func(ctx context.Context, i int) (int, error) {
			lo := base + i*batch
			return batch, n.Run(set, all[lo:lo+batch])
		}, bn.PreciseOptions{Batches: nb, Comm: e.comm, SyncTimeout: e.cfg.timeout()})
		if err != nil {
			return nil, 0, fmt.Errorf("layer %d (%s): %w", k+1, l.Name(), err)
		}
	}
	return runningStats(n), K * nb * batch, nil
}

// allReduceMean replaces v by its mean over the workers.
func allReduceMean(ctx context.Context, comm collective.Communicator, v []float64) error {
	if comm == nil || comm.Size() == 1 {
		return nil
	}
	if err := comm.AllReduce(ctx, collective.Float64s(v), collective.Sum); err != nil {
		return err
	}
	for i := range v {
		v[i] /= float64(comm.Size())
	}
	return nil
}

func mean(v []float64) float64 {
	if len(v) == 0 {
		return math.NaN()
	}
	s := 0.0
	for _, x := range v {
		s += x
	}
	return s / float64(len(v))
}
