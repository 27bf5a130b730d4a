package bn

import (
	"fmt"
	"math"
	"math/big"
	"math/rand"
	"sync"
	"testing"

	"github.com/gorgonia-bn/bn/collective"
	"github.com/gorgonia-bn/bn/internal/kern"
	"github.com/stretchr/testify/require"
	"gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// scaleData is rank r's data for the exchange tests: nseg·C sets of
// offset + N(0, 1) values (float32-rounded), with uneven sizes (0 … 6
// values per set) and rank 1 empty in groups of 3 or more.
func scaleData(r, P, nseg, C int, offset float64) [][]float64 {
	rng := rand.New(rand.NewSource(int64(1000*P + r)))
	sets := make([][]float64, nseg*C)
	for i := range sets {
		n := rng.Intn(7)
		if P >= 3 && r == 1 {
			n = 0
		}
		for range n {
			sets[i] = append(sets[i], float64(float32(offset+rng.NormFloat64())))
		}
	}
	return sets
}

// exactMoments returns the moments of xs computed exactly (big.Rat), then
// rounded.
func exactMoments(xs []float64) kern.Moments {
	if len(xs) == 0 {
		return kern.Moments{}
	}
	sum := new(big.Rat)
	for _, x := range xs {
		sum.Add(sum, new(big.Rat).SetFloat64(x))
	}
	mean := new(big.Rat).Quo(sum, new(big.Rat).SetInt64(int64(len(xs))))
	m2 := new(big.Rat)
	for _, x := range xs {
		d := new(big.Rat).Sub(new(big.Rat).SetFloat64(x), mean)
		m2.Add(m2, d.Mul(d, d))
	}
	mf, _ := mean.Float64()
	m2f, _ := m2.Float64()
	return kern.Moments{N: float64(len(xs)), Mean: mf, M2: m2f}
}

// momentsOf returns the moments of xs by the float64 two-pass algorithm.
func momentsOf(xs []float64) kern.Moments {
	if len(xs) == 0 {
		return kern.Moments{}
	}
	var s float64
	for _, x := range xs {
		s += x
	}
	m := s / float64(len(xs))
	var m2, lin float64
	for _, x := range xs {
		m2 += (x - m) * (x - m)
		lin += x - m
	}
	n := float64(len(xs))
	return kern.Moments{N: n, Mean: m + lin/n, M2: m2 - lin*lin/n}
}

// TestReduceMomentsScale: the forward exchange of P = 1, 2, 3, 7, 64
// in-process ranks (uneven and empty ranks, one and three segments) gives
// every rank the same bits; on centred data (N(0, 1)) within 1e-12
// (relative) of the all-gather exchange it replaces (every rank's moments
// merged in rank order). On offset data (1e4 + N(0, 1)) no merge order is
// better than ε·κ, κ = |mean|/σ (the rounding of the means, ≈ 2e-12, is
// what d = mb − ma ≈ σ inherits), so there both orders are checked against
// the exact moments (big.Rat) within max(1e-12, 8·ε·κ).
func TestReduceMomentsScale(t *testing.T) {
	for _, offset := range []float64{0, 1e4} {
		for _, P := range []int{1, 2, 3, 7, 64} {
			for _, nseg := range []int{1, 3} {
				t.Run(fmt.Sprintf("offset=%g/P=%d/segments=%d", offset, P, nseg), func(t *testing.T) {
					testReduceMoments(t, P, nseg, offset)
				})
			}
		}
	}
}

func testReduceMoments(t *testing.T, P, nseg int, offset float64) {
	const C = 5
	data := make([][][]float64, P)
	for r := range P {
		data[r] = scaleData(r, P, nseg, C, offset)
	}
	got := make([][]kern.Moments, P)
	errs := syncRanks(t, P, func(r int, c collective.Communicator) error {
		l, err := New(gorgonia.NewGraph(), C, tensor.Float64, WithName("scale"), WithCommunicator(c))
		if err != nil {
			return err
		}
		sm := &segMap{}
		sm.Resize(nseg)
		moms := make([]kern.Moments, nseg*C)
		N := 0
		for i, xs := range data[r] {
			moms[i] = momentsOf(xs)
			N += len(xs)
		}
		m, err := l.cfg.sync.reduceMoments(l, moms, sm, C, N, 0, Train)
		got[r] = append([]kern.Moments(nil), m...)
		return err
	})
	for r, err := range errs {
		require.NoError(t, err, "rank %d", r)
	}
	for r := 1; r < P; r++ {
		require.Equal(t, got[0], got[r], "rank %d's bits differ from rank 0's", r)
	}
	const eps = 0x1p-52
	for i := range nseg * C {
		var rankOrder kern.Moments
		var union []float64
		for r := range P {
			rankOrder = rankOrder.Merge(momentsOf(data[r][i]))
			union = append(union, data[r][i]...)
		}
		ex := exactMoments(union)
		g := got[0][i]
		require.Equal(t, ex.N, g.N, "set %d count", i)
		require.Equal(t, rankOrder.N, g.N, "set %d count", i)
		if g.N < 2 {
			continue
		}
		sd := math.Sqrt(ex.M2 / ex.N)
		scale := math.Max(math.Abs(ex.Mean), sd)
		tol := math.Max(1e-12, 8*eps*scale/sd)
		for _, m := range []struct {
			name string
			v    kern.Moments
		}{{"tree", g}, {"rank order", rankOrder}} {
			require.LessOrEqual(t, math.Abs(m.v.Mean-ex.Mean), 1e-12*scale, "set %d %s mean: %v, exact %v", i, m.name, m.v, ex)
			require.LessOrEqual(t, math.Abs(m.v.M2-ex.M2), tol*ex.M2, "set %d %s M2: %v, exact %v", i, m.name, m.v, ex)
		}
		if offset == 0 {
			require.LessOrEqual(t, math.Abs(g.Mean-rankOrder.Mean), 1e-12*scale, "set %d mean: %v, rank-order merge %v", i, g, rankOrder)
			require.LessOrEqual(t, math.Abs(g.M2-rankOrder.M2), 1e-12*rankOrder.M2, "set %d M2: %v, rank-order merge %v", i, g, rankOrder)
		}
	}
}

// TestSyncFloat32Offset: synchronized float32 layers on 7 ranks (uneven
// batches, one rank empty through EmptyStep) whose data is 1e4 + N(0, 1)
// get batch statistics within 1e-6 (relative) of the float64 two-pass
// statistics of the concatenated batch; all-reducing Σx and Σx² in float32
// instead (Keras's SyncBN on float32) misses by far more, which is what the
// data is chosen to show.
func TestSyncFloat32Offset(t *testing.T) {
	const P, C = 7, 3
	sizes := []int{5, 0, 3, 8, 1, 6, 2}
	xs := make([][]float32, P)
	var union [C][]float64
	var s1, s2 [C]float32
	for r := range P {
		rng := rand.New(rand.NewSource(int64(r + 1)))
		for i := range sizes[r] * C {
			v := float32(1e4 + rng.NormFloat64())
			xs[r] = append(xs[r], v)
			union[i%C] = append(union[i%C], float64(v))
			s1[i%C] += v
			s2[i%C] += v * v
		}
	}
	rms := make([][]float64, P)
	rvs := make([][]float64, P)
	var mu sync.Mutex
	errs := syncRanks(t, P, func(r int, c collective.Communicator) error {
		g := gorgonia.NewGraph()
		l, err := New(g, C, tensor.Float32, WithName("offset"), WithCommunicator(c), WithMomentum(1))
		if err != nil {
			return err
		}
		if sizes[r] == 0 {
			if err := EmptyStep([]*Layer{l}, false); err != nil {
				return err
			}
		} else {
			x := gorgonia.NewTensor(g, tensor.Float32, 2, gorgonia.WithShape(sizes[r], C),
				gorgonia.WithValue(tensor.New(tensor.WithShape(sizes[r], C), tensor.WithBacking(xs[r]))))
			if _, err := l.Apply(x); err != nil {
				return err
			}
			m := gorgonia.NewTapeMachine(g)
			defer m.Close()
			if err := m.RunAll(); err != nil {
				return err
			}
		}
		mu.Lock()
		rms[r], rvs[r] = l.RunningStats()
		mu.Unlock()
		return nil
	})
	for r, err := range errs {
		require.NoError(t, err, "rank %d", r)
	}
	n := float32(len(union[0]))
	for c := range C {
		ref := momentsOf(union[c])
		mean, uvar := ref.Mean, ref.M2/(ref.N-1)
		for r := range P {
			require.Equal(t, rms[0], rms[r], "rank %d", r)
			require.Equal(t, rvs[0], rvs[r], "rank %d", r)
		}
		require.InDelta(t, mean, rms[0][c], 1e-6*mean, "channel %d mean", c)
		require.InDelta(t, uvar, rvs[0][c], 1e-6*uvar, "channel %d variance", c)
		naive := float64((s2[c] - s1[c]*s1[c]/n) / (n - 1))
		require.Greater(t, math.Abs(naive-uvar), 1e-3*uvar, "channel %d: float32 Σx² − (Σx)²/n gives %v, two-pass %v: the data does not show the cancellation", c, naive, uvar)
	}
}

// TestReduceMomentsHeaderMean: a header value that differs between ranks
// is caught on every rank even where the mean of the ranks' values equals
// this rank's own (steps 0, 1, 2: rank 1 sees mean 1): the merged M2 of the
// header triple is what proves that every rank sent the same value.
func TestReduceMomentsHeaderMean(t *testing.T) {
	const P, C = 3, 2
	errs := syncRanks(t, P, func(r int, c collective.Communicator) error {
		l, err := New(gorgonia.NewGraph(), C, tensor.Float64, WithName("steps"), WithCommunicator(c))
		if err != nil {
			return err
		}
		l.calls = uint64(r)
		sm := &segMap{}
		sm.Resize(1)
		_, err = l.cfg.sync.reduceMoments(l, make([]kern.Moments, C), sm, C, 0, 0, Train)
		return err
	})
	for r, err := range errs {
		require.ErrorIs(t, err, ErrSync, "rank %d", r)
		require.Contains(t, err.Error(), "is at step", "rank %d", r)
	}
}

// TestGhostTwoApplies: one ghost layer applied twice in a graph to inputs
// whose per-rank batch sizes differ (each op places its samples once in its
// own global batch), run for several steps: every later step passes the
// placement check, and the ranks' running statistics are bitwise equal.
func TestGhostTwoApplies(t *testing.T) {
	const C = 2
	sizes := [][]int{{4, 2}, {4, 4}} // [apply][rank]
	var mu sync.Mutex
	rms := make([][]float64, 2)
	errs := syncRanks(t, 2, func(r int, c collective.Communicator) error {
		rng := rand.New(rand.NewSource(int64(r)))
		g := gorgonia.NewGraph()
		l, err := New(g, C, tensor.Float64, WithName("ghost"), WithCommunicator(c), WithGhostBatch(2))
		if err != nil {
			return err
		}
		for a := range sizes {
			n := sizes[a][r]
			x := gorgonia.NewTensor(g, tensor.Float64, 2, gorgonia.WithShape(n, C),
				gorgonia.WithValue(tensor.New(tensor.WithShape(n, C), tensor.WithBacking(randn(rng, n*C, 1, 2)))))
			if _, err := l.Apply(x); err != nil {
				return err
			}
		}
		m := gorgonia.NewTapeMachine(g)
		defer m.Close()
		for step := range 3 {
			m.Reset()
			if err := m.RunAll(); err != nil {
				return fmt.Errorf("step %d: %w", step, err)
			}
		}
		rm, _ := l.RunningStats()
		mu.Lock()
		rms[r] = rm
		mu.Unlock()
		return nil
	})
	for r, err := range errs {
		require.NoError(t, err, "rank %d", r)
	}
	require.Equal(t, rms[0], rms[1])
}
