package main

import (
	"encoding/csv"
	"fmt"
	"io"
	"math"
	"os"
	"runtime"
	"strconv"
	"strings"

	"github.com/gorgonia-bn/bn/examples/internal/plotutil"
	"github.com/gorgonia-bn/bn/examples/internal/stats"
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

// writeSeedSummary writes, for each configuration (learning rate, BN or
// not), over the seeds of all: the final test accuracy and the number of
// training steps to reach target (a fraction) on the curve set, mean ±
// standard deviation and per seed, and the difference no BN − BN per seed.
func writeSeedSummary(w io.Writer, all [][]*runResult, target float64, every, curveN int) {
	fmt.Fprintf(w, "Over %d seed(s) (mean ± standard deviation; per seed in brackets). Steps to %.0f %%: the first evaluation, every %d steps on the first %d test images with running statistics, at or above %.0f %%; \"> S\": not reached in the S steps of the run.\n\n",
		len(all), 100*target, every, curveN, 100*target)
	fmt.Fprintf(w, "| run | final test accuracy %% (test subset) | steps to %.0f %% | reached | steps per seed |\n", 100*target)
	fmt.Fprintln(w, "|---|---|---|---|---|")
	for j, r0 := range all[0] {
		var acc, steps []float64
		var per []string
		for _, rs := range all {
			r := rs[j]
			acc = append(acc, finalAcc(r))
			if n := r.stepsTo(target); n >= 0 {
				steps = append(steps, float64(n))
				per = append(per, strconv.Itoa(n))
			} else {
				per = append(per, fmt.Sprintf("> %d", len(r.stepLoss)))
			}
		}
		st := "–"
		if len(steps) > 0 {
			st = stats.Of(steps).Format("%.0f", 1)
			if len(steps) < len(all) {
				st += " (reached only)"
			}
		}
		fmt.Fprintf(w, "| %s | %s | %s | %d of %d | %s |\n", r0.cfg.name, stats.Of(acc).Format("%.2f", 100), st, len(steps), len(all), strings.Join(per, ", "))
	}
	// No BN − BN, per learning rate and seed.
	for j := 0; j+1 < len(all[0]); j += 2 {
		var dAcc []float64
		var per []string
		for _, rs := range all {
			b, nb := rs[j], rs[j+1]
			dAcc = append(dAcc, finalAcc(nb)-finalAcc(b))
			sb, snb := b.stepsTo(target), nb.stepsTo(target)
			switch {
			case sb >= 0 && snb >= 0:
				per = append(per, fmt.Sprintf("%+d", snb-sb))
			case sb >= 0:
				per = append(per, fmt.Sprintf("> %+d", len(nb.stepLoss)-sb))
			case snb >= 0:
				per = append(per, fmt.Sprintf("< %+d", snb-len(b.stepLoss)))
			default:
				per = append(per, "neither")
			}
		}
		fmt.Fprintf(w, "\nlr %g, no BN − BN: final test accuracy %s points %s; steps to %.0f %% [%s]\n",
			all[0][j].cfg.lr, stats.Of(dAcc).Format("%+.2f", 100), bracket("%+.2f", percents(dAcc)), 100*target, strings.Join(per, ", "))
	}
}

// finalAcc is a run's test accuracy after its last epoch, NaN if it
// diverged before.
func finalAcc(r *runResult) float64 {
	if len(r.testAcc) == 0 {
		return math.NaN()
	}
	return r.testAcc[len(r.testAcc)-1]
}

// bracket formats vs as "[a, b, …]".
func bracket(format string, vs []float64) string {
	parts := make([]string, len(vs))
	for i, v := range vs {
		parts[i] = fmt.Sprintf(format, v)
	}
	return "[" + strings.Join(parts, ", ") + "]"
}

// writeLosses writes every run's per-step training loss as CSV (run, seed,
// step, loss).
func writeLosses(path string, all [][]*runResult) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	cw := csv.NewWriter(f)
	_ = cw.Write([]string{"run", "seed", "step", "loss"})
	for _, rs := range all {
		for _, r := range rs {
			for i, l := range r.stepLoss {
				_ = cw.Write([]string{r.cfg.name, strconv.FormatInt(r.cfg.seed, 10), strconv.Itoa(i), strconv.FormatFloat(l, 'g', 6, 64)})
			}
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

// plotCurves draws, for every configuration, the training loss per step
// (moving average, mean over the seeds) and the accuracy curve (mean over
// the seeds, error bars ± one standard deviation), with a line at target
// (percent); curveN is the number of test images of the curve.
func plotCurves(path string, all [][]*runResult, target float64, curveN int) error {
	var loss, acc []plotutil.Series
	lrs := map[float64]int{}
	for j, r0 := range all[0] {
		c, ok := lrs[r0.cfg.lr]
		if !ok {
			c = len(lrs)
			lrs[r0.cfg.lr] = c
		}
		var ls, as [][]float64
		var steps []int
		for _, rs := range all {
			r := rs[j]
			ls = append(ls, plotutil.MovingAverage(r.stepLoss, lossSmoothing))
			as = append(as, percents(r.curveAcc))
			if len(r.curveStep) > len(steps) {
				steps = r.curveStep
			}
		}
		lsum := stats.Column(ls) // a diverged run cuts the curve at its end
		x := make([]float64, len(lsum))
		for i := range x {
			x[i] = float64(i + 1)
		}
		name := r0.cfg.name
		loss = append(loss, plotutil.Series{Name: name, X: x, Y: stats.Means(lsum), Color: c, Dashed: !r0.cfg.withBN})
		asum := stats.Column(as)
		ax := make([]float64, len(asum))
		for i := range ax {
			ax[i] = float64(steps[i])
		}
		s := plotutil.Series{Name: name, X: ax, Y: stats.Means(asum), Color: c, Dashed: !r0.cfg.withBN}
		if len(all) > 1 {
			s.Err = stats.SDs(asum)
		}
		acc = append(acc, s)
	}
	if len(acc) > 0 && len(acc[0].X) > 0 {
		x0, x1 := acc[0].X[0], acc[0].X[len(acc[0].X)-1]
		acc = append(acc, plotutil.Series{Name: fmt.Sprintf("target %g %%", target), X: []float64{x0, x1}, Y: []float64{target, target}, Color: 6, Dashed: true})
	}
	seeds, spread := "", ""
	if len(all) > 1 {
		seeds, spread = fmt.Sprintf(", mean of %d seeds", len(all)), " ± sd"
	}
	return plotutil.SavePNG(path, 26*vg.Centimeter, 10*vg.Centimeter,
		plotutil.Panel{
			Title:  fmt.Sprintf("training loss (moving average of %d steps%s)", lossSmoothing, seeds),
			XLabel: "step", YLabel: "cross-entropy", Series: loss, LogY: true,
		},
		plotutil.Panel{
			Title:  fmt.Sprintf("test accuracy (%d images, running statistics)%s%s", curveN, seeds, spread),
			XLabel: "step", YLabel: "%", Series: acc,
			YMin: plotutil.Float(0), YMax: plotutil.Float(100), NoLegend: true,
		},
	)
}
