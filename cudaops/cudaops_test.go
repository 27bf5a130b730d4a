//go:build cuda

package cudaops

import (
	"errors"
	"fmt"
	"math"
	"testing"

	"github.com/gorgonia-bn/bn/internal/kern"
	"gorgonia.org/cu"
)

// testLayouts covers both decompositions (row: S < 32, plane: S ≥ 32),
// chunks split inside planes, ghost batches, non-contiguous domain ids, an
// empty segment, a single element and an empty batch.
func testLayouts() []Layout {
	ghost := func(n, g int) ([]int, int) {
		seg := make([]int, n)
		return seg, kern.GhostSegments(seg, g, 0, len(seg))
	}
	g1, n1 := ghost(8, 3)
	g2, n2 := ghost(48, 16)
	return []Layout{
		{N: 3, C: 2, S: 5},
		{N: 64, C: 300, S: 1},
		{N: 256, C: 1024, S: 1},
		{N: 40, C: 64, S: 3},
		{N: 7, C: 3, S: 40000},
		{N: 2, C: 3, S: 1 << 17},
		{N: 33, C: 7, S: 49},
		{N: 16, C: 32, S: 1024},
		{N: 9, C: 5, S: 17, Seg: []int{0, 0, 1, 1, 1, 0, 2, 2, 0}, NSeg: 4},
		{N: 5, C: 4, S: 33, Seg: []int{1, 0, 1, 0, 1}, NSeg: 2},
		{N: 8, C: 16, S: 196, Seg: g1, NSeg: n1},
		{N: 48, C: 24, S: 2, Seg: g2, NSeg: n2},
		{N: 1, C: 1, S: 1},
		{N: 0, C: 4, S: 5},
	}
}

func kernLayout(l Layout) kern.Layout {
	return kern.Layout{N: l.N, C: l.C, S: l.S, Seg: l.Seg, NSeg: l.NSeg}
}

func layoutName(l Layout) string {
	s := fmt.Sprintf("%dx%dx%d", l.N, l.C, l.S)
	if l.Seg != nil {
		s += fmt.Sprintf("_seg%d", l.Segments())
	}
	return s
}

func forDtypes(t *testing.T, f32, f64 func(t *testing.T, m *Module, l Layout)) {
	for _, l := range testLayouts() {
		t.Run(layoutName(l)+"/float32", func(t *testing.T) { f32(t, gpu(t), l) })
		t.Run(layoutName(l)+"/float64", func(t *testing.T) { f64(t, gpu(t), l) })
	}
}

func newPlan[T kern.Float](t testing.TB, m *Module, l Layout) *Plan {
	t.Helper()
	p, err := NewPlan(m, l, dtypeOf[T]())
	must(t, err)
	t.Cleanup(func() { must(t, p.Close()) })
	return p
}

// cpuForward is the root Op's forward on the CPU kernels.
type cpuForward struct {
	mom          []kern.Moments
	mean, invstd []float64
	scale, shift []float64
	y            []float64
}

func runCPUForward[T kern.Float](l Layout, x, gamma, beta []T, eps float64) cpuForward {
	kl := kernLayout(l)
	K := l.Segments() * l.C
	var r cpuForward
	r.mom = make([]kern.Moments, K)
	pl := kern.NewPlan[T](kl, 0)
	pl.Stats(x, r.mom)
	r.mean, r.invstd = make([]float64, K), make([]float64, K)
	r.scale, r.shift = make([]float64, K), make([]float64, K)
	for k, m := range r.mom {
		c := k % l.C
		r.mean[k] = m.Mean
		r.invstd[k] = kern.InvStd(m, eps)
		g, b := 1.0, 0.0
		if gamma != nil {
			g, b = float64(gamma[c]), float64(beta[c])
		}
		r.scale[k], r.shift[k] = g*r.invstd[k], b
	}
	y := make([]T, len(x))
	pl.Apply(x, nil, y, r.mean, nil, r.scale, r.shift)
	r.y = f64s(y)
	return r
}

func TestStats(t *testing.T) {
	forDtypes(t, testStats[float32], testStats[float64])
}

