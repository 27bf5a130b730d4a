package bn

import (
	"errors"
	"fmt"
	"math"
	"math/rand"
	"testing"

	"gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// randDense returns a tensor of dt with normal values scaled by s plus off.
func randDense(rng *rand.Rand, dt tensor.Dtype, s, off float64, shape ...int) *tensor.Dense {
	v := make([]float64, tensor.Shape(shape).TotalSize())
	for i := range v {
		v[i] = rng.NormFloat64()*s + off
	}
	return denseOf(dt, shape, v)
}

// trainedLayer returns an Eval layer of C channels with random γ, β and
// running statistics.
func trainedLayer(t *testing.T, rng *rand.Rand, g *gorgonia.ExprGraph, C int, dt tensor.Dtype, opts ...Option) *Layer {
	t.Helper()
	l, err := New(g, C, dt, opts...)
	if err != nil {
		t.Fatal(err)
	}
	mean, variance := make([]float64, C), make([]float64, C)
	for c := range mean {
		mean[c], variance[c] = rng.NormFloat64(), 0.2+rng.Float64()*3
	}
	if err := l.SetRunningStats(mean, variance); err != nil {
		t.Fatal(err)
	}
	if l.gamma != nil {
		setFloats(l.gamma.Value().(tensor.Tensor), randDense(rng, tensor.Float64, 0.5, 1, C).Data().([]float64))
		setFloats(l.beta.Value().(tensor.Tensor), randDense(rng, tensor.Float64, 1, 0, C).Data().([]float64))
	}
	if err := l.SetMode(Eval); err != nil {
		t.Fatal(err)
	}
	return l
}

// TestFold compares the folded conv and linear layers with conv/linear → BN
// (Eval) in one graph: within 1e-12 in float64, 1e-6 (relative to the
// output's scale) in float32.
func TestFold(t *testing.T) {
	for _, dt := range []tensor.Dtype{tensor.Float64, tensor.Float32} {
		for _, tc := range []struct {
			name            string
			C               int
			bias, affine    bool
			eps             float64
			convN, linearIn int
		}{
			{"C1-bias", 1, true, true, 1e-5, 2, 3},
			{"C7-nobias", 7, false, true, 1e-5, 3, 5},
			{"C16-noaffine-eps1e-3", 16, true, false, 1e-3, 1, 9},
		} {
			t.Run(fmt.Sprintf("%v/%s", dt, tc.name), func(t *testing.T) {
				rng := rand.New(rand.NewSource(int64(tc.C)))
				g := gorgonia.NewGraph()
				cin := 3
				x := gorgonia.NewTensor(g, dt, 4, gorgonia.WithShape(tc.convN, cin, 6, 5), gorgonia.WithValue(randDense(rng, dt, 2, 1, tc.convN, cin, 6, 5)))
				w := randDense(rng, dt, 0.5, 0, tc.C, cin, 3, 3)
				var b tensor.Tensor
				if tc.bias {
					b = randDense(rng, dt, 1, 0.5, tc.C)
				}
				opts := []Option{WithAffine(tc.affine), WithEps(tc.eps)}
				lc := trainedLayer(t, rng, g, tc.C, dt, opts...)
				wn := gorgonia.NewTensor(g, dt, 4, gorgonia.WithShape(w.Shape()...), gorgonia.WithValue(w))
				h := gorgonia.Must(gorgonia.Conv2d(x, wn, tensor.Shape{3, 3}, []int{1, 0}, []int{1, 1}, []int{1, 1}))
				if b != nil {
					bn := gorgonia.NewTensor(g, dt, 4, gorgonia.WithShape(1, tc.C, 1, 1), gorgonia.WithValue(tensor.New(tensor.WithShape(1, tc.C, 1, 1), tensor.WithBacking(b.Data()))))
					h = gorgonia.Must(gorgonia.BroadcastAdd(h, bn, nil, []byte{0, 2, 3}))
				}
				yc, err := lc.Apply(h)
				if err != nil {
					t.Fatal(err)
				}
				fc, err := FoldedConv2d(x, lc, w, b, tensor.Shape{3, 3}, []int{1, 0}, []int{1, 1}, []int{1, 1})
				if err != nil {
					t.Fatal(err)
				}

				xl := gorgonia.NewMatrix(g, dt, gorgonia.WithShape(4, tc.linearIn), gorgonia.WithValue(randDense(rng, dt, 1, -1, 4, tc.linearIn)))
				wl := randDense(rng, dt, 1, 0, tc.linearIn, tc.C)
				var bl tensor.Tensor
				hl := gorgonia.Must(gorgonia.Mul(xl, gorgonia.NewMatrix(g, dt, gorgonia.WithShape(tc.linearIn, tc.C), gorgonia.WithValue(wl))))
				if tc.bias {
					bl = randDense(rng, dt, 1, 0, 1, tc.C)
					hl = gorgonia.Must(gorgonia.BroadcastAdd(hl, gorgonia.NewMatrix(g, dt, gorgonia.WithShape(1, tc.C), gorgonia.WithValue(bl)), nil, []byte{0}))
				}
				ll := trainedLayer(t, rng, g, tc.C, dt, opts...)
				yl, err := ll.Apply(hl)
				if err != nil {
					t.Fatal(err)
				}
				fl, err := FoldedLinear(xl, ll, wl, bl)
				if err != nil {
					t.Fatal(err)
				}
				var ycv, fcv, ylv, flv gorgonia.Value
				gorgonia.Read(yc, &ycv)
				gorgonia.Read(fc, &fcv)
				gorgonia.Read(yl, &ylv)
				gorgonia.Read(fl, &flv)
				m := gorgonia.NewTapeMachine(g)
				defer m.Close()
				if err := m.RunAll(); err != nil {
					t.Fatal(err)
				}
				tol := 1e-12
				if dt == tensor.Float32 {
					tol = 1e-6
				}
				for _, p := range [][2]gorgonia.Value{{ycv, fcv}, {ylv, flv}} {
					a, _ := floats(p[0])
					f, _ := floats(p[1])
					scale := 0.0
					for _, v := range a {
						scale = math.Max(scale, math.Abs(v))
					}
					if d := maxDiff(a, f); !(d <= tol*math.Max(1, scale)) {
						t.Errorf("folded vs unfolded: max diff %g (outputs up to %g), tolerance %g", d, scale, tol)
					}
				}
				// w and b are unchanged; b' keeps b's shape.
				_, bf, _ := FoldWeights(ll, wl, bl, 1)
				if bl != nil && !bf.Shape().Eq(bl.Shape()) {
					t.Errorf("b' shape %v, want %v", bf.Shape(), bl.Shape())
				}
			})
		}
	}
}

func TestFoldMisuse(t *testing.T) {
	g := gorgonia.NewGraph()
	rng := rand.New(rand.NewSource(1))
	l := trainedLayer(t, rng, g, 4, tensor.Float64)
	w := randDense(rng, tensor.Float64, 1, 0, 4, 2, 3, 3)
	train, _ := New(g, 4, tensor.Float64)
	notrack, _ := New(g, 4, tensor.Float64, WithTrackRunningStats(false))
	_ = notrack.SetMode(Eval)
	grouped, _ := newGrouped(g, 4, tensor.Float64, 2, false)
	_ = grouped.SetMode(Eval)
	for _, c := range []struct {
		name string
		l    *Layer
		w, b tensor.Tensor
		axis int
		want error
	}{
		{"train-mode", train, w, nil, 0, ErrOption},
		{"no-running-stats", notrack, w, nil, 0, ErrOption},
		{"grouped", grouped, w, nil, 0, ErrOption},
		{"nil-layer", nil, w, nil, 0, ErrOption},
		{"nil-weights", l, nil, nil, 0, ErrShape},
		{"wrong-axis", l, w, nil, 1, ErrShape},
		{"axis-out-of-range", l, w, nil, 4, ErrShape},
		{"bias-size", l, w, randDense(rng, tensor.Float64, 1, 0, 3), 0, ErrShape},
		{"dtype", l, randDense(rng, tensor.Float32, 1, 0, 4, 2), nil, 0, ErrDtype},
	} {
		if _, _, err := FoldWeights(c.l, c.w, c.b, c.axis); !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want %v", c.name, err, c.want)
		}
	}
	if _, err := FoldedLinear(nil, l, w, nil); !errors.Is(err, ErrShape) {
		t.Errorf("nil input: %v", err)
	}
	if _, err := FoldedLinear(gorgonia.NewMatrix(g, tensor.Float64, gorgonia.WithShape(2, 2)), l, w, nil); !errors.Is(err, ErrShape) {
		t.Errorf("4-D linear weights: %v", err)
	}
}

