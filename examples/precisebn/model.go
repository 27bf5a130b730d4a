package main

import (
	"fmt"

	"github.com/gorgonia-bn/bn"
	"github.com/gorgonia-bn/bn/examples/internal/cnn"
)

// The network is examples/internal/cnn's, with BN, as in examples/convnet:
// 28×28 → conv 3×3 (8) → BN → ReLU → pool 2 → 14×14 → conv 3×3 (16) → BN →
// ReLU → pool 2 → 7×7 → linear → 10 logits. The weights (cnn.Weights) are
// shared by every graph of one model; γ and β belong to each graph's BN
// layers and are copied with CopyBN.

// layerNames names the BN layers, in forward order.
var layerNames = cnn.LayerNames

// newNet builds the network on w for batches of the given size; bnMomentum
// is the BN layers' EMA momentum. With train it also builds the gradient
// graph.
func newNet(w *cnn.Weights, batch int, bnMomentum float64, train bool) (*cnn.Net, error) {
	return cnn.New(w, cnn.Config{Batch: batch, Train: train, BN: []bn.Option{bn.WithMomentum(bnMomentum)}})
}

// runningStats returns the running statistics of every BN layer of n.
func runningStats(n *cnn.Net) modelStats {
	s := make(modelStats, len(n.BNs))
	for i, l := range n.BNs {
		s[i].mean, s[i].variance = l.RunningStats()
	}
	return s
}

// setRunningStats sets the running statistics of every BN layer of n.
func setRunningStats(n *cnn.Net, s modelStats) error {
	if len(s) != len(n.BNs) {
		return fmt.Errorf("statistics of %d layers for a net of %d", len(s), len(n.BNs))
	}
	for i, l := range n.BNs {
		if err := l.SetRunningStats(s[i].mean, s[i].variance); err != nil {
			return err
		}
	}
	return nil
}
