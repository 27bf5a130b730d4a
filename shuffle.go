package bn

// Shuffle BN: permute the samples of the global batch across the ranks
// before batch normalization and restore their order after it.
//
// In momentum-contrast training (MoCo, He et al. 2020, §3.3) the batch
// statistics of a per-rank BN layer leak information between the samples of
// a rank: the model can "cheat" the pretext task by recognising which
// samples share statistics. Shuffling the samples across ranks before the
// key encoder and unshuffling its output makes the sub-batch a sample is
// normalized with a random one, independent of the sub-batch it sits in
// outside the shuffled region.
//
// With a global batch of N = Σ_r N_r samples (rank r holds the samples
// [off_r, off_r+N_r) of the concatenation in rank order) and a permutation π
// of 0…N−1, shuffled position j holds global sample π[j], and rank s gets the
// shuffled positions [off_s, off_s+N_s): every rank keeps its batch size, so
// graph shapes do not change. π is drawn from (seed, step) by every rank
// independently — the same permutation everywhere, a new one every step —
// and the ranks' sizes are all-gathered first (with a header that checks
// that every rank runs the same shuffle at the same step), so unequal
// per-rank batches work. The data move in one all-to-all; the unshuffle is
// the inverse permutation, one all-to-all again. The backward of a
// permutation is its inverse: the gradient of Shuffle is an unshuffle of
// dy and the gradient of Unshuffle a shuffle of dy, one all-to-all each.
//
// Collectives per step of one Shuffle: forward 1 all-gather (sizes, 5
// values per rank) + 1 all-to-all for Shuffle and 1 all-to-all per Unshuffle;
// backward 1 all-to-all each.

import (
	"context"
	"fmt"
	"hash"
	"hash/fnv"
	"math/rand/v2"
	"reflect"
	"sync"
	"sync/atomic"
	"time"

	"github.com/chewxy/hm"
	"github.com/gorgonia-bn/bn/collective"
	"gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// Shuffle permutes the samples of a batch spread over the ranks of a
// communicator, and restores their order, differentiably. Create one per
// shuffled region on every rank, with the same key and seed on every rank:
//
//	sh, err := bn.NewShuffle(comm, "encoder", seed)
//	xs, err := sh.Shuffle(x)              // samples of x drawn from all ranks
//	h, err := layer.Apply(xs)             // plain (per-rank) BN, or a whole encoder
//	k, err := sh.Unshuffle(h)             // back to the order of x
//
// Shuffle may be applied to one node; Unshuffle to any number of nodes
// computed from it whose first dimension is the local batch size (the
// feature shape may differ from x's). The permutation of a step is a
// function of (seed, step) only, and the step advances with every forward of
// Shuffle.
type Shuffle struct {
	comm collective.Communicator
	seed int64
	key  string  // matches the shuffle across ranks
	hash float64 // keyHash(key)
	id   uint64

	mu      sync.Mutex
	timeout time.Duration
	base    context.Context
	step    uint64
	applied bool // Shuffle was applied to a node

	plan shufflePlan
}

var shuffleIDs atomic.Uint64

// NewShuffle returns a Shuffle whose permutations are drawn from seed over
// the ranks of comm. key matches it with its peers on the other ranks, as
// WithSyncKey does for layers: the same key and seed on every rank, and a
// different key for each shuffle of a model. Creating a Shuffle costs no
// communication. Of the layer options, WithSyncTimeout applies (default
// DefaultSyncTimeout); any other is ErrOption.
func NewShuffle(comm collective.Communicator, key string, seed int64, opts ...Option) (*Shuffle, error) {
	if comm == nil {
		return nil, fmt.Errorf("%w: nil communicator", ErrOption)
	}
	if key == "" {
		return nil, fmt.Errorf("%w: a shuffle needs a key that is the same on every rank, to match it with its peers", ErrOption)
	}
	timeout := DefaultSyncTimeout
	for i, o := range opts {
		if o == nil {
			return nil, fmt.Errorf("%w: NewShuffle: option %d is nil", ErrOption, i)
		}
		var c config
		if err := o(&c); err != nil {
			return nil, err
		}
		if c.sync == nil || c.sync.timeout == 0 || c.sync.comm != nil || c.sync.key != "" || !reflect.DeepEqual(c, config{sync: c.sync}) {
			return nil, fmt.Errorf("%w: NewShuffle: option %d is not WithSyncTimeout, the only layer option a Shuffle takes", ErrOption, i)
		}
		timeout = c.sync.timeout
	}
	return &Shuffle{comm: comm, seed: seed, key: key, hash: keyHash(key), id: shuffleIDs.Add(1), timeout: timeout}, nil
}

// SetSyncContext sets the context the collectives run under (default
// context.Background()); cancelling it makes a pending forward or backward
// fail promptly.
func (s *Shuffle) SetSyncContext(ctx context.Context) {
	s.mu.Lock()
	s.base = ctx
	s.mu.Unlock()
}

// Step returns the number of forwards of Shuffle so far: the next forward
// uses the permutation of this step.
func (s *Shuffle) Step() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.step
}

