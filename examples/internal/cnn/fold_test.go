package cnn

import (
	"math"
	"math/rand"
	"testing"

	"github.com/gorgonia-bn/bn"
	"github.com/gorgonia-bn/bn/examples/internal/mnist"
	"gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// trainedNet returns a net of batch n whose BN layers have random γ, β and
// running statistics, in Eval mode.
func trainedNet(t testing.TB, dt tensor.Dtype, n int) (*Weights, *Net) {
	w, err := NewWeights(dt, 5, 0.1)
	if err != nil {
		t.Fatal(err)
	}
	net, err := New(w, Config{Batch: n})
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewSource(9))
	for _, l := range net.BNs {
		C := l.Channels()
		mean, variance, gam, bet := make([]float64, C), make([]float64, C), make([]float64, C), make([]float64, C)
		for c := range mean {
			mean[c], variance[c] = rng.NormFloat64()*0.3, 0.1+rng.Float64()
			gam[c], bet[c] = 0.5+rng.Float64(), rng.NormFloat64()*0.2
		}
		if err := l.SetRunningStats(mean, variance); err != nil {
			t.Fatal(err)
		}
		if err := gorgonia.Let(l.Gamma(), Dense(dt, gam, C)); err != nil {
			t.Fatal(err)
		}
		if err := gorgonia.Let(l.Beta(), Dense(dt, bet, C)); err != nil {
			t.Fatal(err)
		}
	}
	if err := net.SetMode(bn.Eval); err != nil {
		t.Fatal(err)
	}
	return w, net
}

// TestFolded checks the folded inference graph against the net with BN
// layers in Eval mode: logits within 1e-12 (float64) and 1e-6 (float32),
// relative to their scale.
func TestFolded(t *testing.T) {
	set := randomSet(6, 4)
	idx := []int{0, 1, 2, 3, 4, 5}
	for _, dt := range []tensor.Dtype{tensor.Float64, tensor.Float32} {
		w, net := trainedNet(t, dt, 6)
		folded, err := NewFolded(w, net.BNs, 6)
		if err != nil {
			t.Fatal(err)
		}
		if err := net.Run(set, idx); err != nil {
			t.Fatal(err)
		}
		want := toFloats(net.Logits.Value())
		if err := folded.Run(set, idx); err != nil {
			t.Fatal(err)
		}
		got := toFloats(folded.Logits.Value())
		scale, d := 0.0, 0.0
		for i := range want {
			scale = math.Max(scale, math.Abs(want[i]))
			d = math.Max(d, math.Abs(got[i]-want[i]))
		}
		tol := 1e-12
		if dt == tensor.Float32 {
			tol = 1e-6
		}
		t.Logf("%v: max |folded − unfolded| = %.3g, logits up to %.3g", dt, d, scale)
		if !(d <= tol*math.Max(1, scale)) {
			t.Errorf("%v: max |folded − unfolded| = %g, tolerance %g × %g", dt, d, tol, scale)
		}
		net.Close()
		folded.Close()
	}
	w, net := trainedNet(t, tensor.Float32, 2)
	defer net.Close()
	_ = net.SetMode(bn.Train)
	if _, err := NewFolded(w, net.BNs, 2); err == nil {
		t.Error("folding Train-mode layers: no error")
	}
}

func toFloats(v gorgonia.Value) []float64 {
	switch d := v.Data().(type) {
	case []float32:
		out := make([]float64, len(d))
		for i := range d {
			out[i] = float64(d[i])
		}
		return out
	case []float64:
		return append([]float64(nil), d...)
	}
	return nil
}

// BenchmarkInference times one inference batch of 64 through the net with
// BN layers (Eval) and through the folded graph.
func BenchmarkInference(b *testing.B) {
	const n = 64
	set := randomSet(n, 1)
	idx := mnist.Range(n)
	for _, dt := range []tensor.Dtype{tensor.Float32, tensor.Float64} {
		w, net := trainedNet(b, dt, n)
		folded, err := NewFolded(w, net.BNs, n)
		if err != nil {
			b.Fatal(err)
		}
		for _, c := range []struct {
			name string
			net  *Net
		}{{"bn", net}, {"folded", folded}} {
			b.Run(dt.String()+"/"+c.name, func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					if err := c.net.Run(set, idx); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
		net.Close()
		folded.Close()
	}
}
