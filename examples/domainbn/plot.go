package main

import (
	"fmt"

	"github.com/gorgonia-bn/bn/examples/internal/plotutil"
	"gonum.org/v1/plot/vg"
)

// plotResults draws, for every variant, the training loss (moving average
// over the steps) and the test accuracy of each column of the table:
// original, inverted, faded before AdaBN, faded after AdaBN (x = 1 … 4).
func plotResults(path string, rs []*result) error {
	loss := plotutil.Panel{Title: "training loss (moving average)", XLabel: "step", YLabel: "cross-entropy", LogY: true}
	acc := plotutil.Panel{Title: fmt.Sprintf("test accuracy: 1 %s, 2 %s, 3 %s, 4 after AdaBN", domainNames[original], domainNames[inverted], domainNames[faded]),
		XLabel: "test column", YLabel: "accuracy (%)", IntegerXTicks: true, NoLegend: true}
	for i, r := range rs {
		x := make([]float64, len(r.stepLoss))
		for s := range x {
			x[s] = float64(s + 1)
		}
		loss.Series = append(loss.Series, plotutil.Series{Name: r.v.describe(), X: x, Y: plotutil.MovingAverage(r.stepLoss, max(1, len(r.stepLoss)/30)), Color: i})
		acc.Series = append(acc.Series, plotutil.Series{Name: r.v.describe(), X: []float64{1, 2, 3, 4},
			Y: []float64{100 * r.acc[original], 100 * r.acc[inverted], 100 * r.acc[faded], 100 * r.adapted}, Color: i, Points: true})
	}
	return plotutil.SavePNG(path, 26*vg.Centimeter, 10*vg.Centimeter, loss, acc)
}
