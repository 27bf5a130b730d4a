package bn

// Batch normalization fused with a ReLU, y = max(0, BN(x)), and with a
// residual add and a ReLU, y = max(0, BN(x) + z): one op where a network
// has two (or three), and one pass less over memory each way. The forward
// runs BN's statistics pass and its apply pass with the ReLU folded in
// (kern.Plan.ApplyReLU); the backward masks dy by y > 0 in its first pass,
// which writes the masked gradient g = dy·[y > 0] (the gradient of z, and
// of BN's output) while it sums Σg and Σg·(x−μ) (kern.Plan.BackwardSumsReLU),
// and the dx pass is BN's, on g:
//
//	forward:  y  = reluOp(x, [z], [γ, β])          stats pass + apply-and-ReLU pass
//	backward: g  = maskOp(x, dy, y)               shape of x: dy·[y > 0]; and the sums
//	          s  = maskSumsOp(g)                   (2, C): [dγ ; dβ], computed by maskOp
//	          dx = dxOp(x, g, s)                   BN's dx pass on g
//	          dz = g
//
// Everything else — modes, ghost batches, segments (domainbn), SyncBN, the
// running statistics — is the host code of the plain op (fwdOp), which the
// fused op runs as its engine.

import (
	"fmt"
	"hash"

	"github.com/chewxy/hm"
	"github.com/gorgonia-bn/bn/internal/kern"
	"gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// ApplyReLU returns the node y = max(0, BN(x)) for x as in Apply: batch
// normalization and a ReLU in one op, computed in one pass over x less
// each way than Apply followed by gorgonia.Rectify. The ReLU keeps NaN; its
// gradient at 0 is 0 (dy passes where y > 0).
func (l *Layer) ApplyReLU(x *gorgonia.Node) (*gorgonia.Node, error) {
	if l == nil {
		return nil, fmt.Errorf("%w: ApplyReLU on a nil *Layer", ErrOption)
	}
	return l.applyReLU(x, nil, nil)
}

// ApplyAddReLU returns the node y = max(0, BN(x) + z), the end of a
// residual block, for x as in Apply and z of x's shape and type (else
// ErrShape, ErrDtype). The gradient of z is dy where y > 0.
func (l *Layer) ApplyAddReLU(x, z *gorgonia.Node) (*gorgonia.Node, error) {
	if l == nil {
		return nil, fmt.Errorf("%w: ApplyAddReLU on a nil *Layer", ErrOption)
	}
	if z == nil {
		return nil, fmt.Errorf("%w: nil residual z", ErrShape)
	}
	return l.applyReLU(x, z, nil)
}

// applySegmentedReLU is applySegmented fused with a ReLU, y = max(0, BN(x)),
// or with z non-nil y = max(0, BN(x) + z) (see ApplyAddReLU). Package
// domainbn reaches it through its layer's ApplyReLU and ApplyAddReLU.
func (l *Layer) applySegmentedReLU(x, z *gorgonia.Node, seg segmenter) (*gorgonia.Node, error) {
	if l == nil {
		return nil, fmt.Errorf("%w: ApplySegmentedReLU on a nil *Layer", ErrOption)
	}
	if isNil(seg) {
		return nil, fmt.Errorf("%w: nil segmenter", ErrOption)
	}
	if l.cfg.ghost > 0 {
		return nil, fmt.Errorf("%w: ghost batches cannot be combined with a segmenter", ErrOption)
	}
	return l.applyReLU(x, z, seg)
}

func (l *Layer) applyReLU(x, z *gorgonia.Node, seg segmenter) (*gorgonia.Node, error) {
	if x == nil {
		return nil, fmt.Errorf("%w: nil input", ErrShape)
	}
	if x.Graph() != l.g {
		return nil, fmt.Errorf("%w: input belongs to another graph", ErrShape)
	}
	if err := l.checkShape(x.Shape()); err != nil {
		return nil, err
	}
	if x.Dtype() != l.dt {
		return nil, fmt.Errorf("%w: input is %v, layer is %v", ErrDtype, x.Dtype(), l.dt)
	}
	if z != nil {
		if z.Graph() != l.g {
			return nil, fmt.Errorf("%w: residual z belongs to another graph", ErrShape)
		}
		if !z.Shape().Eq(x.Shape()) {
			return nil, fmt.Errorf("%w: residual z has shape %v, x has %v", ErrShape, z.Shape(), x.Shape())
		}
		if z.Dtype() != l.dt {
			return nil, fmt.Errorf("%w: residual z is %v, layer is %v", ErrDtype, z.Dtype(), l.dt)
		}
	}
	op := &reluOp{f: &fwdOp{l: l, rank: x.Dims(), id: opIDs.Add(1), seg: seg}, add: z != nil}
	if seg != nil {
		l.mu.Lock()
		l.seg = seg
		l.mu.Unlock()
	}
	in := []*gorgonia.Node{x}
	if z != nil {
		in = append(in, z)
	}
	if l.gamma != nil {
		in = append(in, l.gamma, l.beta)
	}
	return gorgonia.ApplyOp(op, in...)
}

// reluOp is the fused forward op: inputs x, [z], [γ, β].
type reluOp struct {
	goOp
	f   *fwdOp // the engine: state, statistics, backward sums of the plain op
	add bool   // the input z is present
	out tensor.Tensor
}

func (op *reluOp) Arity() int {
	n := 1
	if op.add {
		n++
	}
	if op.f.l.gamma != nil {
		n += 2
	}
	return n
}

func (op *reluOp) Type() hm.Type {
	a := hm.TypeVariable('a')
	x := gorgonia.TensorType{Dims: op.f.rank, Of: a}
	ts := []hm.Type{x}
	if op.add {
		ts = append(ts, x)
	}
	if op.f.l.gamma != nil {
		p := gorgonia.TensorType{Dims: op.f.l.gamma.Dims(), Of: a}
		ts = append(ts, p, p)
	}
	return hm.NewFnType(append(ts, x)...)
}

// engine returns in without z: the inputs of the plain op.
func (op *reluOp) engine(in []gorgonia.Value) []gorgonia.Value {
	if !op.add {
		return in
	}
	return append([]gorgonia.Value{in[0]}, in[2:]...)
}

func (op *reluOp) InferShape(in ...gorgonia.DimSizer) (tensor.Shape, error) {
	if len(in) != op.Arity() {
		return nil, fmt.Errorf("%w: %v takes %d inputs, got %d", ErrShape, op, op.Arity(), len(in))
	}
	if op.add {
		xs, ok1 := in[0].(tensor.Shape)
		zs, ok2 := in[1].(tensor.Shape)
		if !ok1 || !ok2 || !xs.Eq(zs) {
			return nil, fmt.Errorf("%w: residual z has shape %v, x has %v", ErrShape, in[1], in[0])
		}
		in = append([]gorgonia.DimSizer{in[0]}, in[2:]...)
	}
	return op.f.InferShape(in...)
}

func (op *reluOp) WriteHash(h hash.Hash) {
	fmt.Fprintf(h, "bn.BatchNormReLU/%d/%d/%v", op.f.l.id, op.f.id, op.add)
}
func (op *reluOp) Hashcode() uint32 { return hashOf(op) }
func (op *reluOp) String() string {
	if op.add {
		return "BatchNormAddReLU(" + op.f.l.cfg.name + ")"
	}
	return "BatchNormReLU(" + op.f.l.cfg.name + ")"
}

// checkInputs checks the inputs and returns x and z (nil without z).
func (op *reluOp) checkInputs(in []gorgonia.Value) (x, z tensor.Tensor, err error) {
	if len(in) != op.Arity() {
		return nil, nil, fmt.Errorf("%w: %v takes %d inputs, got %d", ErrShape, op, op.Arity(), len(in))
	}
	if x, err = op.f.checkInputs(op.engine(in)); err != nil {
		return nil, nil, err
	}
	if op.add {
		zt, ok := in[1].(tensor.Tensor)
		if !ok || zt.Dtype() != x.Dtype() {
			return nil, nil, fmt.Errorf("%w: residual z is %T of %v, x is %v", ErrDtype, in[1], in[1].Dtype(), x.Dtype())
		}
		if !zt.Shape().Eq(x.Shape()) {
			return nil, nil, fmt.Errorf("%w: residual z has shape %v, x has %v", ErrShape, zt.Shape(), x.Shape())
		}
		z = zt
	}
	return x, z, nil
}

// Do computes y = max(0, BN(x) [+ z]).
func (op *reluOp) Do(in ...gorgonia.Value) (gorgonia.Value, error) {
	x, _, err := op.checkInputs(in)
	if err != nil {
		return nil, err
	}
	y := op.f.l.output(&op.out, x.Shape())
	if err := op.forward(in, y); err != nil {
		return nil, err
	}
	return y, nil
}

// UsePreallocDo computes y into prealloc, which must have x's shape and
// type.
func (op *reluOp) UsePreallocDo(prealloc gorgonia.Value, in ...gorgonia.Value) (gorgonia.Value, error) {
	x, _, err := op.checkInputs(in)
	if err != nil {
		return nil, err
	}
	if err := checkLike(prealloc, x, "preallocated output"); err != nil {
		return nil, err
	}
	if err := op.forward(in, prealloc.(tensor.Tensor)); err != nil {
		return nil, err
	}
	return prealloc, nil
}

func (op *reluOp) forward(in []gorgonia.Value, y tensor.Tensor) error {
	if op.f.l.dt == tensor.Float32 {
		return forwardReLU[float32](op, in, y)
	}
	return forwardReLU[float64](op, in, y)
}

// forwardReLU is forward (op_batchnorm.go) with the apply pass fused with
// the ReLU and the residual.
func forwardReLU[T kern.Float](op *reluOp, in []gorgonia.Value, yv tensor.Tensor) error {
	f := op.f
	x, err := data[T](in[0])
	if err != nil {
		return err
	}
	y, err := data[T](yv)
	if err != nil {
		return err
	}
	var z []T
	if op.add {
		if z, err = data[T](in[1]); err != nil {
			return err
		}
	}
	if err := setAffine[T](f, op.engine(in)); err != nil {
		return err
	}
	lay, err := f.begin(in[0].Shape())
	if err != nil {
		return err
	}
	plan := planFor[T](f, lay)
	s := &f.s
	if s.batch {
		plan.Stats(x, s.moms)
	}
	if err := f.statistics(in[0].Shape()); err != nil {
		return err
	}
	plan.ApplyReLU(x, z, y, s.mean, s.scale, s.shift)
	f.done = true
	return nil
}

// DiffWRT reports that the op is differentiable with respect to every
// input.
func (op *reluOp) DiffWRT(n int) []bool { return op.f.DiffWRT(n) }

// SymDiff returns the gradient nodes of x, [z], [γ, β].
func (op *reluOp) SymDiff(inputs gorgonia.Nodes, output, grad *gorgonia.Node) (gorgonia.Nodes, error) {
	if len(inputs) != op.Arity() {
		return nil, fmt.Errorf("%w: %v takes %d inputs, got %d", ErrShape, op, op.Arity(), len(inputs))
	}
	x := inputs[0]
	g, err := gorgonia.ApplyOp(&maskOp{f: op.f}, x, grad, output)
	if err != nil {
		return nil, err
	}
	sums, err := gorgonia.ApplyOp(&maskSumsOp{f: op.f}, g)
	if err != nil {
		return nil, err
	}
	dx, err := gorgonia.ApplyOp(&dxOp{f: op.f}, x, g, sums)
	if err != nil {
		return nil, err
	}
	out := gorgonia.Nodes{dx}
	if op.add {
		out = append(out, g)
	}
	if op.f.l.gamma == nil {
		return out, nil
	}
	dg, err := gorgonia.ApplyOp(&rowOp{f: op.f, row: 0}, sums)
	if err != nil {
		return nil, err
	}
	db, err := gorgonia.ApplyOp(&rowOp{f: op.f, row: 1}, sums)
	if err != nil {
		return nil, err
	}
	return append(out, dg, db), nil
}

// DoDiff accumulates the gradients of x, [z], [γ, β] for the LispMachine
// (on the host: on a CUDA device it returns ErrDevice).
func (op *reluOp) DoDiff(ctx gorgonia.ExecutionContext, inputs gorgonia.Nodes, output *gorgonia.Node) error {
	if ctx.Device != gorgonia.CPU {
		return fmt.Errorf("%w: the LispMachine's backward of %v on device %v is not supported; use the TapeMachine", ErrDevice, op, ctx.Device)
	}
	if len(inputs) != op.Arity() {
		return fmt.Errorf("%w: %v takes %d inputs, got %d", ErrShape, op, op.Arity(), len(inputs))
	}
	dy, err := output.Grad()
	if err != nil {
		return err
	}
	x := inputs[0].Value()
	g, err := (&maskOp{f: op.f}).Do(x, dy, output.Value())
	if err != nil {
		return err
	}
	sums, err := (&maskSumsOp{f: op.f}).Do(g)
	if err != nil {
		return err
	}
	dx, err := (&dxOp{f: op.f}).Do(x, g, sums)
	if err != nil {
		return err
	}
	if err := addInto(inputs[0], dx, 0, -1); err != nil {
		return err
	}
	p := 1
	if op.add {
		if err := addInto(inputs[1], g, 0, -1); err != nil {
			return err
		}
		p = 2
	}
	if op.f.l.gamma != nil {
		n := op.f.l.gamma.Shape().TotalSize()
		if err := addInto(inputs[p], sums, 0, n); err != nil {
			return err
		}
		if err := addInto(inputs[p+1], sums, n, 2*n); err != nil {
			return err
		}
	}
	return nil
}

// maskOp computes g = dy·[y > 0] from (x, dy, y) and, in the same pass,
// the backward sums of BN on g (kept in the forward's state for
// maskSumsOp and dxOp).
type maskOp struct {
	goOp
	f   *fwdOp
	out tensor.Tensor
}

func (op *maskOp) Arity() int { return 3 }
func (op *maskOp) Type() hm.Type {
	a := hm.TypeVariable('a')
	x := gorgonia.TensorType{Dims: op.f.rank, Of: a}
	return hm.NewFnType(x, x, x, x)
}
func (op *maskOp) InferShape(in ...gorgonia.DimSizer) (tensor.Shape, error) {
	return firstShape(op, in)
}
func (op *maskOp) WriteHash(h hash.Hash) {
	fmt.Fprintf(h, "bn.BatchNormReLUMask/%d/%d", op.f.l.id, op.f.id)
}
func (op *maskOp) Hashcode() uint32 { return hashOf(op) }
func (op *maskOp) String() string   { return "BatchNormReLUMask(" + op.f.l.cfg.name + ")" }

// Do computes g.
func (op *maskOp) Do(in ...gorgonia.Value) (gorgonia.Value, error) {
	if err := op.check(in); err != nil {
		return nil, err
	}
	g := op.f.l.output(&op.out, in[0].Shape())
	if err := op.do(in, g); err != nil {
		return nil, err
	}
	return g, nil
}

// UsePreallocDo computes g into prealloc.
func (op *maskOp) UsePreallocDo(prealloc gorgonia.Value, in ...gorgonia.Value) (gorgonia.Value, error) {
	if err := op.check(in); err != nil {
		return nil, err
	}
	if err := checkLike(prealloc, in[0].(tensor.Tensor), "preallocated masked gradient"); err != nil {
		return nil, err
	}
	if err := op.do(in, prealloc.(tensor.Tensor)); err != nil {
		return nil, err
	}
	return prealloc, nil
}

func (op *maskOp) check(in []gorgonia.Value) error {
	if err := op.f.checkBackward(in, 3); err != nil {
		return err
	}
	if in[2].Dtype() != op.f.l.dt || !in[2].Shape().Eq(in[0].Shape()) {
		return fmt.Errorf("%w: y is %v of %v, x is %v of %v", ErrShape, in[2].Shape(), in[2].Dtype(), in[0].Shape(), op.f.l.dt)
	}
	return nil
}

func (op *maskOp) do(in []gorgonia.Value, g tensor.Tensor) error {
	if op.f.l.dt == tensor.Float32 {
		return backwardMask[float32](op.f, in, g)
	}
	return backwardMask[float64](op.f, in, g)
}

func backwardMask[T kern.Float](f *fwdOp, in []gorgonia.Value, gv tensor.Tensor) error {
	x, dy, g, p, err := backwardArgs[T](f, in, gv)
	if err != nil {
		return err
	}
	y, err := data[T](in[2])
	if err != nil {
		return err
	}
	s := &f.s
	s.sums = grow(s.sums, s.nseg*f.l.c)
	clear(s.sums) // a rank with fewer ghost groups than the group's largest
	p.BackwardSumsReLU(x, dy, y, g, s.mean, s.sums)
	_, err = f.finishSums()
	return err
}

// maskSumsOp returns [dγ ; dβ] (sumsOp's shape) that maskOp computed; its
// input g orders it after maskOp.
type maskSumsOp struct {
	goOp
	f   *fwdOp
	out tensor.Tensor
}

func (op *maskSumsOp) Arity() int { return 1 }
func (op *maskSumsOp) Type() hm.Type {
	a := hm.TypeVariable('a')
	x := gorgonia.TensorType{Dims: op.f.rank, Of: a}
	return hm.NewFnType(x, gorgonia.TensorType{Dims: op.shape().Dims(), Of: a})
}
func (op *maskSumsOp) shape() tensor.Shape { return (&sumsOp{f: op.f}).outShape() }
func (op *maskSumsOp) InferShape(...gorgonia.DimSizer) (tensor.Shape, error) {
	return op.shape(), nil
}
func (op *maskSumsOp) WriteHash(h hash.Hash) {
	fmt.Fprintf(h, "bn.BatchNormReLUSums/%d/%d", op.f.l.id, op.f.id)
}
func (op *maskSumsOp) Hashcode() uint32 { return hashOf(op) }
func (op *maskSumsOp) String() string   { return "BatchNormReLUSums(" + op.f.l.cfg.name + ")" }

// Do returns the sums.
func (op *maskSumsOp) Do(in ...gorgonia.Value) (gorgonia.Value, error) {
	if err := op.check(in); err != nil {
		return nil, err
	}
	out := op.f.l.output(&op.out, op.shape())
	return out, op.do(out)
}

// UsePreallocDo writes the sums into prealloc.
func (op *maskSumsOp) UsePreallocDo(prealloc gorgonia.Value, in ...gorgonia.Value) (gorgonia.Value, error) {
	if err := op.check(in); err != nil {
		return nil, err
	}
	if err := checkOut(prealloc, op.shape(), op.f.l.dt, "preallocated sums"); err != nil {
		return nil, err
	}
	return prealloc, op.do(prealloc.(tensor.Tensor))
}

func (op *maskSumsOp) check(in []gorgonia.Value) error {
	if len(in) != 1 {
		return fmt.Errorf("%w: %v takes 1 input, got %d", ErrShape, op, len(in))
	}
	if !op.f.done || len(op.f.s.dgb) != op.shape().TotalSize() {
		return fmt.Errorf("%w: %v before the masked gradient of a forward", ErrState, op)
	}
	return nil
}

func (op *maskSumsOp) do(out tensor.Tensor) error {
	if op.f.l.dt == tensor.Float32 {
		return putSums[float32](op.f.s.dgb, out)
	}
	return putSums[float64](op.f.s.dgb, out)
}

func putSums[T kern.Float](dgb []float64, outv tensor.Tensor) error {
	out, err := data[T](outv)
	if err != nil {
		return err
	}
	for i, v := range dgb {
		out[i] = T(v)
	}
	return nil
}
