package main

import (
	"github.com/gorgonia-bn/bn"
	"github.com/gorgonia-bn/bn/collective"
	"github.com/gorgonia-bn/bn/examples/internal/cnn"
	"gorgonia.org/tensor"
)

// The network is examples/internal/cnn's: 28×28 → conv 3×3 (8) → BN → ReLU
// → max-pool 2 → 14×14 → conv 3×3 (16) → BN → ReLU → max-pool 2 → 7×7 →
// linear → 10 logits; -depth adds blocks conv 3×3 (16) → BN → activation
// at 7×7 after the second pool, -act replaces ReLU (sigmoid, tanh). The
// convolutions have no bias: BN's β takes its place. The weights
// (cnn.Weights) of one model replica are shared by its training graph and
// its evaluation graphs; the solver updates them in place.

// newWeights draws He-normal weights from seed, the linear layer's too;
// depth extra blocks (cnn.NewDeepWeights: with depth 0 the same values as
// before the flag existed).
func newWeights(dt tensor.Dtype, seed int64, depth int) (*cnn.Weights, error) {
	return cnn.NewDeepWeights(dt, seed, cnn.HeStd(cnn.Flat), depth)
}

// newNet builds the network on w (its depth) with activation act for
// batches of the given size. comm != nil makes the BN layers synchronized
// over comm (SyncBN), with syncOpts (the sync timeout); train adds the
// gradients.
func newNet(w *cnn.Weights, act cnn.Activation, batch int, comm collective.Communicator, train bool, syncOpts ...bn.Option) (*cnn.Net, error) {
	cfg := cnn.Config{Batch: batch, Train: train, Act: act, Depth: w.Depth()}
	if comm != nil {
		cfg.BN = append([]bn.Option{bn.WithCommunicator(comm)}, syncOpts...)
	}
	return cnn.New(w, cfg)
}
