package main

import (
	"encoding/csv"
	"fmt"
	"io"
	"math"
	"os"
	"strconv"
	"strings"

	"github.com/gorgonia-bn/bn/examples/internal/plotutil"
	"github.com/gorgonia-bn/bn/examples/internal/stats"
	"gonum.org/v1/plot/vg"
)

// meanOf returns the mean of v.
func meanOf(v []float64) float64 {
	s := 0.0
	for _, x := range v {
		s += x
	}
	return s / float64(len(v))
}

// accCell formats a test accuracy in percent, with its range over the draws.
func accCell(e estimate) string {
	if e.draws > 1 {
		return fmt.Sprintf("%.2f (%.2f–%.2f)", 100*e.acc, 100*e.accSpread[0], 100*e.accSpread[1])
	}
	return fmt.Sprintf("%.2f", 100*e.acc)
}

// writeReport writes the training summary and the markdown table.
func writeReport(w io.Writer, r *result) {
	k := min(10, len(r.stepLoss))
	fmt.Fprintf(w, "Training: loss %.3f (mean of the first %d steps) → %.3f (last %d).\n\n",
		meanOf(r.stepLoss[:k]), k, meanOf(r.stepLoss[len(r.stepLoss)-k:]), k)
	fmt.Fprintf(w, "Error of the estimated BN statistics against the population statistics of the %d training images "+
		"(per channel (μ̂−μ)/σ and σ̂²/σ²−1, root mean square over the channels; PreciseBN: mean over %d random draws), "+
		"and test accuracy on %d images with them (PreciseBN: mean, min–max over the draws):\n\n",
		r.truthLen, r.cfg.repeats, r.testLen)
	fmt.Fprint(w, "| statistics | samples |")
	for _, n := range layerNames {
		fmt.Fprintf(w, " %s mean err | %s var err |", n, n)
	}
	fmt.Fprintln(w, " test accuracy % |")
	fmt.Fprint(w, "|---|---|")
	for range layerNames {
		fmt.Fprint(w, "---|---|")
	}
	fmt.Fprintln(w, "---|")
	row := func(name, samples string, e estimate) {
		fmt.Fprintf(w, "| %s | %s |", name, samples)
		for l := range layerNames {
			fmt.Fprintf(w, " %.4f | %.4f |", e.meanErr[l], e.varErr[l])
		}
		fmt.Fprintf(w, " %s |\n", accCell(e))
	}
	row(r.ema.name, "–", r.ema)
	for _, e := range r.others {
		row(e.name, "–", e)
	}
	for _, e := range r.precise {
		row(e.name, strconv.Itoa(e.samples), e)
	}
	fmt.Fprintf(w, "| population (ground truth) | %d |", r.truthLen)
	for range layerNames {
		fmt.Fprint(w, " 0 | 0 |")
	}
	fmt.Fprintf(w, " %.2f |\n", 100*r.truthAcc)
	fmt.Fprintf(w, "| batch statistics of each test batch of %d | – |", r.cfg.batch)
	for range layerNames {
		fmt.Fprint(w, " – | – |")
	}
	fmt.Fprintf(w, " %.2f |\n", 100*r.batchAcc)
}

// writeCSV writes every estimate's errors per layer, with their range over
// the draws, and its test accuracy.
func writeCSV(path string, r *result) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	cw := csv.NewWriter(f)
	g := func(v float64) string { return strconv.FormatFloat(v, 'g', 6, 64) }
	_ = cw.Write([]string{"statistics", "samples", "draws", "layer", "mean_err", "mean_err_min", "mean_err_max", "var_err", "var_err_min", "var_err_max", "test_acc", "test_acc_min", "test_acc_max"})
	for _, e := range append(append([]estimate{r.ema}, r.others...), r.precise...) {
		for l, name := range layerNames {
			_ = cw.Write([]string{e.name, strconv.Itoa(e.samples), strconv.Itoa(e.draws), name,
				g(e.meanErr[l]), g(e.meanSpread[l][0]), g(e.meanSpread[l][1]),
				g(e.varErr[l]), g(e.varSpread[l][0]), g(e.varSpread[l][1]),
				g(e.acc), g(e.accSpread[0]), g(e.accSpread[1])})
		}
	}
	cw.Flush()
	if err := cw.Error(); err != nil {
		f.Close()
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return f.Close()
}