// SetStep sets the step counter, for example to continue the sequence of
// permutations after restoring a checkpoint. Every rank must set the same
// value.
func (s *Shuffle) SetStep(step uint64) {
	s.mu.Lock()
	s.step = step
	s.mu.Unlock()
}

// Permutation returns the permutation π of 0…n−1 that a forward at step
// uses for a global batch of n samples: shuffled position j holds global
// sample π[j] (global samples are the ranks' batches concatenated in rank
// order).
func (s *Shuffle) Permutation(step uint64, n int) []int {
	return rand.New(rand.NewPCG(uint64(s.seed), step)).Perm(n)
}

// Shuffle returns x (shape (N, …), float32 or float64) with its samples
// replaced by those of the current step's permutation of the global batch.
// It can be applied once per Shuffle.
func (s *Shuffle) Shuffle(x *gorgonia.Node) (*gorgonia.Node, error) {
	if err := checkSamples(x); err != nil {
		return nil, err
	}
	s.mu.Lock()
	if s.applied {
		s.mu.Unlock()
		return nil, fmt.Errorf("%w: Shuffle applied twice (use one Shuffle per shuffled node)", ErrOption)
	}
	s.applied = true
	s.mu.Unlock()
	return gorgonia.ApplyOp(&permOp{s: s, plans: true, rank: x.Dims(), id: opIDs.Add(1)}, x)
}

// Unshuffle returns y (shape (N, …) with N the local batch size of the
// shuffled node) with the order of the samples restored: the inverse of the
// current step's permutation.
func (s *Shuffle) Unshuffle(y *gorgonia.Node) (*gorgonia.Node, error) {
	if err := checkSamples(y); err != nil {
		return nil, err
	}
	s.mu.Lock()
	applied := s.applied
	s.mu.Unlock()
	if !applied {
		return nil, fmt.Errorf("%w: Unshuffle before Shuffle", ErrOption)
	}
	return gorgonia.ApplyOp(&permOp{s: s, inverse: true, rank: y.Dims(), id: opIDs.Add(1)}, y)
}

func checkSamples(x *gorgonia.Node) error {
	if x == nil {
		return fmt.Errorf("%w: nil input", ErrShape)
	}
	if x.Dims() < 1 {
		return fmt.Errorf("%w: shuffled input must have a batch dimension, got shape %v", ErrShape, x.Shape())
	}
	if dt := x.Dtype(); dt != tensor.Float32 && dt != tensor.Float64 {
		return fmt.Errorf("%w: %v (want float32 or float64)", ErrDtype, dt)
	}
	return nil
}

func (s *Shuffle) context() (context.Context, context.CancelFunc) {
	s.mu.Lock()
	base, d := s.base, s.timeout
	s.mu.Unlock()
	if base == nil {
		base = context.Background()
	}
	return context.WithTimeout(base, d)
}

func (s *Shuffle) syncTimeout() time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.timeout
}

// shufflePlan is the data movement of one step, in samples.
type shufflePlan struct {
	ok      bool // made by a successful forward of Shuffle
	step    uint64
	n       int   // local batch size
	sizes   []int // per rank
	sendIdx []int // local samples in send order (blocks by destination rank)
	sendCnt []int // samples per destination rank
	recvPos []int // local shuffled positions in receive order (blocks by source rank)
	recvCnt []int // samples per source rank
	hdr     []float64
}

const (
	tagShuffle    = 0x42_4e_53 // "BNS"
	shuffleHdrLen = 5
	hashBelow     = 1 << 52
)

