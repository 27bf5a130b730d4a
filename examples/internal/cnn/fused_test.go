package cnn

import (
	"fmt"
	"math"
	"testing"

	"gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// TestFusedTrainsAsTheTwoOps: the net with BN and ReLU fused (Config.Fused)
// trains as the one with Apply → Rectify: the same losses and weights after
// a few SGD steps, in float32 and float64. (They can differ only where a
// pre-activation is exactly 0: Rectify's gradient passes dy there, the fused
// op's does not.)
func TestFusedTrainsAsTheTwoOps(t *testing.T) {
	set := randomSet(64, 3)
	for _, dt := range []tensor.Dtype{tensor.Float32, tensor.Float64} {
		var losses [2][]float64
		var values [2][]float64
		for k, fused := range []bool{false, true} {
			w, err := NewWeights(dt, 1, ClassifierStd)
			if err != nil {
				t.Fatal(err)
			}
			n, err := New(w, Config{Batch: 16, Train: true, Fused: fused})
			if err != nil {
				t.Fatal(err)
			}
			solver := gorgonia.NewVanillaSolver(gorgonia.WithLearnRate(0.1))
			for step := range 6 {
				idx := make([]int, 16)
				for i := range idx {
					idx[i] = (step*16 + i) % set.Len()
				}
				if err := n.Run(set, idx); err != nil {
					t.Fatal(err)
				}
				l, err := n.LossValue()
				if err != nil {
					t.Fatal(err)
				}
				losses[k] = append(losses[k], l)
				if err := solver.Step(gorgonia.NodesToValueGrads(n.Learnables)); err != nil {
					t.Fatal(err)
				}
			}
			values[k] = n.Values()
			n.Close()
		}
		for i := range losses[0] {
			if losses[0][i] != losses[1][i] {
				t.Errorf("%v: step %d loss %v (two ops), %v (fused)", dt, i, losses[0][i], losses[1][i])
			}
		}
		diff := 0.0
		for i := range values[0] {
			diff = math.Max(diff, math.Abs(values[0][i]-values[1][i]))
		}
		if diff != 0 {
			t.Errorf("%v: weights differ by up to %g after training", dt, diff)
		}
	}
}

// BenchmarkTrainStep times one training step of the net (forward, backward
// and an SGD step; batch 64 of random images) with BN and the ReLU as two
// ops (Apply → Rectify), fused (ApplyReLU), and without BN.
func BenchmarkTrainStep(b *testing.B) {
	set := randomSet(64, 5)
	idx := make([]int, 64)
	for i := range idx {
		idx[i] = i
	}
	for _, dt := range []tensor.Dtype{tensor.Float32, tensor.Float64} {
		for _, v := range []string{"pair", "fused", "nobn"} {
			b.Run(fmt.Sprintf("%s/%v", v, dt), func(b *testing.B) {
				w, err := NewWeights(dt, 1, ClassifierStd)
				if err != nil {
					b.Fatal(err)
				}
				n, err := New(w, Config{Batch: len(idx), Train: true, Fused: v == "fused", NoBN: v == "nobn"})
				if err != nil {
					b.Fatal(err)
				}
				defer n.Close()
				solver := gorgonia.NewVanillaSolver(gorgonia.WithLearnRate(0.01))
				grads := gorgonia.NodesToValueGrads(n.Learnables)
				step := func() {
					if err := n.Run(set, idx); err != nil {
						b.Fatal(err)
					}
					if err := solver.Step(grads); err != nil {
						b.Fatal(err)
					}
				}
				step()
				b.ReportAllocs()
				for b.Loop() {
					step()
				}
			})
		}
	}
}
