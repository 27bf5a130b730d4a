package plotutil

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"gonum.org/v1/plot/vg"
)

func TestSavePNGLogX(t *testing.T) {
	path := filepath.Join(t.TempDir(), "logx.png")
	err := SavePNGLogX(path, 12*vg.Centimeter, 6*vg.Centimeter,
		Panel{Title: "error", LogY: true, Series: []Series{
			{Name: "estimate", X: []float64{0, 64, 1024, 60000}, Y: []float64{9, 0.1, 0.03, 0.004}, Points: true},
			{Name: "reference", X: []float64{64, 60000}, Y: []float64{0.05, 0.05}, Dashed: true, Color: 1},
		}},
		Panel{Title: "accuracy", NoLegend: true, Series: []Series{
			{Name: "estimate", X: []float64{64, 60000}, Y: []float64{90, 97}},
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
	if got := positiveX([]Series{{X: []float64{-1, 0, 2}, Y: []float64{1, 2, 3}}}); len(got[0].X) != 1 || got[0].X[0] != 2 || got[0].Y[0] != 3 {
		t.Errorf("positiveX kept %v, %v", got[0].X, got[0].Y)
	}
	if err := SavePNGLogX(path, vg.Centimeter, vg.Centimeter, Panel{Series: []Series{{X: []float64{1}}}}); err == nil {
		t.Error("X and Y of different lengths: no error")
	}
	if err := SavePNGLogX(path, vg.Centimeter, vg.Centimeter); err == nil {
		t.Error("no panels: no error")
	}
}