func testStats[T kern.Float](t *testing.T, m *Module, l Layout) {
	r := newRand(t)
	for _, off := range []float64{3, 1e4} {
		x := randSlice[T](r, l.Len(), off, 1.5)
		want := make([]kern.Moments, l.Segments()*l.C)
		kern.NewPlan[T](kernLayout(l), 0).Stats(x, want)

		p := newPlan[T](t, m, l)
		mom := buffer[float64](t, 3*p.K())
		must(t, p.Stats(cu.NoStream, upload(t, x), mom))
		got := download[float64](t, mom, 3*p.K())
		// Moments are float64 whatever T: both sides accumulate in float64.
		checkMoments(t, fmt.Sprintf("moments(offset %g)", off), got, want, 1e-12)
	}
}

// checkMoments compares counts exactly, means relative to |mean| + std and
// M2 relative to itself times its condition number 1 + |mean|/std: every
// float64 algorithm loses about |mean|/std ulps computing the deviations of
// data far from zero (x = 1e4 + N(0, 1.5²) loses ~7e3).
func checkMoments(t *testing.T, what string, got []float64, want []kern.Moments, tol float64) {
	t.Helper()
	for k, w := range want {
		g := kern.Moments{N: got[3*k], Mean: got[3*k+1], M2: got[3*k+2]}
		std, cond := 0.0, 1.0
		if w.N > 0 {
			std = math.Sqrt(w.M2 / w.N)
			if std > 0 {
				cond += math.Abs(w.Mean) / std
			}
		}
		if g.N != w.N || !(math.Abs(g.Mean-w.Mean) <= tol*(math.Abs(w.Mean)+std)) ||
			!(math.Abs(g.M2-w.M2) <= tol*cond*w.M2) {
			t.Errorf("%s[%d] = %+v, want %+v", what, k, g, w)
		}
	}
}

func TestForward(t *testing.T) {
	forDtypes(t, testForward[float32], testForward[float64])
}

func testForward[T kern.Float](t *testing.T, m *Module, l Layout) {
	r := newRand(t)
	const eps, momentum = 1e-5, 0.1
	p := newPlan[T](t, m, l)
	K := p.K()
	for _, affine := range []bool{true, false} {
		for _, inPlace := range []bool{false, true} {
			t.Run(fmt.Sprintf("affine=%v/inplace=%v", affine, inPlace), func(t *testing.T) {
				gpu(t) // a subtest runs on its own goroutine
				x := randSlice[T](r, l.Len(), 3, 2)
				var gamma, beta []T
				var dg, db cu.DevicePtr
				if affine {
					gamma, beta = randSlice[T](r, l.C, 1, 0.5), randSlice[T](r, l.C, 0, 1)
					dg, db = upload(t, gamma), upload(t, beta)
				}
				want := runCPUForward(l, x, gamma, beta, eps)
				rm, rv := randSlice[float64](r, K, 0, 1), randSlice[float64](r, K, 2, 0.1)
				wrm, wrv := append([]float64(nil), rm...), append([]float64(nil), rv...)
				kern.UpdateRunning(wrm, wrv, want.mom, momentum)

				dx := upload(t, x)
				dy := dx
				if !inPlace {
					dy = buffer[T](t, l.Len())
				}
				a := FwdArgs{
					X: dx, Y: dy, Gamma: dg, Beta: db, Eps: eps,
					Moments: buffer[float64](t, 3*K), Mean: buffer[float64](t, K), InvStd: buffer[float64](t, K),
					RunMean: upload(t, rm), RunVar: upload(t, rv), Momentum: momentum,
				}
				must(t, p.Forward(cu.NoStream, a))
				tol := tolOf[T]()
				checkElems(t, "y", f64s(download[T](t, a.Y, l.Len())), want.y, tol)
				checkMoments(t, "moments", download[float64](t, a.Moments, 3*K), want.mom, 1e-12)
				checkElems(t, "mean", download[float64](t, a.Mean, K), want.mean, 1e-12)
				checkElems(t, "invstd", download[float64](t, a.InvStd, K), want.invstd, 1e-12)
				checkElems(t, "running mean", download[float64](t, a.RunMean, K), wrm, 1e-12)
				checkElems(t, "running var", download[float64](t, a.RunVar, K), wrv, 1e-12)
			})
		}
	}
}

