//go:build mpi

package mpi_test

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"testing"
	"time"
	"unsafe"

	"github.com/gorgonia-bn/bn/collective"
	"github.com/gorgonia-bn/bn/collective/mpi"
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

// benchMPI times op over the world with send of n values per rank and recv
// of n per rank, and returns recv after the last call.
func benchMPI[T float32 | float64](b *testing.B, n int, op func(ctx context.Context, c collective.Communicator, send, recv []T) error) []T {
	w := world(b)
	sameN(b, w)
	ctx := context.Background()
	send, recv := make([]T, n), make([]T, n*w.Size())
	for i := range send {
		send[i] = T(w.Rank() + i%7)
	}
	if err := w.Barrier(ctx); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(n) * int64(unsafe.Sizeof(send[0])))
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := op(ctx, w, send, recv); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	return recv
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

// BenchmarkHeader measures what the header check costs: an all-gather of
// a SyncBN forward payload (7 + 3·C float64 values per rank) through
// AllGather with the data carried in the header exchange (fused, the
// default), through AllGather with a separate 64-byte header exchange
// before the data (separate), and through the bare MPI_Iallgather of the
// same data (raw: no header, no checks).
//
//	mpirun -np 2 ./mpi.test -test.run '^$' -test.bench Header -test.benchtime 2000x
func BenchmarkHeader(b *testing.B) {
	for _, ch := range []int{64, 1024} {
		n := 7 + 3*ch
		for _, mode := range []string{"fused", "separate", "raw"} {
			b.Run(fmt.Sprintf("C=%d/%s", ch, mode), func(b *testing.B) {
				mpi.SetSeparateHeader(mode == "separate")
				defer mpi.SetSeparateHeader(false)
				recv := benchMPI(b, n, func(ctx context.Context, w collective.Communicator, send, recv []float64) error {
					if mode == "raw" {
						return mpi.RawAllGather(ctx, w, send, recv)
					}
					return w.AllGather(ctx, collective.Float64s(send), collective.Float64s(recv), nil)
				})
				K := len(recv) / n
				if recv[n*(K-1)] != float64(K-1) {
					b.Fatalf("recv[%d] = %v, want %d", n*(K-1), recv[n*(K-1)], K-1)
				}
			})
		}
	}
}

// TestHeaderPaired is BenchmarkHeader made robust to a shared, drifting
// machine: it alternates blocks of 200 fused, 200 separate and 200 raw
// all-gathers (the order rotated every block) and prints one benchmark
// line per block, for benchstat. It runs only with COLLECTIVE_MPI_HEADER_BLOCKS=N (blocks
// per mode and C).
//
//	COLLECTIVE_MPI_HEADER_BLOCKS=30 mpirun -np 2 ./mpi.test -test.run HeaderPaired -test.v
func TestHeaderPaired(t *testing.T) {
	blocks, _ := strconv.Atoi(os.Getenv("COLLECTIVE_MPI_HEADER_BLOCKS"))
	if blocks <= 0 {
		t.Skip("set COLLECTIVE_MPI_HEADER_BLOCKS")
	}
	const calls = 200
	w := world(t)
	ctx := context.Background()
	for _, ch := range []int{64, 1024} {
		n := 7 + 3*ch
		send, recv := make([]float64, n), make([]float64, n*w.Size())
		modes := []string{"fused", "separate", "raw"}
		run := func(mode string) time.Duration {
			mpi.SetSeparateHeader(mode == "separate")
			defer mpi.SetSeparateHeader(false)
			if err := w.Barrier(ctx); err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			for i := 0; i < calls; i++ {
				var err error
				if mode == "raw" {
					err = mpi.RawAllGather(ctx, w, send, recv)
				} else {
					err = w.AllGather(ctx, collective.Float64s(send), collective.Float64s(recv), nil)
				}
				if err != nil {
					t.Fatal(err)
				}
			}
			return time.Since(start)
		}
		for _, m := range modes { // warm up
			run(m)
		}
		for blk := 0; blk < blocks; blk++ {
			var d [3]time.Duration
			for i := range modes {
				m := (blk + i) % len(modes)
				d[m] = run(modes[m])
			}
			for m, name := range modes {
				fmt.Printf("BenchmarkHeaderPaired/C=%d/%s-%d\t%d\t%d ns/op\n", ch, name, runtime.GOMAXPROCS(0), calls, d[m].Nanoseconds()/calls)
			}
		}
	}
}
