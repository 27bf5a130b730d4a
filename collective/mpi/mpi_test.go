//go:build mpi

package mpi_test

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/gorgonia-bn/bn/collective"
	"github.com/gorgonia-bn/bn/collective/internal/conformance"
	"github.com/gorgonia-bn/bn/collective/mpi"
)

// Run with mpirun, e.g.
//
//	go test -tags mpi -p 1 -exec 'mpirun -np 4 --oversubscribe' ./collective/mpi
//
// Every rank runs every test in the same order; do not use -failfast or
// t.Parallel, which would put the ranks out of step.
func TestMain(m *testing.M) {
	if mode := os.Getenv("BN_MPI_TEST_CHILD"); mode != "" {
		os.Exit(childMain(mode)) // see TestApplicationMPI
	}
	mpi.Main(m)
}

func world(t testing.TB) collective.Communicator {
	t.Helper()
	w, err := mpi.World()
	if err != nil {
		t.Fatal(err)
	}
	return w
}

// mpiHarness runs a case on this process's rank, in a fresh communicator
// split from the world, so that a case that breaks its group leaves the
// world usable.
type mpiHarness struct{ world collective.Communicator }

func (h mpiHarness) Size() int { return h.world.Size() }

func (h mpiHarness) Run(t *testing.T, f func(ctx context.Context, c collective.Communicator) error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, err := h.world.Split(ctx, 0, h.world.Rank())
	if err != nil {
		t.Fatalf("split: %v", err)
	}
	if err := f(ctx, c); err != nil {
		t.Errorf("rank %d: %v", c.Rank(), err)
		c.Abort(fmt.Errorf("rank %d failed its checks", c.Rank()))
	}
	// Close only once every rank is done with the case: Close fails the
	// others' pending calls.
	if err := h.world.Barrier(ctx); err != nil {
		t.Fatalf("world barrier: %v", err)
	}
	c.Close()
}

func TestConformance(t *testing.T) {
	w := world(t)
	opt := conformance.Options{Slack: 5 * time.Second}
	if testing.Short() {
		opt.Large = 1 << 16
	}
	conformance.Run(t, mpiHarness{w}, opt)
}

func TestWorld(t *testing.T) {
	w := world(t)
	w2, err := mpi.World()
	if err != nil || w2 != w {
		t.Fatalf("second World() = %v, %v; want the same Communicator", w2, err)
	}
	if n := os.Getenv("OMPI_COMM_WORLD_SIZE"); n != "" && n != fmt.Sprint(w.Size()) {
		t.Errorf("world size %d, mpirun says %s", w.Size(), n)
	}
	if w.Rank() < 0 || w.Rank() >= w.Size() {
		t.Errorf("rank %d not in [0, %d)", w.Rank(), w.Size())
	}
}

// TestSmallLargeAgree checks the two all-reduce paths (gather + local
// fold, reduce + broadcast) against each other on exactly representable
// values, and the bitwise agreement of ranks on the large path.
func TestSmallLargeAgree(t *testing.T) {
	w := world(t)
	ctx := context.Background()
	for _, n := range []int{1000, 1 << 17} {
		x := make([]float64, n)
		for i := range x {
			x[i] = float64((w.Rank()+1)*(i%1000)) * 0.5
		}
		if err := w.AllReduce(ctx, collective.Float64s(x), collective.Sum); err != nil {
			t.Fatal(err)
		}
		s := float64(w.Size() * (w.Size() + 1) / 2)
		for i := range x {
			if want := s * float64(i%1000) * 0.5; x[i] != want {
				t.Fatalf("n=%d: element %d = %v, want %v", n, i, x[i], want)
			}
		}
	}
}
