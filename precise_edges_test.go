package bn

// Distributed edges of Precise (issue 15, item 3): ranks with uneven batch
// sizes, data that ends at different batches, a rank that fails — every
// rank must get the same decision promptly, never wait for the sync
// timeout, and end with bitwise-equal statistics of the data actually run.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand"
	"sync"
	"testing"
	"time"

	"github.com/gorgonia-bn/bn/collective"
	"gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// rankData is one rank's batches (float64 N×C values each).
type rankData [][]float64

func (d rankData) size(i, C int) int { return len(d[i]) / C }

// distCase is one scenario of TestPreciseDistributedEdges.
type distCase struct {
	name   string
	sizes  [2][]int // per rank, per batch: samples
	opt    PreciseOptions
	failAt [2]int // batch at which the rank's run (or Load) fails; -1: never
	cancel [2]int // batch before which the rank's ctx is cancelled; -1: never
	// want: nil for success, else the error every rank must wrap (ranks in
	// own get their own injected error instead).
	want [2]error
	// used: the number of batches of each rank whose data the statistics
	// hold (success only).
	used [2]int
}

var errInjected = errors.New("injected data-loader failure")

// syncMode says how the ranks share: plain layers merged by Comm, layers
// synchronized over their communicator (no Comm), or both (Comm a second
// communicator of the same ranks).
type syncMode int

const (
	viaComm syncMode = iota
	viaLayers
	viaBoth
)

func (m syncMode) String() string { return [...]string{"comm", "synced", "synced+comm"}[m] }

