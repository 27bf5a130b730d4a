package bn

import (
	"context"
	"errors"
	"math/rand"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorgonia-bn/bn/collective"
	"github.com/stretchr/testify/require"
	"gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// syncRanks runs f on K in-process ranks and returns their errors.
func syncRanks(t *testing.T, K int, f func(r int, c collective.Communicator) error) []error {
	t.Helper()
	comms, err := collective.NewInProcess(K)
	require.NoError(t, err)
	errs := make([]error, K)
	var wg sync.WaitGroup
	for r := range K {
		wg.Go(func() { errs[r] = f(r, comms[r]) })
	}
	wg.Wait()
	for _, c := range comms {
		c.Close()
	}
	return errs
}

// TestSyncKeyExtraLayer: a synchronized layer created on one rank only (a
// validation graph; a layer never applied, or applied in Eval) changes
// nothing for the layers of the other ranks: they are matched by key, not
// by creation order, and the extra layers make no collective call.
func TestSyncKeyExtraLayer(t *testing.T) {
	const C = 3
	r := rand.New(rand.NewSource(2))
	sizes := []int{3, 4}
	xs, ws := [][]float64{randn(r, 3*C*2, 1, 2), randn(r, 4*C*2, 1, 2)}, [][]float64{randn(r, 3*C*2, 0, 1), randn(r, 4*C*2, 0, 1)}
	want, err := runLayer(tensor.Shape{7, C, 2}, append(append([]float64(nil), xs[0]...), xs[1]...), append(append([]float64(nil), ws[0]...), ws[1]...), 3)
	require.NoError(t, err)
	got := make([]bnRun, 2)
	counts := make([]map[string]int, 2)
	errs := syncRanks(t, 2, func(rk int, c collective.Communicator) error {
		cc := newCountingComm(c)
		if rk == 0 {
			// Rank 0's validation graph: one layer never applied, one run in Eval.
			if _, err := New(gorgonia.NewGraph(), C, tensor.Float64, WithName("val.unused"), WithCommunicator(cc)); err != nil {
				return err
			}
			g := gorgonia.NewGraph()
			v, err := New(g, C, tensor.Float64, WithName("val.bn"), WithCommunicator(cc))
			if err != nil {
				return err
			}
			require.NoError(t, v.SetMode(Eval))
			x := gorgonia.NewTensor(g, tensor.Float64, 2, gorgonia.WithShape(2, C), gorgonia.WithValue(tensor.New(tensor.WithShape(2, C), tensor.WithBacking(randn(r, 2*C, 0, 1)))))
			if _, err := v.Apply(x); err != nil {
				return err
			}
			m := gorgonia.NewTapeMachine(g)
			defer m.Close()
			if err := m.RunAll(); err != nil {
				return err
			}
		}
		var err error
		got[rk], err = runLayer(tensor.Shape{sizes[rk], C, 2}, xs[rk], ws[rk], 3, WithCommunicator(cc), WithSyncTimeout(time.Minute))
		counts[rk] = cc.take()
		return err
	})
	off := 0
	for rk := range 2 {
		require.NoError(t, errs[rk], "rank %d", rk)
		n := sizes[rk] * C * 2
		assertClose(t, "y", got[rk].y, want.y[off:off+n], 1e-10)
		assertClose(t, "dx", got[rk].dx, want.dx[off:off+n], 1e-10)
		assertClose(t, "running mean", got[rk].rm, want.rm, 1e-12)
		assertClose(t, "running var", got[rk].rv, want.rv, 1e-12)
		require.Equal(t, got[0].rm, got[rk].rm)
		require.Equal(t, map[string]int{"Moments": 3, "AllReduce": 3}, counts[rk], "rank %d: the extra layers made collective calls", rk)
		off += n
	}
}

// TestSyncKeyMismatch: ranks that apply different synchronized layers at
// the same point get ErrSync on every rank, within a second, naming the
// layer the other rank is at. Two layers whose names differ but whose
// WithSyncKey agree are matched.
func TestSyncKeyMismatch(t *testing.T) {
	const C = 2
	data := func(r int) ([]float64, []float64) {
		rng := rand.New(rand.NewSource(int64(r)))
		return randn(rng, 4*C, 0, 1), randn(rng, 4*C, 0, 1)
	}
	start := time.Now()
	errs := syncRanks(t, 2, func(r int, c collective.Communicator) error {
		x, w := data(r)
		_, err := runLayer(tensor.Shape{4, C}, x, w, 1, WithName([]string{"block1.bn", "block2.bn"}[r]), WithCommunicator(c), WithSyncTimeout(time.Minute))
		return err
	})
	require.Less(t, time.Since(start), 5*time.Second)
	for r, err := range errs {
		require.ErrorIs(t, Cause(err), ErrSync, "rank %d", r)
		other := []string{"block2.bn", "block1.bn"}[r]
		require.Contains(t, err.Error(), `rank `+string(rune('1'-r))+` is at the layer or shuffle of key "`+other+`"`, "rank %d", r)
	}

	errs = syncRanks(t, 2, func(r int, c collective.Communicator) error {
		x, w := data(r)
		_, err := runLayer(tensor.Shape{4, C}, x, w, 2, WithName([]string{"rank0.bn", "rank1.bn"}[r]), WithSyncKey("stem.bn"), WithCommunicator(c), WithSyncTimeout(time.Minute))
		return err
	})
	for r, err := range errs {
		require.NoError(t, err, "rank %d", r)
	}
}

// TestSyncKeyRequired: a synchronized layer must have a key (WithName or
// WithSyncKey); a key without a communicator, or an empty one, is an error.
func TestSyncKeyRequired(t *testing.T) {
	comms, err := collective.NewInProcess(1)
	require.NoError(t, err)
	defer comms[0].Close()
	g := gorgonia.NewGraph()
	for _, tc := range []struct {
		name string
		opts []Option
		ok   bool
	}{
		{"no key", []Option{WithCommunicator(comms[0])}, false},
		{"empty key", []Option{WithCommunicator(comms[0]), WithSyncKey("")}, false},
		{"key without communicator", []Option{WithSyncKey("a")}, false},
		{"timeout without communicator", []Option{WithName("a"), WithSyncTimeout(time.Second)}, false},
		{"name", []Option{WithName("a"), WithCommunicator(comms[0])}, true},
		{"key", []Option{WithSyncKey("a"), WithCommunicator(comms[0])}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l, err := New(g, 2, tensor.Float64, tc.opts...)
			if tc.ok {
				require.NoError(t, err)
				require.Equal(t, "a", l.SyncKey())
				return
			}
			require.ErrorIs(t, err, ErrOption)
		})
	}
	if _, err := NewShuffle(comms[0], "", 1); !errors.Is(err, ErrOption) {
		t.Errorf("NewShuffle with an empty key: %v, want ErrOption", err)
	}
}

