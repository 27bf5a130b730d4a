package bn

import (
	"gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// Gorgonia v0.9.18's Grad adds a package-level constant node (the seed 1 of
// the backward pass) to the graph and caches that node's hash the first time
// it is used: two goroutines building graphs with Grad at once race on that
// write. Using it once here, at start-up, leaves only reads afterwards.
// (The rest of Gorgonia's graph construction is still not safe for
// concurrent use: see README.)
func init() {
	for _, dt := range []tensor.Dtype{tensor.Float32, tensor.Float64} {
		x := gorgonia.NewScalar(gorgonia.NewGraph(), dt, gorgonia.WithName("x"))
		_, _ = gorgonia.Grad(gorgonia.Must(gorgonia.Mul(x, x)), x)
	}
}
