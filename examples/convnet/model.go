package main

import (
	"context"

	"github.com/gorgonia-bn/bn"
	"github.com/gorgonia-bn/bn/examples/internal/cnn"
	"github.com/gorgonia-bn/bn/examples/internal/mnist"
)

// The network is examples/internal/cnn's: conv 3×3 (8) → BN → ReLU →
// max-pool 2, conv 3×3 (16) → BN → ReLU → max-pool 2, linear (784 → 10).
// Without BN (cnn.Config.NoBN) a conv bias takes BN's place. The weights are
// He-normal for the convolutions and N(0, cnn.ClassifierStd²) for the
// linear layer, drawn from the seed: the same seed gives the same weights,
// with or without BN.

// model is the trained weights and BN state of one run, with the graph
// that trains them.
type model struct {
	w      *cnn.Weights
	withBN bool
	fused  bool
	act    cnn.Activation
	depth  int
	train  *cnn.Net
}

// evalNet returns a net of the model for batches of the given size, its BN
// layers (if any) a copy of the training net's in mode.
func (m *model) evalNet(batch int, mode bn.Mode) (*cnn.Net, error) {
	en, err := cnn.New(m.w, cnn.Config{Batch: batch, NoBN: !m.withBN, Fused: m.fused, Act: m.act, Depth: m.depth})
	if err != nil {
		return nil, err
	}
	if err := m.sync(en, mode); err != nil {
		en.Close()
		return nil, err
	}
	return en, nil
}

// sync copies the training net's BN layers (γ, β, running statistics) into
// en's and sets their mode; the other weights are shared already.
func (m *model) sync(en *cnn.Net, mode bn.Mode) error {
	if !m.withBN {
		return nil
	}
	if err := en.CopyBN(m.train); err != nil {
		return err
	}
	return en.SetMode(mode)
}

// accuracy returns the fraction of set classified correctly, in batches of
// the given size (the remainder of set.Len()/batch is left out), with every
// BN layer in mode (bn.Eval: running statistics; bn.EvalBatchStats: the
// statistics of each evaluation batch). The mode is ignored without BN. step,
// if not nil, is called after every batch.
func (m *model) accuracy(ctx context.Context, set *mnist.Set, batch int, mode bn.Mode, step func()) (float64, error) {
	en, err := m.evalNet(batch, mode)
	if err != nil {
		return 0, err
	}
	defer en.Close()
	return cnn.Accuracy(ctx, en, set, step)
}
