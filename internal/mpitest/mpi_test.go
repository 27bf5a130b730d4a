//go:build mpi

package mpitest

import (
	"context"
	"io"
	"math"
	"math/rand"
	"testing"
	"time"

	"github.com/gorgonia-bn/bn"
	"github.com/gorgonia-bn/bn/collective"
	"github.com/gorgonia-bn/bn/collective/mpi"
	"gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

func TestMain(m *testing.M) { mpi.Main(m) }

func world(t *testing.T) collective.Communicator {
	t.Helper()
	w, err := mpi.World()
	if err != nil {
		t.Fatal(err)
	}
	return w
}

// sizes returns the per-rank batch sizes for K ranks: uneven, one rank
// empty when K > 2.
func sizes(K int) []int {
	s := make([]int, K)
	for r := range s {
		s[r] = 1 + (3*r+2)%5
	}
	if K > 2 {
		s[1] = 0
	}
	return s
}

type result struct{ y, dx, dg, db, rm, rv []float64 }

// run trains one layer (loss Σ y⊙w) for steps steps on x, w of shape.
func run(t *testing.T, shape tensor.Shape, xs, ws []float64, steps int, opts ...bn.Option) result {
	t.Helper()
	g := gorgonia.NewGraph()
	mk := func(name string, v []float64) *gorgonia.Node {
		return gorgonia.NewTensor(g, tensor.Float64, len(shape), gorgonia.WithShape(shape...), gorgonia.WithName(name),
			gorgonia.WithValue(tensor.New(tensor.WithShape(shape...), tensor.WithBacking(append([]float64(nil), v...)))))
	}
	x, w := mk("x", xs), mk("w", ws)
	l, err := bn.New(g, shape[1], tensor.Float64, append([]bn.Option{bn.WithName("l")}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	y, err := l.Apply(x)
	if err != nil {
		t.Fatal(err)
	}
	cost := gorgonia.Must(gorgonia.Sum(gorgonia.Must(gorgonia.HadamardProd(y, w))))
	grads, err := gorgonia.Grad(cost, x, l.Gamma(), l.Beta())
	if err != nil {
		t.Fatal(err)
	}
	m := gorgonia.NewTapeMachine(g, gorgonia.TraceExec())
	defer m.Close()
	for range steps {
		m.Reset()
		if err := m.RunAll(); err != nil {
			t.Fatal(bn.Cause(err))
		}
	}
	f := func(n *gorgonia.Node) []float64 { return append([]float64(nil), n.Value().Data().([]float64)...) }
	r := result{y: f(y), dx: f(grads[0]), dg: f(grads[1]), db: f(grads[2])}
	r.rm, r.rv = l.RunningStats()
	return r
}

func closeTo(t *testing.T, what string, got, want []float64, tol float64) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d values, want %d", what, len(got), len(want))
	}
	for i := range got {
		if d := math.Abs(got[i] - want[i]); !(d <= tol*math.Max(1, math.Abs(want[i]))) {
			t.Fatalf("%s[%d] = %v, want %v", what, i, got[i], want[i])
		}
	}
}

// TestSyncBN: SyncBN over the world's ranks equals BN over the
// concatenated batch; the running statistics are bitwise equal on every
// rank (checked with an all-gather).
func TestSyncBN(t *testing.T) {
	w := world(t)
	K, rank := w.Size(), w.Rank()
	const C, S, steps = 3, 4, 3
	ns := sizes(K)
	r := rand.New(rand.NewSource(11))
	var all, allW []float64
	var mine, mineW []float64
	total := 0
	for k, n := range ns {
		x := make([]float64, n*C*S)
		wv := make([]float64, n*C*S)
		for i := range x {
			x[i], wv[i] = 3+2*r.NormFloat64(), r.NormFloat64()
		}
		all, allW = append(all, x...), append(allW, wv...)
		if k == rank {
			mine, mineW = x, wv
		}
		total += n
	}
	want := run(t, tensor.Shape{total, C, S}, all, allW, steps)
	var got result
	if ns[rank] == 0 {
		l, err := bn.New(gorgonia.NewGraph(), C, tensor.Float64, bn.WithName("l"), bn.WithCommunicator(w), bn.WithSyncTimeout(time.Minute))
		if err != nil {
			t.Fatal(err)
		}
		for range steps {
			if err := bn.EmptyStep([]*bn.Layer{l}, true); err != nil {
				t.Fatal(err)
			}
		}
		got.dg, got.db = make([]float64, C), make([]float64, C)
		got.rm, got.rv = l.RunningStats()
	} else {
		got = run(t, tensor.Shape{ns[rank], C, S}, mine, mineW, steps, bn.WithCommunicator(w), bn.WithSyncTimeout(time.Minute))
		off := 0
		for _, n := range ns[:rank] {
			off += n * C * S
		}
		closeTo(t, "y", got.y, want.y[off:off+len(mine)], 1e-10)
		closeTo(t, "dx", got.dx, want.dx[off:off+len(mine)], 1e-10)
	}
	closeTo(t, "running mean", got.rm, want.rm, 1e-12)
	closeTo(t, "running var", got.rv, want.rv, 1e-12)
	// Σ over ranks of dγ, dβ equals the single-process gradients.
	sum := append(append([]float64(nil), got.dg...), got.db...)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := w.AllReduce(ctx, collective.Float64s(sum), collective.Sum); err != nil {
		t.Fatal(err)
	}
	closeTo(t, "Σ dγ", sum[:C], want.dg, 1e-10)
	closeTo(t, "Σ dβ", sum[C:], want.db, 1e-10)
	// Bitwise-equal running statistics everywhere.
	stats := append(append([]float64(nil), got.rm...), got.rv...)
	gathered := make([]float64, K*len(stats))
	if err := w.AllGather(ctx, collective.Float64s(stats), collective.Float64s(gathered), nil); err != nil {
		t.Fatal(err)
	}
	for k := range K {
		for i, v := range stats {
			if gathered[k*len(stats)+i] != v {
				t.Fatalf("running statistics of rank %d differ from rank %d's", k, rank)
			}
		}
	}
}

// TestPrecise: a distributed PreciseBN pass (plain layer, PreciseOptions.Comm)
// gives the population statistics of the union of every rank's batches.
func TestPrecise(t *testing.T) {
	w := world(t)
	K, rank := w.Size(), w.Rank()
	const C = 2
	r := rand.New(rand.NewSource(12))
	var mine [][]float64
	var sum, cnt [C]float64
	var union [][]float64
	for k := range K {
		for b := range 2 {
			n := 2 + (k+b)%3
			x := make([]float64, n*C)
			for i := range x {
				x[i] = float64(k) + float64(b) + r.NormFloat64()
			}
			union = append(union, x)
			if k == rank {
				mine = append(mine, x)
			}
		}
	}
	for _, x := range union {
		for i, v := range x {
			sum[i%C] += v
			cnt[i%C]++
		}
	}
	var mean, variance [C]float64
	for c := range C {
		mean[c] = sum[c] / cnt[c]
		var sq float64
		for _, x := range union {
			for i := c; i < len(x); i += C {
				sq += (x[i] - mean[c]) * (x[i] - mean[c])
			}
		}
		variance[c] = sq / (cnt[c] - 1)
	}
	g := gorgonia.NewGraph()
	l, err := bn.New(g, C, tensor.Float64)
	if err != nil {
		t.Fatal(err)
	}
	machines := map[int]gorgonia.VM{}
	inputs := map[int]*gorgonia.Node{}
	for _, x := range mine {
		n := len(x) / C
		if _, ok := inputs[n]; ok {
			continue
		}
		in := gorgonia.NewMatrix(g, tensor.Float64, gorgonia.WithShape(n, C))
		y, err := l.Apply(in)
		if err != nil {
			t.Fatal(err)
		}
		inputs[n], machines[n] = in, gorgonia.NewTapeMachine(g.SubgraphRoots(y))
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, err = bn.Precise(ctx, []bn.Normalizer{l}, func(ctx context.Context, i int) (int, error) {
		if i >= len(mine) {
			return 0, io.EOF
		}
		n := len(mine[i]) / C
		if err := gorgonia.Let(inputs[n], tensor.New(tensor.WithShape(n, C), tensor.WithBacking(mine[i]))); err != nil {
			return 0, err
		}
		machines[n].Reset()
		return n, machines[n].RunAll()
	}, bn.PreciseOptions{Batches: 2, Comm: w})
	if err != nil {
		t.Fatal(err)
	}
	gm, gv := l.RunningStats()
	closeTo(t, "population mean", gm, mean[:], 1e-10)
	closeTo(t, "population var", gv, variance[:], 1e-10)
}
