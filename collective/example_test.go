package collective_test

import (
	"context"
	"fmt"

	"github.com/gorgonia-bn/bn/collective"
)

// Four goroutines sum their vectors with an all-reduce. Run aborts all
// ranks if one fails.
func ExampleRun() {
	err := collective.Run(context.Background(), 4, func(ctx context.Context, c collective.Communicator) error {
		x := []float64{float64(c.Rank()), 1, 10}
		if err := c.AllReduce(ctx, collective.Float64s(x), collective.Sum); err != nil {
			return err
		}
		if c.Rank() == 0 {
			fmt.Println("sum:", x)
		}
		return nil
	})
	fmt.Println("error:", err)
	// Output:
	// sum: [6 4 40]
	// error: <nil>
}

// Ranks contribute different numbers of values to an all-gather: rank r
// sends r values.
func ExampleNewInProcess() {
	comms, err := collective.NewInProcess(3)
	if err != nil {
		panic(err)
	}
	counts := []int{0, 1, 2}
	results := make([][]float32, len(comms))
	done := make(chan error)
	for r, c := range comms {
		go func() {
			send := make([]float32, counts[r])
			for i := range send {
				send[i] = float32(10*r + i)
			}
			results[r] = make([]float32, 3)
			done <- c.AllGather(context.Background(), collective.Float32s(send), collective.Float32s(results[r]), counts)
		}()
	}
	for range comms {
		if err := <-done; err != nil {
			panic(err)
		}
	}
	for _, c := range comms {
		c.Close()
	}
	fmt.Println(results)
	// Output:
	// [[10 20 21] [10 20 21] [10 20 21]]
}

// Split makes sub-groups, here of the even and the odd ranks.
func ExampleRun_split() {
	sums := make([]float64, 4)
	err := collective.Run(context.Background(), 4, func(ctx context.Context, c collective.Communicator) error {
		sub, err := c.Split(ctx, c.Rank()%2, c.Rank())
		if err != nil {
			return err
		}
		defer sub.Close()
		x := []float64{float64(c.Rank())}
		if err := sub.AllReduce(ctx, collective.Float64s(x), collective.Sum); err != nil {
			return err
		}
		sums[c.Rank()] = x[0]
		return nil
	})
	fmt.Println(sums, err)
	// Output:
	// [2 4 2 4] <nil>
}
