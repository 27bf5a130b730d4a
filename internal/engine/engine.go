// Package engine is the part of package bn that variants built on it
// (package domainbn) reach and model authors do not: layers with several
// groups of running statistics and γ/β, applied to batches whose samples a
// Segmenter assigns to segments when the graph runs.
//
// Package bn registers its implementation when it is initialised; a variant
// gets it, typed, with Get:
//
//	var eng = engine.Get[*bn.Layer, bn.Option]()
//	l, err := eng.NewGrouped(g, channels, dt, groups, perGroupAffine, opts...)
//	y, err := eng.ApplySegmented(l, x, seg)
package engine

import (
	"gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// Segmenter assigns the samples of each batch to segments, the finest
// partition the statistics are computed over, and maps every segment to the
// set it is normalized with, its set of running statistics and its set of
// γ/β. Package domainbn implements it; plain layers use one segment, ghost
// layers one segment per ghost group.
type Segmenter interface {
	// Segments fills seg (length n, one entry per sample, each in
	// [0, nseg)) and m (Resize(nseg) first) and returns nseg. It is called
	// once per forward, when the graph runs.
	Segments(n int, seg []int, m *SegmentMap) (nseg int, err error)
}

// SegmentMap maps segment s to its normalization set Norm[s] (segments with
// equal Norm are normalized together; Norm[s] < nseg), its running-statistics
// group Stat[s] and its γ/β group Aff[s].
type SegmentMap struct {
	Norm, Stat, Aff []int
}

// Resize sets the three slices to length n, reusing their storage.
func (m *SegmentMap) Resize(n int) {
	m.Norm, m.Stat, m.Aff = resize(m.Norm, n), resize(m.Stat, n), resize(m.Aff, n)
}

func resize(s []int, n int) []int {
	if cap(s) < n {
		return make([]int, n)
	}
	return s[:n]
}

// Funcs is the grouped engine of package bn over its layer type L and
// option type O.
type Funcs[L, O any] struct {
	// NewGrouped creates a layer with groups sets of running statistics
	// and, if perGroupAffine, γ and β of shape (groups, C) instead of (C).
	// groups·channels must not exceed bn.MaxChannels.
	NewGrouped func(g *gorgonia.ExprGraph, channels int, dt tensor.Dtype, groups int, perGroupAffine bool, opts ...O) (L, error)
	// ApplySegmented is the layer's Apply with the samples of each batch
	// assigned to segments by seg when the graph runs.
	ApplySegmented func(l L, x *gorgonia.Node, seg Segmenter) (*gorgonia.Node, error)
	// ApplySegmentedReLU is ApplySegmented followed by ReLU as one op, with
	// a residual z added before the ReLU when z is not nil.
	ApplySegmentedReLU func(l L, x, z *gorgonia.Node, seg Segmenter) (*gorgonia.Node, error)
	// Tracked returns the number of training batches folded into each
	// group's running statistics.
	Tracked func(l L) []int64
}

var registered any

// Register records package bn's engine; bn calls it once, at init.
func Register[L, O any](f Funcs[L, O]) { registered = f }

// Get returns the engine registered by package bn. It panics if the types
// do not match bn's (a programming error in this module, found by any test).
func Get[L, O any]() Funcs[L, O] { return registered.(Funcs[L, O]) }
