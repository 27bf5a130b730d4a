package domainbn_test

import (
	"fmt"
	"math/rand"
	"sync"
	"testing"
	"time"

	"github.com/gorgonia-bn/bn"
	"github.com/gorgonia-bn/bn/collective"
	"github.com/gorgonia-bn/bn/domainbn"
	"gorgonia.org/tensor"
)

// TestEmptyStepDomainSwitches: for every combination of the domain
// switches, a rank without samples (bn.EmptyStep) beside two ranks with
// data ends every step with the running statistics and counters of every
// domain bitwise equal to the other ranks', and equal to one unsynchronized
// layer over the concatenated batch. An empty rank's step is the forward of
// a rank with data with zero counts: it asks the layer's own segmenter
// which statistics group each segment feeds (with shared statistics, every
// domain feeds group 0).
func TestEmptyStepDomainSwitches(t *testing.T) {
	const D, C = 3, 2
	// ids[step][rank]; rank 1 is empty.
	steps := [][][]int{
		{{0, 0, 1, 2}, nil, {0, 2, 2, 1, 1}},
		{{1, 1, 1, 1}, nil, {0, 1, 1, 0, 0}}, // domain 2 absent everywhere
		{{2, 0, 2, 0}, nil, {2, 2, 2, 2, 2}},
	}
	for _, norm := range []bool{true, false} {
		for _, stats := range []bool{true, false} {
			for _, affine := range []bool{true, false} {
				t.Run(fmt.Sprintf("norm=%t,stats=%t,affine=%t", norm, stats, affine), func(t *testing.T) {
					opts := []domainbn.Option{domainbn.WithDomainNorm(norm), domainbn.WithDomainStats(stats), domainbn.WithDomainAffine(affine)}
					rng := rand.New(rand.NewSource(3))
					shapeOf := func(n int) tensor.Shape { return tensor.Shape{n, C, 2} }
					P := 2 * C
					single := newHarness(t, shapeOf(9), D, opts...)
					comms, err := collective.NewInProcess(3)
					if err != nil {
						t.Fatal(err)
					}
					ranks := make([]*harness, 3)
					for r, n := range []int{4, 1, 5} { // the empty rank builds its graph too
						o := append([]domainbn.Option{domainbn.WithBN(bn.WithCommunicator(comms[r]), bn.WithSyncTimeout(time.Minute))}, opts...)
						ranks[r] = newHarness(t, shapeOf(n), D, o...)
					}
					for k, st := range steps {
						xs, ws := make([][]float64, 3), make([][]float64, 3)
						var all, allW []float64
						var allIDs []int
						for r, ids := range st {
							if ids == nil {
								continue
							}
							xs[r], ws[r] = domainData(rng, ids, P)
							all, allW, allIDs = append(all, xs[r]...), append(allW, ws[r]...), append(allIDs, ids...)
						}
						if _, err := single.run(all, allW, allIDs, bn.Train); err != nil {
							t.Fatalf("step %d single: %v", k, err)
						}
						errs := make([]error, 3)
						var wg sync.WaitGroup
						for r := range 3 {
							wg.Go(func() {
								if st[r] == nil {
									errs[r] = bn.EmptyStep([]*bn.Layer{ranks[r].l.BatchNorm()}, true)
									return
								}
								_, errs[r] = ranks[r].run(xs[r], ws[r], st[r], bn.Train)
							})
						}
						wg.Wait()
						for r, err := range errs {
							if err != nil {
								t.Fatalf("step %d rank %d: %v", k, r, err)
							}
						}
						for d := range D {
							wm, wv, _ := single.l.RunningStats(d)
							wt, _ := single.l.NumBatchesTracked(d)
							m0, v0, _ := ranks[0].l.RunningStats(d)
							for r := range 3 {
								m, v, _ := ranks[r].l.RunningStats(d)
								tr, _ := ranks[r].l.NumBatchesTracked(d)
								assertBitEqual(t, fmt.Sprintf("step %d rank %d domain %d running mean vs rank 0", k, r, d), m, m0)
								assertBitEqual(t, fmt.Sprintf("step %d rank %d domain %d running var vs rank 0", k, r, d), v, v0)
								assertClose(t, "running mean", m, wm, 1e-10)
								assertClose(t, "running var", v, wv, 1e-10)
								if tr != wt {
									t.Fatalf("step %d rank %d domain %d: %d batches tracked, want %d", k, r, d, tr, wt)
								}
							}
						}
					}
				})
			}
		}
	}
}
