package bn

// A layer in many graphs.
//
// Gorgonia graphs have fixed shapes, so evaluating a trained model at
// another batch size, or in a forward-only inference graph, means building
// another graph. In returns the layer's copy in that graph: its own γ and β
// nodes over the same γ and β tensors, and the same running statistics,
// counters, mode and synchronization (one owner, whichever graph runs).

import (
	"context"
	"fmt"
	"weak"

	"gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// In returns the layer's copy in graph g, to apply to g's nodes: it shares
// everything with l — γ and β (new nodes of g over the same tensors), the
// running statistics and counters, the mode, the name, the options and,
// for a synchronized layer, the sync key and communicator — so a forward
// in any graph updates the one set of running statistics once, and a
// solver step on either graph's γ/β nodes is seen by all. In(l's own graph)
// returns l.
//
// Because a copy is the same layer, SetMode, SetRunningStats, SetAffine
// and Precise act on all copies at once, and a synchronized layer's copies
// keep its key: building a copy on one rank only (a validation graph, a
// graph for a last partial batch) changes nothing for the matching of
// layers across ranks, and the ranks count the steps of all copies
// together. Run the graphs of one layer one at a time (a synchronized
// layer's buffers are shared). Set γ and β with SetAffine or a solver,
// which write in place; gorgonia.Let on one graph's γ node would replace
// that node's tensor and end the sharing.
//
// Errors: ErrOption for a nil layer or graph, ErrState when γ or β has no
// tensor value.
func (l *Layer) In(g *gorgonia.ExprGraph) (*Layer, error) {
	if l == nil {
		return nil, fmt.Errorf("%w: In on a nil *Layer", ErrOption)
	}
	if g == nil {
		return nil, fmt.Errorf("%w: In: nil graph", ErrOption)
	}
	if g == l.g {
		return l, nil
	}
	c := &Layer{g: g, id: layerIDs.Add(1), c: l.c, dt: l.dt, cfg: l.cfg, groups: l.groups, affGroups: l.affGroups, layerState: l.layerState}
	if l.gamma != nil {
		node := func(n *gorgonia.Node, suffix string) (*gorgonia.Node, error) {
			v, ok := n.Value().(tensor.Tensor)
			if !ok {
				return nil, fmt.Errorf("%w: In: %s of layer %s has no tensor value", ErrState, n.Name(), l.cfg.name)
			}
			return gorgonia.NewTensor(g, l.dt, n.Dims(), gorgonia.WithShape(n.Shape().Clone()...), gorgonia.WithName(l.cfg.name+suffix), gorgonia.WithValue(v)), nil
		}
		var err error
		if c.gamma, err = node(l.gamma, ".gamma"); err != nil {
			return nil, err
		}
		if c.beta, err = node(l.beta, ".beta"); err != nil {
			return nil, err
		}
	}
	l.mu.Lock()
	l.family = append(l.family, weak.Make(c))
	l.mu.Unlock()
	return c, nil
}

// copies returns the layer's live copies, l's own first. l.mu is held.
func (l *Layer) copiesLocked() []*Layer {
	out := []*Layer{l}
	live := l.family[:0]
	for _, w := range l.family {
		c := w.Value()
		if c == nil {
			continue
		}
		live = append(live, w)
		if c != l {
			out = append(out, c)
		}
	}
	clear(l.family[len(live):])
	l.family = live
	return out
}

// BySize returns a BatchFunc (for Precise, AdaBN or a loop of one's own)
// over batches whose sizes differ — typically a last, partial batch — when
// a Gorgonia graph has one batch size: size(ctx, i) returns the number of
// samples of batch i, or io.EOF after the last batch; build(n) is called
// the first time a batch of n samples comes, and returns the function that
// runs a batch of n samples (load batch i, run the graph of batch n, return
// n). Build each size's forward graph over the model's layers' copies
// (Layer.In), which share their statistics, mode and γ/β: Precise, given the
// original layers, then sees the batches of every size.
//
// A batch of one sample is ErrTooFewValues for a layer over (N, C) inputs
// (one value per channel); let size end the data before it. The returned
// function is not safe for concurrent use.
func BySize(size func(ctx context.Context, i int) (int, error), build func(n int) (BatchFunc, error)) BatchFunc {
	runs := map[int]BatchFunc{}
	return func(ctx context.Context, i int) (int, error) {
		if size == nil || build == nil {
			return 0, fmt.Errorf("%w: BySize: nil size or build function", ErrOption)
		}
		n, err := size(ctx, i)
		if err != nil {
			return 0, err
		}
		if n < 1 {
			return 0, fmt.Errorf("%w: BySize: batch %d has %d samples", ErrOption, i, n)
		}
		run, ok := runs[n]
		if !ok {
			if run, err = build(n); err != nil {
				return 0, fmt.Errorf("bn: building the graph for batches of %d: %w", n, err)
			}
			if run == nil {
				return 0, fmt.Errorf("%w: BySize: build(%d) returned no function", ErrOption, n)
			}
			runs[n] = run
		}
		return run(ctx, i)
	}
}
