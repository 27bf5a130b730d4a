//go:build mpi

package mpitest

import (
	"testing"
	"time"

	"github.com/gorgonia-bn/bn/internal/faults"
)

// TestFaultCatalogue runs the fault catalogue (internal/faults) over the MPI
// world: every rank gets what README's table says, as fast as it says.
func TestFaultCatalogue(t *testing.T) {
	w := world(t)
	if w.Size() < 2 {
		t.Skip("the fault catalogue needs at least 2 ranks")
	}
	faults.Run(t, w, time.Second)
}
