package collective_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/gorgonia-bn/bn/collective"
	"github.com/gorgonia-bn/bn/collective/internal/conformance"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// inprocHarness runs every rank of a fresh in-process group as a goroutine.
type inprocHarness struct{ size int }

func (h inprocHarness) Size() int { return h.size }

func (h inprocHarness) Run(t *testing.T, f func(ctx context.Context, c collective.Communicator) error) {
	t.Helper()
	comms, err := collective.NewInProcess(h.size)
	if err != nil {
		t.Fatal(err)
	}
	conformance.RunRanks(t, comms, f)
}

func TestConformance(t *testing.T) {
	for _, size := range []int{1, 2, 3, 4, 8} {
		t.Run(fmt.Sprintf("size=%d", size), func(t *testing.T) {
			opt := conformance.Options{SameProcess: true, RankOrder: true, MomentsTree: true, Slack: time.Second}
			if testing.Short() || raceEnabled {
				opt.Large = 1 << 17
			}
			conformance.Run(t, inprocHarness{size}, opt)
		})
	}
}

func TestNewInProcessBadSize(t *testing.T) {
	for _, size := range []int{0, -1} {
		if _, err := collective.NewInProcess(size); err == nil {
			t.Errorf("NewInProcess(%d): no error", size)
		}
	}
}

// TestNoAllocs checks that steady-state collectives on host buffers do not
// allocate.
func TestNoAllocs(t *testing.T) {
	const size = 4
	ctx := context.Background()
	// A cancellable context: its Done channel is made once, not per call.
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	cases := []struct {
		name string
		f    func(ctx context.Context, c collective.Communicator, x, y []float32, counts []int) error
	}{
		{"AllReduce/small", func(ctx context.Context, c collective.Communicator, x, y []float32, _ []int) error {
			return c.AllReduce(ctx, collective.Float32s(x[:128]), collective.Sum)
		}},
		{"AllReduce/large", func(ctx context.Context, c collective.Communicator, x, y []float32, _ []int) error {
			return c.AllReduce(ctx, collective.Float32s(x), collective.Max)
		}},
		{"AllGather", func(ctx context.Context, c collective.Communicator, x, y []float32, _ []int) error {
			return c.AllGather(ctx, collective.Float32s(x[:100]), collective.Float32s(y[:100*size]), nil)
		}},
		{"AllGather/counts", func(ctx context.Context, c collective.Communicator, x, y []float32, counts []int) error {
			return c.AllGather(ctx, collective.Float32s(x[:counts[c.Rank()]]), collective.Float32s(y[:10]), counts)
		}},
		{"Broadcast", func(ctx context.Context, c collective.Communicator, x, y []float32, _ []int) error {
			return c.Broadcast(ctx, collective.Float32s(x[:1000]), 1)
		}},
		{"AllToAll", func(ctx context.Context, c collective.Communicator, x, y []float32, counts []int) error {
			return c.AllToAll(ctx, collective.Float32s(x[:size]), ones, collective.Float32s(y[:size]), ones)
		}},
		{"Barrier", func(ctx context.Context, c collective.Communicator, x, y []float32, _ []int) error {
			return c.Barrier(ctx)
		}},
	}
	for _, tc := range cases {
		for _, cx := range []struct {
			name string
			ctx  context.Context
		}{{"Background", ctx}, {"WithCancel", cctx}} {
			t.Run(tc.name+"/"+cx.name, func(t *testing.T) {
				comms, err := collective.NewInProcess(size)
				if err != nil {
					t.Fatal(err)
				}
				defer closeAll(comms)
				// Ranks 1..size-1 serve rank 0's calls in the background.
				const runs = 50
				total := runs + 2 // AllocsPerRun makes one warm-up call
				var wg sync.WaitGroup
				errc := make(chan error, size)
				counts := []int{1, 2, 3, 4}
				for r := 1; r < size; r++ {
					c := comms[r]
					x, y := make([]float32, 1<<16), make([]float32, 1<<16)
					wg.Go(func() {
						for i := 0; i < total; i++ {
							if err := tc.f(cx.ctx, c, x, y, counts); err != nil {
								errc <- err
								return
							}
						}
					})
				}
				x, y := make([]float32, 1<<16), make([]float32, 1<<16)
				if err := tc.f(cx.ctx, comms[0], x, y, counts); err != nil {
					t.Fatal(err)
				}
				allocs := testing.AllocsPerRun(runs, func() {
					if err := tc.f(cx.ctx, comms[0], x, y, counts); err != nil {
						t.Error(err)
					}
				})
				wg.Wait()
				close(errc)
				for err := range errc {
					t.Error(err)
				}
				if allocs != 0 {
					t.Errorf("%v allocations per call, want 0", allocs)
				}
			})
		}
	}
}

var ones = []int{1, 1, 1, 1}

func closeAll(comms []collective.Communicator) {
	for _, c := range comms {
		c.Close()
	}
}

