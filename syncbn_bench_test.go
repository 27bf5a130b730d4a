package bn

// Benchmarks of SyncBN against plain BN at the same per-rank batch, with K
// ranks in-process (each rank a goroutine running its own graph), and the
// count of collectives per step.
//
//	go test -run '^$' -bench 'SyncBN' -benchtime 20x .
//	BN_SYNC_REPORT=1 go test -run TestSyncBNOverheadReport -v .   # interleaved medians
//
// One iteration is one step of all K ranks: every rank runs its graph once
// (forward, or forward and backward), and the iteration ends when the last
// rank is done. Plain BN runs the same K graphs concurrently without a
// communicator, so the difference is the cost of synchronization: the
// collectives and the waiting for the slowest rank.

import (
	"context"
	"fmt"
	"maps"
	"math/rand"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorgonia-bn/bn/collective"
	"gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// countingComm counts the collectives called through it.
type countingComm struct {
	collective.Communicator
	mu     sync.Mutex
	counts map[string]int
}

func newCountingComm(c collective.Communicator) *countingComm {
	return &countingComm{Communicator: c, counts: map[string]int{}}
}

func (c *countingComm) add(k string) {
	c.mu.Lock()
	c.counts[k]++
	c.mu.Unlock()
}

// take returns the counts so far and resets them.
func (c *countingComm) take() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	m := c.counts
	c.counts = map[string]int{}
	return m
}

func (c *countingComm) AllReduce(ctx context.Context, buf collective.Buffer, op collective.ReduceOp) error {
	if op == collective.Moments {
		c.add("Moments")
	} else {
		c.add("AllReduce")
	}
	return c.Communicator.AllReduce(ctx, buf, op)
}

func (c *countingComm) AllGather(ctx context.Context, send, recv collective.Buffer, counts []int) error {
	c.add("AllGather")
	return c.Communicator.AllGather(ctx, send, recv, counts)
}

func (c *countingComm) Broadcast(ctx context.Context, buf collective.Buffer, root int) error {
	c.add("Broadcast")
	return c.Communicator.Broadcast(ctx, buf, root)
}

func (c *countingComm) AllToAll(ctx context.Context, send collective.Buffer, sc []int, recv collective.Buffer, rc []int) error {
	c.add("AllToAll")
	return c.Communicator.AllToAll(ctx, send, sc, recv, rc)
}

func (c *countingComm) Barrier(ctx context.Context) error {
	c.add("Barrier")
	return c.Communicator.Barrier(ctx)
}

func (c *countingComm) Split(ctx context.Context, color, key int) (collective.Communicator, error) {
	c.add("Split")
	return c.Communicator.Split(ctx, color, key)
}

// benchRank is one rank's graph: x → BN (→ dx, dγ, dβ from a given dy).
type benchRank struct {
	g  *gorgonia.ExprGraph
	l  *Layer
	vm gorgonia.VM
}