func TestPreciseDistributedEdges(t *testing.T) {
	const C = 3
	many := func(n, size int) []int {
		s := make([]int, n)
		for i := range s {
			s[i] = size
		}
		return s
	}
	never := [2]int{-1, -1}
	type variant struct {
		mode syncMode
		load bool
	}
	var variants []variant
	for _, m := range []syncMode{viaComm, viaLayers, viaBoth} {
		for _, load := range []bool{false, true} {
			variants = append(variants, variant{m, load})
		}
	}
	for _, v := range variants {
		// Without Load, a rank only learns that its data ended inside run,
		// while the others may be in a synchronized layer's collective of
		// that batch: every rank fails promptly with ErrSync (documented).
		endedSynced := !v.load && v.mode != viaComm
		endErr := func(clean error) [2]error {
			if endedSynced {
				return [2]error{ErrSync, ErrSync}
			}
			return [2]error{clean, clean}
		}
		cases := []distCase{
			{
				// Global count: 11 per batch, 44 ≥ 40 after 4 batches on
				// every rank (each rank alone would stop after 5 and 14).
				name:  "samples/uneven-batch-sizes-8-and-3",
				sizes: [2][]int{many(16, 8), many(16, 3)},
				opt:   PreciseOptions{Samples: 40},
				used:  [2]int{4, 4}, failAt: never, cancel: never,
			},
			{
				name:  "batches/uneven-batch-sizes",
				sizes: [2][]int{many(5, 8), many(5, 3)},
				opt:   PreciseOptions{Batches: 5},
				used:  [2]int{5, 5}, failAt: never, cancel: never,
			},
			{
				// Rank 1's data ends at batch 3.
				name:  "samples/data-ends-at-different-batches",
				sizes: [2][]int{many(6, 4), many(3, 5)},
				opt:   PreciseOptions{Samples: 1000},
				want:  endErr(nil),
				used:  [2]int{3 + boolInt(!v.load), 3}, failAt: never, cancel: never,
			},
			{
				name:   "batches/data-ends-on-one-rank",
				sizes:  [2][]int{many(6, 4), many(3, 4)},
				opt:    PreciseOptions{Batches: 5},
				want:   endErr(ErrDataEnded),
				failAt: never, cancel: never,
			},
			{
				name:   "no-batch-on-one-rank",
				sizes:  [2][]int{many(3, 4), nil},
				opt:    PreciseOptions{Batches: 3},
				want:   endErr(ErrNoBatches),
				failAt: never, cancel: never,
			},
			{
				name:   "rank1-fails-at-batch-2",
				sizes:  [2][]int{many(4, 4), many(4, 4)},
				opt:    PreciseOptions{Batches: 4},
				want:   [2]error{ErrSync, errInjected},
				failAt: [2]int{-1, 2}, cancel: never,
			},
			{
				name:   "rank0-fails-at-batch-0",
				sizes:  [2][]int{many(4, 4), many(4, 4)},
				opt:    PreciseOptions{Samples: 30},
				want:   [2]error{errInjected, ErrSync},
				failAt: [2]int{0, -1}, cancel: never,
			},
			{
				name:   "rank1-context-cancelled-before-batch-1",
				sizes:  [2][]int{many(4, 4), many(4, 4)},
				opt:    PreciseOptions{Batches: 4},
				want:   [2]error{ErrSync, context.Canceled},
				failAt: never, cancel: [2]int{-1, 1},
			},
		}
		for ci, tc := range cases {
			t.Run(fmt.Sprintf("%v/load=%v/%s", v.mode, v.load, tc.name), func(t *testing.T) {
				runDistCase(t, C, v.mode, v.load, tc, int64(ci))
			})
		}
	}
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

func runDistCase(t *testing.T, C int, mode syncMode, load bool, tc distCase, seed int64) {
	const K = 2
	r := rand.New(rand.NewSource(seed))
	data := [K]rankData{}
	for k := range K {
		for i, n := range tc.sizes[k] {
			data[k] = append(data[k], randn(r, n*C, float64(3*k+i), 1+float64(k)+0.5*float64(i)))
		}
	}
	comms, err := collective.NewInProcess(K)
	must(t, err)
	var world []collective.Communicator
	if mode == viaBoth {
		world, err = collective.NewInProcess(K)
		must(t, err)
	}
	type result struct {
		rep      PreciseReport
		err      error
		took     time.Duration
		m1, v1   []float64
		m2, v2   []float64
		initial1 []float64
	}
	var res [K]result
	var wg sync.WaitGroup
	for k := range K {
		var opts []Option
		opt := tc.opt
		switch mode {
		case viaComm:
			opt.Comm = comms[k]
		case viaLayers:
			opts = append(opts, WithCommunicator(comms[k]), WithSyncTimeout(60*time.Second))
		case viaBoth:
			opts = append(opts, WithCommunicator(comms[k]), WithSyncTimeout(60*time.Second))
			opt.Comm = world[k]
		}
		sizes := tc.sizes[k]
		if len(sizes) == 0 {
			sizes = []int{4} // a graph, though the rank has no data
		}
		net := newPreciseNet(t, tensor.Float64, C, nil, sizes, opts...)
		res[k].initial1, _ = net.l1.RunningStats()
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		d := data[k]
		var cur int // the batch Load set
		fetch := func(i int) (int, error) {
			if tc.cancel[k] == i {
				cancel()
			}
			if tc.failAt[k] == i {
				return 0, fmt.Errorf("rank %d: %w", k, errInjected)
			}
			if i >= len(d) {
				return 0, io.EOF
			}
			n := d.size(i, C)
			cur = n
			return n, gorgonia.Let(net.ins[n], tensor.New(tensor.WithShape(net.ins[n].Shape()...), tensor.WithBacking(append([]float64(nil), d[i]...))))
		}
		forward := func() error {
			m := net.ms[cur]
			m.Reset()
			return m.RunAll()
		}
		var run BatchFunc
		if load {
			opt.Load = func(ctx context.Context, i int) (int, error) { return fetch(i) }
			run = func(ctx context.Context, i int) (int, error) { return cur, forward() }
		} else {
			run = func(ctx context.Context, i int) (int, error) {
				n, err := fetch(i)
				if err != nil {
					return 0, err
				}
				return n, forward()
			}
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			start := time.Now()
			res[k].rep, res[k].err = Precise(ctx, []Normalizer{net.l1, net.l2}, run, opt)
			res[k].took = time.Since(start)
			res[k].m1, res[k].v1 = net.l1.RunningStats()
			res[k].m2, res[k].v2 = net.l2.RunningStats()
		}()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		for _, c := range append(comms, world...) {
			c.Abort(errors.New("test deadline"))
		}
		<-done
		t.Fatalf("Precise did not return within 20 s on every rank (sync timeout 60 s): errors %v, %v", res[0].err, res[1].err)
	}
	for k := range K {
		if res[k].took > 5*time.Second {
			t.Errorf("rank %d returned after %v", k, res[k].took)
		}
	}
	for k := range K {
		t.Logf("rank %d (%v): %+v, %v", k, res[k].took, res[k].rep, res[k].err)
	}
	if tc.want[0] != nil || tc.want[1] != nil {
		for k := range K {
			if !errors.Is(res[k].err, tc.want[k]) {
				t.Errorf("rank %d: err = %v, want %v", k, res[k].err, tc.want[k])
			}
			sameBits(t, fmt.Sprintf("rank %d: mean untouched", k), res[k].m1, res[k].initial1)
		}
		return
	}
	for k := range K {
		if res[k].err != nil {
			t.Fatalf("rank %d: %v", k, res[k].err)
		}
	}
	// Every rank: the same statistics, bit for bit, and the same global count.
	sameBits(t, "layer 1 mean of rank 1", res[1].m1, res[0].m1)
	sameBits(t, "layer 1 var of rank 1", res[1].v1, res[0].v1)
	sameBits(t, "layer 2 mean of rank 1", res[1].m2, res[0].m2)
	sameBits(t, "layer 2 var of rank 1", res[1].v2, res[0].v2)
	// The statistics of the union of the batches actually run.
	var union, h [][]float64
	want := 0
	for k := range K {
		for i := range tc.used[k] {
			union = append(union, data[k][i])
			want += data[k].size(i, C)
			if mode == viaComm { // layer 1 normalized each rank's batch alone
				h = append(h, batchNormNaive(data[k][i], C, 1, 1e-5))
			}
		}
		if res[k].rep.Samples != sumInts(tc.sizes[k][:tc.used[k]]) || res[k].rep.Batches != tc.used[k] {
			t.Errorf("rank %d: report %+v, want %d batches", k, res[k].rep, tc.used[k])
		}
	}
	if mode != viaComm { // synchronized: layer 1 normalized the global batch
		for i := range min(tc.used[0], tc.used[1]) {
			h = append(h, batchNormNaive(append(append([]float64(nil), data[0][i]...), data[1][i]...), C, 1, 1e-5))
		}
	}
	for k := range K {
		if res[k].rep.GlobalSamples != want {
			t.Errorf("rank %d: GlobalSamples %d, want %d", k, res[k].rep.GlobalSamples, want)
		}
	}
	wm, wv := population(union, C, 1)
	closeTo(t, "layer 1 mean", res[0].m1, wm, 1e-10)
	closeTo(t, "layer 1 var", res[0].v1, wv, 1e-10)
	wm, wv = population(h, C, 1)
	closeTo(t, "layer 2 mean", res[0].m2, wm, 1e-10)
	closeTo(t, "layer 2 var", res[0].v2, wv, 1e-10)
}

func sumInts(s []int) int {
	t := 0
	for _, v := range s {
		t += v
	}
	return t
}
