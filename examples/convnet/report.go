package main

import (
	"encoding/csv"
	"fmt"
	"io"
	"os"
	"runtime"
	"strconv"
	"strings"

	"github.com/gorgonia-bn/bn/examples/internal/plotutil"
	"gonum.org/v1/plot/vg"
)

// inferRow is the test accuracy of one BN model normalized with the running
// statistics and with the statistics of batches of each size.
type inferRow struct {
	name       string
	running    float64
	batchStats []float64
}

func gomaxprocs() int { return runtime.GOMAXPROCS(0) }

// joinf formats values with format, separated by " → ".
func joinf(format string, vs []float64) string {
	if len(vs) == 0 {
		return "–"
	}
	parts := make([]string, len(vs))
	for i, v := range vs {
		parts[i] = fmt.Sprintf(format, v)
	}
	return strings.Join(parts, " → ")
}

func percents(vs []float64) []float64 {
	out := make([]float64, len(vs))
	for i, v := range vs {
		out[i] = 100 * v
	}
	return out
}

// writeTrainTable writes the markdown table of the training runs.
func writeTrainTable(w io.Writer, results []*runResult) {
	fmt.Fprintln(w, "| run | result | mean training loss, epoch 1 → last | test accuracy % (running stats), epoch 1 → last |")
	fmt.Fprintln(w, "|---|---|---|---|")
	for _, r := range results {
		fmt.Fprintf(w, "| %s | %s | %s | %s |\n", r.cfg.name, outcome(r), joinf("%.3f", r.epochLoss), joinf("%.2f", percents(r.testAcc)))
	}
}

// writeInferTable writes the markdown table of the inference comparison.
func writeInferTable(w io.Writer, rows []inferRow, sizes []int, evalBatch, n int) {
	fmt.Fprintf(w, "Test accuracy %% of the BN models at inference (%d test images; a remainder smaller than a batch is left out):\n\n", n)
	var head, rule strings.Builder
	fmt.Fprintf(&head, "| model | running statistics (bn.Eval, batch %d) |", evalBatch)
	rule.WriteString("|---|---|")
	for _, b := range sizes {
		fmt.Fprintf(&head, " batch statistics, N=%d (bn.EvalBatchStats) |", b)
		rule.WriteString("---|")
	}
	fmt.Fprintln(w, head.String())
	fmt.Fprintln(w, rule.String())
	for _, r := range rows {
		fmt.Fprintf(w, "| %s | %.2f |", r.name, 100*r.running)
		for _, a := range r.batchStats {
			fmt.Fprintf(w, " %.2f |", 100*a)
		}
		fmt.Fprintln(w)
	}
}

// writeLosses writes every run's per-step training loss as CSV (run, step,
// loss).
func writeLosses(path string, results []*runResult) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	cw := csv.NewWriter(f)
	_ = cw.Write([]string{"run", "step", "loss"})
	for _, r := range results {
		for i, l := range r.stepLoss {
			_ = cw.Write([]string{r.cfg.name, strconv.Itoa(i), strconv.FormatFloat(l, 'g', 6, 64)})
		}
	}
	cw.Flush()
	if err := cw.Error(); err != nil {
		f.Close()
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return f.Close()
}

// lossSmoothing is the window of the moving average of the plotted loss.
const lossSmoothing = 20

// plotCurves draws the training loss per step and the test accuracy per
// epoch of every run.
func plotCurves(path string, results []*runResult, stepsPerEpoch int) error {
	var loss, acc []plotutil.Series
	lrs := map[float64]int{}
	for _, r := range results {
		c, ok := lrs[r.cfg.lr]
		if !ok {
			c = len(lrs)
			lrs[r.cfg.lr] = c
		}
		x := make([]float64, len(r.stepLoss))
		for i := range x {
			x[i] = float64(i+1) / float64(stepsPerEpoch)
		}
		loss = append(loss, plotutil.Series{Name: r.cfg.name, X: x, Y: plotutil.MovingAverage(r.stepLoss, lossSmoothing), Color: c, Dashed: !r.cfg.withBN})
		ex := make([]float64, len(r.testAcc))
		for i := range ex {
			ex[i] = float64(i + 1)
		}
		acc = append(acc, plotutil.Series{Name: r.cfg.name, X: ex, Y: percents(r.testAcc), Color: c, Dashed: !r.cfg.withBN, Points: true})
	}
	return plotutil.SavePNG(path, 26*vg.Centimeter, 10*vg.Centimeter,
		plotutil.Panel{
			Title:  fmt.Sprintf("training loss (moving average of %d steps)", lossSmoothing),
			XLabel: "epoch", YLabel: "cross-entropy", Series: loss, LogY: true,
			IntegerXTicks: true,
		},
		plotutil.Panel{
			Title:  "test accuracy, running statistics (lines as on the left)",
			XLabel: "epoch", YLabel: "%", Series: acc,
			YMin: plotutil.Float(0), YMax: plotutil.Float(100),
			IntegerXTicks: true, NoLegend: true,
		},
	)
}
