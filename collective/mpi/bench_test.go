//go:build mpi

package mpi_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/gorgonia-bn/bn/collective"
)

// The benchmarks must run the same number of iterations on every rank:
// use a fixed -test.benchtime=Nx (they fail on every rank otherwise).
//
//	mpirun -np 2 ./mpi.test -test.run '^$' -test.bench . -test.benchtime 2000x

var benchLens = []int{128, 2048, 1 << 20}

// sameN fails b on every rank unless all ranks run b.N iterations.
func sameN(b *testing.B, w collective.Communicator) {
	x := []float64{float64(b.N), -float64(b.N)}
	if err := w.AllReduce(context.Background(), collective.Float64s(x), collective.Max); err != nil {
		b.Fatal(err)
	}
	if x[0] != -x[1] {
		b.Fatalf("ranks run between %v and %v iterations: use -test.benchtime=Nx", -x[1], x[0])
	}
}

func benchMPI(b *testing.B, n int, op func(ctx context.Context, c collective.Communicator, send, recv []float32) error) {
	w := world(b)
	sameN(b, w)
	ctx := context.Background()
	send, recv := make([]float32, n), make([]float32, n*w.Size())
	for i := range send {
		send[i] = float32(w.Rank() + i%7)
	}
	if err := w.Barrier(ctx); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(4 * n))
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := op(ctx, w, send, recv); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkAllReduce(b *testing.B) {
	for _, n := range benchLens {
		b.Run(fmt.Sprintf("n=%d", n), func(b *testing.B) {
			benchMPI(b, n, func(ctx context.Context, c collective.Communicator, send, _ []float32) error {
				return c.AllReduce(ctx, collective.Float32s(send), collective.Sum)
			})
		})
	}
}

// BenchmarkAllGather gathers n float32 from every rank.
func BenchmarkAllGather(b *testing.B) {
	for _, n := range benchLens {
		b.Run(fmt.Sprintf("n=%d", n), func(b *testing.B) {
			benchMPI(b, n, func(ctx context.Context, c collective.Communicator, send, recv []float32) error {
				return c.AllGather(ctx, collective.Float32s(send), collective.Float32s(recv), nil)
			})
		})
	}
}

func BenchmarkBarrier(b *testing.B) {
	w := world(b)
	sameN(b, w)
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := w.Barrier(ctx); err != nil {
			b.Fatal(err)
		}
	}
}
