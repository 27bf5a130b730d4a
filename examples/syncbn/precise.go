package main

import (
	"fmt"
	"math"
	"strings"

	"github.com/gorgonia-bn/bn/examples/internal/stats"
)

// What -precise reports: the test accuracy with the running statistics
// (what the model uses at test time) against the accuracy with the
// population statistics of the training images, and how far the running
// statistics are from the population statistics, layer by layer.

// layerError is how far the running statistics est of one BN layer are
// from its population statistics pop, in units that matter to the
// normalization. meanErr is the root mean square over the channels of
// (μ̂_c − μ_c)/σ_c; varBias is the mean over the channels of σ̂²_c/σ²_c − 1
// (signed: negative when the running variances are too small, which is
// what averaging the variances of small batches gives: they miss the
// spread of the batch means).
func layerError(estMean, estVar, popMean, popVar []float64) (meanErr, varBias float64) {
	C := len(popMean)
	for c := range C {
		dm := (estMean[c] - popMean[c]) / math.Sqrt(popVar[c])
		meanErr += dm * dm
		varBias += estVar[c]/popVar[c] - 1
	}
	return math.Sqrt(meanErr / float64(C)), varBias / float64(C)
}

// layerErrors returns layerError of every BN layer of r (running against
// population statistics), in forward order.
func layerErrors(r *runResult) (meanErr, varBias []float64) {
	off := 0
	for _, C := range r.channels {
		m, v := layerError(r.stats[off:off+C], r.stats[off+C:off+2*C], r.pop[off:off+C], r.pop[off+C:off+2*C])
		meanErr, varBias = append(meanErr, m), append(varBias, v)
		off += 2 * C
	}
	return meanErr, varBias
}

// preciseTable formats the -precise measurements of one seed's runs (empty
// without them).
func preciseTable(rs []*runResult) string {
	var withPop []*runResult
	for _, r := range rs {
		if r.pop != nil {
			withPop = append(withPop, r)
		}
	}
	if len(withPop) == 0 {
		return ""
	}
	var b strings.Builder
	layers := withPop[0].layers
	fmt.Fprintf(&b, "\nRunning vs population statistics (population: bn.Precise over %d training images, layer by layer; "+
		"per layer: RMS over the channels of (μ̂−μ)/σ, mean over the channels of σ̂²/σ²−1):\n\n", withPop[0].popImages)
	fmt.Fprintf(&b, "| run | test accuracy, running statistics | test accuracy, population statistics | population − running (points) |")
	for _, l := range layers {
		fmt.Fprintf(&b, " %s |", l)
	}
	fmt.Fprintf(&b, "\n|---|---|---|---|%s\n", strings.Repeat("---|", len(layers)))
	for _, r := range withPop {
		fmt.Fprintf(&b, "| %s | %.2f%% | %.2f%% | %+.2f |", r.cfg.name, 100*r.finalAcc, 100*r.popAcc, 100*(r.popAcc-r.finalAcc))
		me, vb := layerErrors(r)
		for i := range me {
			fmt.Fprintf(&b, " %.3f / %+.3f |", me[i], vb[i])
		}
		b.WriteString("\n")
	}
	return b.String()
}

// preciseSeedTable summarises the -precise measurements over the seeds
// (perSeed[i]: the runs of seed first+i; empty without them): per run the
// accuracies with running and population statistics and their difference,
// per-worker BN minus SyncBN with population statistics, and the error of
// the running statistics layer by layer, mean ± standard deviation.
func preciseSeedTable(perSeed [][]*runResult, first int64) string {
	type acc struct {
		run, pop, gap []float64
		meanErr       [][]float64 // [layer][seed]
		varBias       [][]float64
		layers        []string
	}
	by := map[string]*acc{}
	var names []string
	for _, rs := range perSeed {
		for _, r := range rs {
			if r.pop == nil {
				continue
			}
			a, ok := by[r.cfg.name]
			if !ok {
				a = &acc{layers: r.layers, meanErr: make([][]float64, len(r.layers)), varBias: make([][]float64, len(r.layers))}
				by[r.cfg.name] = a
				names = append(names, r.cfg.name)
			}
			a.run, a.pop, a.gap = append(a.run, r.finalAcc), append(a.pop, r.popAcc), append(a.gap, r.popAcc-r.finalAcc)
			me, vb := layerErrors(r)
			for l := range me {
				a.meanErr[l], a.varBias[l] = append(a.meanErr[l], me[l]), append(a.varBias[l], vb[l])
			}
		}
	}
	if len(names) == 0 {
		return ""
	}
	var b strings.Builder
	n := len(by[names[0]].run)
	fmt.Fprintf(&b, "\nRunning vs population statistics over %d seeds (%d … %d), mean ± standard deviation [each seed]:\n\n", n, first, first+int64(n)-1)
	fmt.Fprintf(&b, "| run | test accuracy %%, running statistics | test accuracy %%, population statistics | population − running (points) |\n|---|---|---|---|\n")
	for _, name := range names {
		a := by[name]
		fmt.Fprintf(&b, "| %s | %s %v | %s %v | %s %v |\n", name, stats.Of(a.run).Format("%.2f", 100), percents(a.run),
			stats.Of(a.pop).Format("%.2f", 100), percents(a.pop), stats.Of(a.gap).Format("%+.2f", 100), percents(a.gap))
	}
	if l, s := by["per-worker BN"], by["SyncBN"]; l != nil && s != nil && len(l.pop) == len(s.pop) {
		d := make([]float64, len(l.pop))
		for i := range d {
			d[i] = l.pop[i] - s.pop[i]
		}
		fmt.Fprintf(&b, "\nper-worker BN minus SyncBN, both with population statistics: %s points %v\n", stats.Of(d).Format("%+.2f", 100), percents(d))
	}
	layers := by[names[0]].layers
	fmt.Fprintf(&b, "\nError of the running statistics against the population statistics, per layer: RMS over the channels of (μ̂−μ)/σ; mean over the channels of σ̂²/σ²−1 (mean ± sd over the seeds):\n\n| run |")
	for _, l := range layers {
		fmt.Fprintf(&b, " %s (μ) | %s (σ²) |", l, l)
	}
	fmt.Fprintf(&b, "\n|---|%s\n", strings.Repeat("---|---|", len(layers)))
	for _, name := range names {
		a := by[name]
		fmt.Fprintf(&b, "| %s |", name)
		for l := range a.layers {
			fmt.Fprintf(&b, " %s | %s |", stats.Of(a.meanErr[l]).Format("%.3f", 1), stats.Of(a.varBias[l]).Format("%+.3f", 1))
		}
		b.WriteString("\n")
	}
	return b.String()
}
