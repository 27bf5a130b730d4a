package plotutil

import (
	"errors"
	"fmt"
	"os"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

// SavePNGLogX is SavePNG with a logarithmic X axis on every panel, for
// curves over sizes or counts that span decades. Points with X ≤ 0 are left
// out; IntegerXTicks is ignored.
func SavePNGLogX(path string, width, height vg.Length, panels ...Panel) error {
	if len(panels) == 0 {
		return errors.New("plotutil: no panels")
	}
	row := make([]*plot.Plot, len(panels))
	for i, pn := range panels {
		pn.IntegerXTicks = false
		pn.Series = positiveX(pn.Series)
		p, err := build(pn)
		if err != nil {
			return fmt.Errorf("plotutil: panel %q: %w", pn.Title, err)
		}
		p.X.Scale = plot.LogScale{}
		p.X.Tick.Marker = plot.LogTicks{Prec: -1}
		row[i] = p
	}
	return saveRow(path, width, height, row)
}

// positiveX returns copies of the series without their points at X ≤ 0 (a
// logarithmic axis cannot place them). Series whose X and Y differ in length
// are returned unchanged for build to report.
func positiveX(ss []Series) []Series {
	out := make([]Series, len(ss))
	for i, s := range ss {
		out[i] = s
		if len(s.X) != len(s.Y) {
			continue
		}
		out[i].X, out[i].Y = nil, nil
		for k, x := range s.X {
			if x > 0 {
				out[i].X = append(out[i].X, x)
				out[i].Y = append(out[i].Y, s.Y[k])
			}
		}
	}
	return out
}

// saveRow draws the plots side by side, as SavePNG does, and writes the
// figure to path as PNG.
func saveRow(path string, width, height vg.Length, row []*plot.Plot) error {
	img := vgimg.New(width, height)
	dc := draw.New(img)
	tiles := draw.Tiles{Rows: 1, Cols: len(row), PadX: vg.Millimeter * 4, PadTop: vg.Millimeter * 2, PadBottom: vg.Millimeter * 2, PadLeft: vg.Millimeter * 2, PadRight: vg.Millimeter * 2}
	canvases := plot.Align([][]*plot.Plot{row}, tiles, dc)
	for i, p := range row {
		p.Draw(canvases[0][i])
	}
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("plotutil: %w", err)
	}
	if _, err := (vgimg.PngCanvas{Canvas: img}).WriteTo(f); err != nil {
		f.Close()
		return fmt.Errorf("plotutil: writing %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("plotutil: %w", err)
	}
	return nil
}