// cpuBackward is the root Op's backward on the CPU kernels, from given
// forward statistics.
func cpuBackward[T kern.Float](l Layout, x, dy, gamma []T, mom []kern.Moments, mean, invstd []float64) (dx, sums, ca, cb, cc, dgamma, dbeta []float64) {
	kl := kernLayout(l)
	K := l.Segments() * l.C
	pl := kern.NewPlan[T](kl, 0)
	s := make([][2]float64, K)
	pl.BackwardSums(x, dy, mean, s)
	ca, cb, cc = make([]float64, K), make([]float64, K), make([]float64, K)
	dgamma, dbeta = make([]float64, l.C), make([]float64, l.C)
	empty := emptySegments(l)
	for k := range K {
		c := k % l.C
		g := 1.0
		if gamma != nil {
			g = float64(gamma[c])
		}
		is, n := invstd[k], mom[k].N
		ca[k] = g * is
		cb[k] = -ca[k] * is * is * s[k][1] / n
		cc[k] = -ca[k] * s[k][0] / n
		if !empty[k/l.C] {
			dgamma[c] += is * s[k][1]
			dbeta[c] += s[k][0]
		}
	}
	out := make([]T, len(x))
	pl.Apply(x, dy, out, mean, ca, cb, cc)
	return f64s(out), sumFloats(s), ca, cb, cc, dgamma, dbeta
}

func emptySegments(l Layout) []bool {
	empty := make([]bool, l.Segments())
	for g := range empty {
		empty[g] = true
	}
	for n := range l.N {
		if l.S > 0 {
			g := 0
			if l.Seg != nil {
				g = l.Seg[n]
			}
			empty[g] = false
		}
	}
	return empty
}

func roundTo[T kern.Float](xs []float64) []float64 {
	out := make([]float64, len(xs))
	for i, v := range xs {
		out[i] = float64(T(v))
	}
	return out
}

func TestBackward(t *testing.T) {
	forDtypes(t, testBackward[float32], testBackward[float64])
}

func testBackward[T kern.Float](t *testing.T, m *Module, l Layout) {
	r := newRand(t)
	const eps = 1e-3
	p := newPlan[T](t, m, l)
	K := p.K()
	for _, affine := range []bool{true, false} {
		for _, inPlace := range []bool{false, true} {
			t.Run(fmt.Sprintf("affine=%v/inplace=%v", affine, inPlace), func(t *testing.T) {
				gpu(t) // a subtest runs on its own goroutine
				x := randSlice[T](r, l.Len(), -1, 3)
				dy := randSlice[T](r, l.Len(), 0.2, 1)
				var gamma []T
				var dg cu.DevicePtr
				if affine {
					gamma = randSlice[T](r, l.C, 1, 0.5)
					dg = upload(t, gamma)
				}
				fw := runCPUForward(l, x, gamma, gamma, eps)
				wdx, wsums, _, _, _, wdg, wdb := cpuBackward(l, x, dy, gamma, fw.mom, fw.mean, fw.invstd)

				ddy := upload(t, dy)
				ddx := ddy
				if !inPlace {
					ddx = buffer[T](t, l.Len())
				}
				a := BwdArgs{
					X: upload(t, x), Dy: ddy, Dx: ddx, Gamma: dg,
					Moments: upload(t, fw.mom), Mean: upload(t, fw.mean), InvStd: upload(t, fw.invstd),
					Sums: buffer[float64](t, 2*K), DGamma: buffer[T](t, l.C), DBeta: buffer[T](t, l.C),
				}
				must(t, p.Backward(cu.NoStream, a))
				tol := tolOf[T]()
				checkElems(t, "dx", f64s(download[T](t, a.Dx, l.Len())), wdx, tol)
				checkNorm(t, "sums", download[float64](t, a.Sums, 2*K), wsums, 1e-12)
				checkNorm(t, "dgamma", f64s(download[T](t, a.DGamma, l.C)), roundTo[T](wdg), tol)
				checkNorm(t, "dbeta", f64s(download[T](t, a.DBeta, l.C)), roundTo[T](wdb), tol)
			})
		}
	}
}

