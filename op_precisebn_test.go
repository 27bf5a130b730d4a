package bn

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand"
	"sync"
	"testing"

	"github.com/gorgonia-bn/bn/collective"
	"github.com/stretchr/testify/require"
	"gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// preciseNet is x → BN1 → 2·y+1 → BN2 for batches of several sizes in one
// graph: one input node and one machine (over its subgraph) per size.
type preciseNet struct {
	l1, l2 *Layer
	ins    map[int]*gorgonia.Node
	outs   map[int][2]*gorgonia.Node
	ms     map[int]gorgonia.VM
	inner  []int
	dt     tensor.Dtype
}

func newPreciseNet(t *testing.T, dt tensor.Dtype, C int, inner []int, sizes []int, opts ...Option) *preciseNet {
	t.Helper()
	g := gorgonia.NewGraph()
	p := &preciseNet{ins: map[int]*gorgonia.Node{}, outs: map[int][2]*gorgonia.Node{}, ms: map[int]gorgonia.VM{}, inner: inner, dt: dt}
	var err error
	if p.l1, err = New(g, C, dt, append([]Option{WithName("bn1")}, opts...)...); err != nil {
		t.Fatal(err)
	}
	if p.l2, err = New(g, C, dt, append([]Option{WithName("bn2")}, opts...)...); err != nil {
		t.Fatal(err)
	}
	for _, n := range sizes {
		if _, ok := p.ins[n]; ok {
			continue
		}
		shape := append(tensor.Shape{n, C}, inner...)
		x := gorgonia.NewTensor(g, dt, len(shape), gorgonia.WithShape(shape...), gorgonia.WithName(fmt.Sprintf("x%d", n)))
		y1, err := p.l1.Apply(x)
		if err != nil {
			t.Fatal(err)
		}
		two := gorgonia.NewConstant(castTo(dt, 2.0))
		one := gorgonia.NewConstant(castTo(dt, 1.0))
		h := gorgonia.Must(gorgonia.Add(gorgonia.Must(gorgonia.Mul(y1, two)), one))
		y2, err := p.l2.Apply(h)
		if err != nil {
			t.Fatal(err)
		}
		p.ins[n], p.outs[n] = x, [2]*gorgonia.Node{y1, y2}
		p.ms[n] = gorgonia.NewTapeMachine(g.SubgraphRoots(y2))
	}
	t.Cleanup(func() {
		for _, m := range p.ms {
			m.Close()
		}
	})
	return p
}

func castTo(dt tensor.Dtype, v float64) any {
	if dt == tensor.Float32 {
		return float32(v)
	}
	return v
}

// forward runs the net on xs (float64 data, converted to the net's dtype).
func (p *preciseNet) forward(n int, xs []float64) error {
	shape := p.ins[n].Shape()
	var back any = append([]float64(nil), xs...)
	if p.dt == tensor.Float32 {
		f := make([]float32, len(xs))
		for i := range xs {
			f[i] = float32(xs[i])
		}
		back = f
	}
	if err := gorgonia.Let(p.ins[n], tensor.New(tensor.WithShape(shape...), tensor.WithBacking(back))); err != nil {
		return err
	}
	m := p.ms[n]
	m.Reset()
	return m.RunAll()
}

// population returns the mean and unbiased variance per channel of the
// union of the batches (each N×C×S), computed directly in float64.
func population(batches [][]float64, C, S int) (mean, variance []float64) {
	mean, variance = make([]float64, C), make([]float64, C)
	for c := range C {
		var sum, cnt float64
		for _, b := range batches {
			for n := range len(b) / (C * S) {
				for s := range S {
					sum += b[(n*C+c)*S+s]
					cnt++
				}
			}
		}
		mean[c] = sum / cnt
		var sq float64
		for _, b := range batches {
			for n := range len(b) / (C * S) {
				for s := range S {
					d := b[(n*C+c)*S+s] - mean[c]
					sq += d * d
				}
			}
		}
		variance[c] = sq / (cnt - 1)
	}
	return mean, variance
}

// batchNormNaive normalizes one N×C×S batch with its own statistics
// (γ=1, β=0) in float64, then applies 2·y+1.
func batchNormNaive(b []float64, C, S int, eps float64) []float64 {
	N := len(b) / (C * S)
	out := make([]float64, len(b))
	for c := range C {
		var sum float64
		for n := range N {
			for s := range S {
				sum += b[(n*C+c)*S+s]
			}
		}
		m := sum / float64(N*S)
		var sq float64
		for n := range N {
			for s := range S {
				d := b[(n*C+c)*S+s] - m
				sq += d * d
			}
		}
		inv := 1 / math.Sqrt(sq/float64(N*S)+eps)
		for n := range N {
			for s := range S {
				i := (n*C+c)*S + s
				out[i] = 2*(b[i]-m)*inv + 1
			}
		}
	}
	return out
}

