package plotutil

import (
	"bytes"
	"math"
	"os"
	"path/filepath"
	"strings"
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

// TestSavePNG draws a figure with integer X ticks and one with a
// logarithmic X axis, and checks the errors.
func TestSavePNG(t *testing.T) {
	dir := t.TempDir()
	figures := map[string][]Panel{
		"linear.png": {
			{Title: "loss", LogY: true, IntegerXTicks: true, Series: []Series{
				{Name: "a", X: []float64{0.5, 1, 2}, Y: []float64{2, 1, 0.5}},
				{Name: "diverged", X: []float64{0.5, 1, 2}, Y: []float64{2, math.Inf(1), math.NaN()}, Dashed: true, Color: 1},
			}},
			{Title: "accuracy", NoLegend: true, YMin: Float(0), YMax: Float(100), Series: []Series{
				{Name: "a", X: []float64{1, 2}, Y: []float64{50, 90}, Points: true},
				{Name: "spread", X: []float64{1, 2, 3}, Y: []float64{40, 80, math.NaN()}, Err: []float64{3, math.NaN(), 1}},
			}},
		},
		"logx.png": {
			{Title: "error", LogX: true, LogY: true, IntegerXTicks: true, Series: []Series{
				{Name: "estimate", X: []float64{0, 64, 1024, 60000}, Y: []float64{9, 0.1, 0.03, 0.004}, Points: true},
				{Name: "reference", X: []float64{64, 60000}, Y: []float64{0.05, 0.05}, Dashed: true, Color: 1},
			}},
			{Title: "accuracy", LogX: true, NoLegend: true, XTicks: []float64{64, 1024, 60000}, Series: []Series{
				{Name: "estimate", X: []float64{64, 60000}, Y: []float64{90, 97}},
			}},
		},
	}
	for name, panels := range figures {
		path := filepath.Join(dir, name)
		if err := SavePNG(path, 12*vg.Centimeter, 6*vg.Centimeter, panels...); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.HasPrefix(b, []byte("\x89PNG")) {
			t.Errorf("%s is not a PNG", path)
		}
	}
	path := filepath.Join(dir, "bad.png")
	if err := SavePNG(path, vg.Centimeter, vg.Centimeter, Panel{Series: []Series{{X: []float64{1}}}}); err == nil {
		t.Error("X and Y of different lengths: no error")
	}
	if err := SavePNG(path, vg.Centimeter, vg.Centimeter, Panel{Series: []Series{{X: []float64{1}, Y: []float64{1}, Err: []float64{1, 2}}}}); err == nil {
		t.Error("error bars of another length: no error")
	}
	if err := SavePNG(path, vg.Centimeter, vg.Centimeter); err == nil {
		t.Error("no panels: no error")
	}
}

func TestDrawable(t *testing.T) {
	for _, c := range []struct {
		pn   Panel
		x, y float64
		want bool
	}{
		{Panel{}, -1, -1, true},
		{Panel{}, math.NaN(), 1, false},
		{Panel{}, 1, math.Inf(-1), false},
		{Panel{LogX: true}, 0, 1, false},
		{Panel{LogX: true}, 2, -1, true},
		{Panel{LogY: true}, -1, 0, false},
		{Panel{LogX: true, LogY: true}, 2, 3, true},
	} {
		if got := c.pn.drawable(c.x, c.y); got != c.want {
			t.Errorf("LogX %v, LogY %v: drawable(%v, %v) = %v", c.pn.LogX, c.pn.LogY, c.x, c.y, got)
		}
	}
}

func TestXTicks(t *testing.T) {
	p, err := build(Panel{LogX: true, XTicks: []float64{32, 128, 1024}, Series: []Series{{X: []float64{32, 1024}, Y: []float64{1, 2}}}})
	if err != nil {
		t.Fatal(err)
	}
	var labels []string
	for _, tk := range p.X.Tick.Marker.Ticks(32, 1024) {
		labels = append(labels, tk.Label)
	}
	if got := strings.Join(labels, ","); got != "32,128,1024" {
		t.Errorf("X tick labels %q, want 32,128,1024", got)
	}
}
