package cnn

import (
	"fmt"
	"math"
	"math/rand"

	"github.com/gorgonia-bn/bn/examples/internal/mnist"
	"gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// CrossEntropy returns the mean softmax cross-entropy of logits (N, K)
// against the one-hot targets y (N, K):
// loss = −mean_i Σ_k y_ik · log softmax(logits)_ik.
func CrossEntropy(logits, y *gorgonia.Node) (*gorgonia.Node, error) {
	logp, err := gorgonia.LogSoftMax(logits)
	if err != nil {
		return nil, fmt.Errorf("log-softmax: %w", err)
	}
	picked := gorgonia.Must(gorgonia.HadamardProd(logp, y))
	perSample := gorgonia.Must(gorgonia.Sum(picked, 1))
	return gorgonia.Must(gorgonia.Neg(gorgonia.Must(gorgonia.Mean(perSample)))), nil
}

// Scalar returns a float32 or float64 scalar value (a loss) as float64.
func Scalar(v gorgonia.Value) (float64, error) {
	switch x := v.Data().(type) {
	case float32:
		return float64(x), nil
	case float64:
		return x, nil
	}
	return 0, fmt.Errorf("scalar of type %T", v.Data())
}

// Correct returns how many rows of logits (len(idx) rows of
// mnist.Classes, float32 or float64) have their arg-max (the first, on
// ties) at the label of the matching sample idx of set.
func Correct(logits gorgonia.Value, set *mnist.Set, idx []int) (int, error) {
	var v []float64
	switch d := logits.Data().(type) {
	case []float32:
		v = make([]float64, len(d))
		for i, x := range d {
			v[i] = float64(x)
		}
	case []float64:
		v = d
	default:
		return 0, fmt.Errorf("logits of type %T", d)
	}
	if len(v) < len(idx)*mnist.Classes {
		return 0, fmt.Errorf("%d logits for %d samples", len(v), len(idx))
	}
	ok := 0
	for k, i := range idx {
		row := v[k*mnist.Classes : (k+1)*mnist.Classes]
		best := 0
		for c, x := range row {
			if x > row[best] {
				best = c
			}
		}
		if best == int(set.Labels[i]) {
			ok++
		}
	}
	return ok, nil
}

// HeStd is the standard deviation of He-normal initialization for a layer
// of the given fan-in: √(2/fanIn).
func HeStd(fanIn int) float64 { return math.Sqrt(2 / float64(fanIn)) }

// Normal returns a tensor of type dt and the given shape whose values are
// drawn, in order, as rng.NormFloat64()·std (in float64, then converted).
func Normal(rng *rand.Rand, dt tensor.Dtype, std float64, shape ...int) *tensor.Dense {
	v := make([]float64, tensor.Shape(shape).TotalSize())
	for i := range v {
		v[i] = rng.NormFloat64() * std
	}
	return Dense(dt, v, shape...)
}

// Dense makes a tensor of type dt (tensor.Float32 or tensor.Float64) from
// float64 values.
func Dense(dt tensor.Dtype, v []float64, shape ...int) *tensor.Dense {
	if dt == tensor.Float32 {
		f := make([]float32, len(v))
		for i, x := range v {
			f[i] = float32(x)
		}
		return tensor.New(tensor.WithShape(shape...), tensor.WithBacking(f))
	}
	return tensor.New(tensor.WithShape(shape...), tensor.WithBacking(v))
}