func TestPrecisePopulation(t *testing.T) {
	for _, tc := range []struct {
		name  string
		dt    tensor.Dtype
		inner []int
		tol   float64
	}{
		{"2d f64", tensor.Float64, nil, 1e-10},
		{"4d f64", tensor.Float64, []int{3, 2}, 1e-10},
		{"2d f32", tensor.Float32, nil, 2e-5},
		{"4d f32", tensor.Float32, []int{2, 2}, 2e-5},
	} {
		t.Run(tc.name, func(t *testing.T) {
			const C = 3
			S := 1
			for _, d := range tc.inner {
				S *= d
			}
			sizes := []int{5, 2, 7, 5, 3}
			r := rand.New(rand.NewSource(3))
			batches := make([][]float64, len(sizes))
			for i, n := range sizes {
				batches[i] = randn(r, n*C*S, float64(4*i), 1+float64(i)) // drifting batches
				if tc.dt == tensor.Float32 {
					for j, v := range batches[i] {
						batches[i][j] = float64(float32(v))
					}
				}
			}
			net := newPreciseNet(t, tc.dt, C, tc.inner, sizes)
			if err := net.l1.SetMode(Frozen); err != nil {
				t.Fatal(err)
			}
			var progress []int
			rep, err := Precise(context.Background(), []Normalizer{net.l1, net.l2}, func(ctx context.Context, i int) (int, error) {
				if i >= len(sizes) {
					return 0, io.EOF
				}
				return sizes[i], net.forward(sizes[i], batches[i])
			}, PreciseOptions{Batches: len(sizes), Progress: func(b, s, total int) { progress = append(progress, b) }})
			if err != nil {
				t.Fatal(err)
			}
			if rep.Batches != len(sizes) || rep.Samples != 22 || len(rep.Updated) != 2 || len(progress) != len(sizes) {
				t.Fatalf("report %+v, progress %v", rep, progress)
			}
			wantM, wantV := population(batches, C, S)
			gotM, gotV := net.l1.RunningStats()
			assertClose(t, "layer 1 mean", gotM, wantM, tc.tol)
			assertClose(t, "layer 1 var", gotV, wantV, tc.tol)
			// Layer 2 sees layer 1's output normalized with batch statistics.
			h := make([][]float64, len(batches))
			for i, b := range batches {
				h[i] = batchNormNaive(b, C, S, 1e-5)
			}
			wantM, wantV = population(h, C, S)
			gotM, gotV = net.l2.RunningStats()
			assertClose(t, "layer 2 mean", gotM, wantM, tc.tol)
			assertClose(t, "layer 2 var", gotV, wantV, tc.tol)
			if net.l1.Mode() != Frozen || net.l2.Mode() != Train {
				t.Fatalf("modes not restored: %v %v", net.l1.Mode(), net.l2.Mode())
			}
			if net.l1.NumBatchesTracked() != 0 {
				t.Fatal("the pass updated the EMA counter")
			}
		})
	}
}

func TestPreciseErrorsRestoreState(t *testing.T) {
	const C = 2
	r := rand.New(rand.NewSource(5))
	net := newPreciseNet(t, tensor.Float64, C, nil, []int{4})
	batch := randn(r, 4*C, 1, 2)
	m0, v0 := net.l1.RunningStats()
	run := func(fail int) BatchFunc {
		return func(ctx context.Context, i int) (int, error) {
			if i == fail {
				return 0, errors.New("injected")
			}
			if i >= 3 {
				return 0, io.EOF
			}
			return 4, net.forward(4, batch)
		}
	}
	layers := []Normalizer{net.l1, net.l2}
	for _, tc := range []struct {
		name string
		run  BatchFunc
		opt  PreciseOptions
		want error
	}{
		{"injected failure", run(2), PreciseOptions{Batches: 3}, nil},
		{"data ends early", run(-1), PreciseOptions{Batches: 5}, ErrDataEnded},
		{"no batch", func(context.Context, int) (int, error) { return 0, io.EOF }, PreciseOptions{}, ErrNoBatches},
		{"negative", run(-1), PreciseOptions{Batches: -1}, ErrOption},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Precise(context.Background(), layers, tc.run, tc.opt)
			if err == nil || tc.want != nil && !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
			m, v := net.l1.RunningStats()
			assertClose(t, "mean untouched", m, m0, 0)
			assertClose(t, "var untouched", v, v0, 0)
			if net.l1.Mode() != Train || net.l1.obs != nil {
				t.Fatal("state not restored")
			}
		})
	}
	_, err := Precise(context.Background(), layers, run(-1), PreciseOptions{Batches: 5})
	require.ErrorIs(t, err, ErrDataEnded)
	require.Contains(t, err.Error(), "got 3 of 5")
}

