package bn

import (
	"context"
	"maps"
	"math"
	"math/rand"
	"sync"
	"testing"
	"time"

	"github.com/gorgonia-bn/bn/collective"
	"github.com/stretchr/testify/require"
	"gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// bnRun is the result of steps training steps of one BN layer on fixed
// data with the loss Σ y⊙w.
type bnRun struct {
	y, dx, dg, db, rm, rv []float64
	tracked               int64
}

// runLayer builds x → BN → Σ y⊙w, runs it steps times (TapeMachine) and
// returns the last step's values. xs and ws have shape.
func runLayer(shape tensor.Shape, xs, ws []float64, steps int, opts ...Option) (bnRun, error) {
	g := gorgonia.NewGraph()
	x := gorgonia.NewTensor(g, tensor.Float64, len(shape), gorgonia.WithShape(shape...), gorgonia.WithName("x"),
		gorgonia.WithValue(tensor.New(tensor.WithShape(shape...), tensor.WithBacking(append([]float64(nil), xs...)))))
	w := gorgonia.NewTensor(g, tensor.Float64, len(shape), gorgonia.WithShape(shape...), gorgonia.WithName("w"),
		gorgonia.WithValue(tensor.New(tensor.WithShape(shape...), tensor.WithBacking(append([]float64(nil), ws...)))))
	l, err := New(g, shape[1], tensor.Float64, append([]Option{WithName("l")}, opts...)...)
	if err != nil {
		return bnRun{}, err
	}
	y, err := l.Apply(x)
	if err != nil {
		return bnRun{}, err
	}
	cost := gorgonia.Must(gorgonia.Sum(gorgonia.Must(gorgonia.HadamardProd(y, w))))
	grads, err := gorgonia.Grad(cost, x, l.Gamma(), l.Beta())
	if err != nil {
		return bnRun{}, err
	}
	m := gorgonia.NewTapeMachine(g, gorgonia.TraceExec()) // keep y's value: the tape may reuse its register
	defer m.Close()
	for range steps {
		m.Reset()
		if err := m.RunAll(); err != nil {
			return bnRun{}, err
		}
	}
	f := func(n *gorgonia.Node) []float64 { return append([]float64(nil), n.Value().Data().([]float64)...) }
	r := bnRun{y: f(y), dx: f(grads[0]), dg: f(grads[1]), db: f(grads[2]), tracked: l.NumBatchesTracked()}
	r.rm, r.rv = l.RunningStats()
	return r, nil
}

func assertClose(t *testing.T, what string, got, want []float64, tol float64) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d values, want %d", what, len(got), len(want))
	}
	for i := range got {
		if d := math.Abs(got[i] - want[i]); !(d <= tol*math.Max(1, math.Abs(want[i]))) {
			t.Fatalf("%s[%d] = %v, want %v (diff %g)", what, i, got[i], want[i], d)
		}
	}
}

// TestSyncEqualsConcatenated: K ranks with uneven batches give what one
// plain layer gives on the concatenated batch.
func TestSyncEqualsConcatenated(t *testing.T) {
	for _, tc := range []struct {
		name  string
		sizes []int
		inner []int // spatial dims
		opts  []Option
	}{
		{"2d", []int{3, 1, 5}, nil, nil},
		{"empty rank", []int{3, 0, 5}, []int{2}, nil},
		{"ghost", []int{5, 3}, []int{2}, []Option{WithGhostBatch(2)}},
		{"4d", []int{2, 3, 1, 4}, []int{2, 3}, nil},
		{"cumulative", []int{2, 2}, []int{5}, []Option{WithCumulativeAverage()}},
		{"one rank", []int{4}, []int{2, 2}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := rand.New(rand.NewSource(7))
			const C = 3
			per := C
			for _, d := range tc.inner {
				per *= d
			}
			var all, allW []float64
			xs, ws := make([][]float64, len(tc.sizes)), make([][]float64, len(tc.sizes))
			total := 0
			for i, n := range tc.sizes {
				xs[i], ws[i] = randn(r, n*per, 5, 3), randn(r, n*per, 0, 1)
				all, allW = append(all, xs[i]...), append(allW, ws[i]...)
				total += n
			}
			shapeOf := func(n int) tensor.Shape { return append(tensor.Shape{n, C}, tc.inner...) }
			want, err := runLayer(shapeOf(total), all, allW, 3, tc.opts...)
			if err != nil {
				t.Fatal(err)
			}
			comms, err := collective.NewInProcess(len(tc.sizes))
			if err != nil {
				t.Fatal(err)
			}
			got := make([]bnRun, len(tc.sizes))
			errs := make([]error, len(tc.sizes))
			var wg sync.WaitGroup
			for i := range tc.sizes {
				wg.Go(func() {
					if tc.sizes[i] == 0 {
						got[i], errs[i] = emptyRank(3, C, append([]Option{WithCommunicator(comms[i])}, tc.opts...)...)
						return
					}
					got[i], errs[i] = runLayer(shapeOf(tc.sizes[i]), xs[i], ws[i], 3, append([]Option{WithCommunicator(comms[i])}, tc.opts...)...)
				})
			}
			wg.Wait()
			off := 0
			dg, db := make([]float64, C), make([]float64, C)
			for i, n := range tc.sizes {
				if errs[i] != nil {
					t.Fatalf("rank %d: %v", i, errs[i])
				}
				assertClose(t, "y", got[i].y, want.y[off:off+n*per], 1e-10)
				assertClose(t, "dx", got[i].dx, want.dx[off:off+n*per], 1e-10)
				for c := range C {
					dg[c] += got[i].dg[c]
					db[c] += got[i].db[c]
				}
				assertClose(t, "running mean", got[i].rm, want.rm, 1e-12)
				assertClose(t, "running var", got[i].rv, want.rv, 1e-12)
				if got[i].tracked != want.tracked {
					t.Fatalf("rank %d tracked %d, want %d", i, got[i].tracked, want.tracked)
				}
				for c := range C { // bitwise equal across ranks
					if got[i].rm[c] != got[0].rm[c] || got[i].rv[c] != got[0].rv[c] {
						t.Fatalf("running stats differ between rank 0 and %d", i)
					}
				}
				off += n * per
			}
			assertClose(t, "Σ dγ", dg, want.dg, 1e-10)
			assertClose(t, "Σ dβ", db, want.db, 1e-10)
		})
	}
}

