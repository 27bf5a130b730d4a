package bn

// What BN costs in a training step: BenchmarkStep runs whole training steps
// (forward, gradients, Adam) of three small models through a TapeMachine,
// with BN layers then ReLU ("bn"), with BN and ReLU fused ("fused",
// Layer.ApplyReLU) and with a plain bias in BN's place ("nobn"), and reports
//
//	ns/op      wall time per step
//	cpu-ns/op  CPU time of the process per step (user + system; on Linux)
//
// BN's share of the CPU comes from a CPU profile of the same benchmark;
// benchdata/step.sh runs both in the rounds protocol (one process per round
// runs every model with and without BN back to back) and benchdata/step.py
// makes the README table:
//
//	bash benchdata/step.sh [ROUNDS]
//
// The models:
//
//	mlp       x (64,784) → 256 → BN → ReLU → 128 → BN → ReLU → 10, softmax cross-entropy
//	convnet   examples/convnet's: x (64,1,28,28) → conv 3×3 8 → BN → ReLU → pool 2 → conv 3×3 16 → BN → ReLU → pool 2 → 10
//	deepconv  x (16,1,28,28) → [conv 3×3 8, 8, pool, 16, 16, pool, 32, 32] each → BN → ReLU → 10
//
// The data are fixed random tensors: the step's cost does not depend on
// them.

