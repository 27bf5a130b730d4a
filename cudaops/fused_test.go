//go:build cuda

package cudaops

import (
	"testing"

	"github.com/gorgonia-bn/bn/internal/kern"
	"gorgonia.org/cu"
)

// TestFusedReLU: ApplyReLU and BackwardSumsReLU against the CPU kernels'
// (kern.Plan.ApplyReLU, BackwardSumsReLU) on every test layout, with and
// without the residual z.
func TestFusedReLU(t *testing.T) {
	forDtypes(t, testFusedReLU[float32], testFusedReLU[float64])
}

func testFusedReLU[T kern.Float](t *testing.T, m *Module, l Layout) {
	r := newRand(t)
	const eps = 1e-3
	p := newPlan[T](t, m, l)
	K := p.K()
	cp := kern.NewPlan[T](kernLayout(l), 0)
	for _, withZ := range []bool{false, true} {
		x := randSlice[T](r, l.Len(), -1, 3)
		dy := randSlice[T](r, l.Len(), 0.2, 1)
		gamma := randSlice[T](r, l.C, 1, 0.5)
		fw := runCPUForward(l, x, gamma, gamma, eps)
		var z []T
		var dz cu.DevicePtr
		if withZ {
			z = randSlice[T](r, l.Len(), 0, 1)
			dz = upload(t, z)
		}
		want := make([]T, l.Len())
		cp.ApplyReLU(x, z, want, fw.mean, fw.scale, fw.shift)
		dx, dmean := upload(t, x), upload(t, fw.mean)
		y := buffer[T](t, l.Len())
		must(t, p.ApplyReLU(cu.NoStream, dx, dz, y, dmean, upload(t, fw.scale), upload(t, fw.shift)))
		got := download[T](t, y, l.Len())
		checkElems(t, "y", f64s(got), f64s(want), tolOf[T]())

		// The backward on the CPU's y, so that both mask alike.
		g := make([]T, l.Len())
		wsums := make([][2]float64, K)
		cp.BackwardSumsReLU(x, dy, want, g, fw.mean, wsums)
		dg, dsums := buffer[T](t, l.Len()), buffer[float64](t, 2*K)
		must(t, p.BackwardSumsReLU(cu.NoStream, dx, upload(t, dy), upload(t, want), dg, dmean, dsums))
		checkElems(t, "g", f64s(download[T](t, dg, l.Len())), f64s(g), 0)
		checkNorm(t, "sums", download[float64](t, dsums, 2*K), sumFloats(wsums), 1e-12)
	}
	if err := p.BackwardSumsReLU(cu.NoStream, 1, 2, 3, 2, 4, 5); err == nil {
		t.Error("g aliasing dy: no error")
	}
}