// plotResult draws, against the number of PreciseBN samples (log scales),
// the error of each layer's mean and variance and the test accuracy; the
// EMAs are dashed horizontal lines.
func plotResult(path string, r *result) error {
	xs := make([]float64, len(r.precise))
	for i, e := range r.precise {
		xs[i] = float64(e.samples)
	}
	span := []float64{xs[0], xs[len(xs)-1]}
	flat := func(v float64) []float64 { return []float64{v, v} }
	emas := append([]estimate{r.ema}, r.others...)
	series := func(get func(e estimate) float64) []plotutil.Series {
		y := make([]float64, len(r.precise))
		for i, e := range r.precise {
			y[i] = get(e)
		}
		out := []plotutil.Series{{Name: "PreciseBN", X: xs, Y: y, Color: 0, Points: true}}
		for i, e := range emas {
			out = append(out, plotutil.Series{Name: strings.Replace(e.name, ", recomputed", "", 1), X: span, Y: flat(get(e)), Color: 1 + i, Dashed: true})
		}
		return out
	}
	var panels []plotutil.Panel
	for l, name := range layerNames {
		panels = append(panels,
			plotutil.Panel{Title: name + ": RMS of (μ̂−μ)/σ", XLabel: "PreciseBN samples", YLabel: "error of the mean",
				Series: series(func(e estimate) float64 { return e.meanErr[l] }), LogX: true, LogY: true, NoLegend: l > 0},
			plotutil.Panel{Title: name + ": RMS of σ̂²/σ²−1", XLabel: "PreciseBN samples", YLabel: "error of the variance",
				Series: series(func(e estimate) float64 { return e.varErr[l] }), LogX: true, LogY: true, NoLegend: true})
	}
	// Room above the curves for the legend of the first panel.
	top := 0.0
	for _, sr := range panels[0].Series {
		for _, y := range sr.Y {
			top = math.Max(top, y)
		}
	}
	panels[0].YMax = plotutil.Float(8 * top)
	acc := series(func(e estimate) float64 { return 100 * e.acc })
	acc = append(acc, plotutil.Series{Name: "population", X: span, Y: flat(100 * r.truthAcc), Color: 6, Dashed: true})
	lo, hi := r.truthAcc, r.truthAcc
	for _, e := range append(emas, r.precise...) {
		lo, hi = math.Min(lo, e.acc), math.Max(hi, e.acc)
	}
	panels = append(panels, plotutil.Panel{Title: "test accuracy (population: black)", XLabel: "PreciseBN samples", YLabel: "%", Series: acc,
		LogX: true, YMin: plotutil.Float(math.Floor(100*lo - 0.5)), YMax: plotutil.Float(math.Ceil(100*hi + 0.5)), NoLegend: true})
	return plotutil.SavePNG(path, 44*vg.Centimeter, 11*vg.Centimeter, panels...)
}

// writeSeedSummary writes, over the runs of several seeds, the mean ±
// standard deviation of the test accuracies and of the last layer's
// statistic errors, and of PreciseBN's accuracy gain over the EMA.
func writeSeedSummary(w io.Writer, rs []*result) {
	last := len(layerNames) - 1
	col := func(f func(r *result) float64) stats.Summary {
		v := make([]float64, len(rs))
		for i, r := range rs {
			v[i] = f(r)
		}
		return stats.Of(v)
	}
	whole := func(r *result) estimate { return r.precise[len(r.precise)-1] }
	fmt.Fprintf(w, "Over %d seeds (mean ± standard deviation):\n\n", len(rs))
	fmt.Fprintf(w, "| statistics | test accuracy %% | %s mean err | %s var err |\n|---|---|---|---|\n", layerNames[last], layerNames[last])
	fmt.Fprintf(w, "| %s | %s | %s | %s |\n", rs[0].ema.name, col(func(r *result) float64 { return r.ema.acc }).Format("%.2f", 100),
		col(func(r *result) float64 { return r.ema.meanErr[last] }).Format("%.4f", 1), col(func(r *result) float64 { return r.ema.varErr[last] }).Format("%.4f", 1))
	fmt.Fprintf(w, "| PreciseBN, whole training set | %s | %s | %s |\n", col(func(r *result) float64 { return whole(r).acc }).Format("%.2f", 100),
		col(func(r *result) float64 { return whole(r).meanErr[last] }).Format("%.4f", 1), col(func(r *result) float64 { return whole(r).varErr[last] }).Format("%.4f", 1))
	fmt.Fprintf(w, "| population (ground truth) | %s | 0 | 0 |\n", col(func(r *result) float64 { return r.truthAcc }).Format("%.2f", 100))
	fmt.Fprintf(w, "| batch statistics of each test batch of %d | %s | – | – |\n", rs[0].cfg.batch, col(func(r *result) float64 { return r.batchAcc }).Format("%.2f", 100))
	fmt.Fprintf(w, "\nPreciseBN (whole set) minus EMA, test accuracy: %s points.\n", col(func(r *result) float64 { return whole(r).acc - r.ema.acc }).Format("%+.2f", 100))
}