import (
	"fmt"
	"math"
	"math/rand"
	"testing"

	"gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// stepModel describes one model of BenchmarkStep.
type stepModel struct {
	name  string
	batch int
	// dense: widths of the hidden linear layers of an MLP on 784 inputs;
	// conv: channels of 3×3 convolutions on (1, 28, 28), 0 = a 2×2 max-pool.
	dense, conv []int
}

var stepModels = []stepModel{
	{name: "mlp", batch: 64, dense: []int{256, 128}},
	{name: "convnet", batch: 64, conv: []int{8, 0, 16, 0}},
	{name: "deepconv", batch: 16, conv: []int{8, 8, 0, 16, 16, 0, 32, 32}},
}

// stepNet is one model's graph and machine for a training step.
type stepNet struct {
	vm     gorgonia.VM
	solver gorgonia.Solver
	learn  gorgonia.Nodes
	loss   *gorgonia.Node
	bns    []*Layer
}

// stepFused applies a layer and a ReLU as one op (Layer.ApplyReLU, set by
// step_fused_test.go). It is nil in trees without the fused op, where
// benchdata/step.sh builds this file for its base: the variant "fused" is
// then skipped.
var stepFused func(l *Layer, x *gorgonia.Node) (*gorgonia.Node, error)

// stepVariants are the ways BenchmarkStep normalizes: BN then ReLU as two
// ops, BN and ReLU fused (stepFused), a bias in BN's place.
var stepVariants = []string{"bn", "fused", "nobn"}

// buildStep builds m in variant v (one of stepVariants), in dtype dt, with
// weights drawn from seed.
func buildStep(m stepModel, dt tensor.Dtype, v string, seed int64, opts ...Option) (*stepNet, error) {
	withBN := v != "nobn"
	if v == "fused" && stepFused == nil {
		return nil, fmt.Errorf("no fused op in this tree")
	}
	rng := rand.New(rand.NewSource(seed))
	g := gorgonia.NewGraph()
	net := &stepNet{}
	param := func(name string, std float64, shape ...int) *gorgonia.Node {
		t := benchTensor(rng, tensor.Shape(shape), dt)
		scaleTensor(t, std)
		n := gorgonia.NewTensor(g, dt, len(shape), gorgonia.WithShape(shape...), gorgonia.WithName(name), gorgonia.WithValue(t))
		net.learn = append(net.learn, n)
		return n
	}
	// norm puts BN (or a bias broadcast over the axes of bcast) and a ReLU
	// after h.
	norm := func(h *gorgonia.Node, c int, name string, bcast []byte) (*gorgonia.Node, error) {
		var err error
		if withBN {
			l, err := New(g, c, dt, append([]Option{WithName(name)}, opts...)...)
			if err != nil {
				return nil, err
			}
			net.bns = append(net.bns, l)
			net.learn = append(net.learn, l.Learnables()...)
			if v == "fused" {
				return stepFused(l, h)
			}
			if h, err = l.Apply(h); err != nil {
				return nil, err
			}
		} else {
			shape := []int{1, c}
			for range len(bcast) - 1 {
				shape = append(shape, 1)
			}
			b := param(name+".b", 0, shape...)
			if h, err = gorgonia.BroadcastAdd(h, b, nil, bcast); err != nil {
				return nil, err
			}
		}
		return gorgonia.Rectify(h)
	}
	var x, h *gorgonia.Node
	var err error
	var feat int
	if m.dense != nil {
		x = gorgonia.NewMatrix(g, dt, gorgonia.WithShape(m.batch, 784), gorgonia.WithName("x"),
			gorgonia.WithValue(benchTensor(rng, tensor.Shape{m.batch, 784}, dt)))
		h, feat = x, 784
		for i, w := range m.dense {
			wn := param(fmt.Sprintf("w%d", i), math.Sqrt(2/float64(feat)), feat, w)
			if h, err = gorgonia.Mul(h, wn); err != nil {
				return nil, err
			}
			if h, err = norm(h, w, fmt.Sprintf("bn%d", i), []byte{0}); err != nil {
				return nil, err
			}
			feat = w
		}
	} else {
		x = gorgonia.NewTensor(g, dt, 4, gorgonia.WithShape(m.batch, 1, 28, 28), gorgonia.WithName("x"),
			gorgonia.WithValue(benchTensor(rng, tensor.Shape{m.batch, 1, 28, 28}, dt)))
		h = x
		ch, side := 1, 28
		for i, c := range m.conv {
			if c == 0 {
				if h, err = gorgonia.MaxPool2D(h, tensor.Shape{2, 2}, []int{0, 0}, []int{2, 2}); err != nil {
					return nil, err
				}
				side /= 2
				continue
			}
			wn := param(fmt.Sprintf("w%d", i), math.Sqrt(2/float64(9*ch)), c, ch, 3, 3)
			if h, err = gorgonia.Conv2d(h, wn, tensor.Shape{3, 3}, []int{1, 1}, []int{1, 1}, []int{1, 1}); err != nil {
				return nil, err
			}
			if h, err = norm(h, c, fmt.Sprintf("bn%d", i), []byte{0, 2, 3}); err != nil {
				return nil, err
			}
			ch = c
		}
		feat = ch * side * side
		if h, err = gorgonia.Reshape(h, tensor.Shape{m.batch, feat}); err != nil {
			return nil, err
		}
	}
	wf := param("wf", 0.01, feat, 10)
	bf := param("bf", 0, 1, 10)
	if h, err = gorgonia.Mul(h, wf); err != nil {
		return nil, err
	}
	if h, err = gorgonia.BroadcastAdd(h, bf, nil, []byte{0}); err != nil {
		return nil, err
	}
	onehot := tensor.New(tensor.Of(dt), tensor.WithShape(m.batch, 10))
	for i := range m.batch {
		if dt == tensor.Float32 {
			onehot.Data().([]float32)[i*10+rng.Intn(10)] = 1
		} else {
			onehot.Data().([]float64)[i*10+rng.Intn(10)] = 1
		}
	}
	y := gorgonia.NewMatrix(g, dt, gorgonia.WithShape(m.batch, 10), gorgonia.WithName("y"), gorgonia.WithValue(onehot))
	logp, err := gorgonia.LogSoftMax(h)
	if err != nil {
		return nil, err
	}
	picked, err := gorgonia.HadamardProd(logp, y)
	if err != nil {
		return nil, err
	}
	per, err := gorgonia.Sum(picked, 1)
	if err != nil {
		return nil, err
	}
	mean, err := gorgonia.Mean(per)
	if err != nil {
		return nil, err
	}
	if net.loss, err = gorgonia.Neg(mean); err != nil {
		return nil, err
	}
	if _, err := gorgonia.Grad(net.loss, net.learn...); err != nil {
		return nil, err
	}
	net.vm = gorgonia.NewTapeMachine(g, gorgonia.BindDualValues(net.learn...))
	net.solver = gorgonia.NewAdamSolver(gorgonia.WithLearnRate(1e-3))
	return net, nil
}

// scaleTensor multiplies t's elements (drawn around 1 with spread 2 by
// benchTensor) so that they have standard deviation std around 0.
func scaleTensor(t *tensor.Dense, std float64) {
	switch d := t.Data().(type) {
	case []float32:
		for i := range d {
			d[i] = float32((float64(d[i]) - 1) / 2 * std)
		}
	case []float64:
		for i := range d {
			d[i] = (d[i] - 1) / 2 * std
		}
	}
}

// step runs one training step.
func (n *stepNet) step() error {
	if err := n.vm.RunAll(); err != nil {
		return err
	}
	if err := n.solver.Step(gorgonia.NodesToValueGrads(n.learn)); err != nil {
		return err
	}
	n.vm.Reset()
	return nil
}

// BenchmarkStep measures training steps of stepModels with and without BN
// (see the top of this file).
func BenchmarkStep(b *testing.B) {
	for _, m := range stepModels {
		for _, dt := range []tensor.Dtype{tensor.Float32} {
			for _, v := range stepVariants {
				if v == "fused" && stepFused == nil {
					continue
				}
				b.Run(fmt.Sprintf("%s/%s/%v", m.name, v, dt), func(b *testing.B) {
					net, err := buildStep(m, dt, v, 1)
					if err != nil {
						b.Fatal(err)
					}
					defer net.vm.Close()
					for range 3 { // warm up: plans, outputs, the solver's state
						if err := net.step(); err != nil {
							b.Fatal(err)
						}
					}
					cpu0 := processCPU()
					b.ResetTimer()
					for b.Loop() {
						if err := net.step(); err != nil {
							b.Fatal(err)
						}
					}
					b.StopTimer()
					if cpu0 >= 0 {
						b.ReportMetric(float64(processCPU()-cpu0)/float64(b.N), "cpu-ns/op")
					}
				})
			}
		}
	}
}

// TestStepModelsTrain checks that the benchmark's models are what they say:
// every step runs, the loss is finite and falls over a few steps on fixed
// data, and the BN layers are in the graph and trained.
func TestStepModelsTrain(t *testing.T) {
	for _, m := range stepModels {
		for _, v := range stepVariants {
			withBN := v != "nobn"
			t.Run(fmt.Sprintf("%s/%s", m.name, v), func(t *testing.T) {
				if m.name == "deepconv" && testing.Short() {
					t.Skip("slow")
				}
				m := m
				m.batch = 8
				net, err := buildStep(m, tensor.Float64, v, 2)
				if err != nil {
					t.Fatal(err)
				}
				defer net.vm.Close()
				var first, last float64
				for i := range 8 {
					if err := net.step(); err != nil {
						t.Fatal(err)
					}
					v := net.loss.Value().Data().(float64)
					if math.IsNaN(v) || math.IsInf(v, 0) {
						t.Fatalf("step %d: loss %v", i, v)
					}
					if i == 0 {
						first = v
					}
					last = v
				}
				if !(last < first) {
					t.Errorf("loss did not fall on fixed data: %v → %v", first, last)
				}
				if want := len(m.dense) + countConv(m.conv); withBN && len(net.bns) != want {
					t.Errorf("%d BN layers, want %d", len(net.bns), want)
				}
				for _, l := range net.bns {
					if l.NumBatchesTracked() != 8 {
						t.Errorf("%s tracked %d batches, want 8", l.Name(), l.NumBatchesTracked())
					}
				}
			})
		}
	}
}

func countConv(cs []int) int {
	n := 0
	for _, c := range cs {
		if c != 0 {
			n++
		}
	}
	return n
}
