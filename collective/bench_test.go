package collective_test

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"github.com/gorgonia-bn/bn/collective"
)

// Benchmark sizes: 2·C values for C = 64 and 1024 channels (the two
// all-reduced SyncBN sums), and 4 MB of float32.
var benchLens = []int{128, 2048, 1 << 20}

// benchInproc times op on every rank of an in-process group of the given
// size: ns/op is the time of one collective, B/s counts n float32 per rank.
func benchInproc(b *testing.B, ranks, n int, op func(ctx context.Context, c collective.Communicator, send, recv []float32) error) {
	comms, err := collective.NewInProcess(ranks)
	if err != nil {
		b.Fatal(err)
	}
	defer closeAll(comms)
	ctx := context.Background()
	sends, recvs := make([][]float32, ranks), make([][]float32, ranks)
	for r := range comms {
		sends[r], recvs[r] = make([]float32, n), make([]float32, n*ranks)
		for i := range sends[r] {
			sends[r][i] = float32(r + i%7)
		}
	}
	b.SetBytes(int64(4 * n))
	b.ReportAllocs()
	b.ResetTimer()
	var wg sync.WaitGroup
	for r := 1; r < ranks; r++ {
		wg.Go(func() {
			for i := 0; i < b.N; i++ {
				if err := op(ctx, comms[r], sends[r], recvs[r]); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	for i := 0; i < b.N; i++ {
		if err := op(ctx, comms[0], sends[0], recvs[0]); err != nil {
			b.Error(err)
			break
		}
	}
	wg.Wait()
}

func BenchmarkInProcessAllReduce(b *testing.B) {
	for _, ranks := range []int{2, 4, 8} {
		for _, n := range benchLens {
			b.Run(fmt.Sprintf("ranks=%d/n=%d", ranks, n), func(b *testing.B) {
				benchInproc(b, ranks, n, func(ctx context.Context, c collective.Communicator, send, _ []float32) error {
					return c.AllReduce(ctx, collective.Float32s(send), collective.Sum)
				})
			})
		}
	}
}

// BenchmarkInProcessAllGather gathers n float32 from every rank.
func BenchmarkInProcessAllGather(b *testing.B) {
	for _, ranks := range []int{2, 4, 8} {
		for _, n := range benchLens {
			b.Run(fmt.Sprintf("ranks=%d/n=%d", ranks, n), func(b *testing.B) {
				benchInproc(b, ranks, n, func(ctx context.Context, c collective.Communicator, send, recv []float32) error {
					return c.AllGather(ctx, collective.Float32s(send), collective.Float32s(recv), nil)
				})
			})
		}
	}
}
