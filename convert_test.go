package bn

import (
	"context"
	"errors"
	"math/rand"
	"testing"
	"time"

	"github.com/gorgonia-bn/bn/collective"
	"github.com/stretchr/testify/require"
	"gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// TestSyncUnsync converts plain layers (with a copy in a second graph) to
// SyncBN on 2 ranks and back: synchronized, the running statistics are
// those of the concatenated batches, bitwise equal on both ranks; plain
// again, each rank's follow its own batch.
func TestSyncUnsync(t *testing.T) {
	const C, K = 3, 2
	r := rand.New(rand.NewSource(4))
	data := [K][]float64{randn(r, 4*C, 0, 1), randn(r, 4*C, 5, 2)}
	ref, err := New(gorgonia.NewGraph(), C, tensor.Float64)
	require.NoError(t, err)
	copyIn(t, ref, 2*4, C).run(t, append(append([]float64(nil), data[0]...), data[1]...))
	wantMean, _ := ref.RunningStats()

	comms, err := collective.NewInProcess(K)
	require.NoError(t, err)
	defer func() {
		for _, c := range comms {
			c.Close()
		}
	}()
	layers := make([]*Layer, K)
	graphs := make([]*fwdGraph, K)
	for k := range K {
		layers[k], err = New(gorgonia.NewGraph(), C, tensor.Float64, WithName("head.bn"))
		require.NoError(t, err)
		graphs[k] = copyIn(t, layers[k], 4, C)
		graphs[k].run(t, data[k]) // a plain step first: the ranks' histories differ from here on
	}
	l0, _ := layers[0].RunningStats()
	l1, _ := layers[1].RunningStats()
	require.NotEqual(t, l0, l1)
	for k := range K {
		layers[k].ResetRunningStats()
		require.NoError(t, Sync([]Normalizer{layers[k]}, comms[k], WithSyncTimeout(10*time.Second)))
		require.Equal(t, "head.bn", graphs[k].l.SyncKey(), "the copy is converted too")
		require.Equal(t, comms[k], graphs[k].l.Communicator())
	}
	errs := make(chan error, K)
	for k := range K {
		go func() {
			f := graphs[k]
			copy(f.x.Data().([]float64), data[k])
			f.vm.Reset()
			errs <- f.vm.RunAll()
		}()
	}
	for range K {
		require.NoError(t, <-errs)
	}
	m0, _ := layers[0].RunningStats()
	m1, _ := layers[1].RunningStats()
	assertClose(t, "synced running mean", m0, wantMean, 1e-12)
	require.Equal(t, m0, m1)

	for k := range K {
		require.NoError(t, Unsync([]Normalizer{layers[k]}))
		require.Nil(t, graphs[k].l.Communicator())
		layers[k].ResetRunningStats()
		graphs[k].run(t, data[k]) // no communication: would hang or fail otherwise
	}
	m0, _ = layers[0].RunningStats()
	m1, _ = layers[1].RunningStats()
	require.NotEqual(t, m0, m1)

	// Misuse, nothing changed.
	anon, _ := New(gorgonia.NewGraph(), C, tensor.Float64)
	named, _ := New(gorgonia.NewGraph(), C, tensor.Float64, WithName("n"))
	for name, err := range map[string]error{
		"unnamed":      Sync([]Normalizer{named, anon}, comms[0]),
		"nil-comm":     Sync([]Normalizer{named}, nil),
		"nil-layer":    Sync([]Normalizer{named, nil}, comms[0]),
		"other-option": Sync([]Normalizer{named}, comms[0], WithEps(1)),
		"sync-key":     Sync([]Normalizer{named}, comms[0], WithSyncKey("k")),
		"nil-option":   Sync([]Normalizer{named}, comms[0], nil),
		"unsync-nil":   Unsync([]Normalizer{(*Layer)(nil)}),
		"bad-timeout":  Sync([]Normalizer{named}, comms[0], WithSyncTimeout(-1)),
	} {
		if !errors.Is(err, ErrOption) {
			t.Errorf("%s: %v, want ErrOption", name, err)
		}
	}
	require.Nil(t, named.Communicator(), "a failed Sync changed a layer")
}

// TestBroadcastBuffers: plain layers on 2 ranks see different batches; with
// SetBuffers every Step leaves root's running statistics and counters on
// every rank.
func TestBroadcastBuffers(t *testing.T) {
	const C, K = 2, 2
	r := rand.New(rand.NewSource(5))
	data := [K][]float64{randn(r, 4*C, 0, 1), randn(r, 4*C, 3, 2)}
	layers := make([]*Layer, K)
	graphs := make([]*fwdGraph, K)
	for k := range K {
		var err error
		layers[k], err = New(gorgonia.NewGraph(), C, tensor.Float64, WithName("bn"))
		require.NoError(t, err)
		graphs[k] = copyIn(t, layers[k], 4, C)
	}
	// A one-parameter model per rank, to drive Step (graphs built one at a time).
	params, vms := make([]*gorgonia.Node, K), make([]gorgonia.VM, K)
	for k := range K {
		g := gorgonia.NewGraph()
		params[k] = gorgonia.NewVector(g, tensor.Float64, gorgonia.WithShape(1), gorgonia.WithInit(gorgonia.Zeroes()))
		_, err := gorgonia.Grad(gorgonia.Must(gorgonia.Sum(params[k])), params[k])
		require.NoError(t, err)
		vms[k] = gorgonia.NewTapeMachine(g, gorgonia.BindDualValues(params[k]))
		defer vms[k].Close()
	}
	errs := syncRanks(t, K, func(k int, comm collective.Communicator) error {
		ctx := context.Background()
		dp, err := NewDataParallel(comm, gorgonia.Nodes{params[k]}, GradMean)
		if err != nil {
			return err
		}
		if err := dp.SetBuffers(1, layers[k]); err != nil {
			return err
		}
		solver := gorgonia.NewVanillaSolver(gorgonia.WithLearnRate(0.1))
		for range 2 {
			f := graphs[k]
			copy(f.x.Data().([]float64), data[k])
			f.vm.Reset()
			if err := f.vm.RunAll(); err != nil {
				return err
			}
			vms[k].Reset()
			if err := vms[k].RunAll(); err != nil {
				return err
			}
			if err := dp.Step(ctx, solver); err != nil {
				return err
			}
		}
		// Layers that differ: ErrSync on every rank.
		other, _ := New(gorgonia.NewGraph(), C+k, tensor.Float64)
		if err := dp.SetBuffers(0, other); err != nil {
			return err
		}
		if err := dp.BroadcastBuffers(context.Background()); !errors.Is(err, ErrSync) {
			return errors.Join(errors.New("layers that differ: want ErrSync"), err)
		}
		if err := dp.SetBuffers(2, layers[k]); !errors.Is(err, ErrOption) {
			return errors.New("root 2 of 2: want ErrOption")
		}
		return nil
	})
	require.NoError(t, errors.Join(errs...))
	// Root 1's statistics: two steps on its own batch.
	ref, _ := New(gorgonia.NewGraph(), C, tensor.Float64)
	f := copyIn(t, ref, 4, C)
	f.run(t, data[1])
	f.run(t, data[1])
	wm, wv := ref.RunningStats()
	for k := range K {
		m, v := layers[k].RunningStats()
		require.Equal(t, wm, m, "rank %d", k)
		require.Equal(t, wv, v, "rank %d", k)
		require.EqualValues(t, 2, layers[k].NumBatchesTracked())
	}
}
