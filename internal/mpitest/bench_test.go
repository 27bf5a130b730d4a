//go:build mpi

package mpitest

import (
	"math/rand"
	"testing"

	"github.com/gorgonia-bn/bn"
	"github.com/gorgonia-bn/bn/collective/mpi"
	"gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// BenchmarkSyncBN compares SyncBN with plain BN at the same per-rank batch
// (32×64×32×32 float32 per rank) over MPI. Every rank must run the same
// number of iterations: use a fixed count,
//
//	go test -c -tags mpi -o bnmpi.test ./internal/mpitest
//	mpirun -np 2 --bind-to none --mca mpi_yield_when_idle 1 ./bnmpi.test -test.run '^$' -test.bench SyncBN -test.benchtime 20x -test.count 5
func BenchmarkSyncBN(b *testing.B) {
	w, err := mpi.World()
	if err != nil {
		b.Fatal(err)
	}
	shape := tensor.Shape{32, 64, 32, 32}
	for _, pass := range []string{"fwd", "fwdbwd"} {
		for _, synced := range []bool{false, true} {
			name := pass + "/plain"
			if synced {
				name = pass + "/sync"
			}
			b.Run(name, func(b *testing.B) {
				r := rand.New(rand.NewSource(int64(w.Rank())))
				fill := func() *tensor.Dense {
					d := make([]float32, shape.TotalSize())
					for i := range d {
						d[i] = float32(r.NormFloat64())
					}
					return tensor.New(tensor.WithShape(shape...), tensor.WithBacking(d))
				}
				g := gorgonia.NewGraph()
				x := gorgonia.NewTensor(g, tensor.Float32, 4, gorgonia.WithShape(shape...), gorgonia.WithName("x"), gorgonia.WithValue(fill()))
				var opts []bn.Option
				if synced {
					opts = append(opts, bn.WithCommunicator(w))
				}
				l, err := bn.New(g, shape[1], tensor.Float32, append([]bn.Option{bn.WithName("bench.bn")}, opts...)...)
				if err != nil {
					b.Fatal(err)
				}
				y, err := l.Apply(x)
				if err != nil {
					b.Fatal(err)
				}
				if pass == "fwdbwd" {
					dy := gorgonia.NewTensor(g, tensor.Float32, 4, gorgonia.WithShape(shape...), gorgonia.WithName("dy"), gorgonia.WithValue(fill()))
					if _, err := gorgonia.Backpropagate(gorgonia.Nodes{y}, gorgonia.Nodes{dy}, append(gorgonia.Nodes{x}, l.Learnables()...)); err != nil {
						b.Fatal(err)
					}
				}
				m := gorgonia.NewTapeMachine(g)
				defer m.Close()
				b.SetBytes(4 * int64(shape.TotalSize()))
				b.ReportAllocs()
				for b.Loop() {
					if err := m.RunAll(); err != nil {
						b.Fatal(bn.Cause(err))
					}
					m.Reset()
				}
			})
		}
	}
}
