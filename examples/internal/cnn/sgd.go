package cnn

import (
	"errors"
	"fmt"
	"math"

	"github.com/gorgonia-bn/bn/examples/internal/mnist"
	"gorgonia.org/gorgonia"
)

// SGD trains a training net (Config.Train) with plain stochastic gradient
// descent: one Step per batch.
type SGD struct {
	net    *Net
	solver gorgonia.Solver
	grads  []gorgonia.ValueGrad
}

// ErrDiverged reports a loss that is NaN or infinite (the learning rate is
// too large); the weights were not updated.
var ErrDiverged = errors.New("training diverged")

// NewSGD returns plain SGD at learning rate lr on the learnables of n, which
// must be a training net.
func NewSGD(n *Net, lr float64) (*SGD, error) {
	if !(lr > 0) || math.IsInf(lr, 0) {
		return nil, fmt.Errorf("learning rate %v, want > 0", lr)
	}
	return &SGD{net: n, solver: gorgonia.NewVanillaSolver(gorgonia.WithLearnRate(lr)), grads: gorgonia.NodesToValueGrads(n.Learnables)}, nil
}

// Step runs the net on the samples idx of set (forward and backward, the
// BN layers in their current mode) and updates the weights. It returns the
// loss of the batch; a non-finite loss is ErrDiverged.
func (s *SGD) Step(set *mnist.Set, idx []int) (float64, error) {
	if err := s.net.Run(set, idx); err != nil {
		return 0, err
	}
	loss, err := s.net.LossValue()
	if err != nil {
		return 0, err
	}
	if math.IsNaN(loss) || math.IsInf(loss, 0) {
		return loss, fmt.Errorf("%w: loss %v", ErrDiverged, loss)
	}
	if err := s.solver.Step(s.grads); err != nil {
		return loss, fmt.Errorf("solver: %w", err)
	}
	return loss, nil
}

// SetValues writes v, laid out as Values returns it, into the learnables
// of n, in place (so every net built on the same Weights sees the new
// weights; γ and β are the net's own).
func (n *Net) SetValues(v []float64) error {
	total := 0
	for _, p := range n.Learnables {
		total += p.Shape().TotalSize()
	}
	if len(v) != total {
		return fmt.Errorf("%d values for %d learnable elements", len(v), total)
	}
	for _, p := range n.Learnables {
		switch d := p.Value().Data().(type) {
		case []float32:
			for i := range d {
				d[i] = float32(v[i])
			}
			v = v[len(d):]
		case []float64:
			copy(d, v)
			v = v[len(d):]
		default:
			return fmt.Errorf("learnable %s of type %T", p.Name(), d)
		}
	}
	return nil
}
