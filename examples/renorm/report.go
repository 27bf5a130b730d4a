package main

import (
	"encoding/csv"
	"fmt"
	"io"
	"math"
	"os"
	"strconv"

	"github.com/gorgonia-bn/bn/examples/internal/plotutil"
	"gonum.org/v1/plot/vg"
)

// stats are the mean, sample standard deviation and range of some values.
type stats struct{ mean, sd, min, max float64 }

func summarize(v []float64) stats {
	s := stats{min: math.Inf(1), max: math.Inf(-1)}
	for _, x := range v {
		s.mean += x
		s.min, s.max = math.Min(s.min, x), math.Max(s.max, x)
	}
	s.mean /= float64(len(v))
	if len(v) > 1 {
		for _, x := range v {
			s.sd += (x - s.mean) * (x - s.mean)
		}
		s.sd = math.Sqrt(s.sd / float64(len(v)-1))
	}
	return s
}

// pct formats s (fractions) in percent: mean ± sd [min, max].
func (s stats) pct() string {
	return fmt.Sprintf("%.2f ± %.2f [%.2f, %.2f]", 100*s.mean, 100*s.sd, 100*s.min, 100*s.max)
}

// finalAcc returns the final accuracies of the runs of one sampling and
// variant, in seed order.
func finalAcc(runs []*runResult, sampling string, renorm bool) []float64 {
	var v []float64
	for _, r := range runs {
		if r.sampling == sampling && r.renorm == renorm {
			v = append(v, r.finalAcc)
		}
	}
	return v
}

var samplingName = map[string]string{
	"iid":   "i.i.d. batches",
	"pairs": "pairs (batch/2 classes × 2 images)",
}

// writeReport writes the table of final test accuracies.
func writeReport(w io.Writer, cfg config, runs []*runResult) {
	fmt.Fprintf(w, "Test accuracy (%%) with the running statistics (bn.Eval) after %d steps of batch %d: mean ± standard deviation [min, max] over %d seeds; BRN − BN per seed (same weights, same batches).\n\n",
		cfg.steps, cfg.batch, len(cfg.seeds))
	fmt.Fprintln(w, "| batches | BN | BRN | BRN − BN |")
	fmt.Fprintln(w, "|---|---|---|---|")
	for _, smp := range cfg.sampling {
		bnAcc, brnAcc := finalAcc(runs, smp, false), finalAcc(runs, smp, true)
		diff := make([]float64, len(bnAcc))
		for i := range diff {
			diff[i] = brnAcc[i] - bnAcc[i]
		}
		fmt.Fprintf(w, "| %s | %s | %s | %s |\n", samplingName[smp], summarize(bnAcc).pct(), summarize(brnAcc).pct(), summarize(diff).pct())
	}
}

// writeCSV writes one row per run: sampling, variant, seed, final accuracy,
// then the curve as step:accuracy pairs.
func writeCSV(path string, runs []*runResult) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	cw := csv.NewWriter(f)
	_ = cw.Write([]string{"sampling", "variant", "seed", "final_test_accuracy", "curve (step:accuracy on the curve's test images)"})
	for _, r := range runs {
		row := []string{r.sampling, variantName(r.renorm), strconv.FormatInt(r.seed, 10), strconv.FormatFloat(r.finalAcc, 'f', 4, 64)}
		for i := range r.curveX {
			row = append(row, fmt.Sprintf("%.0f:%.4f", r.curveX[i], r.curveAcc[i]))
		}
		_ = cw.Write(row)
	}
	cw.Flush()
	if err := cw.Error(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// plotRuns draws one panel per kind of batches: the test accuracy during
// training, mean over the seeds, BN and BRN.
func plotRuns(path string, cfg config, runs []*runResult) error {
	var panels []plotutil.Panel
	for i, smp := range cfg.sampling {
		pn := plotutil.Panel{Title: samplingName[smp], XLabel: "step", YLabel: "test accuracy (running statistics)", NoLegend: i > 0}
		for k, renorm := range []bool{false, true} {
			var x, sum []float64
			n := 0
			for _, r := range runs {
				if r.sampling != smp || r.renorm != renorm {
					continue
				}
				if x == nil {
					x, sum = r.curveX, make([]float64, len(r.curveAcc))
				}
				for j, a := range r.curveAcc {
					sum[j] += a
				}
				n++
			}
			for j := range sum {
				sum[j] /= float64(n)
			}
			pn.Series = append(pn.Series, plotutil.Series{Name: fmt.Sprintf("%s (mean of %d seeds)", variantName(renorm), n), X: x, Y: sum, Color: k, Points: true})
		}
		panels = append(panels, pn)
	}
	return plotutil.SavePNG(path, vg.Length(len(panels))*110*vg.Millimeter, 90*vg.Millimeter, panels...)
}
