// Package plotutil draws the examples' line charts (training curves) with
// gonum.org/v1/plot and writes them as PNG.
package plotutil

import (
	"errors"
	"fmt"
	"image/color"
	"math"
	"os"
	"strconv"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

// Series is one curve. Points whose X or Y is NaN or infinite are left out
// (a diverged run simply ends there), and so are those a logarithmic axis
// cannot place (≤ 0).
type Series struct {
	Name   string
	X, Y   []float64
	Color  int  // index into the palette
	Dashed bool // dashed line
	Points bool // mark the points too
	// Err, if set (one per point), draws an error bar of ±Err[i] at each
	// point: the spread over seeds.
	Err []float64
}

// Panel is one chart of a figure.
type Panel struct {
	Title, XLabel, YLabel string
	Series                []Series
	// LogX makes the X axis logarithmic, for curves over sizes or counts
	// that span decades: points with X ≤ 0 are left out and IntegerXTicks
	// is ignored.
	LogX          bool
	LogY          bool     // logarithmic Y axis (positive values only)
	YMin, YMax    *float64 // fixed Y range; nil: from the data
	IntegerXTicks bool     // major X ticks at the integers only (epochs)
	NoLegend      bool     // no legend (another panel has it)
	// XTicks, if set, are the major X ticks, labelled with their values
	// (e.g. the batch sizes of a sweep on a logarithmic axis, where the
	// default ticks label only the powers of ten).
	XTicks []float64
}

// palette is a colour-blind-friendly set (Okabe–Ito).
var palette = []color.Color{
	color.RGBA{0, 114, 178, 255},   // blue
	color.RGBA{213, 94, 0, 255},    // vermillion
	color.RGBA{0, 158, 115, 255},   // green
	color.RGBA{204, 121, 167, 255}, // purple
	color.RGBA{230, 159, 0, 255},   // orange
	color.RGBA{86, 180, 233, 255},  // sky blue
	color.RGBA{0, 0, 0, 255},       // black
}

// Float returns a pointer to v, for Panel.YMin and YMax.
func Float(v float64) *float64 { return &v }

// SavePNG draws the panels side by side in one figure of the given size and
// writes it to path as PNG.
func SavePNG(path string, width, height vg.Length, panels ...Panel) error {
	if len(panels) == 0 {
		return errors.New("plotutil: no panels")
	}
	row := make([]*plot.Plot, len(panels))
	for i, pn := range panels {
		p, err := build(pn)
		if err != nil {
			return fmt.Errorf("plotutil: panel %q: %w", pn.Title, err)
		}
		row[i] = p
	}
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

// build makes the plot of one panel.
func build(pn Panel) (*plot.Plot, error) {
	p := plot.New()
	p.Title.Text = pn.Title
	p.X.Label.Text = pn.XLabel
	p.Y.Label.Text = pn.YLabel
	p.Add(plotter.NewGrid())
	p.Legend.Top = true
	switch {
	case pn.LogX:
		p.X.Scale = plot.LogScale{}
		p.X.Tick.Marker = plot.LogTicks{Prec: -1}
	case pn.IntegerXTicks:
		p.X.Tick.Marker = integerTicks{}
	}
	if pn.XTicks != nil {
		ticks := make(plot.ConstantTicks, len(pn.XTicks))
		for i, x := range pn.XTicks {
			ticks[i] = plot.Tick{Value: x, Label: strconv.FormatFloat(x, 'g', -1, 64)}
		}
		p.X.Tick.Marker = ticks
	}
	if pn.LogY {
		p.Y.Scale = plot.LogScale{}
		p.Y.Tick.Marker = plot.LogTicks{Prec: -1}
	}
	for _, s := range pn.Series {
		if len(s.X) != len(s.Y) {
			return nil, fmt.Errorf("series %q: %d X and %d Y values", s.Name, len(s.X), len(s.Y))
		}
		if s.Err != nil && len(s.Err) != len(s.Y) {
			return nil, fmt.Errorf("series %q: %d error bars for %d points", s.Name, len(s.Err), len(s.Y))
		}
		xys := make(plotter.XYs, 0, len(s.X))
		var errs plotter.YErrors
		for i := range s.X {
			x, y := s.X[i], s.Y[i]
			if !pn.drawable(x, y) {
				continue
			}
			xys = append(xys, plotter.XY{X: x, Y: y})
			if s.Err != nil {
				e := s.Err[i]
				if !finite(e) || pn.LogY && y-e <= 0 {
					e = 0
				}
				errs = append(errs, struct{ Low, High float64 }{e, e})
			}
		}
		if len(xys) == 0 {
			continue
		}
		c := palette[((s.Color%len(palette))+len(palette))%len(palette)]
		line, err := plotter.NewLine(xys)
		if err != nil {
			return nil, fmt.Errorf("series %q: %w", s.Name, err)
		}
		line.Color = c
		line.Width = vg.Points(1.5)
		if s.Dashed {
			line.Dashes = []vg.Length{vg.Points(5), vg.Points(3)}
		}
		p.Add(line)
		if s.Err != nil {
			bars, err := plotter.NewYErrorBars(struct {
				plotter.XYs
				plotter.YErrors
			}{xys, errs})
			if err != nil {
				return nil, fmt.Errorf("series %q: %w", s.Name, err)
			}
			bars.Color = c
			bars.LineStyle.Color = c
			p.Add(bars)
		}
		if s.Points {
			pts, err := plotter.NewScatter(xys)
			if err != nil {
				return nil, fmt.Errorf("series %q: %w", s.Name, err)
			}
			pts.Color = c
			pts.Shape = draw.CircleGlyph{}
			pts.Radius = vg.Points(2.5)
			p.Add(pts)
			if !pn.NoLegend {
				p.Legend.Add(s.Name, line, pts)
			}
		} else if !pn.NoLegend {
			p.Legend.Add(s.Name, line)
		}
	}
	if pn.YMin != nil {
		p.Y.Min = *pn.YMin
	}
	if pn.YMax != nil {
		p.Y.Max = *pn.YMax
	}
	return p, nil
}

// drawable reports whether the panel shows the point (x, y): both finite,
// and positive on a logarithmic axis.
func (pn Panel) drawable(x, y float64) bool {
	return finite(x) && finite(y) && !(pn.LogX && x <= 0) && !(pn.LogY && y <= 0)
}

func finite(v float64) bool { return !math.IsNaN(v) && !math.IsInf(v, 0) }

// MovingAverage returns the trailing mean of y over windows of w values
// (fewer at the start); non-finite values propagate, so a divergence stays
// visible as the end of the curve.
func MovingAverage(y []float64, w int) []float64 {
	if w < 1 {
		w = 1
	}
	out := make([]float64, len(y))
	sum := 0.0
	for i, v := range y {
		sum += v
		if i >= w {
			sum -= y[i-w]
		}
		out[i] = sum / float64(min(i+1, w))
	}
	return out
}

// integerTicks marks every integer of the axis range (every k-th one when
// there are more than 10).
type integerTicks struct{}

// Ticks returns the ticks at the integers in [lo, hi].
func (integerTicks) Ticks(lo, hi float64) []plot.Tick {
	first, last := math.Ceil(lo), math.Floor(hi)
	step := math.Max(1, math.Ceil((last-first+1)/10))
	var ts []plot.Tick
	for v := first; v <= last; v += step {
		ts = append(ts, plot.Tick{Value: v, Label: strconv.FormatFloat(v, 'f', 0, 64)})
	}
	return ts
}