// TestFoldedGradient: the folded bias passes the gradient to the input
// (dy/dx = 1; e.g. for input gradients of a deployed model): the gradient of
// Σ(x·W' + b') with respect to x is W”s row sums.
func TestFoldedGradient(t *testing.T) {
	g := gorgonia.NewGraph()
	rng := rand.New(rand.NewSource(2))
	l := trainedLayer(t, rng, g, 2, tensor.Float64)
	x := gorgonia.NewMatrix(g, tensor.Float64, gorgonia.WithShape(3, 4), gorgonia.WithValue(randDense(rng, tensor.Float64, 1, 0, 3, 4)))
	w := randDense(rng, tensor.Float64, 1, 0, 4, 2)
	y, err := FoldedLinear(x, l, w, nil)
	if err != nil {
		t.Fatal(err)
	}
	grads, err := gorgonia.Grad(gorgonia.Must(gorgonia.Sum(y)), x)
	if err != nil {
		t.Fatal(err)
	}
	m := gorgonia.NewTapeMachine(g)
	defer m.Close()
	if err := m.RunAll(); err != nil {
		t.Fatal(err)
	}
	wf, _, _ := FoldWeights(l, w, nil, 1)
	wv := wf.Data().([]float64)
	got := grads[0].Value().Data().([]float64)
	for i := range 3 {
		for j := range 4 {
			if want := wv[2*j] + wv[2*j+1]; math.Abs(got[i*4+j]-want) > 1e-12 {
				t.Errorf("dx[%d,%d] = %v, want %v", i, j, got[i*4+j], want)
			}
		}
	}
}
