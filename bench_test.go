package bn

// Benchmarks against Gorgonia's own BatchNorm and the copy bandwidth. The
// README table comes from
//
//	bash benchdata/rounds.sh   # 5 rounds of -bench 'Copy|Kernels|Graph', PyTorch, -tags purego
//	python3 benchdata/table.py benchdata/rounds-{go,torch,purego}-DATE.txt
//
// and any two variants compare with
//
//	go test -run '^$' -bench 'Kernels' -benchtime 300ms -count 6 . | tee a.txt
//	go run golang.org/x/perf/cmd/benchstat@v0.0.0-20260908200009-22c9c6c9d4da a.txt b.txt
//
// MB/s counts the ideal memory traffic: 3× the tensor bytes for a forward
// pass (read x twice, write y), 8× for forward+backward, and 2× for the
// copy (read, write) — so each figure divided by the faster of Copy's and
// CopyPar's is the fraction of the bandwidth floor reached.

import (
	"fmt"
	"math/rand"
	"runtime"
	"sync"
	"testing"

	"github.com/gorgonia-bn/bn/internal/kern"
	"gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

var benchShapes = []tensor.Shape{
	{32, 64, 32, 32},
	{8, 256, 14, 14},
	{256, 1024},
	{64, 64, 56, 56},
}

var benchDtypes = []tensor.Dtype{tensor.Float32, tensor.Float64}

func shapeName(s tensor.Shape, dt tensor.Dtype) string {
	name := ""
	for i, d := range s {
		if i > 0 {
			name += "x"
		}
		name += fmt.Sprint(d)
	}
	return name + "/" + dt.String()
}

func benchTensor(r *rand.Rand, s tensor.Shape, dt tensor.Dtype) *tensor.Dense {
	n := s.TotalSize()
	if dt == tensor.Float32 {
		d := make([]float32, n)
		for i := range d {
			d[i] = float32(r.NormFloat64()*2 + 1)
		}
		return tensor.New(tensor.WithShape(s...), tensor.WithBacking(d))
	}
	d := make([]float64, n)
	for i := range d {
		d[i] = r.NormFloat64()*2 + 1
	}
	return tensor.New(tensor.WithShape(s...), tensor.WithBacking(d))
}

func tensorBytes(s tensor.Shape, dt tensor.Dtype) int64 {
	return int64(s.TotalSize()) * int64(dt.Size())
}

// BenchmarkCopy is the bandwidth ceiling: copy of one tensor.
func BenchmarkCopy(b *testing.B) {
	benchCopy(b, func(dst, src []byte) { copy(dst, src) })
}

// BenchmarkCopyPar is the bandwidth ceiling of the machine's cores: the copy
// of one tensor split into GOMAXPROCS contiguous parts copied concurrently
// (the kernels use every core; a single memmove may not reach the memory
// bandwidth alone).
func BenchmarkCopyPar(b *testing.B) {
	k := runtime.GOMAXPROCS(0)
	var wg sync.WaitGroup
	benchCopy(b, func(dst, src []byte) {
		n := len(src)
		for i := range k {
			wg.Go(func() {
				lo, hi := i*n/k&^63, (i+1)*n/k&^63
				if i == k-1 {
					hi = n
				}
				copy(dst[lo:hi], src[lo:hi])
			})
		}
		wg.Wait()
	})
}

func benchCopy(b *testing.B, cp func(dst, src []byte)) {
	for _, s := range benchShapes {
		for _, dt := range benchDtypes {
			b.Run(shapeName(s, dt), func(b *testing.B) {
				n := int(tensorBytes(s, dt))
				src, dst := make([]byte, n), make([]byte, n)
				cp(dst, src) // fault the pages in before timing
				b.SetBytes(2 * int64(n))
				b.ReportAllocs()
				for b.Loop() {
					cp(dst, src)
				}
			})
		}
	}
}

// BenchmarkTapeMachine is the floor of a graph run: RunAll and Reset of a
// TapeMachine whose graph is one negation of 8 values.
func BenchmarkTapeMachine(b *testing.B) {
	g := gorgonia.NewGraph()
	x := gorgonia.NewTensor(g, tensor.Float32, 1, gorgonia.WithShape(8), gorgonia.WithName("x"), gorgonia.WithInit(gorgonia.Ones()))
	if _, err := gorgonia.Neg(x); err != nil {
		b.Fatal(err)
	}
	m := gorgonia.NewTapeMachine(g)
	defer m.Close()
	b.ReportAllocs()
	for b.Loop() {
		if err := m.RunAll(); err != nil {
			b.Fatal(err)
		}
		m.Reset()
	}
}

// kernelStep is one training step of the bare kernels: statistics, the
// scale/shift, normalize; with backward the sums and dx.
func kernelStep[T kern.Float](p *kern.Plan[T], x, y, dy, dx []T, C int, backward bool, ms []kern.Moments, mean, inv, scale, shift, a, bb, c []float64, sums [][2]float64) {
	p.Stats(x, ms)
	for i, m := range ms {
		mean[i], inv[i] = m.Mean, kern.InvStd(m, 1e-5)
		scale[i], shift[i] = inv[i], 0
	}
	p.Apply(x, nil, y, mean, nil, scale, shift)
	if !backward {
		return
	}
	p.BackwardSums(x, dy, mean, sums)
	for i := range C {
		n := ms[i].N
		a[i] = scale[i]
		bb[i] = -a[i] * inv[i] * inv[i] * sums[i][1] / n
		c[i] = -a[i] * sums[i][0] / n
	}
	p.Apply(x, dy, dx, mean, a, bb, c)
}

func benchKernels[T kern.Float](b *testing.B, s tensor.Shape, dt tensor.Dtype, backward bool) {
	r := rand.New(rand.NewSource(1))
	x := benchTensor(r, s, dt).Data().([]T)
	dy := benchTensor(r, s, dt).Data().([]T)
	y, dx := make([]T, len(x)), make([]T, len(x))
	N, C, S := layoutOf(s)
	p := kern.NewPlan[T](kern.Layout{N: N, C: C, S: S}, 0)
	ms := make([]kern.Moments, C)
	f := func() []float64 { return make([]float64, C) }
	mean, inv, scale, shift, a, bb, c := f(), f(), f(), f(), f(), f(), f()
	sums := make([][2]float64, C)
	k := int64(3)
	if backward {
		k = 8
	}
	kernelStep(p, x, y, dy, dx, C, backward, ms, mean, inv, scale, shift, a, bb, c, sums) // warm up: page faults, workers
	b.SetBytes(k * tensorBytes(s, dt))
	b.ReportAllocs()
	for b.Loop() {
		kernelStep(p, x, y, dy, dx, C, backward, ms, mean, inv, scale, shift, a, bb, c, sums)
	}
}

// BenchmarkKernels times the bare CPU kernels (no graph).
func BenchmarkKernels(b *testing.B) {
	for _, pass := range []string{"fwd", "fwdbwd"} {
		for _, s := range benchShapes {
			for _, dt := range benchDtypes {
				b.Run(pass+"/"+shapeName(s, dt), func(b *testing.B) {
					if dt == tensor.Float32 {
						benchKernels[float32](b, s, dt, pass == "fwdbwd")
					} else {
						benchKernels[float64](b, s, dt, pass == "fwdbwd")
					}
				})
			}
		}
	}
}

// graphBench builds x → norm → (with backward: the gradients of x and the
// parameters for the output gradient dy, by gorgonia.Backpropagate) and
// times TapeMachine runs.
func graphBench(b *testing.B, s tensor.Shape, dt tensor.Dtype, backward bool, norm func(x *gorgonia.Node) (*gorgonia.Node, gorgonia.Nodes, error)) {
	r := rand.New(rand.NewSource(1))
	g := gorgonia.NewGraph()
	x := gorgonia.NewTensor(g, dt, len(s), gorgonia.WithShape(s...), gorgonia.WithName("x"), gorgonia.WithValue(benchTensor(r, s, dt)))
	y, params, err := norm(x)
	if err != nil {
		b.Fatal(err)
	}
	k := int64(3)
	if backward {
		k = 8
		dy := gorgonia.NewTensor(g, dt, len(s), gorgonia.WithShape(s...), gorgonia.WithName("dy"), gorgonia.WithValue(benchTensor(r, s, dt)))
		if _, err := gorgonia.Backpropagate(gorgonia.Nodes{y}, gorgonia.Nodes{dy}, append(gorgonia.Nodes{x}, params...)); err != nil {
			b.Fatal(err)
		}
	}
	m := gorgonia.NewTapeMachine(g)
	defer m.Close()
	// Warm up, as the kernels' benchmark does: the first run builds the
	// plans and, with output reuse, allocates and faults in the outputs
	// that later runs reuse (103 MB at 64×64×56×56 float32 forward +
	// backward: averaged over a dozen timed runs it added ~2 ms to each).
	if err := m.RunAll(); err != nil {
		b.Fatal(err)
	}
	m.Reset()
	b.SetBytes(k * tensorBytes(s, dt))
	b.ReportAllocs()
	for b.Loop() {
		if err := m.RunAll(); err != nil {
			b.Fatal(err)
		}
		m.Reset()
	}
}

// BenchmarkGraph times this package's layer (bn; bnreuse with
// WithOutputReuse) and Gorgonia's BatchNorm in a TapeMachine, in training
// mode.
func BenchmarkGraph(b *testing.B) {
	for _, pass := range []string{"fwd", "fwdbwd"} {
		for _, s := range benchShapes {
			for _, dt := range benchDtypes {
				name := pass + "/" + shapeName(s, dt)
				for _, v := range []struct {
					name string
					opts []Option
				}{{"bn", nil}, {"bnreuse", []Option{WithOutputReuse(true)}}} {
					b.Run(v.name+"/"+name, func(b *testing.B) {
						graphBench(b, s, dt, pass == "fwdbwd", func(x *gorgonia.Node) (*gorgonia.Node, gorgonia.Nodes, error) {
							l, err := New(x.Graph(), s[1], dt, v.opts...)
							if err != nil {
								return nil, nil, err
							}
							y, err := l.Apply(x)
							return y, l.Learnables(), err
						})
					})
				}
				b.Run("gorgonia/"+name, func(b *testing.B) {
					graphBench(b, s, dt, pass == "fwdbwd", func(x *gorgonia.Node) (*gorgonia.Node, gorgonia.Nodes, error) {
						y, _, _, op, err := gorgonia.BatchNorm(x, nil, nil, 0.1, 1e-5)
						if err != nil {
							return nil, nil, err
						}
						op.SetTraining(true)
						// Gorgonia's backward differentiates x only.
						return y, nil, nil
					})
				})
			}
		}
	}
}
