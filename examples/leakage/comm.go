package main

import (
	"github.com/gorgonia-bn/bn/examples/internal/cnn"
	"github.com/gorgonia-bn/bn/examples/internal/mnist"
)

// communication is what one worker sends per training step for the BN
// variant, besides the data-parallel gradient reduction every variant
// needs: the number of collectives and the bytes of this worker's
// payloads. It is counted from the collectives the ops document, not
// measured:
//
//   - SyncBN (op_syncbn.go), per BN layer: forward one all-gather of a
//     10-value header and (n, mean, M2) per channel; backward one
//     all-reduce of a 5-value header and (Σdy, Σdy·x̂) per channel — all
//     float64.
//   - shuffle BN (shuffle.go), once around the whole network: forward one
//     all-gather of 5 float64 (the batch sizes), one all-to-all of the
//     input images and one of the logits (the unshuffle); backward one
//     all-to-all of each gradient. Of an all-to-all's payload a worker
//     keeps 1/K on average and sends the rest; the bytes count what it
//     sends.
//   - per-worker BN and i.i.d. batches: none.
type communication struct {
	collectives int
	bytes       float64
}

func commPerStep(v variant, workers, batch, elemSize int) communication {
	K := float64(workers)
	switch v {
	case syncBN:
		var c communication
		for _, ch := range []int{cnn.C1, cnn.C2} {
			c.collectives += 2
			c.bytes += 8*float64(10+3*ch) + 8*float64(5+2*ch)
		}
		return c
	case shuffleBN:
		sample := float64(batch * elemSize)
		moved := (K - 1) / K * sample * float64(mnist.Pixels+mnist.Classes) // images and logits
		return communication{collectives: 1 + 2 + 2, bytes: 8*5 + 2*moved}
	}
	return communication{}
}

// gradientBytes is the payload of the data-parallel gradient reduction
// every variant needs per step (all the learnables, one all-reduce).
func gradientBytes(elemSize int) float64 {
	n := cnn.C1*1*cnn.Kernel*cnn.Kernel + cnn.C2*cnn.C1*cnn.Kernel*cnn.Kernel + cnn.Flat*mnist.Classes + mnist.Classes + 2*(cnn.C1+cnn.C2)
	return float64(n * elemSize)
}
