package bn

import (
	"fmt"
	"hash"
	"runtime"
	"sync"
	"testing"

	"github.com/chewxy/hm"
	"github.com/gorgonia-bn/bn/internal/kern"
	"gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// BenchmarkFused times BN followed by a ReLU through the graph (TapeMachine,
// training mode, WithOutputReuse): "pair" is Apply then gorgonia.Rectify,
// the two ops a model writes without the fused op; "fastpair" is Apply then
// a ReLU op on this package's vector kernels (fastReLU below), the best a
// separate ReLU can do; "fused" is ApplyReLU.
// With backward the gradients of x, γ and β come from
// gorgonia.Backpropagate of dy, as in BenchmarkGraph. The rounds of
//
//	bash benchdata/fused-rounds.sh   # -bench Fused and bench_torch.py --relu, R rounds
//
// alternate it with PyTorch's relu(batch_norm(x)).
func BenchmarkFused(b *testing.B) {
	for _, pass := range []string{"fwd", "fwdbwd"} {
		for _, s := range benchShapes {
			for _, dt := range benchDtypes {
				name := pass + "/" + shapeName(s, dt)
				for _, v := range []string{"pair", "fastpair", "fused"} {
					b.Run(v+"/"+name, func(b *testing.B) {
						graphBench(b, s, dt, pass == "fwdbwd", func(x *gorgonia.Node) (*gorgonia.Node, gorgonia.Nodes, error) {
							l, err := New(x.Graph(), s[1], dt, WithOutputReuse(true))
							if err != nil {
								return nil, nil, err
							}
							if v == "fused" {
								y, err := l.ApplyReLU(x)
								return y, l.Learnables(), err
							}
							y, err := l.Apply(x)
							if err != nil {
								return nil, nil, err
							}
							if v == "fastpair" {
								y, err = gorgonia.ApplyOp(&fastReLU{}, y)
							} else {
								y, err = gorgonia.Rectify(y)
							}
							return y, l.Learnables(), err
						})
					})
				}
			}
		}
	}
}

// BenchmarkFusedAdd is BenchmarkFused for the end of a residual block,
// y = relu(BN(x) + z): "pair" is Apply, gorgonia.Add, gorgonia.Rectify.
func BenchmarkFusedAdd(b *testing.B) {
	for _, pass := range []string{"fwd", "fwdbwd"} {
		for _, s := range benchShapes[:2] {
			dt := tensor.Float32
			name := pass + "/" + shapeName(s, dt)
			for _, fused := range []bool{false, true} {
				v := "pair"
				if fused {
					v = "fused"
				}
				b.Run(v+"/"+name, func(b *testing.B) {
					graphBench(b, s, dt, pass == "fwdbwd", func(x *gorgonia.Node) (*gorgonia.Node, gorgonia.Nodes, error) {
						g := x.Graph()
						z := gorgonia.NewTensor(g, dt, len(s), gorgonia.WithShape(s...), gorgonia.WithName("z"), gorgonia.WithInit(gorgonia.Gaussian(0, 1)))
						l, err := New(g, s[1], dt, WithOutputReuse(true))
						if err != nil {
							return nil, nil, err
						}
						ps := append(gorgonia.Nodes{z}, l.Learnables()...)
						if fused {
							y, err := l.ApplyAddReLU(x, z)
							return y, ps, err
						}
						y, err := l.Apply(x)
						if err != nil {
							return nil, nil, err
						}
						if y, err = gorgonia.Add(y, z); err != nil {
							return nil, nil, err
						}
						y, err = gorgonia.Rectify(y)
						return y, ps, err
					})
				})
			}
		}
	}
}

// fastReLU is a stand-alone ReLU op for the benchmarks: the vector kernels
// of the fused op (kern.ReLU, kern.Mask) run by GOMAXPROCS goroutines over
// contiguous parts, with its backward one op (dx = dy·[y > 0]). It is what
// a two-op pair can do at best with this package's kernels, so that
// BenchmarkFused separates the gain of fusing from the cost of Gorgonia's
// own Rectify.
type fastReLU struct {
	goOp
	back bool          // the backward: inputs (dy, y)
	out  tensor.Tensor // reused, as WithOutputReuse does
}

func (op *fastReLU) Arity() int {
	if op.back {
		return 2
	}
	return 1
}
func (op *fastReLU) Type() hm.Type {
	a := hm.TypeVariable('a')
	if op.back {
		return hm.NewFnType(a, a, a)
	}
	return hm.NewFnType(a, a)
}
func (op *fastReLU) InferShape(in ...gorgonia.DimSizer) (tensor.Shape, error) {
	return in[0].(tensor.Shape).Clone(), nil
}
func (op *fastReLU) WriteHash(h hash.Hash) { fmt.Fprintf(h, "bench.ReLU/%v", op.back) }
func (op *fastReLU) Hashcode() uint32      { return hashOf(op) }
func (op *fastReLU) String() string        { return fmt.Sprintf("fastReLU(back=%v)", op.back) }
func (op *fastReLU) Do(in ...gorgonia.Value) (gorgonia.Value, error) {
	t := in[0].(tensor.Tensor)
	if op.out == nil || !op.out.Shape().Eq(t.Shape()) || op.out.Dtype() != t.Dtype() {
		op.out = tensor.New(tensor.Of(t.Dtype()), tensor.WithShape(t.Shape().Clone()...))
	}
	out := op.out
	switch d := t.Data().(type) {
	case []float32:
		o := out.Data().([]float32)
		if op.back {
			parts(len(d), func(lo, hi int) { kern.Mask(d[lo:hi], in[1].Data().([]float32)[lo:hi], o[lo:hi]) })
		} else {
			parts(len(d), func(lo, hi int) { kern.ReLU(o[lo:hi], d[lo:hi]) })
		}
	case []float64:
		o := out.Data().([]float64)
		if op.back {
			parts(len(d), func(lo, hi int) { kern.Mask(d[lo:hi], in[1].Data().([]float64)[lo:hi], o[lo:hi]) })
		} else {
			parts(len(d), func(lo, hi int) { kern.ReLU(o[lo:hi], d[lo:hi]) })
		}
	}
	return out, nil
}
func (op *fastReLU) DiffWRT(n int) []bool { return []bool{true} }
func (op *fastReLU) SymDiff(inputs gorgonia.Nodes, output, grad *gorgonia.Node) (gorgonia.Nodes, error) {
	dx, err := gorgonia.ApplyOp(&fastReLU{back: true}, grad, output)
	return gorgonia.Nodes{dx}, err
}

// parts runs f on GOMAXPROCS contiguous parts of [0, n), concurrently.
func parts(n int, f func(lo, hi int)) {
	k := runtime.GOMAXPROCS(0)
	var wg sync.WaitGroup
	for i := range k {
		wg.Go(func() { f(i*n/k, (i+1)*n/k) })
	}
	wg.Wait()
}
