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
	"hash"
	"math"

	"github.com/chewxy/hm"
	"github.com/gorgonia-bn/bn/internal/kern"

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
	wn := gorgonia.NewTensor(g, l.dt, 4, gorgonia.WithShape(wf.Shape()...), gorgonia.WithValue(wf), gorgonia.WithName(l.cfg.name+".folded_weight"))
	h, err := gorgonia.Conv2d(x, wn, kernel, pad, stride, dilation)
	if err != nil {
		return nil, fmt.Errorf("fold: conv: %w", err)
	}
	return addBias(h, l, bf)
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
	wn := gorgonia.NewMatrix(g, l.dt, gorgonia.WithShape(wf.Shape()...), gorgonia.WithValue(wf), gorgonia.WithName(l.cfg.name+".folded_weight"))
	h, err := gorgonia.Mul(x, wn)
	if err != nil {
		return nil, fmt.Errorf("fold: linear: %w", err)
	}
	return addBias(h, l, bf)
}

// addBias returns h + b per channel (axis 1) through biasOp.
func addBias(h *gorgonia.Node, l *Layer, b *tensor.Dense) (*gorgonia.Node, error) {
	b.Reshape(l.c)
	bn := gorgonia.NewVector(h.Graph(), l.dt, gorgonia.WithShape(l.c), gorgonia.WithValue(b), gorgonia.WithName(l.cfg.name+".folded_bias"))
	if h.Dims() < 2 || h.Dims() > 5 || h.Shape()[1] != l.c {
		return nil, fmt.Errorf("%w: fold: output of shape %v, want (N, %d, …)", ErrShape, h.Shape(), l.c)
	}
	return gorgonia.ApplyOp(&biasOp{c: l.c, dt: l.dt, rank: h.Dims(), id: opIDs.Add(1)}, h, bn)
}

// biasOp is y = x + b[c] for x of shape (N, C, …): the folded layer's bias,
// one pass with the BN apply kernel (scale 1, shift b), in float64 rounded
// once. It is for inference graphs: the gradient passes to x (dy/dx = 1,
// for gradients with respect to the input), the bias is a constant.
type biasOp struct {
	goOp
	c, rank int
	dt      tensor.Dtype
	id      uint64
	plan    any // *kern.Plan[T]
	one     []float64
	zero    []float64
	shift   []float64
}

func (op *biasOp) Arity() int { return 2 }
func (op *biasOp) Type() hm.Type {
	a := hm.TypeVariable('a')
	x := gorgonia.TensorType{Dims: op.rank, Of: a}
	return hm.NewFnType(x, gorgonia.TensorType{Dims: 1, Of: a}, x)
}
func (op *biasOp) InferShape(in ...gorgonia.DimSizer) (tensor.Shape, error) {
	s, err := firstShape(op, in)
	if err != nil {
		return nil, err
	}
	if len(s) != op.rank || s[1] != op.c {
		return nil, fmt.Errorf("%w: folded bias: input of shape %v, want rank %d with %d channels", ErrShape, s, op.rank, op.c)
	}
	return s, nil
}

// DiffWRT: x only (the bias is a constant of the inference graph).
func (op *biasOp) DiffWRT(int) []bool { return []bool{true, false} }

// SymDiff returns dx = dy.
func (op *biasOp) SymDiff(inputs gorgonia.Nodes, output, grad *gorgonia.Node) (gorgonia.Nodes, error) {
	return gorgonia.Nodes{grad, nil}, nil
}

func (op *biasOp) WriteHash(h hash.Hash) { fmt.Fprintf(h, "bn.FoldedBias/%d", op.id) }
func (op *biasOp) Hashcode() uint32      { return hashOf(op) }
func (op *biasOp) String() string        { return "FoldedBias" }

// Do computes x + b per channel into a new tensor.
func (op *biasOp) Do(in ...gorgonia.Value) (gorgonia.Value, error) {
	if len(in) != 2 {
		return nil, fmt.Errorf("%w: folded bias takes 2 inputs, got %d", ErrShape, len(in))
	}
	x, ok := in[0].(tensor.Tensor)
	if !ok || x.Dtype() != op.dt || in[1].Dtype() != op.dt {
		return nil, fmt.Errorf("%w: folded bias: inputs %T of %v and %v, want %v", ErrDtype, in[0], in[0].Dtype(), in[1].Dtype(), op.dt)
	}
	s := x.Shape()
	if len(s) != op.rank || s[1] != op.c || in[1].Shape().TotalSize() != op.c {
		return nil, fmt.Errorf("%w: folded bias: input %v and bias %v for %d channels", ErrShape, s, in[1].Shape(), op.c)
	}
	b, err := floats(in[1])
	if err != nil {
		return nil, err
	}
	if len(op.one) != op.c {
		op.one, op.zero = make([]float64, op.c), make([]float64, op.c)
		for i := range op.one {
			op.one[i] = 1
		}
	}
	op.shift = b
	y := tensor.New(tensor.Of(op.dt), tensor.WithShape(s.Clone()...))
	N, C, S := layoutOf(s)
	lay := kern.Layout{N: N, C: C, S: S, NSeg: 1}
	if op.dt == tensor.Float32 {
		err = biasApply[float32](op, lay, x, y)
	} else {
		err = biasApply[float64](op, lay, x, y)
	}
	if err != nil {
		return nil, err
	}
	return y, nil
}

func biasApply[T kern.Float](op *biasOp, lay kern.Layout, x, y tensor.Tensor) error {
	xs, err := data[T](x)
	if err != nil {
		return err
	}
	ys, err := data[T](y)
	if err != nil {
		return err
	}
	p, ok := op.plan.(*kern.Plan[T])
	if !ok || p.Layout().N != lay.N || p.Layout().S != lay.S {
		p = kern.NewPlan[T](lay, 0)
		op.plan = p
	}
	p.Apply(xs, nil, ys, op.zero, nil, op.one, op.shift)
	return nil
}