func TestPreciseNotReachedAndTwice(t *testing.T) {
	const C = 2
	r := rand.New(rand.NewSource(6))
	g := gorgonia.NewGraph()
	used, _ := New(g, C, tensor.Float64, WithName("used"))
	unused, _ := New(g, C, tensor.Float64, WithName("unused"))
	x := gorgonia.NewMatrix(g, tensor.Float64, gorgonia.WithShape(4, C), gorgonia.WithName("x"), gorgonia.WithValue(tensor.New(tensor.WithShape(4, C), tensor.WithBacking(randn(r, 4*C, 0, 1)))))
	y, _ := used.Apply(x)
	m := gorgonia.NewTapeMachine(g.SubgraphRoots(y))
	defer m.Close()
	run := func(ctx context.Context, i int) (int, error) { m.Reset(); return 4, m.RunAll() }
	rep, err := Precise(context.Background(), []Normalizer{used, unused}, run, PreciseOptions{Batches: 2})
	if !errors.Is(err, ErrNotReached) || len(rep.NotReached) != 1 || rep.NotReached[0] != "unused" || len(rep.Updated) != 1 {
		t.Fatalf("err %v, report %+v", err, rep)
	}
	if mm, _ := unused.RunningStats(); mm[0] != 0 {
		t.Fatal("unreached layer changed")
	}
	// Weight sharing: the same layer twice in one forward.
	y2, _ := used.Apply(y)
	m2 := gorgonia.NewTapeMachine(g.SubgraphRoots(y2))
	defer m2.Close()
	_, err = Precise(context.Background(), []Normalizer{used}, func(ctx context.Context, i int) (int, error) { m2.Reset(); return 4, m2.RunAll() }, PreciseOptions{Batches: 1})
	require.ErrorIs(t, err, ErrReachedTwice)
	// Non-finite statistics.
	bad := randn(r, 4*C, 0, 1)
	bad[0] = math.Inf(1)
	if err := gorgonia.Let(x, tensor.New(tensor.WithShape(4, C), tensor.WithBacking(bad))); err != nil {
		t.Fatal(err)
	}
	_, err = Precise(context.Background(), []Normalizer{used}, run, PreciseOptions{Batches: 1})
	require.ErrorIs(t, err, ErrNonFinite)
}

// TestPreciseDistributed: K ranks, each with its own batches, end with the
// population statistics of the union, bitwise equal on every rank — for a
// plain layer merged by PreciseOptions.Comm and for a synchronized one.
func TestPreciseDistributed(t *testing.T) {
	for _, synced := range []bool{false, true} {
		t.Run(fmt.Sprintf("synced=%v", synced), func(t *testing.T) {
			const C, K = 3, 3
			sizes := [K][]int{{4, 2}, {3, 3}, {5, 2}} // per rank, per batch
			r := rand.New(rand.NewSource(9))
			data := make([][][]float64, K)
			var union [][]float64
			for k := range K {
				for i, n := range sizes[k] {
					b := randn(r, n*C, float64(k+i), 1+float64(k))
					data[k] = append(data[k], b)
					union = append(union, b)
				}
			}
			wantM, wantV := population(union, C, 1)
			comms, err := collective.NewInProcess(K)
			if err != nil {
				t.Fatal(err)
			}
			got := make([][2][]float64, K)
			errs := make([]error, K)
			var wg sync.WaitGroup
			for k := range K {
				wg.Go(func() {
					var opts []Option
					opt := PreciseOptions{Batches: 2}
					if synced {
						opts = append(opts, WithCommunicator(comms[k]))
					} else {
						opt.Comm = comms[k]
					}
					net := newPreciseNet(t, tensor.Float64, C, nil, sizes[k], opts...)
					_, errs[k] = Precise(context.Background(), []Normalizer{net.l1}, func(ctx context.Context, i int) (int, error) {
						return sizes[k][i], net.forward(sizes[k][i], data[k][i])
					}, opt)
					got[k][0], got[k][1] = net.l1.RunningStats()
				})
			}
			wg.Wait()
			for k := range K {
				require.NoError(t, errs[k], "rank %d", k)
				assertClose(t, "mean", got[k][0], wantM, 1e-10)
				assertClose(t, "var", got[k][1], wantV, 1e-10)
				for c := range C {
					if got[k][0][c] != got[0][0][c] || got[k][1][c] != got[0][1][c] {
						t.Fatalf("rank %d differs from rank 0", k)
					}
				}
			}
		})
	}
}
