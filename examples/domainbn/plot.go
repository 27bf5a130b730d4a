package main

import (
	"fmt"

	"github.com/gorgonia-bn/bn/examples/internal/plotutil"
	"github.com/gorgonia-bn/bn/examples/internal/stats"
	"gonum.org/v1/plot/vg"
)

// plotResults draws, for every variant, the training loss (moving average
// over the steps, mean over the seeds) and the test accuracy of each column
// of the table: original, inverted, faded before AdaBN, faded after AdaBN
// (x = 1 … 4), mean over the seeds with bars of ± one standard deviation.
// rs[i][j] is variant i with seed j.
func plotResults(path string, rs [][]*result) error {
	title := "training loss (moving average)"
	if len(rs) > 0 && len(rs[0]) > 1 {
		title = fmt.Sprintf("training loss (moving average, mean of %d seeds)", len(rs[0]))
	}
	loss := plotutil.Panel{Title: title, XLabel: "step", YLabel: "cross-entropy", LogY: true}
	acc := plotutil.Panel{Title: fmt.Sprintf("test accuracy: 1 %s, 2 %s, 3 %s, 4 after AdaBN", domainNames[original], domainNames[inverted], domainNames[faded]),
		XLabel: "test column", YLabel: "accuracy (%)", IntegerXTicks: true, NoLegend: true}
	for i, runs := range rs {
		curves := make([][]float64, len(runs))
		cols := make([][]float64, len(runs))
		for j, r := range runs {
			curves[j] = plotutil.MovingAverage(r.stepLoss, max(1, len(r.stepLoss)/30))
			cols[j] = []float64{100 * r.acc[original], 100 * r.acc[inverted], 100 * r.acc[faded], 100 * r.adapted}
		}
		mean := stats.Means(stats.Column(curves))
		x := make([]float64, len(mean))
		for s := range x {
			x[s] = float64(s + 1)
		}
		c := stats.Column(cols)
		name := runs[0].v.describe()
		loss.Series = append(loss.Series, plotutil.Series{Name: name, X: x, Y: mean, Color: i})
		acc.Series = append(acc.Series, plotutil.Series{Name: name, X: []float64{1, 2, 3, 4}, Y: stats.Means(c), Err: stats.SDs(c), Color: i, Points: true})
	}
	return plotutil.SavePNG(path, 26*vg.Centimeter, 10*vg.Centimeter, loss, acc)
}
