//go:build bncuda

package bn

// The CUDA path of the fused ops against their CPU path, as
// TestCUDAOpsMatchCPU does for the plain op: every mode, ghost batches,
// segments, affine off, float32 and float64, two steps, with and without
// the residual z. GPU or CPU emulation (cudaops/testdata/emu/run.sh bn).

import (
	"fmt"
	"math/rand"
	"testing"

	"gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// newFusedCaseOp is newCaseOp for the fused op.
func newFusedCaseOp(t testing.TB, c cudaCase, dt tensor.Dtype, add bool, r *rand.Rand) (*reluOp, []float64, []float64) {
	t.Helper()
	g := gorgonia.NewGraph()
	C := c.shape[1]
	var l *Layer
	var err error
	if c.segs > 0 {
		l, err = newGrouped(g, C, dt, 2, true, c.opts...)
	} else {
		l, err = New(g, C, dt, c.opts...)
	}
	must(t, err)
	x := gorgonia.NewTensor(g, dt, len(c.shape), gorgonia.WithShape(c.shape...), gorgonia.WithName("x"))
	var z *gorgonia.Node
	if add {
		z = gorgonia.NewTensor(g, dt, len(c.shape), gorgonia.WithShape(c.shape...), gorgonia.WithName("z"))
	}
	var y *gorgonia.Node
	switch {
	case c.segs > 0:
		y, err = l.applySegmentedReLU(x, z, fixedSegs{c.segs})
	case add:
		y, err = l.ApplyAddReLU(x, z)
	default:
		y, err = l.ApplyReLU(x)
	}
	must(t, err)
	must(t, l.SetMode(c.mode))
	G := l.Groups()
	rm, rv := make([]float64, G*C), make([]float64, G*C)
	for i := range rm {
		rm[i], rv[i] = r.NormFloat64(), 0.5+r.Float64()
	}
	if l.cfg.track {
		must(t, l.SetRunningStats(rm, rv))
	}
	var gb, bb []float64
	if l.Gamma() != nil {
		n := l.Gamma().Shape().TotalSize()
		gb, bb = make([]float64, n), make([]float64, n)
		for i := range gb {
			gb[i], bb[i] = 0.5+r.Float64(), r.NormFloat64()
		}
	}
	return y.Op().(*reluOp), gb, bb
}

func TestCUDAFusedMatchCPU(t *testing.T) {
	for _, dt := range []tensor.Dtype{tensor.Float32, tensor.Float64} {
		tol := 1e-12
		if dt == tensor.Float32 {
			tol = 2e-5
		}
		for _, c := range cudaCases() {
			for _, add := range []bool{false, true} {
				t.Run(fmt.Sprintf("%v/%s/add=%v", dt, c.name, add), func(t *testing.T) {
					d := testDev(t)
					seed := int64(len(c.name)*131 + c.shape.TotalSize())
					cpu, gb, bb := newFusedCaseOp(t, c, dt, add, rand.New(rand.NewSource(seed)))
					gpu, _, _ := newFusedCaseOp(t, c, dt, add, rand.New(rand.NewSource(seed)))
					r := rand.New(rand.NewSource(seed + 1))
					pshape := tensor.Shape{len(gb)}
					if cpu.f.l.affGroups > 1 {
						pshape = tensor.Shape{cpu.f.l.affGroups, cpu.f.l.c}
					}
					n := c.shape.TotalSize()
					for step := range 2 {
						xs, zs, dys := randn(r, n, 3, 2), randn(r, n, 0, 1), randn(r, n, 0, 1)
						hin := []gorgonia.Value{tensorOf(dt, c.shape, xs)}
						din := []gorgonia.Value{devTensor(t, dt, c.shape, xs)}
						if add {
							hin = append(hin, tensorOf(dt, c.shape, zs))
							din = append(din, devTensor(t, dt, c.shape, zs))
						}
						if gb != nil {
							hin = append(hin, tensorOf(dt, pshape, gb), tensorOf(dt, pshape, bb))
							din = append(din, devTensor(t, dt, pshape, gb), devTensor(t, dt, pshape, bb))
						}
						want, err := cpu.Do(hin...)
						must(t, err)
						y := devTensor(t, dt, c.shape, nil)
						must(t, gpu.cudaRun(d, y, din))
						// The backward masks by the CPU's y on both sides: a
						// value within rounding of 0 may be positive on one.
						wy := valuesOf(t, want)
						compare(t, fmt.Sprintf("step %d: y", step), hostOf(t, y), wy, tol)
						dyw := devTensor(t, dt, c.shape, wy)
						wm, wv := cpu.f.l.RunningStats()
						gm, gv := gpu.f.l.RunningStats()
						compare(t, "running mean", gm, wm, tol)
						compare(t, "running var", gv, wv, tol)

						hdy, ddy := tensorOf(dt, c.shape, dys), devTensor(t, dt, c.shape, dys)
						wg, err := (&maskOp{f: cpu.f}).Do(hin[0], hdy, want)
						must(t, err)
						g := devTensor(t, dt, c.shape, nil)
						must(t, (&maskOp{f: gpu.f}).cudaRun(d, g, []gorgonia.Value{din[0], ddy, dyw}))
						compare(t, "g", hostOf(t, g), valuesOf(t, wg), 0)
						ws := &maskSumsOp{f: cpu.f}
						wsums, err := ws.Do(wg)
						must(t, err)
						gs := &maskSumsOp{f: gpu.f}
						sums := devTensor(t, dt, gs.shape(), nil)
						must(t, gs.cudaRun(d, sums, []gorgonia.Value{g}))
						compare(t, "dγ, dβ", hostOf(t, sums), valuesOf(t, wsums), tol)
						wdx, err := (&dxOp{f: cpu.f}).Do(hin[0], wg, wsums)
						must(t, err)
						dx := devTensor(t, dt, c.shape, nil)
						must(t, (&dxOp{f: gpu.f}).cudaRun(d, dx, []gorgonia.Value{din[0], g, sums}))
						compare(t, "dx", hostOf(t, dx), valuesOf(t, wdx), tol)
					}
				})
			}
		}
	}
}
