package bn

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand"
	"slices"
	"sync"
	"testing"

	"github.com/gorgonia-bn/bn/collective"
	"gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// ddpNet is a tiny MLP, x·W1 → BN → ReLU → ·W2, with the loss
// scale·Σ(p − t)², on a TapeMachine with the learnables' gradients bound.
type ddpNet struct {
	g      *gorgonia.ExprGraph
	xs, ts []float64 // backing of x and t, refilled in place
	w1, w2 *gorgonia.Node
	l      *Layer
	loss   *gorgonia.Node
	learn  gorgonia.Nodes
	vm     gorgonia.VM
}

const ddpIn, ddpHid, ddpOut = 5, 4, 3

// newDDPNet draws W1, W2 from seed.
// graphMu serializes graph construction in tests whose ranks are
// goroutines: Gorgonia's Rectify (like Conv2d) bumps a global counter.
var graphMu sync.Mutex

func newDDPNet(batch int, seed int64, scale float64, opts ...Option) (*ddpNet, error) {
	graphMu.Lock()
	defer graphMu.Unlock()
	n := &ddpNet{g: gorgonia.NewGraph(), xs: make([]float64, batch*ddpIn), ts: make([]float64, batch*ddpOut)}
	rng := rand.New(rand.NewSource(seed))
	rnd := func(k int) []float64 {
		v := make([]float64, k)
		for i := range v {
			v[i] = rng.NormFloat64()
		}
		return v
	}
	mat := func(name string, back []float64, r, c int) *gorgonia.Node {
		return gorgonia.NewMatrix(n.g, tensor.Float64, gorgonia.WithShape(r, c), gorgonia.WithName(name),
			gorgonia.WithValue(tensor.New(tensor.WithShape(r, c), tensor.WithBacking(back))))
	}
	x := mat("x", n.xs, batch, ddpIn)
	t := mat("t", n.ts, batch, ddpOut)
	n.w1 = mat("w1", rnd(ddpIn*ddpHid), ddpIn, ddpHid)
	n.w2 = mat("w2", rnd(ddpHid*ddpOut), ddpHid, ddpOut)
	var err error
	if n.l, err = New(n.g, ddpHid, tensor.Float64, append([]Option{WithName("hidden.bn")}, opts...)...); err != nil {
		return nil, err
	}
	h, err := n.l.Apply(gorgonia.Must(gorgonia.Mul(x, n.w1)))
	if err != nil {
		return nil, err
	}
	p := gorgonia.Must(gorgonia.Mul(gorgonia.Must(gorgonia.Rectify(h)), n.w2))
	sq := gorgonia.Must(gorgonia.Sum(gorgonia.Must(gorgonia.Square(gorgonia.Must(gorgonia.Sub(p, t))))))
	n.loss = gorgonia.Must(gorgonia.Mul(sq, gorgonia.NewConstant(scale)))
	n.learn = append(gorgonia.Nodes{n.w1, n.w2}, n.l.Learnables()...)
	if _, err := gorgonia.Grad(n.loss, n.learn...); err != nil {
		return nil, err
	}
	n.vm = gorgonia.NewTapeMachine(n.g, gorgonia.BindDualValues(n.learn...))
	return n, nil
}

func (n *ddpNet) run() error {
	n.vm.Reset()
	return n.vm.RunAll()
}

// state returns W1, W2, γ, β and the running mean and variance.
func (n *ddpNet) state() [][]float64 {
	var s [][]float64
	for _, p := range n.learn {
		s = append(s, slices.Clone(p.Value().Data().([]float64)))
	}
	m, v := n.l.RunningStats()
	return append(s, m, v)
}

var ddpStateNames = []string{"W1", "W2", "γ", "β", "running mean", "running var"}

// ddpData is the global batch of each step.
func ddpData(steps, B int) (xs, ts [][]float64) {
	rng := rand.New(rand.NewSource(99))
	for range steps {
		x, t := make([]float64, B*ddpIn), make([]float64, B*ddpOut)
		for i := range x {
			x[i] = 1 + 2*rng.NormFloat64()
		}
		for i := range t {
			t[i] = rng.NormFloat64()
		}
		xs, ts = append(xs, x), append(ts, t)
	}
	return xs, ts
}

