package bn

import (
	"fmt"
	"hash"

	"github.com/chewxy/hm"
	"github.com/gorgonia-bn/bn/internal/kern"
	"gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// The backward pass of one forward op is two ops:
//
//	sums = sumsOp(x, dy, y)   shape (2, C) or (2, D, C): [Σdy·x̂ ; Σdy] = [dγ ; dβ]
//	dx   = dxOp(x, dy, sums)  dx = γ·invstd·(dy − Σdy/n − x̂·Σdy·x̂/n) with batch statistics,
//	                          dx = γ·invstd·dy with running statistics
//
// and dγ, dβ are the two rows of sums, taken by rowOp as tensors of γ's
// shape whatever C and the affine groups. sumsOp and dxOp read the
// statistics the forward op saved; y as an input of sumsOp orders them after
// their forward.

// DiffWRT reports that the op is differentiable with respect to x, γ, β.
func (op *fwdOp) DiffWRT(n int) []bool {
	r := make([]bool, n)
	for i := range r {
		r[i] = true
	}
	return r
}

// SymDiff returns the gradient nodes of x, γ and β.
func (op *fwdOp) SymDiff(inputs gorgonia.Nodes, output, grad *gorgonia.Node) (gorgonia.Nodes, error) {
	if len(inputs) != op.Arity() {
		return nil, fmt.Errorf("%w: %v takes %d inputs, got %d", ErrShape, op, op.Arity(), len(inputs))
	}
	x := inputs[0]
	sums, err := gorgonia.ApplyOp(&sumsOp{f: op}, x, grad, output)
	if err != nil {
		return nil, err
	}
	dx, err := gorgonia.ApplyOp(&dxOp{f: op}, x, grad, sums)
	if err != nil {
		return nil, err
	}
	if len(inputs) == 1 {
		return gorgonia.Nodes{dx}, nil
	}
	// Not gorgonia.Slice: for C = 1 its value is a scalar while its node
	// says (1), and a TapeMachine with BindDualValues panics in its own
	// goroutine on it. rowOp's value always has γ's shape.
	dg, err := gorgonia.ApplyOp(&rowOp{f: op, row: 0}, sums)
	if err != nil {
		return nil, err
	}
	db, err := gorgonia.ApplyOp(&rowOp{f: op, row: 1}, sums)
	if err != nil {
		return nil, err
	}
	return gorgonia.Nodes{dx, dg, db}, nil
}

// DoDiff accumulates the gradients of x, γ and β for the LispMachine.
// It computes on the host: on a CUDA device (Gorgonia's cuda build) it
// returns ErrDevice; use the TapeMachine and gorgonia.Grad there.
func (op *fwdOp) DoDiff(ctx gorgonia.ExecutionContext, inputs gorgonia.Nodes, output *gorgonia.Node) error {
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
	sums, err := (&sumsOp{f: op}).Do(x, dy, output.Value())
	if err != nil {
		return err
	}
	dx, err := (&dxOp{f: op}).Do(x, dy, sums)
	if err != nil {
		return err
	}
	if err := addInto(inputs[0], dx, 0, -1); err != nil {
		return err
	}
	if len(inputs) == 3 {
		n := op.l.gamma.Shape().TotalSize()
		if err := addInto(inputs[1], sums, 0, n); err != nil {
			return err
		}
		if err := addInto(inputs[2], sums, n, 2*n); err != nil {
			return err
		}
	}
	return nil
}

// addInto adds v's elements [lo,hi) (hi < 0: all) to node's gradient.
func addInto(node *gorgonia.Node, v gorgonia.Value, lo, hi int) error {
	g, err := node.Grad()
	if err != nil {
		return err
	}
	switch g.Dtype() {
	case tensor.Float32:
		return addT[float32](g, v, lo, hi)
	case tensor.Float64:
		return addT[float64](g, v, lo, hi)
	}
	return fmt.Errorf("%w: gradient of %v", ErrDtype, g.Dtype())
}

func addT[T kern.Float](g, v gorgonia.Value, lo, hi int) error {
	dst, err := data[T](g)
	if err != nil {
		return err
	}
	src, err := data[T](v)
	if err != nil {
		return err
	}
	if hi < 0 {
		hi = len(src)
	}
	src = src[lo:hi]
	if len(src) != len(dst) {
		return fmt.Errorf("%w: gradient of %d values, got %d", ErrShape, len(dst), len(src))
	}
	for i := range dst {
		dst[i] += src[i]
	}
	return nil
}

// sumsOp computes [dγ ; dβ] and the per-segment sums dxOp needs.
type sumsOp struct {
	goOp
	f   *fwdOp
	out tensor.Tensor // the last output (WithOutputReuse)
}

func (op *sumsOp) Arity() int { return 3 }
func (op *sumsOp) Type() hm.Type {
	a := hm.TypeVariable('a')
	x := gorgonia.TensorType{Dims: op.f.rank, Of: a}
	return hm.NewFnType(x, x, x, gorgonia.TensorType{Dims: op.outShape().Dims(), Of: a})
}
func (op *sumsOp) outShape() tensor.Shape {
	if op.f.l.affGroups > 1 {
		return tensor.Shape{2, op.f.l.affGroups, op.f.l.c}
	}
	return tensor.Shape{2, op.f.l.c}
}
func (op *sumsOp) InferShape(...gorgonia.DimSizer) (tensor.Shape, error) { return op.outShape(), nil }
func (op *sumsOp) WriteHash(h hash.Hash) {
	fmt.Fprintf(h, "bn.BatchNormSums/%d/%d", op.f.l.id, op.f.id)
}
func (op *sumsOp) Hashcode() uint32 { return hashOf(op) }
func (op *sumsOp) String() string   { return "BatchNormSums(" + op.f.l.cfg.name + ")" }

// Do computes the sums.
func (op *sumsOp) Do(in ...gorgonia.Value) (gorgonia.Value, error) {
	if err := op.f.checkBackward(in, 3); err != nil {
		return nil, err
	}
	out := op.f.l.output(&op.out, op.outShape())
	if err := op.do(in, out); err != nil {
		return nil, err
	}
	return out, nil
}

// UsePreallocDo computes the sums into prealloc.
func (op *sumsOp) UsePreallocDo(prealloc gorgonia.Value, in ...gorgonia.Value) (gorgonia.Value, error) {
	if err := op.f.checkBackward(in, 3); err != nil {
		return nil, err
	}
	want := tensor.New(tensor.Of(op.f.l.dt), tensor.WithShape(op.outShape()...))
	if err := checkLike(prealloc, want, "preallocated sums"); err != nil {
		return nil, err
	}
	if err := op.do(in, prealloc.(tensor.Tensor)); err != nil {
		return nil, err
	}
	return prealloc, nil
}

func (op *sumsOp) do(in []gorgonia.Value, out tensor.Tensor) error {
	if op.f.l.dt == tensor.Float32 {
		return backwardSums[float32](op.f, in, out)
	}
	return backwardSums[float64](op.f, in, out)
}

// checkBackward checks that a forward ran and the inputs match it.
func (op *fwdOp) checkBackward(in []gorgonia.Value, n int) error {
	if len(in) != n {
		return fmt.Errorf("%w: backward of %v takes %d inputs, got %d", ErrShape, op, n, len(in))
	}
	if !op.done {
		return fmt.Errorf("%w: backward of %v before a successful forward", ErrState, op)
	}
	for _, v := range in[:2] {
		if v.Dtype() != op.l.dt {
			return fmt.Errorf("%w: backward input is %v, layer is %v", ErrDtype, v.Dtype(), op.l.dt)
		}
	}
	if !in[0].Shape().Eq(in[1].Shape()) {
		return fmt.Errorf("%w: x %v and dy %v differ", ErrShape, in[0].Shape(), in[1].Shape())
	}
	return nil
}

// backwardArgs returns the element slices of x, dy and out and the plan of
// the forward the backward belongs to.
func backwardArgs[T kern.Float](f *fwdOp, in []gorgonia.Value, out tensor.Tensor) (x, dy, o []T, p *kern.Plan[T], err error) {
	if x, err = data[T](in[0]); err != nil {
		return
	}
	if dy, err = data[T](in[1]); err != nil {
		return
	}
	if o, err = data[T](out); err != nil {
		return
	}
	p, ok := f.plan.(*kern.Plan[T])
	if !ok || p.Layout().Len() != len(x) {
		return nil, nil, nil, nil, fmt.Errorf("%w: backward of %v on an input of another shape than its forward", ErrShape, f)
	}
	return x, dy, o, p, nil
}

func backwardSums[T kern.Float](f *fwdOp, in []gorgonia.Value, outv tensor.Tensor) error {
	x, dy, out, p, err := backwardArgs[T](f, in, outv)
	if err != nil {
		return err
	}
	s := &f.s
	s.sums = grow(s.sums, s.nseg*f.l.c)
	clear(s.sums) // a rank with fewer ghost groups than the group's largest
	p.BackwardSums(x, dy, s.mean, s.sums)
	dgb, err := f.finishSums()
	if err != nil {
		return err
	}
	for i, v := range dgb {
		out[i] = T(v)
	}
	return nil
}

// finishSums runs after the backward-sums pass filled s.sums with each
// segment's local (Σdy, Σdy·(x−μ)): it returns [dγ ; dβ] (per affine
// group·C, in s.dgb), then, with batch statistics, sums s.sums across ranks
// (SyncBN) and forms each segment's γ-weighted sums over its normalization
// set (s.gs), which the dx pass needs.
func (f *fwdOp) finishSums() ([]float64, error) {
	s := &f.s
	C := f.l.c
	k := s.nseg * C
	A := f.l.affGroups
	s.dgb = grow(s.dgb, 2*A*C)
	dg, db := s.dgb[:A*C], s.dgb[A*C:]
	clear(s.dgb)
	for sg := range s.nseg {
		a := s.sm.Aff[sg]
		for c := range C {
			i := sg*C + c
			xh := s.sums[i][1] * s.inv[i] // Σdy·x̂
			if len(s.ren) > 0 {           // Batch Renormalization: Σdy·(r·x̂ + d)
				xh = s.ren[i][0]*xh + s.ren[i][1]*s.sums[i][0]
			}
			dg[a*C+c] += xh
			db[a*C+c] += s.sums[i][0]
		}
	}
	if !s.batch {
		return s.dgb, nil
	}
	if f.l.cfg.sync != nil {
		if err := f.l.cfg.sync.reduceSums(f.l, s); err != nil {
			return nil, err
		}
	}
	// γ-weighted sums over each segment's normalization set: a set may span
	// segments with different γ (shared normalization, per-domain affine).
	s.gsBuf = grow(s.gsBuf, 2*k)
	set, gs := s.gsBuf[:k], s.gsBuf[k:]
	clear(set)
	for sg, g := range s.sm.Norm {
		for c := range C {
			w, v := s.gam[sg*C+c], s.sums[sg*C+c]
			set[g*C+c][0] += w * v[0]
			set[g*C+c][1] += w * v[1]
		}
	}
	for sg, g := range s.sm.Norm {
		copy(gs[sg*C:sg*C+C], set[g*C:g*C+C])
	}
	s.gs = gs
	return s.dgb, nil
}

// rowOp takes row 0 (dγ) or 1 (dβ) of the sums of a forward op: a tensor of
// γ's shape, (C) or (groups, C), for every C — a value whose run-time shape
// is its node's shape, as BindDualValues and the solvers require.
type rowOp struct {
	goOp
	f   *fwdOp
	row int           // 0: dγ, 1: dβ
	out tensor.Tensor // the last output (WithOutputReuse)
}

func (op *rowOp) Arity() int { return 1 }
func (op *rowOp) Type() hm.Type {
	a := hm.TypeVariable('a')
	sums := gorgonia.TensorType{Dims: (&sumsOp{f: op.f}).outShape().Dims(), Of: a}
	return hm.NewFnType(sums, gorgonia.TensorType{Dims: op.f.l.gamma.Dims(), Of: a})
}
func (op *rowOp) InferShape(...gorgonia.DimSizer) (tensor.Shape, error) {
	return op.f.l.gamma.Shape().Clone(), nil
}
func (op *rowOp) WriteHash(h hash.Hash) {
	fmt.Fprintf(h, "bn.BatchNormRow/%d/%d/%d", op.f.l.id, op.f.id, op.row)
}
func (op *rowOp) Hashcode() uint32 { return hashOf(op) }
func (op *rowOp) String() string {
	return [2]string{"BatchNormDγ(", "BatchNormDβ("}[op.row] + op.f.l.cfg.name + ")"
}

// Do returns the row as a new tensor (or, WithOutputReuse, the last one).
func (op *rowOp) Do(in ...gorgonia.Value) (gorgonia.Value, error) {
	if err := op.check(in); err != nil {
		return nil, err
	}
	out := op.f.l.output(&op.out, op.f.l.gamma.Shape())
	if err := op.do(in[0], out); err != nil {
		return nil, err
	}
	return out, nil
}

// UsePreallocDo copies the row into prealloc, which must have γ's shape.
func (op *rowOp) UsePreallocDo(prealloc gorgonia.Value, in ...gorgonia.Value) (gorgonia.Value, error) {
	if err := op.check(in); err != nil {
		return nil, err
	}
	if err := checkOut(prealloc, op.f.l.gamma.Shape(), op.f.l.dt, "preallocated "+op.String()); err != nil {
		return nil, err
	}
	if err := op.do(in[0], prealloc.(tensor.Tensor)); err != nil {
		return nil, err
	}
	return prealloc, nil
}

func (op *rowOp) check(in []gorgonia.Value) error {
	if len(in) != 1 {
		return fmt.Errorf("%w: %v takes 1 input, got %d", ErrShape, op, len(in))
	}
	return checkOut(in[0], (&sumsOp{f: op.f}).outShape(), op.f.l.dt, op.String()+"'s input")
}

func (op *rowOp) do(sums gorgonia.Value, out tensor.Tensor) error {
	if op.f.l.dt == tensor.Float32 {
		return copyRow[float32](sums, out, op.row)
	}
	return copyRow[float64](sums, out, op.row)
}

func copyRow[T kern.Float](sums gorgonia.Value, outv tensor.Tensor, row int) error {
	src, err := data[T](sums)
	if err != nil {
		return err
	}
	dst, err := data[T](outv)
	if err != nil {
		return err
	}
	n := len(src) / 2
	if len(dst) != n {
		return fmt.Errorf("%w: a row of %d values into %d", ErrShape, n, len(dst))
	}
	copy(dst, src[row*n:(row+1)*n])
	return nil
}

// dxOp computes dx.
type dxOp struct {
	goOp
	f   *fwdOp
	out tensor.Tensor // the last output (WithOutputReuse)
}

func (op *dxOp) Arity() int { return 3 }
func (op *dxOp) Type() hm.Type {
	a := hm.TypeVariable('a')
	x := gorgonia.TensorType{Dims: op.f.rank, Of: a}
	return hm.NewFnType(x, x, gorgonia.TensorType{Dims: (&sumsOp{f: op.f}).outShape().Dims(), Of: a}, x)
}
func (op *dxOp) InferShape(in ...gorgonia.DimSizer) (tensor.Shape, error) {
	return firstShape(op, in)
}
func (op *dxOp) WriteHash(h hash.Hash) {
	fmt.Fprintf(h, "bn.BatchNormDx/%d/%d", op.f.l.id, op.f.id)
}
func (op *dxOp) Hashcode() uint32 { return hashOf(op) }
func (op *dxOp) String() string   { return "BatchNormDx(" + op.f.l.cfg.name + ")" }

// Do computes dx.
func (op *dxOp) Do(in ...gorgonia.Value) (gorgonia.Value, error) {
	if err := op.f.checkBackward(in, 3); err != nil {
		return nil, err
	}
	dx := op.f.l.output(&op.out, in[0].Shape())
	if err := op.do(in, dx); err != nil {
		return nil, err
	}
	return dx, nil
}

// UsePreallocDo computes dx into prealloc.
func (op *dxOp) UsePreallocDo(prealloc gorgonia.Value, in ...gorgonia.Value) (gorgonia.Value, error) {
	if err := op.f.checkBackward(in, 3); err != nil {
		return nil, err
	}
	if err := checkLike(prealloc, in[0].(tensor.Tensor), "preallocated dx"); err != nil {
		return nil, err
	}
	if err := op.do(in, prealloc.(tensor.Tensor)); err != nil {
		return nil, err
	}
	return prealloc, nil
}

func (op *dxOp) do(in []gorgonia.Value, dx tensor.Tensor) error {
	if op.f.l.dt == tensor.Float32 {
		return backwardDx[float32](op.f, in, dx)
	}
	return backwardDx[float64](op.f, in, dx)
}

func backwardDx[T kern.Float](f *fwdOp, in []gorgonia.Value, dxv tensor.Tensor) error {
	x, dy, dx, p, err := backwardArgs[T](f, in, dxv)
	if err != nil {
		return err
	}
	f.dxCoeffs()
	s := &f.s
	p.Apply(x, dy, dx, s.mean, s.a, s.b, s.c)
	return nil
}

// dxCoeffs sets the per-segment coefficients of the dx pass,
// dx = a·dy + b·(x−μ) + c, in s.a, s.b, s.c.
func (f *fwdOp) dxCoeffs() {
	s := &f.s
	C := f.l.c
	k := s.nseg * C
	s.a, s.b, s.c = grow(s.a, k), grow(s.b, k), grow(s.c, k)
	for sg := range s.nseg {
		n := s.cnt[sg]
		for c := range C {
			i := sg*C + c
			a := s.scale[i]
			s.a[i], s.b[i], s.c[i] = a, 0, 0
			if s.batch && n > 0 {
				// With G = Σγ·dy and H = Σγ·dy·(x−μ) over the set:
				// dx = γ·inv·dy − inv³·H/n·(x−μ) − inv·G/n.
				inv := s.inv[i]
				s.b[i] = -inv * inv * inv * s.gs[i][1] / n
				s.c[i] = -inv * s.gs[i][0] / n
			}
		}
	}
}
