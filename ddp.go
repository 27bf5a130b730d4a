package bn

// Data-parallel training: one model trained by K workers (goroutines with
// the in-process backend, or MPI processes), each on its own share of every
// global batch.
//
// Gorgonia has no DDP, and the piece users need is small:
//
//  1. identical initialization: Broadcast copies the value of every
//     learnable from one rank to all others (after a check that every rank
//     has the same list of learnables, shapes and types);
//  2. per-step gradient reduction: ReduceGradients all-reduces the
//     gradients of all learnables in one fused collective per element type
//     (one for a float32 or a float64 model), so every rank ends the step
//     with the bitwise identical gradient;
//  3. the user's solver step, identical on every rank (Step does 2 and 3),
//     so the parameters stay bitwise identical without further
//     communication.
//
// # The loss convention
//
// Let the global batch of a step have B = Σ_r B_r samples, rank r holding
// B_r of them, and let the model's objective be the mean over the global
// batch, L = (1/B)·Σ_i ℓ_i. Every rank computes the gradient of its own
// loss L_r, and SyncBN's backward makes it the gradient of Σ_r L_r with
// respect to the rank's inputs and parameters (its all-reduced sums carry
// every rank's upstream gradient). So the global objective is recovered
// when the ranks' losses add up to it:
//
//   - GradSum: each rank's loss is its share of the global mean,
//     L_r = (1/B)·Σ_{i on r} ℓ_i (= B_r/B × the local mean), and the
//     gradients are summed. Exact for any batch sizes, including unequal
//     and empty ones.
//   - GradMean (the default, PyTorch DDP's convention): each rank's loss is
//     the mean over its own samples, L_r = (1/B_r)·Σ_{i on r} ℓ_i, and the
//     gradients are averaged (summed and divided by K). This is the
//     gradient of the global mean exactly when every rank holds B/K
//     samples; with unequal batches it weights each rank's samples by
//     1/(K·B_r) instead of 1/B.
//
// With SyncBN layers and either convention (equal batches for GradMean), K
// workers holding B/K samples each compute the same gradients, up to
// rounding, as one worker holding all B samples with plain BN: the
// parameters follow the same trajectory. With per-rank (unsynchronized) BN
// they do not — each rank normalizes over its own samples — and the
// running statistics of the ranks differ; evaluate with one rank's (or
// copy them with Layer.SetRunningStats).

