package kern

import "math"

// InvStd returns 1/√(var+eps) for the biased variance of m.
func InvStd(m Moments, eps float64) float64 {
	return 1 / math.Sqrt(m.Var()+eps)
}

// UpdateRunning folds the moments of one step into running statistics
// (PyTorch's convention): r ← (1−w)·r + w·stat, with the unbiased variance
// M2/(n−1). Channels with n ≤ 1 are left unchanged. w is the momentum, or
// 1/t for the cumulative average of the t-th step.
func UpdateRunning(mean, variance []float64, ms []Moments, w float64) {
	for c, m := range ms {
		if m.N <= 1 {
			continue
		}
		mean[c] = (1-w)*mean[c] + w*m.Mean
		variance[c] = (1-w)*variance[c] + w*m.UnbiasedVar()
	}
}
