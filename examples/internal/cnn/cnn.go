// Package cnn is the small MNIST convolutional network that examples/convnet,
// examples/precisebn and examples/syncbn train:
//
//	x (N,1,28,28) → conv 3×3, C1 → BN → ReLU → max-pool 2   (N,C1,14,14)
//	              → conv 3×3, C2 → BN → ReLU → max-pool 2   (N,C2,7,7)
//	              → linear Flat → 10 → softmax cross-entropy
//
// Config.Act replaces ReLU by a saturating activation (sigmoid, tanh), and
// NewDeepWeights with Config.Depth adds blocks conv 3×3 (C2, padding 1) →
// BN → activation at 7×7 after the second max-pool, so that deeper
// networks can be compared.
//
// Weights holds the weights, which the solver updates in place; every graph
// built on them with New (one per batch size: training, evaluation, …)
// sees the current values. γ and β belong to each graph's BN layers.
//
// The helpers of loss.go (CrossEntropy, Scalar, Correct, Normal, Dense) do
// not depend on the architecture; examples/domainbn's MLP uses them too.
package cnn

import (
	"context"
	"errors"
	"fmt"
	"math/rand"
	"sync"

	"github.com/gorgonia-bn/bn"
	"github.com/gorgonia-bn/bn/examples/internal/mnist"
	"gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// Network geometry: 28×28 → conv Kernel×Kernel (C1) → pool 2 → 14×14 →
// conv Kernel×Kernel (C2) → pool 2 → 7×7 → linear (Flat → 10).
const (
	C1     = 8
	C2     = 16
	Kernel = 3
	Flat   = C2 * 7 * 7
)

// LayerNames names the BN layers, in forward order.
var LayerNames = []string{"bn1", "bn2"}

// ClassifierStd is the standard deviation of the linear layer's initial
// weights that examples/convnet and examples/precisebn use: small (a fifth
// of He's √(2/784) ≈ 0.05), so that the network starts near the uniform
// prediction, loss ≈ ln 10.
const ClassifierStd = 0.01

// Weights are the convolution and linear weights of one model. B1, B2
// and BX, the conv biases, are used only by the network without BN
// (Config.NoBN); with BN the layers' β plays their part.
type Weights struct {
	Dtype          tensor.Dtype
	W1, W2, WF, BF *tensor.Dense
	B1, B2         *tensor.Dense
	// WX and BX are the weights (C2, C2, Kernel, Kernel) and biases (1,
	// C2, 1, 1) of the extra blocks (NewDeepWeights), in forward order.
	WX, BX []*tensor.Dense
}

// NewWeights draws the weights from rand.New(rand.NewSource(seed)), in this
// order: W1 and W2 He-normal (std HeStd(fan-in)), WF normal with standard
// deviation classifierStd; BF, B1 and B2 are zero. dt is tensor.Float32 or
// tensor.Float64.
func NewWeights(dt tensor.Dtype, seed int64, classifierStd float64) (*Weights, error) {
	return NewDeepWeights(dt, seed, classifierStd, 0)
}

// MaxDepth is the largest number of extra blocks NewDeepWeights makes.
const MaxDepth = 32

// NewDeepWeights is NewWeights with depth extra blocks (0 … MaxDepth):
// their conv weights are drawn after WF from the same source, He-normal
// (std HeStd(C2·Kernel²)), their biases are zero. With depth 0 the weights
// are NewWeights' (the same values for the same seed).
func NewDeepWeights(dt tensor.Dtype, seed int64, classifierStd float64, depth int) (*Weights, error) {
	if dt != tensor.Float32 && dt != tensor.Float64 {
		return nil, fmt.Errorf("unsupported dtype %v (want float32 or float64)", dt)
	}
	if depth < 0 || depth > MaxDepth {
		return nil, fmt.Errorf("depth %d, want 0 … %d", depth, MaxDepth)
	}
	rng := rand.New(rand.NewSource(seed))
	zeros := func(shape ...int) *tensor.Dense { return tensor.New(tensor.Of(dt), tensor.WithShape(shape...)) }
	w := &Weights{
		Dtype: dt,
		W1:    Normal(rng, dt, HeStd(1*Kernel*Kernel), C1, 1, Kernel, Kernel),
		W2:    Normal(rng, dt, HeStd(C1*Kernel*Kernel), C2, C1, Kernel, Kernel),
		WF:    Normal(rng, dt, classifierStd, Flat, mnist.Classes),
		BF:    zeros(1, mnist.Classes),
		B1:    zeros(1, C1, 1, 1),
		B2:    zeros(1, C2, 1, 1),
	}
	for range depth {
		w.WX = append(w.WX, Normal(rng, dt, HeStd(C2*Kernel*Kernel), C2, C2, Kernel, Kernel))
		w.BX = append(w.BX, zeros(1, C2, 1, 1))
	}
	return w, nil
}

// Depth returns the number of extra blocks of w.
func (w *Weights) Depth() int { return len(w.WX) }

// BNNames returns the names of the BN layers of a net with depth extra
// blocks, in forward order: LayerNames, then "bn3", "bn4", ….
func BNNames(depth int) []string {
	out := append([]string(nil), LayerNames...)
	for i := range depth {
		out = append(out, fmt.Sprintf("bn%d", len(LayerNames)+1+i))
	}
	return out
}

// Activation is the nonlinearity after every convolution (and its BN).
type Activation int

// The activations: ReLU (the zero value), and the saturating sigmoid and
// tanh.
const (
	ReLU Activation = iota
	Sigmoid
	Tanh
)

// String returns the activation's name, as ParseActivation reads it.
func (a Activation) String() string {
	switch a {
	case ReLU:
		return "relu"
	case Sigmoid:
		return "sigmoid"
	case Tanh:
		return "tanh"
	}
	return fmt.Sprintf("Activation(%d)", int(a))
}

// ParseActivation returns the activation named s: relu, sigmoid or tanh.
func ParseActivation(s string) (Activation, error) {
	for _, a := range []Activation{ReLU, Sigmoid, Tanh} {
		if s == a.String() {
			return a, nil
		}
	}
	return 0, fmt.Errorf("activation %q, want relu, sigmoid or tanh", s)
}

// apply returns a(h).
func (a Activation) apply(h *gorgonia.Node) (*gorgonia.Node, error) {
	switch a {
	case ReLU:
		return gorgonia.Rectify(h)
	case Sigmoid:
		return gorgonia.Sigmoid(h)
	case Tanh:
		return gorgonia.Tanh(h)
	}
	return nil, fmt.Errorf("unknown activation %d", int(a))
}

// Config is how New builds a graph.
type Config struct {
	Batch int  // samples per run
	NoBN  bool // conv + bias → activation, without BN layers
	Train bool // also build the gradients of the loss
	// Fused applies BN and the ReLU as one op (bn.Layer.ApplyReLU) instead
	// of Apply then gorgonia.Rectify; ignored without BN and with another
	// activation than ReLU.
	Fused bool
	// Act is the activation after every convolution (and BN); ReLU by
	// default.
	Act Activation
	// Depth is the number of extra blocks conv 3×3 → BN → Act after the
	// second max-pool; it must equal the weights' Depth.
	Depth int
	// BN are further options of every BN layer (besides its name).
	BN []bn.Option
}

// Net is one graph of a model for a fixed batch size: the inputs (N, 1, 28,
// 28) and (N, 10, one-hot), the logits, the mean cross-entropy loss, the
// trainable nodes and the BN layers. A training net also holds the
// gradients.
type Net struct {
	Batch  int
	Logits *gorgonia.Node
	Loss   *gorgonia.Node
	// Learnables are W1, W2, WF, BF, the WX, then B1, B2, the BX without
	// BN or γ, β of each BN layer in forward order with BN.
	Learnables gorgonia.Nodes
	BNs        []*bn.Layer // nil without BN

	xv, yv *tensor.Dense // the input tensors, refilled for each batch
	vm     gorgonia.VM
}

// buildMu serializes graph construction (see New).
var buildMu sync.Mutex

// New builds the network on w: conv → BN → ReLU → max-pool, twice, then a
// linear layer; cfg.NoBN puts a conv bias where BN was. cfg.Depth extra
// blocks conv → BN → activation (no pool) follow the second block.
func New(w *Weights, cfg Config) (*Net, error) {
	// Gorgonia's graph construction is not safe for concurrent use (Conv2d
	// and Rectify share a global counter): in-process workers build their
	// nets one at a time.
	buildMu.Lock()
	defer buildMu.Unlock()
	batch := cfg.Batch
	if batch < 1 {
		return nil, fmt.Errorf("batch size %d, want ≥ 1", batch)
	}
	if cfg.Depth != w.Depth() {
		return nil, fmt.Errorf("depth %d for weights of depth %d", cfg.Depth, w.Depth())
	}
	if cfg.Act != ReLU && cfg.Act != Sigmoid && cfg.Act != Tanh {
		return nil, fmt.Errorf("unknown activation %d", int(cfg.Act))
	}
	fused := cfg.Fused && cfg.Act == ReLU && !cfg.NoBN
	dt := w.Dtype
	g := gorgonia.NewGraph()
	n := &Net{Batch: batch}
	n.xv = tensor.New(tensor.Of(dt), tensor.WithShape(batch, 1, mnist.Rows, mnist.Cols))
	n.yv = tensor.New(tensor.Of(dt), tensor.WithShape(batch, mnist.Classes))
	x := gorgonia.NewTensor(g, dt, 4, gorgonia.WithName("x"), gorgonia.WithValue(n.xv))
	y := gorgonia.NewMatrix(g, dt, gorgonia.WithName("y"), gorgonia.WithValue(n.yv))

	param := func(name string, v *tensor.Dense) *gorgonia.Node {
		nd := gorgonia.NewTensor(g, dt, v.Dims(), gorgonia.WithName(name), gorgonia.WithValue(v))
		n.Learnables = append(n.Learnables, nd)
		return nd
	}
	w1, w2 := param("w1", w.W1), param("w2", w.W2)
	wf, bf := param("wf", w.WF), param("bf", w.BF)
	wx := make([]*gorgonia.Node, len(w.WX))
	for i, v := range w.WX {
		wx[i] = param(fmt.Sprintf("w%d", len(LayerNames)+1+i), v)
	}
	names := BNNames(cfg.Depth)
	var b1, b2 *gorgonia.Node
	bx := make([]*gorgonia.Node, len(w.BX))
	if cfg.NoBN {
		b1, b2 = param("b1", w.B1), param("b2", w.B2)
		for i, v := range w.BX {
			bx[i] = param(fmt.Sprintf("b%d", len(LayerNames)+1+i), v)
		}
	}

	// block is conv → BN (or bias) → activation, then a max-pool if pool.
	block := func(in, w, b *gorgonia.Node, ch int, name string, pool bool) (*gorgonia.Node, error) {
		h, err := gorgonia.Conv2d(in, w, tensor.Shape{Kernel, Kernel}, []int{1, 1}, []int{1, 1}, []int{1, 1})
		if err != nil {
			return nil, fmt.Errorf("%s: conv: %w", name, err)
		}
		if !cfg.NoBN {
			l, err := bn.New(g, ch, dt, append([]bn.Option{bn.WithName(name)}, cfg.BN...)...)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", name, err)
			}
			apply := l.Apply
			if fused {
				apply = l.ApplyReLU
			}
			if h, err = apply(h); err != nil {
				return nil, fmt.Errorf("%s: %w", name, err)
			}
			n.BNs = append(n.BNs, l)
			n.Learnables = append(n.Learnables, l.Learnables()...)
		} else if h, err = gorgonia.BroadcastAdd(h, b, nil, []byte{0, 2, 3}); err != nil {
			return nil, fmt.Errorf("%s: bias: %w", name, err)
		}
		if !fused {
			h, err = cfg.Act.apply(h)
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %v: %w", name, cfg.Act, err)
		}
		if !pool {
			return h, nil
		}
		if h, err = gorgonia.MaxPool2D(h, tensor.Shape{2, 2}, []int{0, 0}, []int{2, 2}); err != nil {
			return nil, fmt.Errorf("%s: pool: %w", name, err)
		}
		return h, nil
	}
	h, err := block(x, w1, b1, C1, names[0], true)
	if err != nil {
		return nil, err
	}
	if h, err = block(h, w2, b2, C2, names[1], true); err != nil {
		return nil, err
	}
	for i := range wx {
		if h, err = block(h, wx[i], bx[i], C2, names[2+i], false); err != nil {
			return nil, err
		}
	}
	if h, err = gorgonia.Reshape(h, tensor.Shape{batch, Flat}); err != nil {
		return nil, fmt.Errorf("flatten: %w", err)
	}
	if h, err = gorgonia.Mul(h, wf); err != nil {
		return nil, fmt.Errorf("linear: %w", err)
	}
	if n.Logits, err = gorgonia.BroadcastAdd(h, bf, nil, []byte{0}); err != nil {
		return nil, fmt.Errorf("linear bias: %w", err)
	}
	if n.Loss, err = CrossEntropy(n.Logits, y); err != nil {
		return nil, err
	}
	if cfg.Train {
		if _, err := gorgonia.Grad(n.Loss, n.Learnables...); err != nil {
			return nil, fmt.Errorf("gradient: %w", err)
		}
		n.vm = gorgonia.NewTapeMachine(g, gorgonia.BindDualValues(n.Learnables...))
	} else {
		n.vm = gorgonia.NewTapeMachine(g)
	}
	return n, nil
}