import (
	"context"
	"fmt"
	"hash/fnv"

	"github.com/gorgonia-bn/bn/collective"
	"gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// GradReduction is how DataParallel combines the ranks' gradients.
type GradReduction int

const (
	// GradMean averages the gradients over the ranks (sum / K): each rank's
	// loss is the mean over its own samples (PyTorch DDP's convention).
	GradMean GradReduction = iota
	// GradSum sums the gradients: each rank's loss is its share of the
	// global objective, e.g. Σ_{local i} ℓ_i / B_global.
	GradSum
)

// String returns "mean" or "sum".
func (r GradReduction) String() string {
	switch r {
	case GradMean:
		return "mean"
	case GradSum:
		return "sum"
	}
	return fmt.Sprintf("GradReduction(%d)", int(r))
}

// DataParallel keeps the learnables of one model replica in step with the
// replicas of the other ranks of a communicator. Create one per rank, with
// the same learnables in the same order on every rank. Its collectives are
// those of comm and must not run concurrently with other collectives of
// comm (call it between runs of the graph, as the examples do).
type DataParallel struct {
	comm      collective.Communicator
	params    gorgonia.Nodes
	reduction GradReduction

	b32 []float32
	b64 []float64

	bufRoot int      // SetBuffers: the rank whose running statistics win
	bufs    []*Layer // SetBuffers: layers whose running statistics Step broadcasts
}

// NewDataParallel returns the data-parallel wrapper of the learnables
// params (float32 or float64 tensors) over comm, reducing gradients with
// reduction.
func NewDataParallel(comm collective.Communicator, params gorgonia.Nodes, reduction GradReduction) (*DataParallel, error) {
	if comm == nil {
		return nil, fmt.Errorf("%w: nil communicator", ErrOption)
	}
	if reduction != GradMean && reduction != GradSum {
		return nil, fmt.Errorf("%w: unknown gradient reduction %d", ErrOption, int(reduction))
	}
	if len(params) == 0 {
		return nil, fmt.Errorf("%w: no learnables", ErrOption)
	}
	for i, n := range params {
		if n == nil {
			return nil, fmt.Errorf("%w: learnable %d is nil", ErrOption, i)
		}
		if dt := n.Dtype(); dt != tensor.Float32 && dt != tensor.Float64 {
			return nil, fmt.Errorf("%w: learnable %s is %v (want float32 or float64)", ErrDtype, n.Name(), dt)
		}
	}
	return &DataParallel{comm: comm, params: append(gorgonia.Nodes(nil), params...), reduction: reduction}, nil
}

// Learnables returns the learnables, in the order given to NewDataParallel.
func (d *DataParallel) Learnables() gorgonia.Nodes { return d.params }

// Communicator returns the communicator.
func (d *DataParallel) Communicator() collective.Communicator { return d.comm }

// Reduction returns how gradients are combined.
func (d *DataParallel) Reduction() GradReduction { return d.reduction }

// Broadcast checks that every rank has the same learnables (count, order,
// shapes, types) and copies root's values of all of them into the other
// ranks' values, in place: one all-gather of a fingerprint and one
// broadcast per element type. Call it once on every rank after creating the
// model, before training, so that the replicas start identical.
func (d *DataParallel) Broadcast(ctx context.Context, root int) error {
	K := d.comm.Size()
	if root < 0 || root >= K {
		return fmt.Errorf("%w: broadcast root %d outside the group of %d", ErrOption, root, K)
	}
	fp := d.fingerprint()
	all := make([]float64, K)
	if err := d.comm.AllGather(ctx, collective.Float64s([]float64{fp}), collective.Float64s(all), nil); err != nil {
		return fmt.Errorf("%w: data-parallel broadcast: %w", ErrSync, err)
	}
	for r, v := range all {
		if v != fp {
			return fmt.Errorf("%w: data-parallel broadcast: rank %d has other learnables than rank %d (count, order, shapes or types differ)", ErrSync, r, d.comm.Rank())
		}
	}
	if len(d.bufs) > 0 {
		if err := d.BroadcastBuffers(ctx); err != nil {
			return err
		}
	}
	return d.each(ctx, "broadcast", func(n *gorgonia.Node) (gorgonia.Value, error) {
		if v := n.Value(); v != nil {
			return v, nil
		}
		return nil, fmt.Errorf("%w: learnable %s has no value (initialize it with gorgonia.WithInit or WithValue)", ErrState, n.Name())
	}, func(ctx context.Context, b collective.Buffer) error {
		return d.comm.Broadcast(ctx, b, root)
	})
}

// SetBuffers makes Broadcast and every Step also copy the running
// statistics and counters of layers from rank root to the other ranks
// (PyTorch DDP's broadcast_buffers): after a Step every rank holds root's
// running statistics, as if every rank had seen root's batches. It is for
// layers that are not synchronized (SyncBN layers agree already), whose
// ranks' running statistics otherwise part. Every rank must pass the same
// layers (count, order, channels, groups) and root; no layers turns it
// off. ErrOption for a root outside the group or a nil layer.
func (d *DataParallel) SetBuffers(root int, layers ...Normalizer) error {
	if K := d.comm.Size(); root < 0 || root >= K {
		return fmt.Errorf("%w: buffer broadcast root %d outside the group of %d", ErrOption, root, K)
	}
	ls, err := convertible(layers, "SetBuffers")
	if err != nil {
		return err
	}
	d.bufRoot, d.bufs = root, ls
	return nil
}

// BroadcastBuffers copies, now, the running statistics and counters of the
// layers given to SetBuffers from its root to every rank: one all-gather
// of a fingerprint of the layers (ranks whose layers differ get ErrSync)
// and one broadcast of float64 values. Call it on every rank.
func (d *DataParallel) BroadcastBuffers(ctx context.Context) error {
	h := fnv.New64a()
	n := 0
	for _, l := range d.bufs {
		fmt.Fprintf(h, "%d/%d;", l.c, l.groups)
		n += 2*l.groups*l.c + l.groups
	}
	fp := float64(h.Sum64() % (1 << 52))
	all := make([]float64, d.comm.Size())
	if err := d.comm.AllGather(ctx, collective.Float64s([]float64{fp}), collective.Float64s(all), nil); err != nil {
		return fmt.Errorf("%w: data-parallel buffer broadcast: %w", ErrSync, err)
	}
	for r, v := range all {
		if v != fp {
			return fmt.Errorf("%w: data-parallel buffer broadcast: rank %d has other BN layers than rank %d (count, order, channels or groups differ)", ErrSync, r, d.comm.Rank())
		}
	}
	buf := make([]float64, 0, n)
	for _, l := range d.bufs {
		l.mu.Lock()
		buf = append(append(buf, l.rmean...), l.rvar...)
		for _, t := range l.tracked {
			buf = append(buf, float64(t))
		}
		l.mu.Unlock()
	}
	if err := d.comm.Broadcast(ctx, collective.Float64s(buf), d.bufRoot); err != nil {
		return fmt.Errorf("%w: data-parallel buffer broadcast: %w", ErrSync, err)
	}
	for _, l := range d.bufs {
		k := l.groups * l.c
		l.mu.Lock()
		copy(l.rmean, buf[:k])
		copy(l.rvar, buf[k:2*k])
		for i := range l.tracked {
			l.tracked[i] = int64(buf[2*k+i])
		}
		l.mu.Unlock()
		buf = buf[2*k+l.groups:]
	}
	return nil
}

// ReduceGradients replaces every learnable's gradient by the sum (GradSum)
// or mean (GradMean) of the ranks' gradients, in place: one fused
// all-reduce per element type. Call it on every rank after the graph ran
// (forward and backward) and before the solver step. The TapeMachine must
// hold the gradients, as gorgonia.Grad and BindDualValues(learnables...)
// arrange.
func (d *DataParallel) ReduceGradients(ctx context.Context) error {
	K := d.comm.Size()
	return d.each(ctx, "gradient all-reduce", func(n *gorgonia.Node) (gorgonia.Value, error) {
		g, err := n.Grad()
		if err != nil || g == nil {
			return nil, fmt.Errorf("%w: learnable %s has no gradient (compute it with gorgonia.Grad and create the TapeMachine with gorgonia.BindDualValues(learnables...)): %v", ErrState, n.Name(), err)
		}
		return g, nil
	}, func(ctx context.Context, b collective.Buffer) error {
		if err := d.comm.AllReduce(ctx, b, collective.Sum); err != nil {
			return err
		}
		if d.reduction == GradMean && K > 1 {
			scale(b, 1/float64(K))
		}
		return nil
	})
}

// Step reduces the gradients (ReduceGradients) and applies solver to the
// learnables. Every rank must use an identical solver.
func (d *DataParallel) Step(ctx context.Context, solver gorgonia.Solver) error {
	if err := d.ReduceGradients(ctx); err != nil {
		return err
	}
	if err := solver.Step(gorgonia.NodesToValueGrads(d.params)); err != nil {
		return fmt.Errorf("data-parallel solver step: %w", err)
	}
	if len(d.bufs) > 0 {
		return d.BroadcastBuffers(ctx)
	}
	return nil
}

// fingerprint hashes the learnables' types and shapes into a float64
// (exact: below 2^52).
func (d *DataParallel) fingerprint() float64 {
	h := fnv.New64a()
	for _, n := range d.params {
		fmt.Fprintf(h, "%v%v;", n.Dtype(), []int(n.Shape()))
	}
	return float64(h.Sum64() % (1 << 52))
}

// each packs the values picked from every learnable into one buffer per
// element type, runs coll on it, and unpacks the result.
func (d *DataParallel) each(ctx context.Context, what string, pick func(*gorgonia.Node) (gorgonia.Value, error), coll func(context.Context, collective.Buffer) error) error {
	vals := make([]gorgonia.Value, len(d.params))
	n32, n64 := 0, 0
	for i, n := range d.params {
		v, err := pick(n)
		if err != nil {
			return err
		}
		if _, err := rawData(v, n.Name()); err != nil {
			return err
		}
		if want := n.Shape().TotalSize(); v.Shape().TotalSize() != want {
			return fmt.Errorf("%w: %s of learnable %s has shape %v, want %v", ErrShape, what, n.Name(), v.Shape(), n.Shape())
		}
		vals[i] = v
		switch v.Dtype() {
		case tensor.Float32:
			n32 += v.Shape().TotalSize()
		case tensor.Float64:
			n64 += v.Shape().TotalSize()
		default:
			return fmt.Errorf("%w: %s of learnable %s is %v", ErrDtype, what, n.Name(), v.Dtype())
		}
	}
	d.b32, d.b64 = grow(d.b32, n32), grow(d.b64, n64)
	o32, o64 := 0, 0
	for _, v := range vals {
		switch s, _ := rawData(v, ""); s := s.(type) {
		case []float32:
			o32 += copy(d.b32[o32:], s)
		case []float64:
			o64 += copy(d.b64[o64:], s)
		}
	}
	// Every rank makes the same calls: the fingerprint (Broadcast) or the
	// backend's length check (ReduceGradients) catches different models.
	if n32 > 0 {
		if err := coll(ctx, collective.Float32s(d.b32)); err != nil {
			return fmt.Errorf("%w: data-parallel %s (float32): %w", ErrSync, what, err)
		}
	}
	if n64 > 0 {
		if err := coll(ctx, collective.Float64s(d.b64)); err != nil {
			return fmt.Errorf("%w: data-parallel %s (float64): %w", ErrSync, what, err)
		}
	}
	o32, o64 = 0, 0
	for _, v := range vals {
		switch s, _ := rawData(v, ""); s := s.(type) {
		case []float32:
			o32 += copy(s, d.b32[o32:])
		case []float64:
			o64 += copy(s, d.b64[o64:])
		}
	}
	return nil
}

// rawData returns the memory of v ([]float32 or []float64), which must be a
// contiguous tensor, so that writes reach v.
func rawData(v gorgonia.Value, name string) (any, error) {
	t, ok := v.(tensor.Tensor)
	if !ok {
		return nil, fmt.Errorf("%w: learnable %s holds a %T; DataParallel handles tensors", ErrDtype, name, v)
	}
	if dn, ok := t.(*tensor.Dense); ok && dn.RequiresIterator() {
		return nil, fmt.Errorf("%w: learnable %s: non-contiguous tensor %v", ErrShape, name, t.Shape())
	}
	switch s := t.Data().(type) {
	case []float32, []float64:
		return s, nil
	}
	return nil, fmt.Errorf("%w: learnable %s holds %v", ErrDtype, name, t.Dtype())
}

func scale(b collective.Buffer, f float64) {
	if s := b.Float32s(); s != nil {
		for i := range s {
			s[i] = float32(float64(s[i]) * f)
		}
		return
	}
	s := b.Float64s()
	for i := range s {
		s[i] *= f
	}
}
