package cnn

import (
	"fmt"

	"github.com/gorgonia-bn/bn"
	"github.com/gorgonia-bn/bn/examples/internal/mnist"
	"gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// NewFolded builds the inference graph of a trained net with its BN layers
// folded into the convolutions (bn.FoldedConv2d): conv' → ReLU → max-pool,
// twice, then the linear layer, for batches of batch samples. bns are the
// net's BN layers (Net.BNs of a net built on w), in Eval mode; their γ, β
// and running statistics, and w's convolution weights, are read now (fold
// again after they change); the linear layer shares w's tensors. The net
// has no gradients; Classify and Accuracy work on it as on any Net.
func NewFolded(w *Weights, bns []*bn.Layer, batch int) (*Net, error) {
	buildMu.Lock()
	defer buildMu.Unlock()
	if batch < 1 {
		return nil, fmt.Errorf("batch size %d, want ≥ 1", batch)
	}
	if w.Depth() != 0 {
		return nil, fmt.Errorf("weights of depth %d: only the two-block net folds", w.Depth())
	}
	if len(bns) != 2 {
		return nil, fmt.Errorf("%d BN layers, want 2", len(bns))
	}
	dt := w.Dtype
	g := gorgonia.NewGraph()
	n := &Net{Batch: batch}
	n.xv = tensor.New(tensor.Of(dt), tensor.WithShape(batch, 1, mnist.Rows, mnist.Cols))
	n.yv = tensor.New(tensor.Of(dt), tensor.WithShape(batch, mnist.Classes))
	x := gorgonia.NewTensor(g, dt, 4, gorgonia.WithName("x"), gorgonia.WithValue(n.xv))
	y := gorgonia.NewMatrix(g, dt, gorgonia.WithName("y"), gorgonia.WithValue(n.yv))
	h := x
	for i, cw := range []*tensor.Dense{w.W1, w.W2} {
		var err error
		if h, err = bn.FoldedConv2d(h, bns[i], cw, nil, tensor.Shape{Kernel, Kernel}, []int{1, 1}, []int{1, 1}, []int{1, 1}); err != nil {
			return nil, fmt.Errorf("%s: %w", LayerNames[i], err)
		}
		if h, err = gorgonia.Rectify(h); err != nil {
			return nil, err
		}
		if h, err = gorgonia.MaxPool2D(h, tensor.Shape{2, 2}, []int{0, 0}, []int{2, 2}); err != nil {
			return nil, err
		}
	}
	wf := gorgonia.NewTensor(g, dt, 2, gorgonia.WithName("wf"), gorgonia.WithValue(w.WF))
	bf := gorgonia.NewTensor(g, dt, 2, gorgonia.WithName("bf"), gorgonia.WithValue(w.BF))
	var err error
	if h, err = gorgonia.Reshape(h, tensor.Shape{batch, Flat}); err != nil {
		return nil, err
	}
	if h, err = gorgonia.Mul(h, wf); err != nil {
		return nil, err
	}
	if n.Logits, err = gorgonia.BroadcastAdd(h, bf, nil, []byte{0}); err != nil {
		return nil, err
	}
	if n.Loss, err = CrossEntropy(n.Logits, y); err != nil {
		return nil, err
	}
	n.vm = gorgonia.NewTapeMachine(g)
	return n, nil
}
