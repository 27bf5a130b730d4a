package bn

// Folding BN into the layer before it, for inference.
//
// In Eval mode a BN layer is a fixed affine map per channel,
// y = (x − μ)·γ/σ + β with σ = √(running var + ε). When x is the output of a
// convolution or a linear layer, x = W∗in + b, the map folds into that
// layer's weights: W' = W·γ/σ per output channel, b' = (b − μ)·γ/σ + β, and
// the BN layer disappears from the inference graph (one pass over the
// activations fewer).

import (
	"fmt"
	"math"

	"gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// FoldWeights returns the weights and bias of a convolution or linear layer
// with the BN layer l that follows it folded in, for inference:
//
//	W'[…, c, …] = W[…, c, …]·γ_c/σ_c       (c indexes axis outAxis of W)
//	b'_c        = (b_c − μ_c)·γ_c/σ_c + β_c,   σ_c = √(running var_c + ε)
//
// computed in float64 and returned in w's dtype. outAxis is the axis of w
// that indexes the output channels: 0 for Gorgonia's Conv2d weights (out,
// in, kh, kw) and for PyTorch's Linear weights (out, in), 1 (the last) for
// the W of Gorgonia's x·W (in, out). b, the layer's bias, may be nil (no
// bias, as before BN); it must hold C values, and b' has its shape, or (C)
// when b is nil. w and b are not changed.
//
// l must normalize with its running statistics — mode Eval or Frozen, with
// running statistics tracked, one group — else the folded layer would not
// compute what l computes (ErrOption). w and b must have l's dtype
// (ErrDtype) and C output channels (ErrShape). The folded values are a
// snapshot: fold again after the layer or the weights change.
func FoldWeights(l *Layer, w, b tensor.Tensor, outAxis int) (wf, bf *tensor.Dense, err error) {
	scale, shift, err := l.foldCoefficients()
	if err != nil {
		return nil, nil, err
	}
	C := l.c
	if w == nil {
		return nil, nil, fmt.Errorf("%w: fold: nil weights", ErrShape)
	}
	if w.Dtype() != l.dt || (b != nil && b.Dtype() != l.dt) {
		return nil, nil, fmt.Errorf("%w: fold: weights and bias must be %v like layer %s", ErrDtype, l.dt, l.cfg.name)
	}
	ws := w.Shape()
	if outAxis < 0 || outAxis >= len(ws) || ws[outAxis] != C {
		return nil, nil, fmt.Errorf("%w: fold: axis %d of weights %v must be the %d output channels of layer %s", ErrShape, outAxis, ws, C, l.cfg.name)
	}
	if b != nil && b.Shape().TotalSize() != C {
		return nil, nil, fmt.Errorf("%w: fold: bias of shape %v, want %d values", ErrShape, b.Shape(), C)
	}
	wv, err := floats(w)
	if err != nil {
		return nil, nil, err
	}
	inner := 1 // elements between consecutive output channels
	for _, d := range ws[outAxis+1:] {
		inner *= d
	}
	for i := range wv {
		wv[i] *= scale[(i/inner)%C]
	}
	bv := make([]float64, C)
	if b != nil {
		if bv, err = floats(b); err != nil {
			return nil, nil, err
		}
	}
	for c := range bv {
		bv[c] = bv[c]*scale[c] + shift[c]
	}
	bshape := tensor.Shape{C}
	if b != nil {
		bshape = b.Shape().Clone()
	}
	return denseOf(l.dt, ws.Clone(), wv), denseOf(l.dt, bshape, bv), nil
}

// foldCoefficients returns γ/σ and β − μ·γ/σ per channel, checking that
// the layer normalizes with its running statistics.
func (l *Layer) foldCoefficients() (scale, shift []float64, err error) {
	if l == nil {
		return nil, nil, fmt.Errorf("%w: fold: nil layer", ErrOption)
	}
	if l.groups > 1 {
		return nil, nil, fmt.Errorf("%w: fold: layer %s has %d statistics groups (domains): fold one domain's statistics into a plain layer first", ErrOption, l.cfg.name, l.groups)
	}
	mode := l.Mode()
	if !l.cfg.track || (mode != Eval && mode != Frozen) {
		return nil, nil, fmt.Errorf("%w: fold: layer %s normalizes with batch statistics (mode %v, running statistics tracked: %v); folding needs Eval (or Frozen) with running statistics", ErrOption, l.cfg.name, mode, l.cfg.track)
	}
	C := l.c
	gam, bet := make([]float64, C), make([]float64, C)
	for c := range gam {
		gam[c] = 1
	}
	if l.gamma != nil {
		if gam, err = floats(l.gamma.Value()); err != nil {
			return nil, nil, err
		}
		if bet, err = floats(l.beta.Value()); err != nil {
			return nil, nil, err
		}
	}
	mean, variance := l.RunningStats()
	scale, shift = make([]float64, C), make([]float64, C)
	for c := range scale {
		scale[c] = gam[c] / math.Sqrt(variance[c]+l.cfg.eps)
		shift[c] = bet[c] - mean[c]*scale[c]
	}
	return scale, shift, nil
}

// denseOf returns a tensor of dtype dt (float32 or float64) holding v.
func denseOf(dt tensor.Dtype, shape tensor.Shape, v []float64) *tensor.Dense {
	if dt == tensor.Float32 {
		f := make([]float32, len(v))
		for i := range v {
			f[i] = float32(v[i])
		}
		return tensor.New(tensor.WithShape(shape...), tensor.WithBacking(f))
	}
	return tensor.New(tensor.WithShape(shape...), tensor.WithBacking(v))
}

// FoldedConv2d builds, in x's graph, the convolution of x (N, in, H, W)
// with weights w (out, in, kh, kw) and optional bias b (out values), with
// the BN layer l that follows it folded in (FoldWeights, axis 0): the node
// Conv2d(x, W') + b', which in inference computes l's Eval output of
// Conv2d(x, w) + b. kernel, pad, stride and dilation are those of
// gorgonia.Conv2d. W' and b' are constants of the graph, computed now.
func FoldedConv2d(x *gorgonia.Node, l *Layer, w, b tensor.Tensor, kernel tensor.Shape, pad, stride, dilation []int) (*gorgonia.Node, error) {
	if x == nil {
		return nil, fmt.Errorf("%w: fold: nil input", ErrShape)
	}
	wf, bf, err := FoldWeights(l, w, b, 0)
	if err != nil {
		return nil, err
	}
	g := x.Graph()
	C := l.c
	wn := gorgonia.NewTensor(g, l.dt, 4, gorgonia.WithShape(wf.Shape()...), gorgonia.WithValue(wf), gorgonia.WithName(l.cfg.name+".folded_weight"))
	bf.Reshape(1, C, 1, 1)
	bn := gorgonia.NewTensor(g, l.dt, 4, gorgonia.WithShape(1, C, 1, 1), gorgonia.WithValue(bf), gorgonia.WithName(l.cfg.name+".folded_bias"))
	h, err := gorgonia.Conv2d(x, wn, kernel, pad, stride, dilation)
	if err != nil {
		return nil, fmt.Errorf("fold: conv: %w", err)
	}
	return gorgonia.BroadcastAdd(h, bn, nil, []byte{0, 2, 3})
}

// FoldedLinear builds, in x's graph, x·W' + b' for x (N, in), the weights
// w (in, out) of Gorgonia's x·W and an optional bias b (out values), with
// the BN layer l that follows the linear layer folded in (FoldWeights,
// axis 1). W' and b' are constants of the graph, computed now.
func FoldedLinear(x *gorgonia.Node, l *Layer, w, b tensor.Tensor) (*gorgonia.Node, error) {
	if x == nil {
		return nil, fmt.Errorf("%w: fold: nil input", ErrShape)
	}
	if w != nil && w.Dims() != 2 {
		return nil, fmt.Errorf("%w: fold: linear weights of shape %v, want (in, out)", ErrShape, w.Shape())
	}
	wf, bf, err := FoldWeights(l, w, b, 1)
	if err != nil {
		return nil, err
	}
	g := x.Graph()
	C := l.c
	wn := gorgonia.NewMatrix(g, l.dt, gorgonia.WithShape(wf.Shape()...), gorgonia.WithValue(wf), gorgonia.WithName(l.cfg.name+".folded_weight"))
	bf.Reshape(1, C)
	bn := gorgonia.NewMatrix(g, l.dt, gorgonia.WithShape(1, C), gorgonia.WithValue(bf), gorgonia.WithName(l.cfg.name+".folded_bias"))
	h, err := gorgonia.Mul(x, wn)
	if err != nil {
		return nil, fmt.Errorf("fold: linear: %w", err)
	}
	return gorgonia.BroadcastAdd(h, bn, nil, []byte{0})
}