// ddpWorkers trains K = len(sizes) data-parallel workers for the steps of
// xs, ts (rank r holding sizes[r] samples of each global batch), each model
// initialized from its own seed and broadcast from rank 0, and returns each
// rank's final state.
func ddpWorkers(sizes []int, red GradReduction, syncBN bool, xs, ts [][]float64) ([][][]float64, error) {
	K := len(sizes)
	B := 0
	for _, n := range sizes {
		B += n
	}
	states := make([][][]float64, K)
	err := collective.Run(context.Background(), K, func(ctx context.Context, c collective.Communicator) error {
		r := c.Rank()
		off := 0
		for _, n := range sizes[:r] {
			off += n
		}
		scale := 1 / float64(B*ddpOut) // GradSum: this rank's share of the global mean
		if red == GradMean {
			scale = 1 / float64(sizes[r]*ddpOut) // GradMean: the local mean
		}
		var opts []Option
		if syncBN {
			opts = append(opts, WithCommunicator(c))
		}
		net, err := newDDPNet(sizes[r], int64(1000+r), scale, opts...)
		if err != nil {
			return err
		}
		defer net.vm.Close()
		net.l.SetSyncContext(ctx)
		dp, err := NewDataParallel(c, net.learn, red)
		if err != nil {
			return err
		}
		if err := dp.Broadcast(ctx, 0); err != nil {
			return err
		}
		solver := gorgonia.NewVanillaSolver(gorgonia.WithLearnRate(0.2))
		for s := range xs {
			copy(net.xs, xs[s][off*ddpIn:(off+sizes[r])*ddpIn])
			copy(net.ts, ts[s][off*ddpOut:(off+sizes[r])*ddpOut])
			if err := net.run(); err != nil {
				return fmt.Errorf("step %d: %w", s, err)
			}
			if err := dp.Step(ctx, solver); err != nil {
				return fmt.Errorf("step %d: %w", s, err)
			}
		}
		states[r] = net.state()
		return nil
	})
	return states, err
}

// ddpReference trains one worker with plain BN on the whole global batches,
// initialized like rank 0.
func ddpReference(xs, ts [][]float64) ([][]float64, error) {
	B := len(xs[0]) / ddpIn
	net, err := newDDPNet(B, 1000, 1/float64(B*ddpOut))
	if err != nil {
		return nil, err
	}
	defer net.vm.Close()
	solver := gorgonia.NewVanillaSolver(gorgonia.WithLearnRate(0.2))
	for s := range xs {
		copy(net.xs, xs[s])
		copy(net.ts, ts[s])
		if err := net.run(); err != nil {
			return nil, err
		}
		if err := solver.Step(gorgonia.NodesToValueGrads(net.learn)); err != nil {
			return nil, err
		}
	}
	return net.state(), nil
}

// TestDataParallelSyncBNEqualsOneWorker: K workers with SyncBN on B/K (or
// uneven shares) of each global batch reach the parameters and running
// statistics one worker with plain BN reaches on the whole batches; the
// workers' parameters are bitwise equal.
func TestDataParallelSyncBNEqualsOneWorker(t *testing.T) {
	const steps, B = 6, 8
	xs, ts := ddpData(steps, B)
	want, err := ddpReference(xs, ts)
	if err != nil {
		t.Fatal(err)
	}
	init, err := newDDPNet(B, 1000, 1)
	if err != nil {
		t.Fatal(err)
	}
	init.vm.Close()
	if d := maxAbsDiff(init.state()[0], want[0]); !(d > 1e-3) {
		t.Fatalf("W1 moved by only %g in %d steps: the test would not see a wrong gradient", d, steps)
	}
	for _, tc := range []struct {
		name  string
		sizes []int
		red   GradReduction
	}{
		{"4x2 mean", []int{2, 2, 2, 2}, GradMean},
		{"4x2 sum", []int{2, 2, 2, 2}, GradSum},
		{"3,1,4 sum", []int{3, 1, 4}, GradSum},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ddpWorkers(tc.sizes, tc.red, true, xs, ts)
			if err != nil {
				t.Fatal(err)
			}
			for r, st := range got {
				for i := range want {
					assertClose(t, fmt.Sprintf("rank %d %s", r, ddpStateNames[i]), st[i], want[i], 1e-10)
					if !slices.Equal(st[i], got[0][i]) {
						t.Fatalf("%s differs between ranks 0 and %d", ddpStateNames[i], r)
					}
				}
			}
		})
	}
	// Per-worker BN normalizes over 2 samples: a different model.
	got, err := ddpWorkers([]int{2, 2, 2, 2}, GradMean, false, xs, ts)
	if err != nil {
		t.Fatal(err)
	}
	if d := maxAbsDiff(got[0][0], want[0]); !(d > 1e-3) {
		t.Fatalf("per-worker BN: W1 within %g of the one-worker model", d)
	}
}