// emptyRank is runLayer for a rank without samples: EmptyStep each step.
func emptyRank(steps, C int, opts ...Option) (bnRun, error) {
	l, err := New(gorgonia.NewGraph(), C, tensor.Float64, append([]Option{WithName("l")}, opts...)...)
	if err != nil {
		return bnRun{}, err
	}
	for range steps {
		if err := EmptyStep([]*Layer{l}, true); err != nil {
			return bnRun{}, err
		}
	}
	r := bnRun{dg: make([]float64, C), db: make([]float64, C), tracked: l.NumBatchesTracked()}
	r.rm, r.rv = l.RunningStats()
	return r, nil
}

// TestSyncMismatch: ranks with different channel counts get ErrSync, not a
// hang or wrong numbers.
func TestSyncMismatch(t *testing.T) {
	comms, err := collective.NewInProcess(2)
	if err != nil {
		t.Fatal(err)
	}
	errs := make([]error, 2)
	var wg sync.WaitGroup
	for i := range 2 {
		wg.Go(func() {
			r := rand.New(rand.NewSource(int64(i)))
			C := 3 + i
			shape := tensor.Shape{4, C}
			_, errs[i] = runLayer(shape, randn(r, 4*C, 0, 1), randn(r, 4*C, 0, 1), 1, WithCommunicator(comms[i]), WithSyncTimeout(10*time.Second))
		})
	}
	wg.Wait()
	for i, err := range errs {
		require.ErrorIs(t, Cause(err), ErrSync, "rank %d", i)
	}
}

// TestSyncMissingRank: a rank that never arrives makes the other fail
// within its timeout.
func TestSyncMissingRank(t *testing.T) {
	comms, err := collective.NewInProcess(2)
	if err != nil {
		t.Fatal(err)
	}
	defer comms[1].Close()
	r := rand.New(rand.NewSource(1))
	start := time.Now()
	_, err = runLayer(tensor.Shape{4, 2}, randn(r, 8, 0, 1), randn(r, 8, 0, 1), 1, WithCommunicator(comms[0]), WithSyncTimeout(200*time.Millisecond))
	require.ErrorIs(t, Cause(err), ErrSync)
	require.ErrorIs(t, Cause(err), context.DeadlineExceeded)
	require.Less(t, time.Since(start), 20*time.Second, "a missing rank must fail the others within the timeout")
}

// TestSyncGhostCollectives: a ghost layer places its samples in the global
// batch once per op (one extra all-gather on the first step), then makes
// one all-gather per forward and one all-reduce per backward.
func TestSyncGhostCollectives(t *testing.T) {
	comms, err := collective.NewInProcess(2)
	if err != nil {
		t.Fatal(err)
	}
	counts := make([]map[string]int, 2)
	errs := make([]error, 2)
	var wg sync.WaitGroup
	for i := range 2 {
		wg.Go(func() {
			r := rand.New(rand.NewSource(int64(i)))
			cc := newCountingComm(comms[i])
			shape := tensor.Shape{3 + i, 2, 2}
			n := shape.TotalSize()
			_, errs[i] = runLayer(shape, randn(r, n, 0, 1), randn(r, n, 0, 1), 4, WithCommunicator(cc), WithGhostBatch(2))
			counts[i] = cc.take()
		})
	}
	wg.Wait()
	for i := range 2 {
		if errs[i] != nil {
			t.Fatal(errs[i])
		}
		if want := map[string]int{"AllGather": 1, "Moments": 4, "AllReduce": 4}; !maps.Equal(counts[i], want) {
			t.Errorf("rank %d: collectives %v over 4 steps, want %v", i, counts[i], want)
		}
	}
}