// TestDeterministicAcrossRuns checks that the all-reduce result does not
// depend on which rank arrives last.
func TestDeterministicAcrossRuns(t *testing.T) {
	const size, n = 5, 1<<14 + 11
	in := func(r, i int) float32 { return float32(r+1) * 1e-3 * float32(i%97) * float32(1+i%5*1000) }
	var first []float32
	for run := 0; run < 10; run++ {
		results := make([][]float32, size)
		err := collective.Run(context.Background(), size, func(ctx context.Context, c collective.Communicator) error {
			// Vary the arrival order between runs.
			time.Sleep(time.Duration((c.Rank()*7+run*3)%size) * time.Millisecond)
			for _, m := range []int{n, 100} {
				x := make([]float32, m)
				for i := range x {
					x[i] = in(c.Rank(), i)
				}
				if err := c.AllReduce(ctx, collective.Float32s(x), collective.Sum); err != nil {
					return err
				}
				if m == n {
					results[c.Rank()] = x
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if first == nil {
			first = results[0]
		}
		for r, x := range results {
			for i := range x {
				if x[i] != first[i] {
					t.Fatalf("run %d rank %d element %d: %v, want %v as in run 0", run, r, i, x[i], first[i])
				}
			}
		}
	}
}

func TestRunFirstErrorAbortsOthers(t *testing.T) {
	errBoom := errors.New("boom")
	start := time.Now()
	err := collective.Run(context.Background(), 4, func(ctx context.Context, c collective.Communicator) error {
		if c.Rank() == 2 {
			return errBoom
		}
		// Would wait forever for rank 2.
		return c.Barrier(ctx)
	})
	if !errors.Is(err, errBoom) {
		t.Fatalf("Run: %v, want boom", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Run took %v", d)
	}
}

func TestRunContextCanceled(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	err := collective.Run(ctx, 3, func(ctx context.Context, c collective.Communicator) error {
		if c.Rank() == 0 {
			<-ctx.Done()
			return nil
		}
		return c.Barrier(ctx)
	})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Run: %v, want DeadlineExceeded", err)
	}
}

func TestRunPanic(t *testing.T) {
	defer func() {
		if p := recover(); p == nil {
			t.Error("Run did not re-panic")
		}
	}()
	collective.Run(context.Background(), 3, func(ctx context.Context, c collective.Communicator) error {
		if c.Rank() == 1 {
			panic("rank 1 breaks")
		}
		return c.Barrier(ctx)
	})
}

func TestRunBadSize(t *testing.T) {
	if err := collective.Run(context.Background(), 0, nil); err == nil {
		t.Error("Run with size 0: no error")
	}
}

// TestConcurrentCalls checks that two goroutines calling collectives on one
// Communicator at once fail the group rather than corrupt it.
func TestConcurrentCalls(t *testing.T) {
	comms, _ := collective.NewInProcess(2)
	defer closeAll(comms)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	errs := make([]error, 3)
	for i := range 2 {
		wg.Go(func() { errs[i] = comms[0].Barrier(ctx) })
	}
	wg.Wait()
	errs[2] = comms[1].Barrier(ctx)
	for i, err := range errs {
		if !errors.Is(err, collective.ErrMismatch) || !strings.Contains(err.Error(), "concurrent") {
			t.Errorf("call %d: %v, want ErrMismatch for concurrent calls", i, err)
		}
	}
}

// TestCloseParentKeepsSubGroup checks the documented choice: closing a
// parent does not fail its sub-groups, aborting it does.
func TestCloseParentKeepsSubGroup(t *testing.T) {
	err := collective.Run(context.Background(), 4, func(ctx context.Context, c collective.Communicator) error {
		sub, err := c.Split(ctx, c.Rank()%2, c.Rank())
		if err != nil {
			return err
		}
		defer sub.Close()
		if err := c.Barrier(ctx); err != nil {
			return err
		}
		c.Close()
		x := []float64{1}
		if err := sub.AllReduce(ctx, collective.Float64s(x), collective.Sum); err != nil {
			return fmt.Errorf("sub-group after closing the parent: %w", err)
		}
		if x[0] != 2 {
			return fmt.Errorf("sum %v, want 2", x[0])
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestSubGroupFailureStaysLocal(t *testing.T) {
	err := collective.Run(context.Background(), 4, func(ctx context.Context, c collective.Communicator) error {
		sub, err := c.Split(ctx, c.Rank()%2, c.Rank())
		if err != nil {
			return err
		}
		defer sub.Close()
		if c.Rank()%2 == 0 {
			sub.Abort(errors.New("even sub-group fails"))
		}
		if err := c.Barrier(ctx); err != nil {
			return fmt.Errorf("parent after a sub-group abort: %w", err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestErrorMessages(t *testing.T) {
	err := collective.Run(context.Background(), 2, func(ctx context.Context, c collective.Communicator) error {
		n := 8
		if c.Rank() == 1 {
			n = 7
		}
		err := c.AllReduce(ctx, collective.Float32s(make([]float32, n)), collective.Sum)
		want := fmt.Sprintf("collective: rank %d/2: all-reduce: mismatched collective call: rank 1 has 7 values, rank 0 has 8", c.Rank())
		if err == nil || err.Error() != want {
			return fmt.Errorf("got %q, want %q", err, want)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
