package main

import (
	"errors"
	"fmt"
	"math"
	"math/rand"

	"github.com/gorgonia-bn/bn"
	"github.com/gorgonia-bn/bn/examples/internal/mnist"
	"gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// Network geometry: 28×28 → conv 3×3 (c1) → BN → ReLU → pool 2 → 14×14 →
// conv 3×3 (c2) → BN → ReLU → pool 2 → 7×7 → linear → 10 logits. The same
// network as examples/convnet (with BN).
const (
	c1     = 8
	c2     = 16
	kernel = 3
	flat   = c2 * 7 * 7
)

// layerNames names the BN layers, in forward order.
var layerNames = []string{"bn1", "bn2"}

// params holds the weights shared by every graph of one model. The solver
// updates these tensors in place, so every graph built on them sees the
// current weights. γ and β belong to each graph's BN layers and are copied
// with copyBN.
type params struct {
	dt             tensor.Dtype
	w1, w2, wf, bf *tensor.Dense
}

// classifierStd is the standard deviation of the linear layer's initial
// weights: small, so that the network starts near the uniform prediction.
const classifierStd = 0.01

// newParams draws the weights from rand.New(rand.NewSource(seed)): He-normal
// for the convolutions, N(0, classifierStd²) for the linear layer, a zero
// bias.
func newParams(dt tensor.Dtype, seed int64) (*params, error) {
	if dt != tensor.Float32 && dt != tensor.Float64 {
		return nil, fmt.Errorf("unsupported dtype %v (want float32 or float64)", dt)
	}
	rng := rand.New(rand.NewSource(seed))
	normal := func(std float64, shape ...int) *tensor.Dense {
		v := make([]float64, tensor.Shape(shape).TotalSize())
		for i := range v {
			v[i] = rng.NormFloat64() * std
		}
		return dense(dt, v, shape...)
	}
	return &params{
		dt: dt,
		w1: normal(math.Sqrt(2.0/(1*kernel*kernel)), c1, 1, kernel, kernel),
		w2: normal(math.Sqrt(2.0/(c1*kernel*kernel)), c2, c1, kernel, kernel),
		wf: normal(classifierStd, flat, mnist.Classes),
		bf: tensor.New(tensor.Of(dt), tensor.WithShape(1, mnist.Classes)),
	}, nil
}

// dense makes a tensor of type dt from float64 values.
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

// net is one graph of the model for a fixed batch size: inputs x (N, 1, 28,
// 28) and y (N, 10, one-hot), the logits, the mean cross-entropy loss, the
// trainable nodes and the BN layers. A training net also has the gradients.
type net struct {
	x, y      *gorgonia.Node
	xv, yv    *tensor.Dense // the input tensors, refilled for each batch
	logits    *gorgonia.Node
	loss      *gorgonia.Node
	learnable gorgonia.Nodes
	bns       []*bn.Layer
	vm        gorgonia.VM
	batch     int
}

// newNet builds the network on p for batches of the given size; bnMomentum
// is the BN layers' EMA momentum. With train it also builds the gradient
// graph.
func newNet(p *params, batch int, bnMomentum float64, train bool) (*net, error) {
	if batch < 1 {
		return nil, fmt.Errorf("batch size %d, want ≥ 1", batch)
	}
	dt := p.dt
	g := gorgonia.NewGraph()
	n := &net{batch: batch}
	n.xv = tensor.New(tensor.Of(dt), tensor.WithShape(batch, 1, mnist.Rows, mnist.Cols))
	n.yv = tensor.New(tensor.Of(dt), tensor.WithShape(batch, mnist.Classes))
	n.x = gorgonia.NewTensor(g, dt, 4, gorgonia.WithName("x"), gorgonia.WithValue(n.xv))
	n.y = gorgonia.NewMatrix(g, dt, gorgonia.WithName("y"), gorgonia.WithValue(n.yv))

	param := func(name string, v *tensor.Dense) *gorgonia.Node {
		nd := gorgonia.NewTensor(g, dt, v.Dims(), gorgonia.WithName(name), gorgonia.WithValue(v))
		n.learnable = append(n.learnable, nd)
		return nd
	}
	w1, w2 := param("w1", p.w1), param("w2", p.w2)
	wf, bf := param("wf", p.wf), param("bf", p.bf)

	block := func(in, w *gorgonia.Node, ch int, name string) (*gorgonia.Node, error) {
		h, err := gorgonia.Conv2d(in, w, tensor.Shape{kernel, kernel}, []int{1, 1}, []int{1, 1}, []int{1, 1})
		if err != nil {
			return nil, fmt.Errorf("%s: conv: %w", name, err)
		}
		l, err := bn.New(g, ch, dt, bn.WithName(name), bn.WithMomentum(bnMomentum))
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
	h, err := block(n.x, w1, c1, layerNames[0])
	if err != nil {
		return nil, err
	}
	if h, err = block(h, w2, c2, layerNames[1]); err != nil {
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
	picked := gorgonia.Must(gorgonia.HadamardProd(logp, n.y))
	perSample := gorgonia.Must(gorgonia.Sum(picked, 1))
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

// Close releases the net's machine.
func (n *net) Close() error { return n.vm.Close() }

// normalizers returns the BN layers as the list bn.Precise takes.
func (n *net) normalizers() []bn.Normalizer {
	out := make([]bn.Normalizer, len(n.bns))
	for i, l := range n.bns {
		out[i] = l
	}
	return out
}

// setMode switches every BN layer of the net to m.
func (n *net) setMode(m bn.Mode) error {
	for _, l := range n.bns {
		if err := l.SetMode(m); err != nil {
			return err
		}
	}
	return nil
}

// copyBN copies γ and β of src's BN layers into n's (the other weights are
// shared through params already).
func (n *net) copyBN(src *net) error {
	if len(n.bns) != len(src.bns) {
		return errors.New("copyBN: nets differ in BN layers")
	}
	for i, l := range n.bns {
		s := src.bns[i]
		if err := gorgonia.Let(l.Gamma(), s.Gamma().Value()); err != nil {
			return fmt.Errorf("copyBN: γ: %w", err)
		}
		if err := gorgonia.Let(l.Beta(), s.Beta().Value()); err != nil {
			return fmt.Errorf("copyBN: β: %w", err)
		}
	}
	return nil
}

// stats returns the running statistics of every BN layer.
func (n *net) stats() modelStats {
	s := make(modelStats, len(n.bns))
	for i, l := range n.bns {
		s[i].mean, s[i].variance = l.RunningStats()
	}
	return s
}

// setStats sets the running statistics of every BN layer.
func (n *net) setStats(s modelStats) error {
	if len(s) != len(n.bns) {
		return fmt.Errorf("statistics of %d layers for a net of %d", len(s), len(n.bns))
	}
	for i, l := range n.bns {
		if err := l.SetRunningStats(s[i].mean, s[i].variance); err != nil {
			return err
		}
	}
	return nil
}

// run loads the samples idx of set into the inputs and runs the graph once.
func (n *net) run(set *mnist.Set, idx []int) error {
	if len(idx) != n.batch {
		return fmt.Errorf("batch of %d samples for a net of batch %d", len(idx), n.batch)
	}
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
func (n *net) lossValue() (float64, error) {
	switch v := n.loss.Value().Data().(type) {
	case float32:
		return float64(v), nil
	case float64:
		return v, nil
	}
	return 0, fmt.Errorf("loss of type %T", n.loss.Value().Data())
}

// correct returns how many of the last run's predictions (arg-max of the
// logits) match the labels idx of set.
func (n *net) correct(set *mnist.Set, idx []int) (int, error) {
	var logits []float64
	switch v := n.logits.Value().Data().(type) {
	case []float32:
		logits = make([]float64, len(v))
		for i, x := range v {
			logits[i] = float64(x)
		}
	case []float64:
		logits = v
	default:
		return 0, fmt.Errorf("logits of type %T", v)
	}
	ok := 0
	for k, i := range idx {
		row := logits[k*mnist.Classes : (k+1)*mnist.Classes]
		best := 0
		for c, x := range row {
			if x > row[best] {
				best = c
			}
		}
		if best == int(set.Labels[i]) {
			ok++
		}
	}
	return ok, nil
}
