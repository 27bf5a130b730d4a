package domainbn

import "gorgonia.org/gorgonia"

// ApplyReLU returns the node y = max(0, BN(x)): Apply and a ReLU in one op
// (see bn.Layer.ApplyReLU).
func (l *Layer) ApplyReLU(x *gorgonia.Node) (*gorgonia.Node, error) {
	return eng.ApplySegmentedReLU(l.l, x, nil, &segmenter{l: l})
}

// ApplyAddReLU returns the node y = max(0, BN(x) + z), z of x's shape: the
// end of a residual block in one op (see bn.Layer.ApplyAddReLU). A nil z or
// one of another shape is bn.ErrShape.
func (l *Layer) ApplyAddReLU(x, z *gorgonia.Node) (*gorgonia.Node, error) {
	if z == nil {
		return l.l.ApplyAddReLU(x, nil) // the error of the core layer
	}
	return eng.ApplySegmentedReLU(l.l, x, z, &segmenter{l: l})
}
