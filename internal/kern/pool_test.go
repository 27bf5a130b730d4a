package kern

import (
	"testing"
	"time"
)

// TestWorkersParkAfterLastPhase: when other work follows each pass (gaps
// longer than spinFor between a pass's last phase and the next call, as in
// a model), a worker that helped an apply pass parks at once instead of
// spinning; back to back (a benchmark loop, consecutive layers), it spins
// after it, as before, to catch the next call without a wake.
func TestWorkersParkAfterLastPhase(t *testing.T) {
	// Large enough (2 Mi elements, 64 blocks) that the worker joins every
	// call even on a busy machine.
	l := Layout{N: 32, C: 64, S: 1024}
	p := NewPlan[float32](l, 2)
	x, y := make([]float32, l.Len()), make([]float32, l.Len())
	for i := range x {
		x[i] = float32(i % 13)
	}
	ms := make([]Moments, l.C)
	mean, sc, sh := make([]float64, l.C), make([]float64, l.C), make([]float64, l.C)
	pass := func() {
		p.Stats(x, ms)
		p.Apply(x, nil, y, mean, nil, sc, sh)
	}
	paced := func(gap time.Duration) {
		pass()
		if gap > 0 {
			time.Sleep(gap)
		}
	}
	run := func(gap time.Duration, n int) (helps, spins int64) {
		// Settle the gap history with the same pacing: two passes back to
		// back here would make the first counted pass follow short gaps.
		paced(gap)
		paced(gap)
		h0, s0 := helped.Load(), spinsAfterLast.Load()
		for range n {
			paced(gap)
		}
		return helped.Load() - h0, spinsAfterLast.Load() - s0
	}
	helps, spins := run(2*time.Millisecond, 20)
	if helps == 0 {
		t.Skip("the worker never joined a call (machine too busy): nothing to check")
	}
	if spins != 0 {
		t.Errorf("with 2 ms between passes the worker spun after %d of the %d calls it helped; want 0", spins, helps)
	}
	helps, spins = run(0, 200)
	t.Logf("back to back: the worker helped %d calls and spun after %d apply passes", helps, spins)
	if helps > 100 && spins == 0 {
		t.Errorf("back to back, the worker helped %d calls and never spun after an apply pass", helps)
	}
}
