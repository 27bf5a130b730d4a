package cnn

import (
	"math"
	"math/rand"
	"testing"

	"github.com/gorgonia-bn/bn"
	"github.com/gorgonia-bn/bn/examples/internal/mnist"
	"gorgonia.org/tensor"
)

func TestDeepWeights(t *testing.T) {
	for _, d := range []int{-1, MaxDepth + 1} {
		if _, err := NewDeepWeights(tensor.Float64, 1, ClassifierStd, d); err == nil {
			t.Errorf("depth %d: no error", d)
		}
	}
	a, _ := NewWeights(tensor.Float64, 3, ClassifierStd)
	d, err := NewDeepWeights(tensor.Float64, 3, ClassifierStd, 2)
	if err != nil {
		t.Fatal(err)
	}
	if a.Depth() != 0 || d.Depth() != 2 || len(d.BX) != 2 {
		t.Fatalf("depths %d, %d", a.Depth(), d.Depth())
	}
	// The first draws are NewWeights'; the extra blocks' follow WF's.
	rng := rand.New(rand.NewSource(3))
	for _, w := range []struct {
		d   *tensor.Dense
		std float64
	}{{d.W1, HeStd(9)}, {d.W2, HeStd(C1 * 9)}, {d.WF, ClassifierStd}, {d.WX[0], HeStd(C2 * 9)}, {d.WX[1], HeStd(C2 * 9)}} {
		for i, x := range w.d.Data().([]float64) {
			if want := rng.NormFloat64() * w.std; x != want {
				t.Fatalf("%v value %d: %v, want %v", w.d.Shape(), i, x, want)
			}
		}
	}
	for i, x := range a.WF.Data().([]float64) {
		if d.WF.Data().([]float64)[i] != x {
			t.Fatal("WF differs from NewWeights'")
		}
	}
	for i := range d.WX {
		if !d.WX[i].Shape().Eq(tensor.Shape{C2, C2, Kernel, Kernel}) || !d.BX[i].Shape().Eq(tensor.Shape{1, C2, 1, 1}) {
			t.Errorf("block %d: shapes %v, %v", i, d.WX[i].Shape(), d.BX[i].Shape())
		}
	}
	if got := BNNames(2); len(got) != 4 || got[2] != "bn3" || got[3] != "bn4" || BNNames(0)[1] != "bn2" {
		t.Errorf("BNNames(2) = %v", got)
	}
}

func TestParseActivation(t *testing.T) {
	for _, a := range []Activation{ReLU, Sigmoid, Tanh} {
		if got, err := ParseActivation(a.String()); err != nil || got != a {
			t.Errorf("%v: %v, %v", a, got, err)
		}
	}
	for _, s := range []string{"", "Relu", "softplus"} {
		if _, err := ParseActivation(s); err == nil {
			t.Errorf("%q: no error", s)
		}
	}
	if s := Activation(7).String(); s != "Activation(7)" {
		t.Errorf("String = %q", s)
	}
}

// TestDeepNetBadConfig checks the errors of New for depths and activations.
func TestDeepNetBadConfig(t *testing.T) {
	w, _ := NewDeepWeights(tensor.Float64, 1, ClassifierStd, 1)
	for _, cfg := range []Config{{Batch: 2}, {Batch: 2, Depth: 2}, {Batch: 2, Depth: 1, Act: Activation(3)}, {Batch: 2, Depth: 1, Act: -1}} {
		if _, err := New(w, cfg); err == nil {
			t.Errorf("%+v: no error", cfg)
		}
	}
	if _, err := NewFolded(w, nil, 2); err == nil {
		t.Error("NewFolded of a deep net: no error")
	}
}