// Close releases the net's machine.
func (n *Net) Close() error { return n.vm.Close() }

// Run loads the samples idx of set into the inputs and runs the graph once.
func (n *Net) Run(set *mnist.Set, idx []int) error {
	if len(idx) != n.Batch {
		return fmt.Errorf("batch of %d samples for a net of batch %d", len(idx), n.Batch)
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

// LossValue returns the loss of the last run.
func (n *Net) LossValue() (float64, error) { return Scalar(n.Loss.Value()) }

// Classify runs the net on the samples idx of set and returns how many of
// its predictions (arg-max of the logits) match their labels.
func (n *Net) Classify(set *mnist.Set, idx []int) (int, error) {
	if err := n.Run(set, idx); err != nil {
		return 0, err
	}
	return Correct(n.Logits.Value(), set, idx)
}

// SetMode switches every BN layer of the net to m.
func (n *Net) SetMode(m bn.Mode) error {
	for _, l := range n.BNs {
		if err := l.SetMode(m); err != nil {
			return err
		}
	}
	return nil
}

// CopyAffine copies γ and β of src's BN layers into n's (the other weights
// are shared through Weights already).
func (n *Net) CopyAffine(src *Net) error {
	if len(n.BNs) != len(src.BNs) {
		return errors.New("nets differ in BN layers")
	}
	for i, l := range n.BNs {
		s := src.BNs[i]
		if err := gorgonia.Let(l.Gamma(), s.Gamma().Value()); err != nil {
			return fmt.Errorf("copying γ: %w", err)
		}
		if err := gorgonia.Let(l.Beta(), s.Beta().Value()); err != nil {
			return fmt.Errorf("copying β: %w", err)
		}
	}
	return nil
}

// CopyBN copies γ, β and the running statistics of src's BN layers into
// n's.
func (n *Net) CopyBN(src *Net) error {
	if err := n.CopyAffine(src); err != nil {
		return err
	}
	for i, l := range n.BNs {
		if err := l.SetRunningStats(src.BNs[i].RunningStats()); err != nil {
			return fmt.Errorf("copying running statistics: %w", err)
		}
	}
	return nil
}

// Normalizers returns the BN layers as the list bn.Precise takes.
func (n *Net) Normalizers() []bn.Normalizer {
	out := make([]bn.Normalizer, len(n.BNs))
	for i, l := range n.BNs {
		out[i] = l
	}
	return out
}

// Values returns the values of the learnables, in order, as one float64
// vector.
func (n *Net) Values() []float64 {
	var out []float64
	for _, p := range n.Learnables {
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

// Accuracy returns the fraction of set that n classifies correctly, in
// batches of n.Batch (a remainder smaller than a batch is left out), with
// the BN layers as they are. step, if not nil, is called after every batch.
func Accuracy(ctx context.Context, n *Net, set *mnist.Set, step func()) (float64, error) {
	batches, err := mnist.Batches(mnist.Range(set.Len()), n.Batch, true)
	if err != nil {
		return 0, err
	}
	if len(batches) == 0 {
		return 0, fmt.Errorf("%d images, fewer than one batch of %d", set.Len(), n.Batch)
	}
	ok, total := 0, 0
	for _, idx := range batches {
		if err := ctx.Err(); err != nil {
			return 0, err
		}
		c, err := n.Classify(set, idx)
		if err != nil {
			return 0, err
		}
		ok += c
		total += len(idx)
		if step != nil {
			step()
		}
	}
	return float64(ok) / float64(total), nil
}
