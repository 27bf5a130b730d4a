package faults_test

import (
	"sync"
	"testing"
	"time"

	"github.com/gorgonia-bn/bn/collective"
	"github.com/gorgonia-bn/bn/internal/faults"
	"go.uber.org/goleak"
)

// TestCatalogueInProcess runs the fault catalogue over 2 and 3 in-process
// ranks (internal/mpitest runs it over MPI).
func TestCatalogueInProcess(t *testing.T) {
	defer goleak.VerifyNone(t)
	for _, K := range []int{2, 3} {
		comms, err := collective.NewInProcess(K)
		if err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		for r := range K {
			wg.Go(func() { faults.Run(t, comms[r], 500*time.Millisecond) })
		}
		wg.Wait()
		for _, c := range comms {
			c.Close()
		}
	}
}
