package main

import (
	"fmt"
	"math"
	"math/rand"

	"github.com/gorgonia-bn/bn"
	"github.com/gorgonia-bn/bn/collective"
	"github.com/gorgonia-bn/bn/examples/internal/mnist"
	"gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// The network: 28×28 → conv 3×3 (c1) → BN → ReLU → max-pool 2 → 14×14 →
// conv 3×3 (c2) → BN → ReLU → max-pool 2 → 7×7 → linear → 10 logits. The
// convolutions have no bias: BN's β takes its place.
const (
	c1     = 8
	c2     = 16
	kernel = 3
	flat   = c2 * 7 * 7
)

// weights are the convolution and linear weights of one model replica. The
// solver updates these tensors in place, so the training graph and the
// evaluation graph built on them share them.
type weights struct {
	w1, w2, wf, bf *tensor.Dense
}

// newWeights draws He-normal weights from seed.
func newWeights(dt tensor.Dtype, seed int64) *weights {
	rng := rand.New(rand.NewSource(seed))
	he := func(fanIn int, shape ...int) *tensor.Dense {
		v := make([]float64, tensor.Shape(shape).TotalSize())
		std := math.Sqrt(2 / float64(fanIn))
		for i := range v {
			v[i] = rng.NormFloat64() * std
		}
		return dense(dt, v, shape...)
	}
	return &weights{
		w1: he(kernel*kernel, c1, 1, kernel, kernel),
		w2: he(c1*kernel*kernel, c2, c1, kernel, kernel),
		wf: he(flat, flat, mnist.Classes),
		bf: tensor.New(tensor.Of(dt), tensor.WithShape(1, mnist.Classes)),
	}
}

func dense(dt tensor.Dtype, v []float64, shape ...int) *tensor.Dense {
	if dt == tensor.Float32 {
		f := make([]float32, len(v))
		for i, x := range v {
			f[i] = float32(x)
		}
		return tensor.New(tensor.WithShape(shape...), tensor.WithBacking(f))
	}
	return tensor.New(tensor.WithShape(shape...), tensor.WithBacking(v))
}

// net is one graph of a replica for a fixed batch size.
type net struct {
	g         *gorgonia.ExprGraph
	xv, yv    *tensor.Dense // inputs, refilled for each batch
	logits    *gorgonia.Node
	loss      *gorgonia.Node // mean cross-entropy over the batch
	learnable gorgonia.Nodes // w1, w2, wf, bf, then γ, β of each BN layer
	bns       []*bn.Layer
	vm        gorgonia.VM
	batch     int
}

// newNet builds the network on w for batches of the given size. comm != nil
// makes the BN layers synchronized over comm (SyncBN); train adds the
// gradients.
func newNet(w *weights, dt tensor.Dtype, batch int, comm collective.Communicator, train bool) (*net, error) {
	g := gorgonia.NewGraph()
	n := &net{g: g, batch: batch}
	n.xv = tensor.New(tensor.Of(dt), tensor.WithShape(batch, 1, mnist.Rows, mnist.Cols))
	n.yv = tensor.New(tensor.Of(dt), tensor.WithShape(batch, mnist.Classes))
	x := gorgonia.NewTensor(g, dt, 4, gorgonia.WithName("x"), gorgonia.WithValue(n.xv))
	y := gorgonia.NewMatrix(g, dt, gorgonia.WithName("y"), gorgonia.WithValue(n.yv))
	param := func(name string, v *tensor.Dense) *gorgonia.Node {
		nd := gorgonia.NewTensor(g, dt, v.Dims(), gorgonia.WithName(name), gorgonia.WithValue(v))
		n.learnable = append(n.learnable, nd)
		return nd
	}
	w1, w2, wf, bf := param("w1", w.w1), param("w2", w.w2), param("wf", w.wf), param("bf", w.bf)
	var opts []bn.Option
	if comm != nil {
		opts = append(opts, bn.WithCommunicator(comm))
	}
	block := func(in, wt *gorgonia.Node, ch int, name string) (*gorgonia.Node, error) {
		h, err := gorgonia.Conv2d(in, wt, tensor.Shape{kernel, kernel}, []int{1, 1}, []int{1, 1}, []int{1, 1})
		if err != nil {
			return nil, fmt.Errorf("%s: conv: %w", name, err)
		}
		l, err := bn.New(g, ch, dt, append(opts, bn.WithName(name))...)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		if h, err = l.Apply(h); err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		n.bns = append(n.bns, l)
		n.learnable = append(n.learnable, l.Learnables()...)
		if h, err = gorgonia.Rectify(h); err != nil {
			return nil, fmt.Errorf("%s: relu: %w", name, err)
		}
		if h, err = gorgonia.MaxPool2D(h, tensor.Shape{2, 2}, []int{0, 0}, []int{2, 2}); err != nil {
			return nil, fmt.Errorf("%s: pool: %w", name, err)
		}
		return h, nil
	}
	h, err := block(x, w1, c1, "bn1")
	if err != nil {
		return nil, err
	}
	if h, err = block(h, w2, c2, "bn2"); err != nil {
		return nil, err
	}
	if h, err = gorgonia.Reshape(h, tensor.Shape{batch, flat}); err != nil {
		return nil, fmt.Errorf("flatten: %w", err)
	}
	if h, err = gorgonia.Mul(h, wf); err != nil {
		return nil, fmt.Errorf("linear: %w", err)
	}
	if n.logits, err = gorgonia.BroadcastAdd(h, bf, nil, []byte{0}); err != nil {
		return nil, fmt.Errorf("linear bias: %w", err)
	}
	// loss = −mean_i Σ_k y_ik · log softmax(logits)_ik
	logp, err := gorgonia.LogSoftMax(n.logits)
	if err != nil {
		return nil, fmt.Errorf("log-softmax: %w", err)
	}
	perSample := gorgonia.Must(gorgonia.Sum(gorgonia.Must(gorgonia.HadamardProd(logp, y)), 1))
	n.loss = gorgonia.Must(gorgonia.Neg(gorgonia.Must(gorgonia.Mean(perSample))))
	if train {
		if _, err := gorgonia.Grad(n.loss, n.learnable...); err != nil {
			return nil, fmt.Errorf("gradient: %w", err)
		}
		n.vm = gorgonia.NewTapeMachine(g, gorgonia.BindDualValues(n.learnable...))
	} else {
		n.vm = gorgonia.NewTapeMachine(g)
	}
	return n, nil
}

// run loads the samples idx of set and runs the graph once.
func (n *net) run(set *mnist.Set, idx []int) error {
	if err := set.FillImages(n.xv, idx); err != nil {
		return err
	}
	if err := set.FillOneHot(n.yv, idx); err != nil {
		return err
	}
	n.vm.Reset()
	return n.vm.RunAll()
}

// lossValue returns the loss of the last run.
func (n *net) lossValue() float64 {
	switch v := n.loss.Value().Data().(type) {
	case float32:
		return float64(v)
	case float64:
		return v
	}
	return math.NaN()
}

// correct counts the last run's arg-max predictions that match the labels.
func (n *net) correct(set *mnist.Set, idx []int) int {
	var at func(i int) float64
	switch v := n.logits.Value().Data().(type) {
	case []float32:
		at = func(i int) float64 { return float64(v[i]) }
	case []float64:
		at = func(i int) float64 { return v[i] }
	default:
		return 0
	}
	ok := 0
	for k, i := range idx {
		best := 0
		for c := 1; c < mnist.Classes; c++ {
			if at(k*mnist.Classes+c) > at(k*mnist.Classes+best) {
				best = c
			}
		}
		if best == int(set.Labels[i]) {
			ok++
		}
	}
	return ok
}

// values returns the learnables' values as one float64 vector.
func (n *net) values() []float64 {
	var out []float64
	for _, p := range n.learnable {
		switch v := p.Value().Data().(type) {
		case []float32:
			for _, x := range v {
				out = append(out, float64(x))
			}
		case []float64:
			out = append(out, v...)
		}
	}
	return out
}
