package bn

import (
	"context"
	"io"
	"math"
	"math/rand"
	"testing"
	"time"

	"github.com/gorgonia-bn/bn/collective"
	"github.com/stretchr/testify/require"
	"gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// fwdGraph is a forward-only graph y = l.Apply(x) over a fresh graph.
type fwdGraph struct {
	x  *tensor.Dense
	y  *gorgonia.Node
	l  *Layer
	vm gorgonia.VM
}

// copyIn builds a forward graph of l's copy for inputs of the given shape.
func copyIn(t *testing.T, l *Layer, shape ...int) *fwdGraph {
	t.Helper()
	g := gorgonia.NewGraph()
	c, err := l.In(g)
	require.NoError(t, err)
	f := &fwdGraph{x: tensor.New(tensor.Of(tensor.Float64), tensor.WithShape(shape...)), l: c}
	x := gorgonia.NewTensor(g, tensor.Float64, len(shape), gorgonia.WithShape(shape...), gorgonia.WithValue(f.x))
	f.y, err = c.Apply(x)
	require.NoError(t, err)
	f.vm = gorgonia.NewTapeMachine(g)
	t.Cleanup(func() { f.vm.Close() })
	return f
}

func (f *fwdGraph) run(t *testing.T, x []float64) []float64 {
	t.Helper()
	copy(f.x.Data().([]float64), x)
	f.vm.Reset()
	require.NoError(t, f.vm.RunAll())
	return append([]float64(nil), f.y.Value().Data().([]float64)...)
}

// evalRef is y = (x−μ)/√(v+ε)·γ + β in float64 for x of shape (N, C, S…).
func evalRef(x []float64, C, S int, mean, variance, gam, bet []float64, eps float64) []float64 {
	y := make([]float64, len(x))
	for i, v := range x {
		c := (i / S) % C
		y[i] = (v-mean[c])/math.Sqrt(variance[c]+eps)*gam[c] + bet[c]
	}
	return y
}

// TestLayerIn trains a layer in one graph (forward, backward, solver) and
// evaluates it in two others, at other batch sizes and ranks: the running
// statistics stay identical, the outputs are those of the trained γ, β and
// statistics, and a training run in another graph updates the one set of
// statistics once.
func TestLayerIn(t *testing.T) {
	const C, eps = 3, 1e-5
	r := rand.New(rand.NewSource(20))
	g := gorgonia.NewGraph()
	xv := tensor.New(tensor.Of(tensor.Float64), tensor.WithShape(8, C, 2))
	x := gorgonia.NewTensor(g, tensor.Float64, 3, gorgonia.WithShape(8, C, 2), gorgonia.WithValue(xv))
	l, err := New(g, C, tensor.Float64, WithName("blk.bn"))
	require.NoError(t, err)
	y, err := l.Apply(x)
	require.NoError(t, err)
	wv := tensor.New(tensor.WithShape(8, C, 2), tensor.WithBacking(randn(r, 8*C*2, 0, 1)))
	w := gorgonia.NewTensor(g, tensor.Float64, 3, gorgonia.WithShape(8, C, 2), gorgonia.WithValue(wv))
	loss := gorgonia.Must(gorgonia.Sum(gorgonia.Must(gorgonia.HadamardProd(y, w))))
	_, err = gorgonia.Grad(loss, l.Learnables()...)
	require.NoError(t, err)
	vm := gorgonia.NewTapeMachine(g, gorgonia.BindDualValues(l.Learnables()...))
	defer vm.Close()
	solver := gorgonia.NewVanillaSolver(gorgonia.WithLearnRate(0.1))
	for range 4 {
		copy(xv.Data().([]float64), randn(r, 8*C*2, 2, 3))
		vm.Reset()
		require.NoError(t, vm.RunAll())
		require.NoError(t, solver.Step(gorgonia.NodesToValueGrads(l.Learnables())))
	}
	require.EqualValues(t, 4, l.NumBatchesTracked())
	mean, variance := l.RunningStats()
	gam := append([]float64(nil), l.Gamma().Value().Data().([]float64)...)
	bet := append([]float64(nil), l.Beta().Value().Data().([]float64)...)
	require.NotEqual(t, 1.0, gam[0], "the solver did not move γ")

	// Two more graphs: batch 3 of (N, C, 2) and batch 5 of (N, C).
	g2, g3 := copyIn(t, l, 3, C, 2), copyIn(t, l, 5, C)
	require.NoError(t, g2.l.SetMode(Eval)) // one mode for all copies
	require.Equal(t, Eval, l.Mode())
	for i := range 2 {
		x2, x3 := randn(r, 3*C*2, 1, 2), randn(r, 5*C, -1, 2)
		assertClose(t, "graph 2", g2.run(t, x2), evalRef(x2, C, 2, mean, variance, gam, bet, eps), 1e-12)
		assertClose(t, "graph 3", g3.run(t, x3), evalRef(x3, C, 1, mean, variance, gam, bet, eps), 1e-12)
		for _, c := range []*Layer{l, g2.l, g3.l} {
			m, v := c.RunningStats()
			require.Equal(t, mean, m, "run %d", i)
			require.Equal(t, variance, v, "run %d", i)
			require.EqualValues(t, 4, c.NumBatchesTracked())
		}
	}
	require.Equal(t, l.SyncKey(), g2.l.SyncKey())
	require.Equal(t, l.Name(), g3.l.Name())

	// Training in graph 3 folds its batch in once, for every copy.
	require.NoError(t, l.SetMode(Train))
	x3 := randn(r, 5*C, 4, 1)
	g3.run(t, x3)
	want := append([]float64(nil), mean...)
	for c := range C {
		s := 0.0
		for n := range 5 {
			s += x3[n*C+c]
		}
		want[c] = 0.9*mean[c] + 0.1*s/5
	}
	for _, c := range []*Layer{l, g2.l, g3.l} {
		m, _ := c.RunningStats()
		assertClose(t, "running mean after one training run in graph 3", m, want, 1e-12)
		require.EqualValues(t, 5, c.NumBatchesTracked())
	}

	// SetAffine and SetRunningStats through a copy reach the owner's graph.
	require.NoError(t, g2.l.SetAffine(tensor.New(tensor.WithShape(C), tensor.WithBacking([]float64{2, 2, 2})), tensor.New(tensor.WithShape(C), tensor.WithBacking([]float64{0, 0, 0}))))
	require.Equal(t, []float64{2, 2, 2}, l.Gamma().Value().Data().([]float64))

	// A layer and its copy are one layer for Precise.
	_, err = Precise(context.Background(), []Normalizer{l, g2.l}, func(context.Context, int) (int, error) { return 0, io.EOF }, PreciseOptions{Batches: 1})
	require.ErrorIs(t, err, ErrOption)

	// Misuse.
	var nl *Layer
	_, err = nl.In(gorgonia.NewGraph())
	require.ErrorIs(t, err, ErrOption)
	_, err = l.In(nil)
	require.ErrorIs(t, err, ErrOption)
	same, err := l.In(g)
	require.NoError(t, err)
	require.Same(t, l, same)
	_, err = g2.l.Apply(x) // g's node: the copy belongs to g2
	require.ErrorIs(t, err, ErrShape)
}

// TestLayerInSync: synchronized layers with copies at another batch size
// (on every rank) match across ranks by their key and count their steps
// together: the running statistics are bitwise equal on every rank and
// equal those of one process with the concatenated batches; a copy
// built on one rank only changes nothing.
func TestLayerInSync(t *testing.T) {
	const C, K = 2, 2
	r := rand.New(rand.NewSource(3))
	// Per step: each rank's batch (the graph of batch 4, then of 2, then 4).
	sizes := []int{4, 2, 4}
	data := make([][K][]float64, len(sizes))
	for s, n := range sizes {
		for k := range K {
			data[s][k] = randn(r, n*C, float64(s+k), 1+float64(k))
		}
	}
	// One process: the concatenated batches.
	ref, err := New(gorgonia.NewGraph(), C, tensor.Float64, WithName("ref"))
	require.NoError(t, err)
	refGraphs := map[int]*fwdGraph{}
	for s, n := range sizes {
		if refGraphs[n] == nil {
			refGraphs[n] = copyIn(t, ref, K*n, C)
		}
		refGraphs[n].run(t, append(append([]float64(nil), data[s][0]...), data[s][1]...))
	}
	wantMean, wantVar := ref.RunningStats()

	layers := make([]*Layer, K)
	graphs := make([]map[int]*fwdGraph, K)
	comms, err := collective.NewInProcess(K)
	require.NoError(t, err)
	defer func() {
		for _, c := range comms {
			c.Close()
		}
	}()
	for k := range K { // Gorgonia graphs are built one at a time
		layers[k], err = New(gorgonia.NewGraph(), C, tensor.Float64, WithName("blk.bn"), WithCommunicator(comms[k]), WithSyncTimeout(10*time.Second))
		require.NoError(t, err)
		graphs[k] = map[int]*fwdGraph{4: copyIn(t, layers[k], 4, C), 2: copyIn(t, layers[k], 2, C)}
		if k == 0 {
			copyIn(t, layers[k], 7, C) // a graph on rank 0 only, never run
		}
	}
	errs := make(chan error, K)
	for k := range K {
		go func() {
			var err error
			for s, n := range sizes {
				f := graphs[k][n]
				copy(f.x.Data().([]float64), data[s][k])
				f.vm.Reset()
				if err = f.vm.RunAll(); err != nil {
					break
				}
			}
			errs <- err
		}()
	}
	for range K {
		require.NoError(t, <-errs)
	}
	for k := range K {
		m, v := layers[k].RunningStats()
		assertClose(t, "running mean", m, wantMean, 1e-12)
		assertClose(t, "running var", v, wantVar, 1e-12)
		m0, v0 := layers[0].RunningStats()
		require.Equal(t, m0, m)
		require.Equal(t, v0, v)
		require.EqualValues(t, 3, layers[k].NumBatchesTracked())
		require.Equal(t, "blk.bn", graphs[k][2].l.SyncKey())
	}
}