// TestSyncStallDiagnosis: a rank whose layer is in Eval does no
// communication; the ranks in Train wait for it until the sync timeout, then
// fail with an error that says which layer, step and collective they waited
// in, which ranks had arrived and which had not, and the likely causes.
func TestSyncStallDiagnosis(t *testing.T) {
	const C = 2
	start := time.Now()
	errs := syncRanks(t, 3, func(r int, c collective.Communicator) error {
		rng := rand.New(rand.NewSource(int64(r)))
		g := gorgonia.NewGraph()
		l, err := New(g, C, tensor.Float64, WithName("head.bn"), WithCommunicator(c), WithSyncTimeout(300*time.Millisecond))
		if err != nil {
			return err
		}
		if r == 2 {
			require.NoError(t, l.SetMode(Eval))
		}
		x := gorgonia.NewTensor(g, tensor.Float64, 2, gorgonia.WithShape(4, C), gorgonia.WithValue(tensor.New(tensor.WithShape(4, C), tensor.WithBacking(randn(rng, 4*C, 0, 1)))))
		if _, err := l.Apply(x); err != nil {
			return err
		}
		m := gorgonia.NewTapeMachine(g)
		defer m.Close()
		return m.RunAll()
	})
	require.Less(t, time.Since(start), 20*time.Second)
	require.NoError(t, errs[2], "the rank in Eval communicates nothing and succeeds")
	for r := range 2 {
		err := Cause(errs[r])
		require.ErrorIs(t, err, ErrSync, "rank %d", r)
		require.ErrorIs(t, err, context.DeadlineExceeded, "rank %d", r)
		var st *collective.StallError
		require.ErrorAs(t, err, &st, "rank %d", r)
		require.Equal(t, []int{0, 1}, st.Joined)
		require.Equal(t, []int{2}, st.Missing())
		for _, s := range []string{`layer "head.bn" forward (step 0)`, "ranks [0 1] had arrived, ranks [2] had not", "Eval or Frozen", "EmptyStep", "300ms"} {
			require.Contains(t, err.Error(), s, "rank %d", r)
		}
	}
}

