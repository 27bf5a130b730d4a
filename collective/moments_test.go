package collective_test

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"github.com/gorgonia-bn/bn/collective"
)

// TestMomentsNoAlloc: in steady state an in-process Moments all-reduce
// allocates nothing, on the small path (the last rank to arrive merges)
// and on the large one (every rank merges a slice).
func TestMomentsNoAlloc(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates")
	}
	const size = 4
	for _, C := range []int{64, 2048} {
		t.Run(fmt.Sprintf("C=%d", C), func(t *testing.T) {
			comms, err := collective.NewInProcess(size)
			if err != nil {
				t.Fatal(err)
			}
			defer closeAll(comms)
			ctx := context.Background()
			const runs = 50
			call := func(c collective.Communicator, x []float64) error {
				for i := 0; i < len(x); i += 3 {
					x[i], x[i+1], x[i+2] = float64(1+c.Rank()), float64(i), 1
				}
				return c.AllReduce(ctx, collective.Float64s(x), collective.Moments)
			}
			var wg sync.WaitGroup
			errc := make(chan error, size)
			for r := 1; r < size; r++ {
				x := make([]float64, 3*C)
				wg.Go(func() {
					for range runs + 2 { // AllocsPerRun makes one warm-up call
						if err := call(comms[r], x); err != nil {
							errc <- err
							return
						}
					}
				})
			}
			x := make([]float64, 3*C)
			if err := call(comms[0], x); err != nil {
				t.Fatal(err)
			}
			allocs := testing.AllocsPerRun(runs, func() {
				if err := call(comms[0], x); err != nil {
					t.Error(err)
				}
			})
			wg.Wait()
			close(errc)
			for err := range errc {
				t.Fatal(err)
			}
			if allocs != 0 {
				t.Errorf("%v allocations per call", allocs)
			}
		})
	}
}
