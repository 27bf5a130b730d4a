package bn

import (
	"fmt"
	"os"
	"slices"
	"strconv"
	"testing"
	"time"

	"gorgonia.org/tensor"
)

// TestStepOverheadReport measures BN's wall-time overhead in a training
// step of BenchmarkStep's models with the resolution a 1 % goal needs:
// the three variants of a model (BN then ReLU, fused, a bias in BN's place)
// are built once and run in alternation, blocks of BN_STEP_BLOCK steps
// (default 10) in a rotating order, for BN_STEP_ROUNDS rounds (default
// 30); each round gives the ratio of a variant's time per step to the
// no-BN net's in the same round, and the report is the median and the
// quartiles of those ratios, for wall and process CPU time. Slow drifts of
// a shared machine hit both sides of a ratio alike; what is left is the
// spread the quartiles show. Run only when asked:
//
//	BN_STEP_REPORT=1 go test -run TestStepOverheadReport -v .
func TestStepOverheadReport(t *testing.T) {
	if os.Getenv("BN_STEP_REPORT") == "" {
		t.Skip("set BN_STEP_REPORT=1 to measure (minutes)")
	}
	envInt := func(name string, def int) int {
		if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
			return v
		}
		return def
	}
	rounds, block := envInt("BN_STEP_ROUNDS", 30), envInt("BN_STEP_BLOCK", 10)
	variants := []string{"bn", "nobn"}
	if stepFused != nil {
		variants = []string{"bn", "fused", "nobn"}
	}
	t.Logf("%d rounds of %d steps per variant; ratios to nobn in the same round: median [quartiles]", rounds, block)
	for _, m := range stepModels {
		nets := make([]*stepNet, len(variants))
		for i, v := range variants {
			n, err := buildStep(m, tensor.Float32, v, 1)
			if err != nil {
				t.Fatal(err)
			}
			defer n.vm.Close()
			for range 3 {
				if err := n.step(); err != nil {
					t.Fatal(err)
				}
			}
			nets[i] = n
		}
		wall := make([][]float64, len(variants)) // per variant, per round: s/step
		cpu := make([][]float64, len(variants))
		for r := range rounds {
			for k := range variants {
				i := (k + r) % len(variants)
				c0, t0 := processCPU(), time.Now()
				for range block {
					if err := nets[i].step(); err != nil {
						t.Fatal(err)
					}
				}
				wall[i] = append(wall[i], time.Since(t0).Seconds()/float64(block))
				cpu[i] = append(cpu[i], float64(processCPU()-c0)/1e9/float64(block))
			}
		}
		base := len(variants) - 1
		for i, v := range variants[:base] {
			t.Logf("%-8s %-5s wall %s, CPU %s; ms/step median %.2f vs %.2f (CPU %.2f vs %.2f)", m.name, v,
				overhead(wall[i], wall[base]), overhead(cpu[i], cpu[base]),
				1e3*median(wall[i]), 1e3*median(wall[base]), 1e3*median(cpu[i]), 1e3*median(cpu[base]))
		}
	}
}

// overhead formats the median and quartiles of a[r]/b[r] − 1 in percent.
func overhead(a, b []float64) string {
	q := make([]float64, len(a))
	for r := range a {
		q[r] = 100 * (a[r]/b[r] - 1)
	}
	slices.Sort(q)
	at := func(p float64) float64 { return q[int(p*float64(len(q)-1)+0.5)] }
	return fmt.Sprintf("%+.1f %% [%+.1f, %+.1f]", at(0.5), at(0.25), at(0.75))
}
