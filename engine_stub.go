package bn

import (
	"fmt"

	"gorgonia.org/gorgonia"
)

// applySegmentedReLU: placeholder until the fused op lands.
func (l *Layer) applySegmentedReLU(x, z *gorgonia.Node, seg segmenter) (*gorgonia.Node, error) {
	return nil, fmt.Errorf("%w: not yet", ErrOption)
}