// TestSteps checks the steps SyncBN and PreciseBN compose by hand:
// BackwardSums, Finalize, BackwardCoeffs, Apply, UpdateRunning and
// MergeMoments.
func TestSteps(t *testing.T) {
	forDtypes(t, testSteps[float32], testSteps[float64])
}

func testSteps[T kern.Float](t *testing.T, m *Module, l Layout) {
	r := newRand(t)
	const eps = 1e-4
	p := newPlan[T](t, m, l)
	K := p.K()
	tol := tolOf[T]()
	x := randSlice[T](r, l.Len(), 2, 1)
	dy := randSlice[T](r, l.Len(), 0, 1)
	gamma, beta := randSlice[T](r, l.C, 1, 0.3), randSlice[T](r, l.C, 0, 1)
	fw := runCPUForward(l, x, gamma, beta, eps)
	dX, dDy, dMom := upload(t, x), upload(t, dy), upload(t, fw.mom)

	// Finalize.
	mean, invstd, scale, shift := buffer[float64](t, K), buffer[float64](t, K), buffer[float64](t, K), buffer[float64](t, K)
	must(t, p.Finalize(cu.NoStream, dMom, upload(t, gamma), upload(t, beta), eps, mean, invstd, scale, shift))
	checkElems(t, "finalize mean", download[float64](t, mean, K), fw.mean, 1e-12)
	checkElems(t, "finalize invstd", download[float64](t, invstd, K), fw.invstd, 1e-12)
	checkElems(t, "finalize scale", download[float64](t, scale, K), fw.scale, 1e-12)
	checkElems(t, "finalize shift", download[float64](t, shift, K), fw.shift, 1e-12)

	// Apply, forward form, on exact CPU coefficients.
	y := buffer[T](t, l.Len())
	must(t, p.Apply(cu.NoStream, dX, 0, y, upload(t, fw.mean), 0, upload(t, fw.scale), upload(t, fw.shift)))
	checkElems(t, "apply forward", f64s(download[T](t, y, l.Len())), fw.y, tol)

	// BackwardSums, BackwardCoeffs, Apply backward form.
	wdx, wsums, wa, wb, wc, _, _ := cpuBackward(l, x, dy, gamma, fw.mom, fw.mean, fw.invstd)
	sums := buffer[float64](t, 2*K)
	must(t, p.BackwardSums(cu.NoStream, dX, dDy, upload(t, fw.mean), sums))
	checkNorm(t, "backward sums", download[float64](t, sums, 2*K), wsums, 1e-12)

	ca, cb, cc := buffer[float64](t, K), buffer[float64](t, K), buffer[float64](t, K)
	must(t, p.BackwardCoeffs(cu.NoStream, upload(t, wsums), dMom, upload(t, gamma), upload(t, fw.invstd), ca, cb, cc))
	checkElems(t, "coeff a", download[float64](t, ca, K), wa, 1e-12)
	checkElems(t, "coeff b", download[float64](t, cb, K), wb, 1e-12)
	checkElems(t, "coeff c", download[float64](t, cc, K), wc, 1e-12)

	dx := buffer[T](t, l.Len())
	must(t, p.Apply(cu.NoStream, dX, dDy, dx, upload(t, fw.mean), upload(t, wa), upload(t, wb), upload(t, wc)))
	checkElems(t, "apply backward", f64s(download[T](t, dx, l.Len())), wdx, tol)

	// UpdateRunning, twice (momentum, then a cumulative-average step).
	rm, rv := randSlice[float64](r, K, 0, 1), randSlice[float64](r, K, 1, 0.1)
	drm, drv := upload(t, rm), upload(t, rv)
	for _, w := range []float64{0.1, 1.0 / 3} {
		kern.UpdateRunning(rm, rv, fw.mom, w)
		must(t, p.UpdateRunning(cu.NoStream, dMom, drm, drv, w))
	}
	checkElems(t, "running mean", download[float64](t, drm, K), rm, 1e-12)
	checkElems(t, "running var", download[float64](t, drv, K), rv, 1e-12)

	// MergeMoments: three "ranks" with different data, in rank order.
	const ranks = 3
	var all []kern.Moments
	want := make([]kern.Moments, K)
	for range ranks {
		xr := randSlice[T](r, l.Len(), r.Float64()*10, 1+r.Float64())
		ms := make([]kern.Moments, K)
		kern.NewPlan[T](kernLayout(l), 0).Stats(xr, ms)
		all = append(all, ms...)
		for k := range want {
			want[k] = want[k].Merge(ms[k])
		}
	}
	out := buffer[float64](t, 3*K)
	must(t, m.MergeMoments(cu.NoStream, upload(t, all), ranks, K, out))
	checkMoments(t, "merged moments", download[float64](t, out, 3*K), want, 1e-12)
	in := upload(t, all) // in place: out = in
	must(t, m.MergeMoments(cu.NoStream, in, ranks, K, in))
	checkMoments(t, "merged moments in place", download[float64](t, in, 3*K), want, 1e-12)
}