// makePlan all-gathers the ranks' batch sizes and computes this rank's share
// of the step's permutation. s.mu is not held.
func (s *Shuffle) makePlan(n int, sampleShape tensor.Shape) error {
	ctx, cancel := s.context()
	defer cancel()
	s.mu.Lock()
	step := s.step
	s.mu.Unlock()
	K, me := s.comm.Size(), s.comm.Rank()
	p := &s.plan
	p.ok = false
	h := fnv.New64a()
	fmt.Fprint(h, []int(sampleShape))
	send := []float64{tagShuffle, s.hash, float64(step), float64(n), float64(h.Sum64() % hashBelow)}
	p.hdr = grow(p.hdr, K*shuffleHdrLen)
	if err := s.comm.AllGather(ctx, collective.Float64s(send), collective.Float64s(p.hdr), nil); err != nil {
		return fmt.Errorf("%w: shuffle %q forward (step %d) on rank %d%s: %w", ErrSync, s.key, step, me, stallDiagnosis(err, s.syncTimeout()), err)
	}
	p.sizes = grow(p.sizes, K)
	offs := make([]int, K+1)
	for r := range K {
		q := p.hdr[r*shuffleHdrLen : (r+1)*shuffleHdrLen]
		if q[0] != send[0] || q[1] != send[1] || q[2] != send[2] || q[4] != send[4] {
			other := "this shuffle"
			if q[1] != s.hash {
				other = describeKey(q[1])
			}
			return fmt.Errorf("%w: shuffle %q (step %d, samples of shape %v) on rank %d, but rank %d sent tag %#x for %s, step %v, sample-shape hash %v: ranks must apply the same shuffles in the same order to samples of one shape",
				ErrSync, s.key, step, sampleShape, me, r, int(q[0]), other, q[2], q[4])
		}
		p.sizes[r] = int(q[3])
		offs[r+1] = offs[r] + p.sizes[r]
	}
	N := offs[K]
	owner := make([]int, N)
	for r := range K {
		for g := offs[r]; g < offs[r+1]; g++ {
			owner[g] = r
		}
	}
	perm := s.Permutation(step, N)
	p.sendCnt, p.recvCnt = grow(p.sendCnt, K), grow(p.recvCnt, K)
	clear(p.sendCnt)
	clear(p.recvCnt)
	p.sendIdx, p.recvPos = p.sendIdx[:0], grow(p.recvPos, n)
	// Send: to each destination s in rank order, the samples of this rank
	// that land in s's shuffled positions, in position order.
	for d := range K {
		for j := offs[d]; j < offs[d+1]; j++ {
			if g := perm[j]; owner[g] == me {
				p.sendIdx = append(p.sendIdx, g-offs[me])
				p.sendCnt[d]++
			}
		}
	}
	// Receive: from each source r in rank order, in position order (the
	// order r sends in): a counting sort of this rank's positions by owner.
	for j := offs[me]; j < offs[me+1]; j++ {
		p.recvCnt[owner[perm[j]]]++
	}
	start := make([]int, K)
	for r := 1; r < K; r++ {
		start[r] = start[r-1] + p.recvCnt[r-1]
	}
	for j := offs[me]; j < offs[me+1]; j++ {
		r := owner[perm[j]]
		p.recvPos[start[r]] = j - offs[me]
		start[r]++
	}
	p.n, p.step, p.ok = n, step, true
	s.mu.Lock()
	s.step++
	s.mu.Unlock()
	return nil
}

// permOp moves samples by the plan of its Shuffle: forward (π) or inverse
// (π⁻¹). plans marks the forward of Shuffle, which makes the step's plan;
// grad marks a backward op, whose second input (the forward's output) only
// orders it after its forward.
type permOp struct {
	goOp
	s       *Shuffle
	inverse bool
	plans   bool
	grad    bool
	rank    int
	id      uint64

	send, recv any // []float32 or []float64
}

func (op *permOp) Arity() int {
	if op.grad {
		return 2
	}
	return 1
}

func (op *permOp) Type() hm.Type {
	x := gorgonia.TensorType{Dims: op.rank, Of: hm.TypeVariable('a')}
	if op.grad {
		return hm.NewFnType(x, x, x)
	}
	return hm.NewFnType(x, x)
}

func (op *permOp) InferShape(in ...gorgonia.DimSizer) (tensor.Shape, error) {
	return firstShape(op, in)
}

func (op *permOp) WriteHash(h hash.Hash) {
	fmt.Fprintf(h, "bn.Shuffle/%d/%d/%t/%t/%t", op.s.id, op.id, op.inverse, op.plans, op.grad)
}
func (op *permOp) Hashcode() uint32 { return hashOf(op) }
func (op *permOp) String() string {
	name := "Shuffle"
	if op.inverse {
		name = "Unshuffle"
	}
	if op.grad {
		name += "Grad"
	}
	return fmt.Sprintf("%s(%s)", name, op.s.key)
}

// Do permutes the samples of in[0].
func (op *permOp) Do(in ...gorgonia.Value) (gorgonia.Value, error) {
	if len(in) != op.Arity() {
		return nil, fmt.Errorf("%w: %v takes %d inputs, got %d", ErrShape, op, op.Arity(), len(in))
	}
	x, ok := in[0].(tensor.Tensor)
	if !ok {
		return nil, fmt.Errorf("%w: input is %T, want a tensor", ErrDtype, in[0])
	}
	if x.Dims() < 1 {
		return nil, fmt.Errorf("%w: input of shape %v has no batch dimension", ErrShape, x.Shape())
	}
	out := tensor.New(tensor.Of(x.Dtype()), tensor.WithShape(x.Shape().Clone()...))
	if err := op.permute(x, out); err != nil {
		return nil, err
	}
	return out, nil
}