// newBenchRank builds x → layers BN layers in sequence on an input of shape
// (float32 or float64 by dt); with backward the gradients of x and every γ,
// β from a constant dy (gorgonia.Backpropagate), so the graph holds nothing
// but BN ops.
func newBenchRank(shape tensor.Shape, dt tensor.Dtype, comm collective.Communicator, layers int, backward bool) (*benchRank, []*Layer, error) {
	g := gorgonia.NewGraph()
	rng := rand.New(rand.NewSource(1))
	fill := func() tensor.Tensor {
		t := tensor.New(tensor.Of(dt), tensor.WithShape(shape...))
		switch d := t.Data().(type) {
		case []float32:
			for i := range d {
				d[i] = float32(rng.NormFloat64())
			}
		case []float64:
			for i := range d {
				d[i] = rng.NormFloat64()
			}
		}
		return t
	}
	x := gorgonia.NewTensor(g, dt, len(shape), gorgonia.WithShape(shape...), gorgonia.WithName("x"), gorgonia.WithValue(fill()))
	var opts []Option
	if comm != nil {
		opts = append(opts, WithCommunicator(comm))
	}
	h := x
	var ls []*Layer
	wrt := gorgonia.Nodes{x}
	for i := range layers {
		l, err := New(g, shape[1], dt, append([]Option{WithName(fmt.Sprintf("bn%d", i))}, opts...)...)
		if err != nil {
			return nil, nil, err
		}
		if h, err = l.Apply(h); err != nil {
			return nil, nil, err
		}
		ls = append(ls, l)
		wrt = append(wrt, l.Learnables()...)
	}
	if backward {
		dy := gorgonia.NewTensor(g, dt, len(shape), gorgonia.WithShape(shape...), gorgonia.WithName("dy"), gorgonia.WithValue(fill()))
		if _, err := gorgonia.Backpropagate(gorgonia.Nodes{h}, gorgonia.Nodes{dy}, wrt); err != nil {
			return nil, nil, err
		}
	}
	return &benchRank{g: g, l: ls[0], vm: gorgonia.NewTapeMachine(g)}, ls, nil
}

func (b *benchRank) step() error {
	b.vm.Reset()
	return b.vm.RunAll()
}

// benchGroup is K ranks that run steps on command, each in its own
// goroutine, synchronized or not.
type benchGroup struct {
	ranks []*benchRank
	start []chan struct{}
	done  chan error
	stop  func()
}

func newBenchGroup(K int, shape tensor.Shape, dt tensor.Dtype, synced, backward bool) (*benchGroup, error) {
	var comms []collective.Communicator
	if synced {
		var err error
		if comms, err = collective.NewInProcess(K); err != nil {
			return nil, err
		}
	}
	bg := &benchGroup{done: make(chan error, K)}
	for r := range K {
		var c collective.Communicator
		if synced {
			c = comms[r]
		}
		br, _, err := newBenchRank(shape, dt, c, 1, backward)
		if err != nil {
			return nil, err
		}
		bg.ranks = append(bg.ranks, br)
		bg.start = append(bg.start, make(chan struct{}))
	}
	var wg sync.WaitGroup
	for r, br := range bg.ranks {
		wg.Go(func() {
			for range bg.start[r] {
				bg.done <- br.step()
			}
		})
	}
	bg.stop = func() {
		for _, s := range bg.start {
			close(s)
		}
		wg.Wait()
		for _, br := range bg.ranks {
			br.vm.Close()
		}
		for _, c := range comms {
			c.Close()
		}
	}
	return bg, nil
}

// step runs one step of every rank and waits for all.
func (bg *benchGroup) step() error {
	for _, s := range bg.start {
		s <- struct{}{}
	}
	var first error
	for range bg.ranks {
		if err := <-bg.done; err != nil && first == nil {
			first = err
		}
	}
	return first
}

var benchShape = tensor.Shape{32, 64, 32, 32}

func BenchmarkSyncBN(b *testing.B) {
	for _, K := range []int{2, 4} {
		for _, pass := range []string{"fwd", "fwdbwd"} {
			for _, variant := range []string{"plain", "sync"} {
				b.Run(fmt.Sprintf("K=%d/%s/%s", K, pass, variant), func(b *testing.B) {
					bg, err := newBenchGroup(K, benchShape, tensor.Float32, variant == "sync", pass == "fwdbwd")
					if err != nil {
						b.Fatal(err)
					}
					defer bg.stop()
					if err := bg.step(); err != nil { // warm-up: plans, buffers
						b.Fatal(err)
					}
					b.SetBytes(int64(K * benchShape.TotalSize() * 4))
					b.ResetTimer()
					for range b.N {
						if err := bg.step(); err != nil {
							b.Fatal(err)
						}
					}
				})
			}
		}
	}
}