// TestSetSegments reuses one plan across segmentations, growing its table.
func TestSetSegments(t *testing.T) {
	m := gpu(t)
	r := newRand(t)
	for _, S := range []int{3, 100} {
		l := Layout{N: 24, C: 6, S: S}
		p := newPlan[float32](t, m, l)
		x := randSlice[float32](r, l.Len(), 1, 2)
		dX := upload(t, x)
		alternate := make([]int, l.N)
		for i := range alternate {
			alternate[i] = i % 2
		}
		ghost := make([]int, l.N)
		ng := kern.GhostSegments(ghost, 5, 0, len(ghost))
		for _, sg := range []struct {
			seg  []int
			nseg int
		}{{nil, 1}, {alternate, 2}, {ghost, ng}, {alternate, 7}, {nil, 0}} {
			must(t, p.SetSegments(cu.NoStream, sg.seg, sg.nseg))
			l.Seg, l.NSeg = sg.seg, sg.nseg
			want := make([]kern.Moments, l.Segments()*l.C)
			kern.NewPlan[float32](kernLayout(l), 0).Stats(x, want)
			mom := buffer[float64](t, 3*p.K())
			must(t, p.Stats(cu.NoStream, dX, mom))
			checkMoments(t, fmt.Sprintf("S=%d seg=%v/%d", S, sg.seg, sg.nseg), download[float64](t, mom, 3*p.K()), want, 1e-12)
		}
	}
}

// TestDeterministic: the same inputs give bitwise the same outputs.
func TestDeterministic(t *testing.T) {
	m := gpu(t)
	r := newRand(t)
	l := Layout{N: 16, C: 8, S: 5000}
	p := newPlan[float32](t, m, l)
	x := upload(t, randSlice[float32](r, l.Len(), 5, 3))
	var first []float32
	var firstMom []float64
	for i := range 3 {
		y, mom := buffer[float32](t, l.Len()), buffer[float64](t, 3*p.K())
		must(t, p.Forward(cu.NoStream, FwdArgs{X: x, Y: y, Eps: 1e-5, Moments: mom}))
		got, gotMom := download[float32](t, y, l.Len()), download[float64](t, mom, 3*p.K())
		if i == 0 {
			first, firstMom = got, gotMom
			continue
		}
		for j := range got {
			if math.Float32bits(got[j]) != math.Float32bits(first[j]) {
				t.Fatalf("run %d: y[%d] = %v, first run %v", i, j, got[j], first[j])
			}
		}
		for j := range gotMom {
			if math.Float64bits(gotMom[j]) != math.Float64bits(firstMom[j]) {
				t.Fatalf("run %d: moments[%d] = %v, first run %v", i, j, gotMom[j], firstMom[j])
			}
		}
	}
}

