// Package faults is the catalogue of distributed faults and bad inputs of
// synchronized layers: what every rank must get (an error wrapping which
// sentinel, or success with bitwise-equal statistics) and how fast. The
// same cases run over in-process ranks (faults_test.go) and over MPI
// (internal/mpitest, under mpirun), and README's fault catalogue is the
// table Run prints.
package faults

import (
	"context"
	"errors"
	"fmt"
	"math/rand"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gorgonia-bn/bn"
	"github.com/gorgonia-bn/bn/collective"
	"github.com/gorgonia-bn/bn/domainbn"
	"gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// Env is what a case's rank runs with.
type Env struct {
	Comm       collective.Communicator // a fresh group for this case
	Rank, Size int
	// Timeout is the sync timeout of the case's layers: long for faults
	// that must be detected (so that a timeout cannot pass for a
	// detection), short for stalls, which only the deadline ends.
	Timeout time.Duration
}

// last reports whether this is the last rank (the odd one out).
func (e Env) last() bool { return e.Rank == e.Size-1 }

// Case is one fault.
type Case struct {
	Name string // the fault, as README's table names it
	// Stall marks faults that only the sync timeout ends.
	Stall bool
	Run   func(e Env) error
	// Want says what rank r of size ranks must get: nil for success, else
	// the errors its error must wrap (through bn.Cause).
	Want func(r, size int) []error
	// Expect describes Want for the table.
	Expect string
}

var (
	errSync     = []error{bn.ErrSync}
	errDeadline = []error{bn.ErrSync, context.DeadlineExceeded}
)

func all(want []error) func(r, size int) []error {
	return func(int, int) []error { return want }
}

// oddOut gives the last rank want, the others others.
func oddOut(others, want []error) func(r, size int) []error {
	return func(r, size int) []error {
		if r == size-1 {
			return want
		}
		return others
	}
}

// net is x → BN → Σ y⊙w with the gradients of x and the layer's learnables
// (when grad), for one rank.
type net struct {
	g    *gorgonia.ExprGraph
	x, w *gorgonia.Node
	ls   []*bn.Layer
	m    gorgonia.VM
}

type layerSpec struct {
	name string
	c    int
	opts []bn.Option
}

// newNet builds a chain of the given layers over a batch of n samples of
// shape (C, 2) (shape (C) when n = 1), with data drawn from seed.
func newNet(seed int64, n int, grad bool, specs ...layerSpec) (*net, error) {
	C := specs[0].c
	rng := rand.New(rand.NewSource(seed))
	shape := tensor.Shape{n, C, 2}
	if n == 1 {
		shape = tensor.Shape{n, C}
	}
	fill := func() tensor.Tensor {
		v := make([]float64, shape.TotalSize())
		for i := range v {
			v[i] = 3 + 2*rng.NormFloat64()
		}
		return tensor.New(tensor.WithShape(shape...), tensor.WithBacking(v))
	}
	g := gorgonia.NewGraph()
	nt := &net{g: g}
	nt.x = gorgonia.NewTensor(g, tensor.Float64, len(shape), gorgonia.WithShape(shape...), gorgonia.WithName("x"), gorgonia.WithValue(fill()))
	nt.w = gorgonia.NewTensor(g, tensor.Float64, len(shape), gorgonia.WithShape(shape...), gorgonia.WithName("w"), gorgonia.WithValue(fill()))
	h := nt.x
	wrt := gorgonia.Nodes{nt.x}
	for _, s := range specs {
		l, err := bn.New(g, s.c, tensor.Float64, append([]bn.Option{bn.WithName(s.name)}, s.opts...)...)
		if err != nil {
			return nil, err
		}
		if h, err = l.Apply(h); err != nil {
			return nil, err
		}
		nt.ls = append(nt.ls, l)
		wrt = append(wrt, l.Learnables()...)
	}
	cost, err := gorgonia.Sum(gorgonia.Must(gorgonia.HadamardProd(h, nt.w)))
	if err != nil {
		return nil, err
	}
	if grad {
		if _, err := gorgonia.Grad(cost, wrt...); err != nil {
			return nil, err
		}
	}
	nt.m = gorgonia.NewTapeMachine(g)
	return nt, nil
}

func (nt *net) run(steps int) error {
	defer nt.m.Close()
	for range steps {
		nt.m.Reset()
		if err := nt.m.RunAll(); err != nil {
			return err
		}
	}
	return nil
}

// train builds a one-layer net "l" of C channels and runs steps training
// steps.
func train(e Env, n, C, steps int, mode bn.Mode, opts ...bn.Option) (*bn.Layer, error) {
	nt, err := newNet(int64(e.Rank), n, true, layerSpec{"l", C, append([]bn.Option{bn.WithCommunicator(e.Comm), bn.WithSyncTimeout(e.Timeout)}, opts...)})
	if err != nil {
		return nil, err
	}
	if err := nt.ls[0].SetMode(mode); err != nil {
		return nil, err
	}
	return nt.ls[0], nt.run(steps)
}

// sameStats checks, after a successful case, that every rank holds the
// bitwise-equal running statistics and counter of l.
func sameStats(e Env, l *bn.Layer) error {
	m, v := l.RunningStats()
	mine := append(append(m, v...), float64(l.NumBatchesTracked()))
	got := make([]float64, len(mine)*e.Size)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := e.Comm.AllGather(ctx, collective.Float64s(mine), collective.Float64s(got), nil); err != nil {
		return err
	}
	for r := range e.Size {
		if !slices.Equal(got[r*len(mine):(r+1)*len(mine)], got[:len(mine)]) {
			return fmt.Errorf("rank %d's running statistics differ from rank 0's", r)
		}
	}
	return nil
}

// Catalogue returns the cases for groups of at least 2 ranks.
func Catalogue() []Case {
	return []Case{
		{Name: "channel counts differ between ranks", Want: all(errSync), Expect: "ErrSync on every rank",
			Run: func(e Env) error {
				C := 2
				if e.Rank == 0 {
					C = 3
				}
				_, err := train(e, 4, C, 1, bn.Train)
				return err
			}},
		{Name: "ranks apply different synchronized layers (keys differ)", Want: all(errSync), Expect: "ErrSync on every rank, naming the other rank's layer",
			Run: func(e Env) error {
				_, err := train(e, 4, 2, 1, bn.Train, bn.WithSyncKey([]string{"a", "b"}[min(e.Rank, 1)]))
				return err
			}},
		{Name: "a layer's statistics options differ on one rank (momentum)", Want: all(errSync), Expect: "ErrSync on every rank, naming the options",
			Run: func(e Env) error {
				m := 0.1
				if e.last() {
					m = 0.2
				}
				_, err := train(e, 4, 2, 1, bn.Train, bn.WithMomentum(m))
				return err
			}},
		{Name: "one rank in EvalBatchStats, the others in Train", Want: all(errSync), Expect: "ErrSync on every rank (only some would update the running statistics)",
			Run: oddMode(bn.EvalBatchStats)},
		{Name: "domain layers whose switches differ between ranks", Want: all(errSync), Expect: "ErrSync on every rank (segment maps differ)",
			Run: func(e Env) error {
				nt, err := newDomainNet(e, !e.last())
				if err != nil {
					return err
				}
				return nt.run(1)
			}},
		{Name: "an extra synchronized layer applied in Train on one rank", Want: all(errSync), Expect: "ErrSync on every rank, naming the extra layer",
			Run: func(e Env) error {
				sync := []bn.Option{bn.WithCommunicator(e.Comm), bn.WithSyncTimeout(e.Timeout)}
				specs := []layerSpec{{"l", 2, sync}}
				if e.Rank == 0 {
					specs = append([]layerSpec{{"extra", 2, sync}}, specs...)
				}
				nt, err := newNet(int64(e.Rank), 4, true, specs...)
				if err != nil {
					return err
				}
				return nt.run(1)
			}},
		{Name: "an extra synchronized layer created (or run in Eval) on one rank only", Want: all(nil), Expect: "success, statistics bitwise equal",
			Run: func(e Env) error {
				if e.Rank == 0 {
					if _, err := bn.New(gorgonia.NewGraph(), 2, tensor.Float64, bn.WithName("val.unused"), bn.WithCommunicator(e.Comm)); err != nil {
						return err
					}
					nt, err := newNet(9, 3, false, layerSpec{"val.bn", 2, []bn.Option{bn.WithCommunicator(e.Comm)}})
					if err != nil {
						return err
					}
					if err := nt.ls[0].SetMode(bn.Eval); err != nil {
						return err
					}
					if err := nt.run(1); err != nil {
						return err
					}
				}
				l, err := train(e, 4, 2, 2, bn.Train)
				if err != nil {
					return err
				}
				return sameStats(e, l)
			}},
		{Name: "a rank with no samples calls EmptyStep", Want: all(nil), Expect: "success, statistics bitwise equal",
			Run: func(e Env) error {
				if !e.last() {
					l, err := train(e, 3, 2, 2, bn.Train)
					if err != nil {
						return err
					}
					return sameStats(e, l)
				}
				l, err := bn.New(gorgonia.NewGraph(), 2, tensor.Float64, bn.WithName("l"), bn.WithCommunicator(e.Comm), bn.WithSyncTimeout(e.Timeout))
				if err != nil {
					return err
				}
				for range 2 {
					if err := bn.EmptyStep([]*bn.Layer{l}, true); err != nil {
						return err
					}
				}
				return sameStats(e, l)
			}},
		{Name: "a global batch of one sample in Train (the other ranks empty)", Want: all([]error{bn.ErrTooFewValues}), Expect: "ErrTooFewValues on every rank",
			Run: func(e Env) error {
				if e.Rank == 0 {
					_, err := train(e, 1, 2, 1, bn.Train)
					return err
				}
				l, err := bn.New(gorgonia.NewGraph(), 2, tensor.Float64, bn.WithName("l"), bn.WithCommunicator(e.Comm), bn.WithSyncTimeout(e.Timeout))
				if err != nil {
					return err
				}
				return bn.EmptyStep([]*bn.Layer{l}, true)
			}},
		{Name: "a rank skips the backward (forward-only graph)", Want: all([]error{bn.ErrSync, collective.ErrMismatch}), Expect: "ErrSync wrapping ErrMismatch on every rank (the next forward's moments all-reduce met the backward's sum all-reduce)",
			Run: func(e Env) error {
				nt, err := newNet(int64(e.Rank), 4, e.Rank != 0, layerSpec{"l", 2, []bn.Option{bn.WithCommunicator(e.Comm), bn.WithSyncTimeout(e.Timeout)}})
				if err != nil {
					return err
				}
				return nt.run(2)
			}},
		{Name: "a rank's sync context is cancelled", Want: oddOut([]error{bn.ErrSync, collective.ErrAborted}, []error{bn.ErrSync, context.Canceled}), Expect: "that rank: context.Canceled; the others: ErrAborted",
			Run: func(e Env) error {
				nt, err := newNet(int64(e.Rank), 4, true, layerSpec{"l", 2, []bn.Option{bn.WithCommunicator(e.Comm), bn.WithSyncTimeout(e.Timeout)}})
				if err != nil {
					return err
				}
				if e.last() {
					ctx, cancel := context.WithCancel(context.Background())
					cancel()
					nt.ls[0].SetSyncContext(ctx)
				}
				return nt.run(1)
			}},
		{Name: "a rank leaves (closes its communicator) before the step", Want: oddOut([]error{bn.ErrSync, collective.ErrPeerGone}, nil), Expect: "the others: ErrPeerGone, at once",
			Run: func(e Env) error {
				if e.last() {
					return e.Comm.Close()
				}
				_, err := train(e, 4, 2, 1, bn.Train)
				return err
			}},
		{Name: "a rank slower than the others, within the timeout", Want: all(nil), Expect: "success, statistics bitwise equal",
			Run: func(e Env) error {
				if e.last() {
					time.Sleep(300 * time.Millisecond)
				}
				l, err := train(e, 4, 2, 2, bn.Train)
				if err != nil {
					return err
				}
				return sameStats(e, l)
			}},
		{Name: "shuffles whose keys differ between ranks", Want: all(errSync), Expect: "ErrSync on every rank, naming the other shuffle",
			Run: func(e Env) error { return shuffleOnce(e, []string{"a", "b"}[min(e.Rank, 1)], 2) }},
		{Name: "shuffled samples whose shapes differ between ranks", Want: all(errSync), Expect: "ErrSync on every rank",
			Run: func(e Env) error { return shuffleOnce(e, "sh", 2+min(e.Rank, 1)) }},
		{Name: "data-parallel learnables that differ between ranks", Want: all(errSync), Expect: "ErrSync on every rank",
			Run: func(e Env) error {
				nt, err := newNet(int64(e.Rank), 4, true, layerSpec{"l", 2 + min(e.Rank, 1), nil})
				if err != nil {
					return err
				}
				defer nt.m.Close()
				dp, err := bn.NewDataParallel(e.Comm, nt.ls[0].Learnables(), bn.GradMean)
				if err != nil {
					return err
				}
				ctx, cancel := context.WithTimeout(context.Background(), e.Timeout)
				defer cancel()
				return dp.Broadcast(ctx, 0)
			}},
		{Name: "one rank's layer in Eval (no communication)", Stall: true, Want: oddOut(errDeadline, nil), Expect: "that rank: success; the others: ErrSync + DeadlineExceeded at the sync timeout, naming layer, step, arrived and missing ranks",
			Run: oddMode(bn.Eval)},
		{Name: "one rank's layer in Frozen (no communication)", Stall: true, Want: oddOut(errDeadline, nil), Expect: "as Eval",
			Run: oddMode(bn.Frozen)},
		{Name: "a rank with no samples that does not call EmptyStep", Stall: true, Want: oddOut(errDeadline, nil), Expect: "the others: ErrSync + DeadlineExceeded at the sync timeout",
			Run: func(e Env) error {
				if e.last() {
					return nil
				}
				_, err := train(e, 4, 2, 1, bn.Train)
				return err
			}},
		{Name: "a rank stalled past the sync timeout", Stall: true, Want: oddOut(errDeadline, []error{bn.ErrSync, collective.ErrAborted}), Expect: "the others: DeadlineExceeded at the timeout; the late rank: ErrAborted when it arrives",
			Run: func(e Env) error {
				if e.last() {
					time.Sleep(e.Timeout + e.Timeout/2)
				}
				_, err := train(e, 4, 2, 1, bn.Train)
				return err
			}},
	}
}

// oddMode trains one step on every rank, the last one in mode, the others
// in Train.
func oddMode(mode bn.Mode) func(Env) error {
	return func(e Env) error {
		m := bn.Train
		if e.last() {
			m = mode
		}
		_, err := train(e, 4, 2, 1, m)
		return err
	}
}

// newDomainNet is a one-layer domain net (3 domains, all samples in domain
// 0 on even ranks, 1 on odd) with per-domain statistics or not.
func newDomainNet(e Env, stats bool) (*net, error) {
	g := gorgonia.NewGraph()
	shape := tensor.Shape{4, 2}
	x := gorgonia.NewTensor(g, tensor.Float64, 2, gorgonia.WithShape(shape...), gorgonia.WithName("x"), gorgonia.WithInit(gorgonia.Gaussian(0, 1)))
	l, err := domainbn.New(g, 2, 3, tensor.Float64, domainbn.WithDomainStats(stats),
		domainbn.WithBN(bn.WithName("dbn"), bn.WithCommunicator(e.Comm), bn.WithSyncTimeout(e.Timeout)))
	if err != nil {
		return nil, err
	}
	if err := l.SetDomain(e.Rank % 2); err != nil {
		return nil, err
	}
	if _, err := l.Apply(x); err != nil {
		return nil, err
	}
	return &net{g: g, x: x, m: gorgonia.NewTapeMachine(g)}, nil
}

// shuffleOnce shuffles a batch of 3 samples of shape (F) under key.
func shuffleOnce(e Env, key string, F int) error {
	sh, err := bn.NewShuffle(e.Comm, key, 1, bn.WithSyncTimeout(e.Timeout))
	if err != nil {
		return err
	}
	g := gorgonia.NewGraph()
	x := gorgonia.NewTensor(g, tensor.Float64, 2, gorgonia.WithShape(3, F), gorgonia.WithName("x"), gorgonia.WithInit(gorgonia.Gaussian(0, 1)))
	if _, err := sh.Shuffle(x); err != nil {
		return err
	}
	m := gorgonia.NewTapeMachine(g)
	defer m.Close()
	return m.RunAll()
}

// Times of one case on one rank.
type result struct {
	err     error
	elapsed time.Duration
}

// Run runs every case on groups split from world (which must have at
// least 2 ranks), checks what every rank got and how fast (detected faults
// within 2 s with a 60 s sync timeout; stalls within the stall timeout +
// 10 s), and logs README's table row per case on rank 0. stall is the sync
// timeout of the stall cases. It may run on a goroutine other than the
// test's (it reports with t.Errorf only).
func Run(t *testing.T, world collective.Communicator, stall time.Duration) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	K, me := world.Size(), world.Rank()
	if K < 2 {
		t.Errorf("the fault catalogue needs at least 2 ranks, got %d", K)
		return
	}
	var rows []string
	for _, c := range Catalogue() {
		sub, err := world.Split(ctx, 0, me)
		if err != nil {
			t.Errorf("%s: split: %v", c.Name, err)
			return
		}
		e := Env{Comm: sub, Rank: me, Size: K, Timeout: time.Minute}
		if c.Stall {
			e.Timeout = stall
		}
		start := time.Now()
		err = c.Run(e)
		el := time.Since(start)
		// Everyone is done with the case before anyone leaves its group
		// (leaving would fail the others' pending calls).
		if err := world.Barrier(ctx); err != nil {
			t.Errorf("%s: barrier: %v", c.Name, err)
			return
		}
		sub.Close()
		bound := 2 * time.Second
		if c.Stall {
			bound = stall + 10*time.Second
		}
		ok := check(c.Want(me, K), err)
		if !ok {
			t.Errorf("%s: rank %d got %v, want an error wrapping %v", c.Name, me, err, c.Want(me, K))
		}
		if el > bound {
			t.Errorf("%s: rank %d took %v, more than %v", c.Name, me, el, bound)
		}
		// Gather every rank's time and outcome for the table.
		mine := []float64{el.Seconds(), 0}
		if ok {
			mine[1] = 1
		}
		got := make([]float64, 2*K)
		if err := world.AllGather(ctx, collective.Float64s(mine), collective.Float64s(got), nil); err != nil {
			t.Errorf("%s: gather: %v", c.Name, err)
			return
		}
		if me == 0 {
			var times []string
			for r := range K {
				times = append(times, fmt.Sprintf("%.3f", got[2*r]))
			}
			rows = append(rows, fmt.Sprintf("| %s | %s | %s s | %s |", c.Name, c.Expect, strings.Join(times, " / "), summarize(err)))
		}
	}
	if me == 0 {
		t.Logf("fault catalogue, %d ranks (seconds per rank; rank 0's error):\n%s", K, strings.Join(rows, "\n"))
	}
}

func check(want []error, err error) bool {
	if want == nil {
		return err == nil
	}
	if err == nil {
		return false
	}
	for _, w := range want {
		if !errors.Is(bn.Cause(err), w) {
			return false
		}
	}
	return true
}

// summarize shortens an error for the table.
func summarize(err error) string {
	if err == nil {
		return "—"
	}
	s := bn.Cause(err).Error()
	if i := strings.Index(s, "bn: "); i > 0 { // drop Gorgonia's machine prefix
		s = s[i:]
	}
	if len(s) > 200 {
		s = s[:200] + "…"
	}
	return strings.ReplaceAll(s, "|", "\\|")
}