// TestSyncBNOverheadReport measures plain and synchronized steps
// interleaved (plain, sync, plain, sync, …, so that the noise of a shared
// machine hits both alike) and prints the medians. It runs only with
// BN_SYNC_REPORT=1 (BN_SYNC_ROUNDS sets the number of rounds, default 30).
func TestSyncBNOverheadReport(t *testing.T) {
	if os.Getenv("BN_SYNC_REPORT") == "" {
		t.Skip("set BN_SYNC_REPORT=1 to measure SyncBN's overhead")
	}
	rounds := 30
	if v := os.Getenv("BN_SYNC_ROUNDS"); v != "" {
		if _, err := fmt.Sscan(v, &rounds); err != nil {
			t.Fatal(err)
		}
	}
	var out strings.Builder
	fmt.Fprintf(&out, "shape %v float32, medians of %d interleaved rounds, ms per step of all ranks\n", benchShape, rounds)
	fmt.Fprintf(&out, "%-3s %-7s %10s %10s %9s\n", "K", "pass", "plain", "SyncBN", "overhead")
	for _, K := range []int{1, 2, 4} {
		for _, bwd := range []bool{false, true} {
			plain, err := newBenchGroup(K, benchShape, tensor.Float32, false, bwd)
			if err != nil {
				t.Fatal(err)
			}
			syn, err := newBenchGroup(K, benchShape, tensor.Float32, true, bwd)
			if err != nil {
				t.Fatal(err)
			}
			var tp, ts []float64
			for i := range rounds + 2 {
				for _, g := range []*benchGroup{plain, syn} {
					t0 := time.Now()
					if err := g.step(); err != nil {
						t.Fatal(err)
					}
					d := time.Since(t0).Seconds() * 1e3
					if i < 2 {
						continue // warm-up
					}
					if g == plain {
						tp = append(tp, d)
					} else {
						ts = append(ts, d)
					}
				}
			}
			plain.stop()
			syn.stop()
			mp, ms := median(tp), median(ts)
			pass := "fwd"
			if bwd {
				pass = "fwd+bwd"
			}
			fmt.Fprintf(&out, "%-3d %-7s %10.2f %10.2f %8.1f%%\n", K, pass, mp, ms, 100*(ms-mp)/mp)
		}
	}
	t.Log("\n" + out.String())
}

func median(v []float64) float64 {
	s := slices.Clone(v)
	sort.Float64s(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// TestSyncBNCollectivesPerStep: a synchronized layer makes exactly one
// collective in the forward (an all-gather) and one in the backward (an
// all-reduce) per step; eval mode makes none.
func TestSyncBNCollectivesPerStep(t *testing.T) {
	const K, layers = 3, 2
	shape := tensor.Shape{4, 3, 2, 2}
	for _, bwd := range []bool{false, true} {
		counts := make([][]map[string]int, K)
		err := collective.Run(context.Background(), K, func(ctx context.Context, c collective.Communicator) error {
			cc := newCountingComm(c)
			br, ls, err := newBenchRank(shape, tensor.Float64, cc, layers, bwd)
			if err != nil {
				return err
			}
			defer br.vm.Close()
			for _, l := range ls {
				l.SetSyncContext(ctx)
			}
			for range 3 {
				if err := br.step(); err != nil {
					return err
				}
				counts[c.Rank()] = append(counts[c.Rank()], cc.take())
			}
			for _, l := range ls {
				if err := l.SetMode(Eval); err != nil {
					return err
				}
			}
			if err := br.step(); err != nil {
				return err
			}
			counts[c.Rank()] = append(counts[c.Rank()], cc.take())
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		want := map[string]int{"Moments": layers}
		if bwd {
			want["AllReduce"] = layers
		}
		for r, steps := range counts {
			for s, got := range steps[:3] {
				if !maps.Equal(got, want) {
					t.Errorf("backward=%v rank %d step %d: collectives %v, want %v", bwd, r, s, got, want)
				}
			}
			if eval := steps[3]; len(eval) != 0 {
				t.Errorf("backward=%v rank %d eval step: collectives %v, want none", bwd, r, eval)
			}
		}
	}
}