func TestErrors(t *testing.T) {
	m := gpu(t)
	if _, err := PTX(6, 1); !errors.Is(err, ErrArch) {
		t.Errorf("PTX(6.1): %v, want ErrArch", err)
	}
	for _, cc := range [][2]int{{7, 0}, {7, 5}, {8, 6}, {9, 0}, {10, 0}, {12, 0}} {
		if _, err := PTX(cc[0], cc[1]); err != nil {
			t.Errorf("PTX(%d.%d): %v", cc[0], cc[1], err)
		}
	}
	for _, l := range []Layout{
		{N: -1, C: 2, S: 3},
		{N: 3, C: 2, S: 3, Seg: []int{0, 1}},
		{N: 3, C: 2, S: 3, Seg: []int{0, 1, 2}, NSeg: 2},
	} {
		if _, err := NewPlan(m, l, Float32); !errors.Is(err, ErrArg) {
			t.Errorf("NewPlan(%+v): %v, want ErrArg", l, err)
		}
	}
	if _, err := NewPlan(m, Layout{N: 1, C: 1, S: 1}, Dtype(9)); !errors.Is(err, ErrArg) {
		t.Errorf("NewPlan(dtype 9): %v, want ErrArg", err)
	}
	p := newPlan[float32](t, m, Layout{N: 2, C: 3, S: 4})
	x := buffer[float32](t, 24)
	if err := p.Stats(cu.NoStream, x, 0); !errors.Is(err, ErrArg) {
		t.Errorf("Stats(nil mom): %v, want ErrArg", err)
	}
	if err := p.Apply(cu.NoStream, x, x, x, x, 0, x, x); !errors.Is(err, ErrArg) {
		t.Errorf("Apply(dy without a): %v, want ErrArg", err)
	}
	if err := p.Forward(cu.NoStream, FwdArgs{X: x, Y: x, RunMean: x}); !errors.Is(err, ErrArg) {
		t.Errorf("Forward(RunMean without RunVar): %v, want ErrArg", err)
	}
	if err := p.Backward(cu.NoStream, BwdArgs{X: x, Dy: x, Dx: x}); !errors.Is(err, ErrArg) {
		t.Errorf("Backward(no statistics): %v, want ErrArg", err)
	}
	if err := p.SetSegments(cu.NoStream, []int{0, 5}, 2); !errors.Is(err, ErrArg) {
		t.Errorf("SetSegments(bad id): %v, want ErrArg", err)
	}
	// The plan still works with its old layout after a failed SetSegments.
	mom := buffer[float64](t, 3*p.K())
	must(t, p.Stats(cu.NoStream, x, mom))
	must(t, cu.Synchronize())
	must(t, p.Close())
	if err := p.Stats(cu.NoStream, x, mom); !errors.Is(err, ErrClosed) {
		t.Errorf("Stats after Close: %v, want ErrClosed", err)
	}
	if got := len(KernelNames()); got != 2*int(nTyped)+int(nUntyped) {
		t.Errorf("%d kernel names", got)
	}
}

// TestStdLib loads the kernels the way Gorgonia's engines do after
// gorgonia.AddToStdLib(StdLib()) and runs them through FromQualified.
func TestStdLib(t *testing.T) {
	gpu(t)
	name, data, funcs := StdLib()
	if name != GorgoniaModule || len(funcs) != len(KernelNames()) {
		t.Fatalf("StdLib: %q, %d functions", name, len(funcs))
	}
	mod, err := cu.LoadData(data)
	must(t, err)
	defer mod.Unload()
	fns := map[string]cu.Function{}
	for _, f := range funcs {
		fn, err := mod.Function(f)
		must(t, err)
		fns[name+"."+f] = fn
	}
	m, err := FromQualified(fns, name)
	must(t, err)
	if _, err := FromQualified(fns, "other"); !errors.Is(err, ErrArg) {
		t.Errorf("FromQualified(wrong module): %v, want ErrArg", err)
	}
	r := newRand(t)
	l := Layout{N: 4, C: 3, S: 50}
	x := randSlice[float64](r, l.Len(), 1, 1)
	want := make([]kern.Moments, l.C)
	kern.NewPlan[float64](kernLayout(l), 0).Stats(x, want)
	p := newPlan[float64](t, m, l)
	mom := buffer[float64](t, 3*p.K())
	must(t, p.Stats(cu.NoStream, upload(t, x), mom))
	checkMoments(t, "moments", download[float64](t, mom, 3*p.K()), want, 1e-12)
}