// TestEmptyStepMisuse: EmptyStep rejects, before any collective, a nil
// layer, a layer without communicator (nobody would wait for it: a silent
// no-op would hide a bug), a ghost layer, and a grouped layer never applied
// with a segmenter.
func TestEmptyStepMisuse(t *testing.T) {
	comms, err := collective.NewInProcess(2)
	require.NoError(t, err)
	defer comms[0].Close()
	defer comms[1].Close()
	cc := newCountingComm(comms[0])
	g := gorgonia.NewGraph()
	synced, err := New(g, 2, tensor.Float64, WithName("s"), WithCommunicator(cc))
	require.NoError(t, err)
	plain, err := New(g, 2, tensor.Float64)
	require.NoError(t, err)
	ghost, err := New(g, 2, tensor.Float64, WithName("g"), WithCommunicator(cc), WithGhostBatch(2))
	require.NoError(t, err)
	grouped, err := newGrouped(g, 2, tensor.Float64, 2, false, WithName("d"), WithCommunicator(cc))
	require.NoError(t, err)
	for _, tc := range []struct {
		name   string
		layers []*Layer
		want   string
	}{
		{"nil layer", []*Layer{synced, nil}, "nil"},
		{"not synchronized", []*Layer{synced, plain}, "not synchronized"},
		{"ghost", []*Layer{synced, ghost}, "ghost"},
		{"grouped never applied", []*Layer{synced, grouped}, "segmenter"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := EmptyStep(tc.layers, true)
			require.ErrorIs(t, err, ErrOption)
			require.True(t, strings.Contains(err.Error(), tc.want), "%v", err)
			require.Empty(t, cc.take(), "collectives made before the error")
		})
	}
}

// TestSyncOptionMismatch: synchronized layers created with different
// statistics options on different ranks (ε, momentum, cumulative average,
// Batch Renormalization's limits or schedule) would normalize differently or
// let the running statistics part; every rank gets ErrSync within seconds,
// saying which options, and equal options (however given) are matched.
func TestSyncOptionMismatch(t *testing.T) {
	const C = 2
	ren := RenormConfig{RMax: 3, DMax: 5}
	cases := []struct {
		name   string
		r0, r1 []Option
		ok     bool
	}{
		{"same", []Option{WithEps(1e-3)}, []Option{WithEps(1e-3)}, true},
		{"same defaults", nil, []Option{WithEps(1e-5), WithMomentum(0.1)}, true},
		{"eps", nil, []Option{WithEps(1e-3)}, false},
		{"momentum", nil, []Option{WithMomentum(0.2)}, false},
		{"cumulative", nil, []Option{WithCumulativeAverage()}, false},
		{"renorm on one rank", []Option{WithRenorm(ren)}, nil, false},
		{"renorm rmax", []Option{WithRenorm(ren)}, []Option{WithRenorm(RenormConfig{RMax: 2, DMax: 5})}, false},
		{"renorm warmup", []Option{WithRenorm(ren)}, []Option{WithRenorm(RenormConfig{RMax: 3, DMax: 5, Warmup: 10})}, false},
		{"same renorm", []Option{WithRenorm(ren)}, []Option{WithRenorm(ren)}, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			errs := syncRanks(t, 2, func(r int, c collective.Communicator) error {
				rng := rand.New(rand.NewSource(int64(r)))
				opts := append([]Option{WithName("stem.bn"), WithCommunicator(c), WithSyncTimeout(time.Minute)}, [][]Option{tc.r0, tc.r1}[r]...)
				_, err := runLayer(tensor.Shape{4, C}, randn(rng, 4*C, 0, 1), randn(rng, 4*C, 0, 1), 2, opts...)
				return err
			})
			require.Less(t, time.Since(start), 5*time.Second)
			for r, err := range errs {
				if tc.ok {
					require.NoError(t, err, "rank %d", r)
					continue
				}
				require.ErrorIs(t, Cause(err), ErrSync, "rank %d", r)
				require.Contains(t, err.Error(), "other statistics options", "rank %d", r)
			}
		})
	}
}
