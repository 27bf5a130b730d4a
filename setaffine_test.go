package bn

import (
	"errors"
	"math"
	"testing"

	"gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

func TestSetAffine(t *testing.T) {
	g := gorgonia.NewGraph()
	l, _ := New(g, 3, tensor.Float32)
	f32 := func(v ...float32) tensor.Tensor { return tensor.New(tensor.WithShape(len(v)), tensor.WithBacking(v)) }
	gam, bet := f32(1, 2, 3), f32(-1, 0, 1)
	if err := l.SetAffine(gam, bet); err != nil {
		t.Fatal(err)
	}
	if got := l.Gamma().Value().Data().([]float32); got[2] != 3 || l.Beta().Value().Data().([]float32)[0] != -1 {
		t.Errorf("γ %v β %v", got, l.Beta().Value())
	}
	noAff, _ := New(g, 3, tensor.Float32, WithAffine(false))
	grouped, _ := newGrouped(g, 3, tensor.Float32, 2, true)
	for _, c := range []struct {
		name     string
		l        *Layer
		gam, bet tensor.Tensor
		want     error
	}{
		{"float64", l, tensor.New(tensor.WithShape(3), tensor.WithBacking([]float64{1, 2, 3})), bet, ErrDtype},
		{"short-beta", l, gam, f32(1, 2), ErrShape},
		{"matrix", l, tensor.New(tensor.WithShape(1, 3), tensor.WithBacking([]float32{1, 2, 3})), bet, ErrShape},
		{"nil", l, nil, bet, ErrShape},
		{"nan", l, gam, f32(0, float32(math.NaN()), 0), ErrState},
		{"no-affine", noAff, gam, bet, ErrOption},
		{"nil-layer", nil, gam, bet, ErrOption},
		{"grouped-wants-(2,3)", grouped, gam, bet, ErrShape},
	} {
		if err := c.l.SetAffine(c.gam, c.bet); !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want %v", c.name, err, c.want)
		}
	}
	if got := l.Gamma().Value().Data().([]float32); got[0] != 1 || got[2] != 3 {
		t.Errorf("a rejected SetAffine changed γ: %v", got)
	}
	g2 := tensor.New(tensor.WithShape(2, 3), tensor.WithBacking([]float32{1, 2, 3, 4, 5, 6}))
	if err := grouped.SetAffine(g2, g2); err != nil {
		t.Errorf("grouped (2,3): %v", err)
	}
}