func maxAbsDiff(a, b []float64) float64 {
	d := 0.0
	for i := range a {
		d = max(d, math.Abs(a[i]-b[i]))
	}
	return d
}

// TestDataParallelReduceGradients: float32 and float64 learnables in one
// model, GradMean and GradSum, one all-reduce per element type.
func TestDataParallelReduceGradients(t *testing.T) {
	const K = 3
	for _, red := range []GradReduction{GradMean, GradSum} {
		counts := make([]map[string]int, K)
		err := collective.Run(context.Background(), K, func(ctx context.Context, c collective.Communicator) error {
			r := c.Rank()
			cc := newCountingComm(c)
			// Learnable vectors a (float32, 4) and b (float64, 6) with the
			// losses a·ca and b·cb, whose gradients are ca and cb. Two
			// graphs: Gorgonia v0.9.18 hash-conses the float32 and float64
			// gradient seeds of two costs in one graph into one node.
			ca := []float32{1, 2, 3, float32(r)}
			cb := []float64{float64(r), 1, 2, 3, 4, 5 * float64(r)}
			learnable := func(dt tensor.Dtype, c any, n int) (*gorgonia.Node, error) {
				g := gorgonia.NewGraph()
				p := gorgonia.NewVector(g, dt, gorgonia.WithShape(n), gorgonia.WithName("p"), gorgonia.WithInit(gorgonia.Zeroes()))
				cn := gorgonia.NewVector(g, dt, gorgonia.WithShape(n), gorgonia.WithName("c"), gorgonia.WithValue(tensor.New(tensor.WithShape(n), tensor.WithBacking(c))))
				if _, err := gorgonia.Grad(gorgonia.Must(gorgonia.Mul(p, cn)), p); err != nil {
					return nil, err
				}
				m := gorgonia.NewTapeMachine(g, gorgonia.BindDualValues(p))
				defer m.Close()
				return p, m.RunAll()
			}
			a, err := learnable(tensor.Float32, ca, 4)
			if err != nil {
				return err
			}
			b, err := learnable(tensor.Float64, cb, 6)
			if err != nil {
				return err
			}
			dp, err := NewDataParallel(cc, gorgonia.Nodes{a, b}, red)
			if err != nil {
				return err
			}
			cc.take()
			if err := dp.ReduceGradients(ctx); err != nil {
				return err
			}
			counts[r] = cc.take()
			div := 1.0
			if red == GradMean {
				div = K
			}
			ga, _ := a.Grad()
			gb, _ := b.Grad()
			wantA := []float32{float32(K * 1 / div), float32(K * 2 / div), float32(K * 3 / div), float32((0 + 1 + 2) / div)}
			wantB := []float64{3 / div, K * 1 / div, K * 2 / div, K * 3 / div, K * 4 / div, 5 * 3 / div}
			if got := ga.Data().([]float32); !slices.Equal(got, wantA) {
				return fmt.Errorf("%v: float32 gradient %v, want %v", red, got, wantA)
			}
			if got := gb.Data().([]float64); !slices.Equal(got, wantB) {
				return fmt.Errorf("%v: float64 gradient %v, want %v", red, got, wantB)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		for r, c := range counts {
			if c["AllReduce"] != 2 || len(c) != 1 {
				t.Errorf("%v rank %d: collectives %v, want 2 all-reduces (one per element type)", red, r, c)
			}
		}
	}
}

// TestDataParallelBroadcastMismatch: ranks whose models differ get ErrSync
// from Broadcast instead of a silent partial copy.
func TestDataParallelBroadcastMismatch(t *testing.T) {
	errs := make([]error, 2)
	_ = collective.Run(context.Background(), 2, func(ctx context.Context, c collective.Communicator) error {
		r := c.Rank()
		g := gorgonia.NewGraph()
		w := gorgonia.NewMatrix(g, tensor.Float64, gorgonia.WithShape(2, 2+r), gorgonia.WithName("w"), gorgonia.WithInit(gorgonia.Zeroes()))
		dp, err := NewDataParallel(c, gorgonia.Nodes{w}, GradMean)
		if err != nil {
			return err
		}
		errs[r] = dp.Broadcast(ctx, 0)
		return nil
	})
	for r, err := range errs {
		if !errors.Is(err, ErrSync) {
			t.Errorf("rank %d: %v, want ErrSync", r, err)
		}
	}
	if _, err := NewDataParallel(nil, nil, GradMean); !errors.Is(err, ErrOption) {
		t.Errorf("nil communicator: %v, want ErrOption", err)
	}
}
