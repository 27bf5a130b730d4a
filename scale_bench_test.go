package bn

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"github.com/gorgonia-bn/bn/collective"
	"github.com/gorgonia-bn/bn/internal/kern"
	"gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// BenchmarkScaleExchange simulates the forward statistics exchange of one
// synchronized layer with P in-process ranks (goroutines) and C channels,
// both ways in one run:
//
//   - gather: what SyncBN did before the Moments reduction (and what
//     PyTorch's SyncBN does): every rank all-gathers every rank's header
//     and (n, mean, M2) per channel, and merges all of them in rank order;
//   - moments: what it does now (syncConfig.reduceMoments): one Moments
//     all-reduce of the header triples and the channels' triples.
//
// ns/op is the wall time of one layer's exchange on every rank together
// (on this machine's cores: P goroutines share them, so it measures the
// work, not a network). The custom metrics are per rank and per layer,
// from the cost model of a distributed run of each exchange (see README,
// "Scale"): recvB/rank, the bytes the busiest rank receives (all-gather:
// (P−1)·(10+3C)·8; reduce + broadcast over a binomial tree: ⌈log₂P⌉·
// (30+3C)·8), and merges/rank, the Chan merges of channel triples it
// computes ((P−1)·C; ⌈log₂P⌉·C). The all-gather is only run where every
// rank's receive buffer fits (P²·(10+3C)·8 ≤ 256 MiB in all).
//
//	go test -run '^$' -bench ScaleExchange -benchtime 10x -count 5
func BenchmarkScaleExchange(b *testing.B) {
	for _, P := range []int{2, 8, 32, 128, 256, 512, 1024} {
		for _, C := range []int{64, 512, 2048} {
			for _, way := range []string{"gather", "moments"} {
				b.Run(fmt.Sprintf("P=%d/C=%d/%s", P, C, way), func(b *testing.B) {
					benchExchange(b, P, C, way)
				})
			}
		}
	}
}

func ceilLog2(p int) int {
	d := 0
	for 1<<d < p {
		d++
	}
	return d
}

func benchExchange(b *testing.B, P, C int, way string) {
	gathered := (10 + 3*C) * 8
	var recv, merges float64
	if way == "gather" {
		recv, merges = float64((P-1)*gathered), float64((P-1)*C)
	} else {
		recv, merges = float64(ceilLog2(P)*(hdrTriples+C)*3*8), float64(ceilLog2(P)*C)
	}
	if way == "gather" && P*P*gathered > 256<<20 {
		b.Skip("the all-gather's receive buffers would exceed 256 MiB")
	}
	comms, err := collective.NewInProcess(P)
	if err != nil {
		b.Fatal(err)
	}
	defer func() {
		for _, c := range comms {
			c.Close()
		}
	}()
	type rank struct {
		l    *Layer
		moms []kern.Moments
		sm   segMap
	}
	ranks := make([]rank, P)
	for r := range ranks {
		l, err := New(gorgonia.NewGraph(), C, tensor.Float64, WithName("scale"), WithCommunicator(comms[r]))
		if err != nil {
			b.Fatal(err)
		}
		ranks[r].l = l
		ranks[r].moms = make([]kern.Moments, C)
		for c := range C {
			ranks[r].moms[c] = kern.Moments{N: float64(1 + (r+c)%4), Mean: 1e4 + float64(c%7), M2: float64(1 + r%3)}
		}
		ranks[r].sm.Resize(1)
	}
	b.ResetTimer()
	var wg sync.WaitGroup
	errs := make([]error, P)
	for r := range ranks {
		wg.Go(func() {
			rk := &ranks[r]
			sc := rk.l.cfg.sync
			for range b.N {
				var err error
				if way == "gather" {
					err = gatherExchange(sc, rk.l, rk.moms, &rk.sm, C)
				} else {
					_, err = sc.reduceMoments(rk.l, rk.moms, &rk.sm, C, 4, 0, Train)
				}
				if err != nil {
					errs[r] = err
					return
				}
			}
		})
	}
	wg.Wait()
	b.StopTimer()
	for r, err := range errs {
		if err != nil {
			b.Fatalf("rank %d: %v", r, err)
		}
	}
	b.ReportMetric(recv, "recvB/rank")
	b.ReportMetric(merges, "merges/rank")
}

// gatherExchange is the exchange the Moments reduction replaced: the
// all-gather of a 10-value header and every channel's (n, mean, M2), then
// the header checks and a merge of every rank's moments in rank order, on
// every rank.
func gatherExchange(sc *syncConfig, l *Layer, moms []kern.Moments, sm *segMap, C int) error {
	K := sc.comm.Size()
	n := headerLen + 3*C
	sc.send = grow(sc.send, n)
	sc.hdr = [headerLen]float64{tagForward, sc.hash, float64(C), 1, 0, 4, 0, float64(Train), updates(l, Train), segMapHash(sm), sc.configHash(l)}
	copy(sc.send, sc.hdr[:])
	p := sc.send[headerLen:]
	for i, m := range moms {
		p[3*i], p[3*i+1], p[3*i+2] = m.N, m.Mean, m.M2
	}
	sc.recv = grow(sc.recv, K*n)
	if err := sc.comm.AllGather(context.Background(), collective.Float64s(sc.send), collective.Float64s(sc.recv), nil); err != nil {
		return err
	}
	sc.merged = grow(sc.merged, C)
	clear(sc.merged)
	for r := range K {
		q := sc.recv[r*n : (r+1)*n]
		if err := sc.checkHeader(l, q[:headerLen], r, C, 1, 0, tagForward); err != nil {
			return err
		}
		q = q[headerLen:]
		for i := range sc.merged {
			sc.merged[i] = sc.merged[i].Merge(kern.Moments{N: q[3*i], Mean: q[3*i+1], M2: q[3*i+2]})
		}
	}
	return nil
}
