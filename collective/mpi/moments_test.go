//go:build mpi

package mpi_test

import (
	"context"
	"fmt"
	"math"
	"testing"

	"github.com/gorgonia-bn/bn/collective"
	"github.com/gorgonia-bn/bn/collective/mpi"
)

// momentsInput is rank r's (n, mean, M2) of C channels: uneven counts,
// empty channels, and rank 1 of groups of 3 or more empty; float32-offset
// means 1e4 + a deviation.
func momentsInput(r, size, C int) []float64 {
	x := make([]float64, 3*C)
	for i := range C {
		n := float64((r*13 + i*5) % 6)
		if n == 0 || (size >= 3 && r == 1) {
			continue
		}
		x[3*i] = n
		x[3*i+1] = float64(float32(1e4 + math.Sin(float64(7*r+i))))
		x[3*i+2] = n * (1 + math.Abs(math.Cos(float64(3*r+i))))
	}
	return x
}

// rankOrder merges every rank's input in rank order (the all-gather
// exchange's result).
func rankOrder(size, C int) []float64 {
	out := make([]float64, 3*C)
	for r := range size {
		x := momentsInput(r, size, C)
		for i := range C {
			a, b := out[3*i:3*i+3], x[3*i:3*i+3]
			switch {
			case b[0] == 0:
			case a[0] == 0:
				copy(a, b)
			default:
				n := a[0] + b[0]
				d := b[1] - a[1]
				a[0], a[1], a[2] = n, a[1]+d*(b[0]/n), a[2]+b[2]+d*d*(a[0]*(b[0]/n))
			}
		}
	}
	return out
}

// TestMomentsPaths runs the three paths of a Moments all-reduce (auto:
// gathered and merged over the fixed tree for small buffers; MPI_Ireduce
// with the user op + MPI_Ibcast; MPI_Iallreduce with the user op) for
// small and large channel counts, and checks every rank's bits against
// rank 0's and the result against the rank-order merge (1e-12 relative).
func TestMomentsPaths(t *testing.T) {
	w := world(t)
	ctx := context.Background()
	defer mpi.SetMomentsPath("auto")
	for _, path := range []string{"auto", "reduce", "allreduce"} {
		for _, C := range []int{1, 64, 2048, 1 << 14} {
			mpi.SetMomentsPath(path)
			x := momentsInput(w.Rank(), w.Size(), C)
			if err := w.AllReduce(ctx, collective.Float64s(x), collective.Moments); err != nil {
				t.Fatalf("%s C=%d: %v", path, C, err)
			}
			mpi.SetMomentsPath("auto")
			root := append([]float64(nil), x...)
			if err := w.Broadcast(ctx, collective.Float64s(root), 0); err != nil {
				t.Fatal(err)
			}
			diff := 0
			for i := range x {
				if math.Float64bits(x[i]) != math.Float64bits(root[i]) {
					diff++
				}
			}
			if diff > 0 {
				t.Errorf("%s C=%d: rank %d differs from rank 0 in %d of %d values", path, C, w.Rank(), diff, len(x))
			}
			want := rankOrder(w.Size(), C)
			for i := 0; i < len(x); i += 3 {
				g, r := x[i:i+3], want[i:i+3]
				if g[0] != r[0] || math.Abs(g[1]-r[1]) > 1e-12*math.Abs(r[1]) || math.Abs(g[2]-r[2]) > 1e-12*r[2] {
					t.Errorf("%s C=%d channel %d: %v, rank-order merge %v", path, C, i/3, g, r)
					break
				}
			}
		}
	}
}

// BenchmarkMoments compares the exchanges of a synchronized layer's
// forward with C channels: the all-gather of every rank's triples merged
// locally in rank order (gather), and the Moments all-reduce by its
// automatic path, by reduce + broadcast, and by MPI_Iallreduce.
func BenchmarkMoments(b *testing.B) {
	for _, C := range []int{64, 512, 2048} {
		n := 3 * C
		b.Run(fmt.Sprintf("C=%d/gather", C), func(b *testing.B) {
			benchMPI(b, n, func(ctx context.Context, c collective.Communicator, send, recv []float64) error {
				if err := c.AllGather(ctx, collective.Float64s(send), collective.Float64s(recv), nil); err != nil {
					return err
				}
				for r := 1; r < c.Size(); r++ {
					for i := 0; i < n; i += 3 {
						a, q := recv[i:i+3], recv[r*n+i:r*n+i+3]
						nn := a[0] + q[0]
						d := q[1] - a[1]
						a[0], a[1], a[2] = nn, a[1]+d*(q[0]/nn), a[2]+q[2]+d*d*(a[0]*(q[0]/nn))
					}
				}
				return nil
			})
		})
		for _, path := range []string{"auto", "reduce", "allreduce"} {
			b.Run(fmt.Sprintf("C=%d/moments-%s", C, path), func(b *testing.B) {
				mpi.SetMomentsPath(path)
				defer mpi.SetMomentsPath("auto")
				benchMPI(b, n, func(ctx context.Context, c collective.Communicator, send, _ []float64) error {
					for i := 0; i < n; i += 3 {
						send[i] = 1 + float64(i%5) // counts > 0
					}
					return c.AllReduce(ctx, collective.Float64s(send), collective.Moments)
				})
			})
		}
	}
}