func (op *permOp) permute(x, out tensor.Tensor) error {
	n := x.Shape()[0]
	if op.plans {
		if err := op.s.makePlan(n, x.Shape()[1:]); err != nil {
			return err
		}
	}
	p := &op.s.plan
	if !p.ok {
		return fmt.Errorf("%w: %v before a successful forward of its Shuffle", ErrState, op)
	}
	if n != p.n {
		return fmt.Errorf("%w: %v of a batch of %d samples, but its Shuffle moved %d", ErrShape, op, n, p.n)
	}
	switch x.Dtype() {
	case tensor.Float32:
		return permuteT[float32](op, x, out)
	case tensor.Float64:
		return permuteT[float64](op, x, out)
	}
	return fmt.Errorf("%w: %v", ErrDtype, x.Dtype())
}

func permuteT[T float32 | float64](op *permOp, xv, outv tensor.Tensor) error {
	x, err := data[T](xv)
	if err != nil {
		return err
	}
	out, err := data[T](outv)
	if err != nil {
		return err
	}
	p := &op.s.plan
	D := 0
	if p.n > 0 {
		D = len(x) / p.n
	}
	// Forward: send x[sendIdx], receive into out[recvPos]. Inverse: the
	// same messages backwards.
	srcIdx, dstIdx, sendCnt, recvCnt := p.sendIdx, p.recvPos, p.sendCnt, p.recvCnt
	if op.inverse {
		srcIdx, dstIdx, sendCnt, recvCnt = p.recvPos, p.sendIdx, p.recvCnt, p.sendCnt
	}
	send, _ := op.send.([]T)
	recv, _ := op.recv.([]T)
	send, recv = grow(send, len(x)), grow(recv, len(x))
	op.send, op.recv = send, recv
	for k, i := range srcIdx {
		copy(send[k*D:(k+1)*D], x[i*D:(i+1)*D])
	}
	K := len(sendCnt)
	sc, rc := make([]int, K), make([]int, K)
	for r := range K {
		sc[r], rc[r] = sendCnt[r]*D, recvCnt[r]*D
	}
	ctx, cancel := op.s.context()
	defer cancel()
	if err := op.s.comm.AllToAll(ctx, buffer(send), sc, buffer(recv), rc); err != nil {
		return fmt.Errorf("%w: %v on rank %d%s: %w", ErrSync, op, op.s.comm.Rank(), stallDiagnosis(err, op.s.syncTimeout()), err)
	}
	for k, i := range dstIdx {
		copy(out[i*D:(i+1)*D], recv[k*D:(k+1)*D])
	}
	return nil
}

func buffer[T float32 | float64](s []T) collective.Buffer {
	switch v := any(s).(type) {
	case []float32:
		return collective.Float32s(v)
	case []float64:
		return collective.Float64s(v)
	}
	panic("unreachable")
}

// DiffWRT: the permutation is differentiable with respect to its input.
func (op *permOp) DiffWRT(n int) []bool {
	r := make([]bool, n)
	if !op.grad && n > 0 {
		r[0] = true
	}
	return r
}

// backward returns the op that moves dy back: the inverse permutation.
func (op *permOp) backward() *permOp {
	return &permOp{s: op.s, inverse: !op.inverse, grad: true, rank: op.rank, id: op.id}
}

// SymDiff returns the gradient of the input: dy permuted backwards.
func (op *permOp) SymDiff(inputs gorgonia.Nodes, output, grad *gorgonia.Node) (gorgonia.Nodes, error) {
	if op.grad {
		return nil, fmt.Errorf("%w: %v has no second derivative", ErrOption, op)
	}
	if len(inputs) != 1 {
		return nil, fmt.Errorf("%w: %v takes 1 input, got %d", ErrShape, op, len(inputs))
	}
	dx, err := gorgonia.ApplyOp(op.backward(), grad, output)
	if err != nil {
		return nil, err
	}
	return gorgonia.Nodes{dx}, nil
}

// DoDiff adds the gradient of the input for the LispMachine.
func (op *permOp) DoDiff(ctx gorgonia.ExecutionContext, inputs gorgonia.Nodes, output *gorgonia.Node) error {
	if op.grad || len(inputs) != 1 {
		return fmt.Errorf("%w: %v: DoDiff of %d inputs", ErrShape, op, len(inputs))
	}
	dy, err := output.Grad()
	if err != nil {
		return err
	}
	dx, err := op.backward().Do(dy, output.Value())
	if err != nil {
		return err
	}
	return addInto(inputs[0], dx, 0, -1)
}
