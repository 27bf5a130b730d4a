package bn

import (
	"context"
	"errors"
	"io"
	"math/rand"
	"testing"

	"github.com/stretchr/testify/require"
	"gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// popStats returns the mean and unbiased variance per channel of x (N, C, S)
// by the two-pass formula.
func popStats(x []float64, C, S int) (mean, variance []float64) {
	mean, variance = make([]float64, C), make([]float64, C)
	n := len(x) / C
	for i, v := range x {
		mean[(i/S)%C] += v / float64(n)
	}
	for i, v := range x {
		d := v - mean[(i/S)%C]
		variance[(i/S)%C] += d * d / float64(n-1)
	}
	return mean, variance
}

// TestPreciseBySize: 10 samples in batches of 4, 4 and 2 (a graph per size,
// over copies of the trained layer) give the exact population statistics of
// the 10; running to a sample count beyond the data ends with DataEnded.
func TestPreciseBySize(t *testing.T) {
	const C, S, N, B = 2, 3, 10, 4
	r := rand.New(rand.NewSource(6))
	data := randn(r, N*C*S, 3, 2)
	g := gorgonia.NewGraph()
	l, err := New(g, C, tensor.Float64, WithName("bn"))
	require.NoError(t, err)
	built := map[int]int{}
	run := BySize(func(_ context.Context, i int) (int, error) {
		if i*B >= N {
			return 0, io.EOF
		}
		return min(B, N-i*B), nil
	}, func(n int) (BatchFunc, error) {
		built[n]++
		f := copyIn(t, l, n, C, S)
		return func(_ context.Context, i int) (int, error) {
			f.run(t, data[i*B*C*S:(i*B+n)*C*S])
			return n, nil
		}, nil
	})
	wantMean, wantVar := popStats(data, C, S)
	for _, opt := range []PreciseOptions{{Batches: 3}, {Samples: 10}, {Samples: 1000}} {
		l.ResetRunningStats()
		rep, err := Precise(context.Background(), []Normalizer{l}, run, opt)
		require.NoError(t, err)
		m, v := l.RunningStats()
		assertClose(t, "population mean", m, wantMean, 1e-12)
		assertClose(t, "population var", v, wantVar, 1e-12)
		require.Equal(t, 3, rep.Batches)
		require.Equal(t, N, rep.GlobalSamples)
		require.Equal(t, opt.Samples == 1000, rep.DataEnded, "%+v", opt)
		require.Equal(t, Train, l.Mode())
	}
	require.Equal(t, map[int]int{4: 1, 2: 1}, built, "one graph per batch size")

	// Errors of size and build reach the caller.
	boom := errors.New("boom")
	_, err = BySize(func(context.Context, int) (int, error) { return 0, boom }, nil)(context.Background(), 0)
	require.ErrorIs(t, err, ErrOption)
	_, err = BySize(func(context.Context, int) (int, error) { return 0, boom }, func(int) (BatchFunc, error) { return nil, nil })(context.Background(), 0)
	require.ErrorIs(t, err, boom)
	_, err = BySize(func(context.Context, int) (int, error) { return 2, nil }, func(int) (BatchFunc, error) { return nil, boom })(context.Background(), 0)
	require.ErrorIs(t, err, boom)
	_, err = BySize(func(context.Context, int) (int, error) { return 0, nil }, func(int) (BatchFunc, error) { return nil, nil })(context.Background(), 0)
	require.ErrorIs(t, err, ErrOption)
}

// TestPreciseForwardOnly: Precise over a training graph, run through a
// machine of the forward subgraph only (g.SubgraphRoots(y)), gives the
// statistics of the full machine and never runs the backward.
func TestPreciseForwardOnly(t *testing.T) {
	const C = 2
	r := rand.New(rand.NewSource(7))
	g := gorgonia.NewGraph()
	xv := tensor.New(tensor.WithShape(4, C), tensor.WithBacking(randn(r, 4*C, 1, 1)))
	x := gorgonia.NewTensor(g, tensor.Float64, 2, gorgonia.WithShape(4, C), gorgonia.WithValue(xv))
	l, err := New(g, C, tensor.Float64)
	require.NoError(t, err)
	y, err := l.Apply(x)
	require.NoError(t, err)
	grads, err := gorgonia.Grad(gorgonia.Must(gorgonia.Sum(gorgonia.Must(gorgonia.Square(y)))), l.Learnables()...)
	require.NoError(t, err)
	fwd := gorgonia.NewTapeMachine(g.SubgraphRoots(y))
	defer fwd.Close()
	_, err = Precise(context.Background(), []Normalizer{l}, func(context.Context, int) (int, error) {
		fwd.Reset()
		return 4, fwd.RunAll()
	}, PreciseOptions{Batches: 1})
	require.NoError(t, err)
	require.Nil(t, grads[0].Value(), "the backward ran")
	m, v := l.RunningStats()
	wm, wv := popStats(xv.Data().([]float64), C, 1)
	assertClose(t, "mean", m, wm, 1e-12)
	assertClose(t, "var", v, wv, 1e-12)
}
