//go:build cuda || bncuda

package cudaops

import (
	"fmt"

	"gorgonia.org/cu"
)

// The passes of batch normalization fused with a ReLU (and a residual add),
// the device side of bn.Layer.ApplyReLU and ApplyAddReLU: the same
// decompositions, tables and merges as Apply and BackwardSums, with the
// ReLU folded into the element-wise pass and the mask into the sums pass.

// ApplyReLU computes element-wise, with the coefficients of the element's
// (segment, channel) k, in float64 before the rounding to the element type:
//
//	out = max(0, b[k]·(x − mean[k]) + c[k] + z)
//
// z may be 0 (no residual). The maximum is taken after the rounding (NaN
// and −0 stay). out may alias x or z. One launch.
func (p *Plan) ApplyReLU(s cu.Stream, x, z, out, mean, b, c cu.DevicePtr) error {
	if err := p.check([]string{"x", "out", "mean", "b", "c"}, x, out, mean, b, c); err != nil {
		return err
	}
	if p.nq == 0 {
		return nil
	}
	C, S := int64(p.l.C), int64(p.l.S)
	if p.row {
		f, name := p.m.typedFn(p.dt, kApplyReLURow)
		return launch(f, name, p.nq*p.ntiles, rowX, rowY, s, ptrs(
			x, z, out, p.devTab, C, S, int64(p.ntiles), mean, b, c)...)
	}
	f, name := p.m.typedFn(p.dt, kApplyReLUPlane)
	return launch(f, name, p.nq*p.l.C, planeThreads, 1, s, ptrs(
		x, z, out, p.devTab, C, S, mean, b, c)...)
}

// BackwardSumsReLU writes g = dy where y > 0, else 0 (y the output of
// ApplyReLU; NaN y gives 0), and computes, for every (segment, channel), Σg
// and Σg·(x−μ) into sums (K×2 float64), with μ = mean[k]. g must not alias
// x, dy or y. Two launches.
func (p *Plan) BackwardSumsReLU(s cu.Stream, x, dy, y, g, mean, sums cu.DevicePtr) error {
	if err := p.check([]string{"x", "dy", "y", "g", "mean", "sums"}, x, dy, y, g, mean, sums); err != nil {
		return err
	}
	if g == x || g == dy || g == y {
		return fmt.Errorf("%w: g aliases an input", ErrArg)
	}
	if err := p.partials(s, kSumsReLUPlane, kSumsReLURow, x, dy, y, g, p.devTab, mean, p.part); err != nil {
		return err
	}
	f, name := p.m.typedFn(p.dt, kMergeSums)
	var z cu.DevicePtr
	return launch(f, name, p.mergeGrid(), mergeThreads, 1, s, ptrs(
		p.part, p.segStart(), int64(p.l.C), p.w(), int64(p.l.Segments()), sums,
		z, z, z, z, z, z, z, z)...)
}