// naiveLogits computes the logits of the net of w on the images idx of
// set, in float64 loops: conv 3×3 (padding 1) → BN with batch statistics
// (γ = 1, β = 0, ε = 1e-5) or bias → act → max-pool 2, twice, then the
// extra blocks without pool, then the linear layer.
func naiveLogits(w *Weights, act Activation, noBN bool, set *mnist.Set, idx []int) [][]float64 {
	f := func(d *tensor.Dense) []float64 { return d.Data().([]float64) }
	n := len(idx)
	// a[s][c][y][x]
	type img = [][][]float64
	x := make([]img, n)
	xt := tensor.New(tensor.Of(tensor.Float64), tensor.WithShape(n, 1, mnist.Rows, mnist.Cols))
	if err := set.FillImages(xt, idx); err != nil {
		panic(err)
	}
	px := f(xt)
	for s := range x {
		x[s] = [][][]float64{make([][]float64, mnist.Rows)}
		for r := range mnist.Rows {
			x[s][0][r] = px[(s*mnist.Rows+r)*mnist.Cols : (s*mnist.Rows+r+1)*mnist.Cols]
		}
	}
	block := func(in []img, wt, b []float64, cout int, pool bool) []img {
		cin, h, wd := len(in[0]), len(in[0][0]), len(in[0][0][0])
		out := make([]img, n)
		for s := range out {
			out[s] = make(img, cout)
			for o := range cout {
				out[s][o] = make([][]float64, h)
				for r := range h {
					out[s][o][r] = make([]float64, wd)
					for c := range wd {
						sum := 0.0
						if noBN {
							sum = b[o]
						}
						for i := range cin {
							for ky := range Kernel {
								for kx := range Kernel {
									yy, xx := r+ky-1, c+kx-1
									if yy >= 0 && yy < h && xx >= 0 && xx < wd {
										sum += wt[((o*cin+i)*Kernel+ky)*Kernel+kx] * in[s][i][yy][xx]
									}
								}
							}
						}
						out[s][o][r][c] = sum
					}
				}
			}
		}
		for o := range cout {
			if !noBN { // two-pass batch statistics over N, H, W
				m, v, cnt := 0.0, 0.0, float64(n*h*wd)
				for s := range out {
					for r := range h {
						for _, z := range out[s][o][r] {
							m += z
						}
					}
				}
				m /= cnt
				for s := range out {
					for r := range h {
						for _, z := range out[s][o][r] {
							v += (z - m) * (z - m)
						}
					}
				}
				v /= cnt
				for s := range out {
					for r := range h {
						for c := range wd {
							out[s][o][r][c] = (out[s][o][r][c] - m) / math.Sqrt(v+1e-5)
						}
					}
				}
			}
			for s := range out {
				for r := range h {
					for c, z := range out[s][o][r] {
						switch act {
						case ReLU:
							z = math.Max(z, 0)
						case Sigmoid:
							z = 1 / (1 + math.Exp(-z))
						case Tanh:
							z = math.Tanh(z)
						}
						out[s][o][r][c] = z
					}
				}
			}
		}
		if !pool {
			return out
		}
		for s := range out {
			for o := range cout {
				p := make([][]float64, h/2)
				for r := range p {
					p[r] = make([]float64, wd/2)
					for c := range p[r] {
						a := out[s][o]
						p[r][c] = math.Max(math.Max(a[2*r][2*c], a[2*r][2*c+1]), math.Max(a[2*r+1][2*c], a[2*r+1][2*c+1]))
					}
				}
				out[s][o] = p
			}
		}
		return out
	}
	h := block(x, f(w.W1), f(w.B1), C1, true)
	h = block(h, f(w.W2), f(w.B2), C2, true)
	for i := range w.WX {
		h = block(h, f(w.WX[i]), f(w.BX[i]), C2, false)
	}
	logits := make([][]float64, n)
	wf, bf := f(w.WF), f(w.BF)
	for s := range logits {
		logits[s] = append([]float64(nil), bf...)
		k := 0
		for c := range C2 {
			for r := range 7 {
				for col := range 7 {
					for j := range mnist.Classes {
						logits[s][j] += h[s][c][r][col] * wf[k*mnist.Classes+j]
					}
					k++
				}
			}
		}
	}
	return logits
}

// TestDeepNetMatchesNaive checks the logits of every activation, depth 0
// and 2, with and without BN (training mode: batch statistics), against
// naiveLogits, on random weights with nonzero biases.
func TestDeepNetMatchesNaive(t *testing.T) {
	set := randomSet(3, 5)
	idx := []int{0, 1, 2}
	for _, depth := range []int{0, 2} {
		for _, act := range []Activation{ReLU, Sigmoid, Tanh} {
			for _, noBN := range []bool{false, true} {
				w, _ := NewDeepWeights(tensor.Float64, 9, 0.1, depth)
				rng := rand.New(rand.NewSource(11))
				for _, b := range append([]*tensor.Dense{w.B1, w.B2, w.BF}, w.BX...) {
					for i := range b.Data().([]float64) {
						b.Data().([]float64)[i] = rng.NormFloat64()
					}
				}
				for _, fused := range []bool{false, true} {
					n, err := New(w, Config{Batch: 3, NoBN: noBN, Act: act, Depth: depth, Fused: fused, Train: true})
					if err != nil {
						t.Fatal(err)
					}
					if want := 2 + depth; !noBN && len(n.BNs) != want || noBN && len(n.BNs) != 0 {
						t.Fatalf("%d BN layers", len(n.BNs))
					}
					if !noBN {
						if err := n.SetMode(bn.Train); err != nil {
							t.Fatal(err)
						}
					}
					if err := n.Run(set, idx); err != nil {
						t.Fatal(err)
					}
					got := n.Logits.Value().Data().([]float64)
					want := naiveLogits(w, act, noBN, set, idx)
					for s := range want {
						for j, v := range want[s] {
							if g := got[s*mnist.Classes+j]; math.Abs(g-v) > 1e-9*(1+math.Abs(v)) {
								t.Fatalf("depth %d %v noBN %v fused %v: logit [%d][%d] = %v, want %v", depth, act, noBN, fused, s, j, g, v)
							}
						}
					}
					n.Close()
				}
			}
		}
	}
}

// TestDeepNetTrains checks that SGD lowers the loss of a fixed batch for
// the saturating activations with extra blocks, with and without BN.
func TestDeepNetTrains(t *testing.T) {
	set := randomSet(8, 6)
	idx := []int{0, 1, 2, 3, 4, 5, 6, 7}
	for _, act := range []Activation{Sigmoid, Tanh} {
		for _, noBN := range []bool{false, true} {
			w, _ := NewDeepWeights(tensor.Float32, 2, 0.1, 2)
			n, err := New(w, Config{Batch: 8, NoBN: noBN, Act: act, Depth: 2, Train: true})
			if err != nil {
				t.Fatal(err)
			}
			sgd, _ := NewSGD(n, 0.05)
			first, err := sgd.Step(set, idx)
			if err != nil {
				t.Fatal(err)
			}
			last := first
			for range 30 {
				if last, err = sgd.Step(set, idx); err != nil {
					t.Fatal(err)
				}
			}
			if !(last < 0.7*first) {
				t.Errorf("%v noBN %v: loss %v → %v", act, noBN, first, last)
			}
			n.Close()
		}
	}
}
