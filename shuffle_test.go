package bn

import (
	"context"
	"errors"
	"fmt"
	"math/rand"
	"slices"
	"testing"
	"time"

	"github.com/gorgonia-bn/bn/collective"
	"gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// shGraph is x → [Shuffle] → BN → [Unshuffle] → cost = Σ out⊙w with the
// gradients of x, γ, β, on a TapeMachine (or a LispMachine).
type shGraph struct {
	g        *gorgonia.ExprGraph
	x, w     *gorgonia.Node
	xs, ws   []float64 // backing of x and w, refilled in place
	l        *Layer
	sh       *Shuffle
	out      *gorgonia.Node
	cost     *gorgonia.Node
	grads    gorgonia.Nodes
	vm       gorgonia.VM
	lisp     bool
	shuffled bool
}

// newShGraph builds the graph for inputs of shape; comm != nil puts a
// Shuffle (seed) around the layer, which is made with opts.
func newShGraph(shape tensor.Shape, comm collective.Communicator, seed int64, lisp bool, opts ...Option) (*shGraph, error) {
	n := shape.TotalSize()
	e := &shGraph{g: gorgonia.NewGraph(), xs: make([]float64, n), ws: make([]float64, n), lisp: lisp}
	e.x = gorgonia.NewTensor(e.g, tensor.Float64, len(shape), gorgonia.WithShape(shape...), gorgonia.WithName("x"),
		gorgonia.WithValue(tensor.New(tensor.WithShape(shape...), tensor.WithBacking(e.xs))))
	e.w = gorgonia.NewTensor(e.g, tensor.Float64, len(shape), gorgonia.WithShape(shape...), gorgonia.WithName("w"),
		gorgonia.WithValue(tensor.New(tensor.WithShape(shape...), tensor.WithBacking(e.ws))))
	var err error
	if e.l, err = New(e.g, shape[1], tensor.Float64, append([]Option{WithName("bn")}, opts...)...); err != nil {
		return nil, err
	}
	in := e.x
	if comm != nil {
		if e.sh, err = NewShuffle(comm, "sh", seed); err != nil {
			return nil, err
		}
		if in, err = e.sh.Shuffle(e.x); err != nil {
			return nil, err
		}
		e.shuffled = true
	}
	if e.out, err = e.l.Apply(in); err != nil {
		return nil, err
	}
	if comm != nil {
		if e.out, err = e.sh.Unshuffle(e.out); err != nil {
			return nil, err
		}
	}
	e.cost = gorgonia.Must(gorgonia.Sum(gorgonia.Must(gorgonia.HadamardProd(e.out, e.w))))
	if lisp {
		e.vm = gorgonia.NewLispMachine(e.g)
		return e, nil
	}
	if e.grads, err = gorgonia.Grad(e.cost, e.x, e.l.Gamma(), e.l.Beta()); err != nil {
		return nil, err
	}
	e.vm = gorgonia.NewTapeMachine(e.g, gorgonia.TraceExec())
	return e, nil
}

// shResult is one run's output and gradients, and the layer's state.
type shResult struct {
	out, dx, dg, db []float64
	cost            float64
	rm, rv          []float64
}

func (e *shGraph) run() (shResult, error) {
	if !e.lisp {
		e.vm.Reset()
	}
	if err := e.vm.RunAll(); err != nil {
		return shResult{}, err
	}
	f := func(v gorgonia.Value) []float64 { return slices.Clone(v.Data().([]float64)) }
	r := shResult{out: f(e.out.Value()), cost: e.cost.Value().Data().(float64)}
	if e.lisp {
		dst := []*[]float64{&r.dx, &r.dg, &r.db}
		for i, n := range []*gorgonia.Node{e.x, e.l.Gamma(), e.l.Beta()} {
			g, err := n.Grad()
			if err != nil {
				return shResult{}, err
			}
			*dst[i] = f(g)
		}
	} else {
		r.dx, r.dg, r.db = f(e.grads[0].Value()), f(e.grads[1].Value()), f(e.grads[2].Value())
	}
	r.rm, r.rv = e.l.RunningStats()
	return r, nil
}

func (e *shGraph) close() { e.vm.Close() }

// permuteSamples returns the samples of src (D values each) in the order
// perm: dst sample j = src sample perm[j]; inverse: dst sample perm[j] = src
// sample j.
func permuteSamples(src []float64, perm []int, D int, inverse bool) []float64 {
	dst := make([]float64, len(src))
	for j, g := range perm {
		if inverse {
			copy(dst[g*D:(g+1)*D], src[j*D:(j+1)*D])
		} else {
			copy(dst[j*D:(j+1)*D], src[g*D:(g+1)*D])
		}
	}
	return dst
}

// TestShuffleBNEqualsPermutedReference: Shuffle → per-rank BN → Unshuffle on
// K ranks with uneven batches gives, at every step, BN applied to the chunks
// of the permuted global batch, unpermuted — outputs, dx, each rank's dγ and
// dβ and running statistics.
func TestShuffleBNEqualsPermutedReference(t *testing.T) {
	sizes := []int{3, 1, 5}
	const C, S, steps, seed = 3, 2, 3, 42
	D := C * S
	K := len(sizes)
	offs := []int{0}
	for _, n := range sizes {
		offs = append(offs, offs[len(offs)-1]+n)
	}
	N := offs[K]
	rng := rand.New(rand.NewSource(3))
	xs, ws := make([][]float64, steps), make([][]float64, steps)
	for s := range steps {
		xs[s], ws[s] = make([]float64, N*D), make([]float64, N*D)
		for i := range xs[s] {
			xs[s][i], ws[s][i] = 2+3*rng.NormFloat64(), rng.NormFloat64()
		}
	}
	got := make([][]shResult, K) // [rank][step]
	perms := make([][]int, steps)
	err := collective.Run(context.Background(), K, func(ctx context.Context, c collective.Communicator) error {
		r := c.Rank()
		e, err := newShGraph(tensor.Shape{sizes[r], C, S}, c, seed, false)
		if err != nil {
			return err
		}
		defer e.close()
		e.sh.SetSyncContext(ctx)
		for s := range steps {
			if st := e.sh.Step(); st != uint64(s) {
				return fmt.Errorf("step %d before run %d", st, s)
			}
			copy(e.xs, xs[s][offs[r]*D:offs[r+1]*D])
			copy(e.ws, ws[s][offs[r]*D:offs[r+1]*D])
			res, err := e.run()
			if err != nil {
				return err
			}
			got[r] = append(got[r], res)
			if r == 0 {
				perms[s] = e.sh.Permutation(uint64(s), N)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if slices.Equal(perms[0], perms[1]) {
		t.Fatalf("steps 0 and 1 use the same permutation %v", perms[0])
	}
	// Reference: one plain layer per chunk of the permuted global batch.
	refs := make([]*shGraph, K)
	for r := range K {
		var err error
		if refs[r], err = newShGraph(tensor.Shape{sizes[r], C, S}, nil, 0, false); err != nil {
			t.Fatal(err)
		}
		defer refs[r].close()
	}
	for s := range steps {
		xp, wp := permuteSamples(xs[s], perms[s], D, false), permuteSamples(ws[s], perms[s], D, false)
		var outP, dxP []float64
		for r, e := range refs {
			copy(e.xs, xp[offs[r]*D:offs[r+1]*D])
			copy(e.ws, wp[offs[r]*D:offs[r+1]*D])
			res, err := e.run()
			if err != nil {
				t.Fatal(err)
			}
			outP, dxP = append(outP, res.out...), append(dxP, res.dx...)
			g := got[r][s]
			assertClose(t, fmt.Sprintf("step %d rank %d dγ", s, r), g.dg, res.dg, 1e-10)
			assertClose(t, fmt.Sprintf("step %d rank %d dβ", s, r), g.db, res.db, 1e-10)
			assertClose(t, fmt.Sprintf("step %d rank %d running mean", s, r), g.rm, res.rm, 1e-12)
			assertClose(t, fmt.Sprintf("step %d rank %d running var", s, r), g.rv, res.rv, 1e-12)
		}
		out, dx := permuteSamples(outP, perms[s], D, true), permuteSamples(dxP, perms[s], D, true)
		for r := range K {
			assertClose(t, fmt.Sprintf("step %d rank %d out", s, r), got[r][s].out, out[offs[r]*D:offs[r+1]*D], 1e-10)
			assertClose(t, fmt.Sprintf("step %d rank %d dx", s, r), got[r][s].dx, dx[offs[r]*D:offs[r+1]*D], 1e-10)
		}
	}
}

// TestShuffleSyncBNInvariant: around SyncBN the shuffle changes nothing —
// global statistics do not depend on the order — so Shuffle → SyncBN →
// Unshuffle equals plain BN on the concatenated batch.
func TestShuffleSyncBNInvariant(t *testing.T) {
	sizes := []int{2, 4, 1}
	const C, S = 2, 3
	D := C * S
	rng := rand.New(rand.NewSource(5))
	N := 0
	for _, n := range sizes {
		N += n
	}
	x, w := make([]float64, N*D), make([]float64, N*D)
	for i := range x {
		x[i], w[i] = -1+2*rng.NormFloat64(), rng.NormFloat64()
	}
	ref, err := newShGraph(tensor.Shape{N, C, S}, nil, 0, false)
	if err != nil {
		t.Fatal(err)
	}
	defer ref.close()
	copy(ref.xs, x)
	copy(ref.ws, w)
	want, err := ref.run()
	if err != nil {
		t.Fatal(err)
	}
	got := make([]shResult, len(sizes))
	err = collective.Run(context.Background(), len(sizes), func(ctx context.Context, c collective.Communicator) error {
		r := c.Rank()
		off := 0
		for _, n := range sizes[:r] {
			off += n
		}
		e, err := newShGraph(tensor.Shape{sizes[r], C, S}, c, 9, false, WithCommunicator(c))
		if err != nil {
			return err
		}
		defer e.close()
		e.l.SetSyncContext(ctx)
		copy(e.xs, x[off*D:])
		copy(e.ws, w[off*D:])
		got[r], err = e.run()
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	var out, dx []float64
	dg, db := make([]float64, C), make([]float64, C)
	for _, g := range got {
		out, dx = append(out, g.out...), append(dx, g.dx...)
		for c := range C {
			dg[c] += g.dg[c]
			db[c] += g.db[c]
		}
		assertClose(t, "running mean", g.rm, want.rm, 1e-12)
		assertClose(t, "running var", g.rv, want.rv, 1e-12)
	}
	assertClose(t, "out", out, want.out, 1e-10)
	assertClose(t, "dx", dx, want.dx, 1e-10)
	assertClose(t, "Σ dγ", dg, want.dg, 1e-10)
	assertClose(t, "Σ dβ", db, want.db, 1e-10)
}

// TestShuffleFiniteDifferences checks dx of Shuffle → BN → Unshuffle against
// central differences of the global loss Σ_r cost_r (the permutation held
// fixed with SetStep), on the TapeMachine (SymDiff) and the LispMachine
// (DoDiff), with uneven batches.
func TestShuffleFiniteDifferences(t *testing.T) {
	sizes := []int{2, 3}
	const C, S, seed, h = 2, 2, 11, 1e-6
	D := C * S
	K := len(sizes)
	offs := []int{0, sizes[0], sizes[0] + sizes[1]}
	N := offs[K]
	rng := rand.New(rand.NewSource(8))
	x, w := make([]float64, N*D), make([]float64, N*D)
	for i := range x {
		x[i], w[i] = rng.NormFloat64(), rng.NormFloat64()
	}
	fd := make([]float64, N*D)
	tape, lisp := make([]shResult, K), make([]shResult, K)
	err := collective.Run(context.Background(), K, func(ctx context.Context, c collective.Communicator) error {
		r := c.Rank()
		e, err := newShGraph(tensor.Shape{sizes[r], C, S}, c, seed, false)
		if err != nil {
			return err
		}
		defer e.close()
		e.sh.SetSyncContext(ctx)
		copy(e.ws, w[offs[r]*D:])
		loss := func() (float64, error) {
			e.sh.SetStep(0)
			res, err := e.run()
			if err != nil {
				return 0, err
			}
			buf := []float64{res.cost}
			if err := c.AllReduce(ctx, collective.Float64s(buf), collective.Sum); err != nil {
				return 0, err
			}
			return buf[0], nil
		}
		for i := range N * D {
			mine := i >= offs[r]*D && i < offs[r+1]*D
			var f [2]float64
			for k, d := range []float64{h, -h} {
				copy(e.xs, x[offs[r]*D:])
				if mine {
					e.xs[i-offs[r]*D] += d
				}
				if f[k], err = loss(); err != nil {
					return err
				}
			}
			if r == 0 {
				fd[i] = (f[0] - f[1]) / (2 * h)
			}
		}
		copy(e.xs, x[offs[r]*D:])
		e.sh.SetStep(0)
		if tape[r], err = e.run(); err != nil {
			return err
		}
		// The LispMachine, on a fresh graph: same permutation (same seed, step 0).
		el, err := newShGraph(tensor.Shape{sizes[r], C, S}, c, seed, true)
		if err != nil {
			return err
		}
		defer el.close()
		el.sh.SetSyncContext(ctx)
		copy(el.xs, x[offs[r]*D:])
		copy(el.ws, w[offs[r]*D:])
		lisp[r], err = el.run()
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	for r := range K {
		assertClose(t, fmt.Sprintf("rank %d tape dx vs finite differences", r), tape[r].dx, fd[offs[r]*D:offs[r+1]*D], 1e-6)
		assertClose(t, fmt.Sprintf("rank %d lisp dx", r), lisp[r].dx, tape[r].dx, 1e-12)
		assertClose(t, fmt.Sprintf("rank %d lisp out", r), lisp[r].out, tape[r].out, 1e-12)
		assertClose(t, fmt.Sprintf("rank %d lisp dγ", r), lisp[r].dg, tape[r].dg, 1e-12)
		assertClose(t, fmt.Sprintf("rank %d lisp dβ", r), lisp[r].db, tape[r].db, 1e-12)
	}
}

// TestShuffleFloat32Features: Unshuffle of a node whose per-sample shape
// differs from the shuffled input (an encoder's output), in float32; the
// round trip Unshuffle(Shuffle(x)) is the identity and its gradient passes
// dy through unchanged.
func TestShuffleFloat32Features(t *testing.T) {
	sizes := []int{1, 4, 2, 3}
	err := collective.Run(context.Background(), len(sizes), func(ctx context.Context, c collective.Communicator) error {
		r := c.Rank()
		n := sizes[r]
		g := gorgonia.NewGraph()
		xv := make([]float32, n*6)
		for i := range xv {
			xv[i] = float32(100*r + i)
		}
		x := gorgonia.NewTensor(g, tensor.Float32, 3, gorgonia.WithShape(n, 2, 3), gorgonia.WithName("x"),
			gorgonia.WithValue(tensor.New(tensor.WithShape(n, 2, 3), tensor.WithBacking(xv))))
		sh, err := NewShuffle(c, "sh", 1)
		if err != nil {
			return err
		}
		sh.SetSyncContext(ctx)
		xs, err := sh.Shuffle(x)
		if err != nil {
			return err
		}
		// A per-sample feature of another shape: (n, 2) = sums over the last axis.
		f := gorgonia.Must(gorgonia.Sum(xs, 2))
		back, err := sh.Unshuffle(f)
		if err != nil {
			return err
		}
		wv := make([]float32, n*2)
		for i := range wv {
			wv[i] = float32(i + 1 + 10*r)
		}
		wt := gorgonia.NewTensor(g, tensor.Float32, 2, gorgonia.WithShape(n, 2), gorgonia.WithName("w"),
			gorgonia.WithValue(tensor.New(tensor.WithShape(n, 2), tensor.WithBacking(wv))))
		cost := gorgonia.Must(gorgonia.Sum(gorgonia.Must(gorgonia.HadamardProd(back, wt))))
		grads, err := gorgonia.Grad(cost, x)
		if err != nil {
			return err
		}
		m := gorgonia.NewTapeMachine(g, gorgonia.TraceExec())
		defer m.Close()
		if err := m.RunAll(); err != nil {
			return err
		}
		out := back.Value().Data().([]float32)
		dx := grads[0].Value().Data().([]float32)
		for i := range n {
			for k := range 2 {
				want := float32(0)
				for j := range 3 {
					want += xv[i*6+k*3+j]
				}
				if out[i*2+k] != want {
					return fmt.Errorf("rank %d: unshuffled feature [%d,%d] = %v, want %v", r, i, k, out[i*2+k], want)
				}
				for j := range 3 {
					if dx[i*6+k*3+j] != wv[i*2+k] {
						return fmt.Errorf("rank %d: dx[%d,%d,%d] = %v, want %v", r, i, k, j, dx[i*6+k*3+j], wv[i*2+k])
					}
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestShuffleErrors: ranks that disagree get ErrSync within the timeout;
// misuse is reported when the graph is built.
func TestShuffleErrors(t *testing.T) {
	g := gorgonia.NewGraph()
	comms, err := collective.NewInProcess(1)
	if err != nil {
		t.Fatal(err)
	}
	sh, err := NewShuffle(comms[0], "sh", 1)
	if err != nil {
		t.Fatal(err)
	}
	x := gorgonia.NewMatrix(g, tensor.Float64, gorgonia.WithShape(2, 3), gorgonia.WithInit(gorgonia.Zeroes()))
	if _, err := sh.Unshuffle(x); !errors.Is(err, ErrOption) {
		t.Errorf("Unshuffle before Shuffle: %v, want ErrOption", err)
	}
	if _, err := sh.Shuffle(x); err != nil {
		t.Fatal(err)
	}
	if _, err := sh.Shuffle(x); !errors.Is(err, ErrOption) {
		t.Errorf("second Shuffle: %v, want ErrOption", err)
	}
	if _, err := NewShuffle(nil, "sh", 1); !errors.Is(err, ErrOption) {
		t.Errorf("nil communicator: %v, want ErrOption", err)
	}
	for name, o := range map[string]Option{"nil": nil, "eps": WithEps(1e-3), "name": WithName("x"), "key": WithSyncKey("k"),
		"communicator": WithCommunicator(comms[0]), "zero timeout": WithSyncTimeout(0), "ghost": WithGhostBatch(2)} {
		if _, err := NewShuffle(comms[0], "sh", 1, o); !errors.Is(err, ErrOption) {
			t.Errorf("NewShuffle with option %s: %v, want ErrOption", name, err)
		}
	}
	if sh, err := NewShuffle(comms[0], "sh", 1, WithSyncTimeout(time.Second), WithSyncTimeout(3*time.Second)); err != nil || sh.syncTimeout() != 3*time.Second {
		t.Errorf("NewShuffle with WithSyncTimeout: %v, timeout %v, want 3s", err, sh.syncTimeout())
	}

	// Sample shapes that differ between ranks.
	errs := make([]error, 2)
	_ = collective.Run(context.Background(), 2, func(ctx context.Context, c collective.Communicator) error {
		r := c.Rank()
		g := gorgonia.NewGraph()
		x := gorgonia.NewMatrix(g, tensor.Float64, gorgonia.WithShape(2, 3+r), gorgonia.WithInit(gorgonia.Zeroes()))
		sh, err := NewShuffle(c, "sh", 1, WithSyncTimeout(10*time.Second))
		if err != nil {
			return err
		}
		sh.SetSyncContext(ctx)
		if _, err := sh.Shuffle(x); err != nil {
			return err
		}
		m := gorgonia.NewTapeMachine(g)
		defer m.Close()
		errs[r] = m.RunAll()
		return nil
	})
	for r, err := range errs {
		if !errors.Is(Cause(err), ErrSync) {
			t.Errorf("rank %d: %v, want ErrSync", r, err)
		}
	}
}
