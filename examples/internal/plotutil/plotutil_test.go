package plotutil

import (
	"bytes"
	"math"
	"os"
	"path/filepath"
	"testing"

	"gonum.org/v1/plot/vg"
)

func TestMovingAverage(t *testing.T) {
	got := MovingAverage([]float64{2, 4, 6, 8}, 2)
	want := []float64{2, 3, 5, 7}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("MovingAverage = %v, want %v", got, want)
		}
	}
}

func TestSavePNG(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.png")
	err := SavePNG(path, 12*vg.Centimeter, 6*vg.Centimeter,
		Panel{Title: "loss", LogY: true, IntegerXTicks: true, Series: []Series{
			{Name: "a", X: []float64{0.5, 1, 2}, Y: []float64{2, 1, 0.5}},
			{Name: "diverged", X: []float64{0.5, 1, 2}, Y: []float64{2, math.Inf(1), math.NaN()}, Dashed: true, Color: 1},
		}},
		Panel{Title: "accuracy", NoLegend: true, YMin: Float(0), YMax: Float(100), Series: []Series{
			{Name: "a", X: []float64{1, 2}, Y: []float64{50, 90}, Points: true},
		}},
	)
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(b, []byte("\x89PNG")) {
		t.Errorf("%s is not a PNG", path)
	}
	if err := SavePNG(path, vg.Centimeter, vg.Centimeter, Panel{Series: []Series{{X: []float64{1}}}}); err == nil {
		t.Error("X and Y of different lengths: no error")
	}
	if err := SavePNG(path, vg.Centimeter, vg.Centimeter); err == nil {
		t.Error("no panels: no error")
	}
}
