package main

import (
	"fmt"
	"math/rand"

	"github.com/gorgonia-bn/bn"
	"github.com/gorgonia-bn/bn/domainbn"
	"github.com/gorgonia-bn/bn/examples/internal/cnn"
	"github.com/gorgonia-bn/bn/examples/internal/mnist"
	"gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// variant is one choice of the three switches of package domainbn.
type variant struct {
	name                string
	norm, stats, affine bool
}

// The variants the example can train. "shared" is plain batch
// normalization over mixed batches; "domain" is domain-specific BN with all
// three switches on; the other two are the mismatched splits of Wu & Johnson
// (normalization and population statistics split differently).
var variants = []variant{
	{"shared", false, false, false},
	{"domain", true, true, true},
	{"ds-norm-only", true, false, false},
	{"ds-stats-only", false, true, false},
}

func (v variant) describe() string {
	switch v.name {
	case "shared":
		return "shared BN"
	case "domain":
		return "domain-specific BN"
	case "ds-norm-only":
		return "DS normalization, shared statistics"
	case "ds-stats-only":
		return "shared normalization, DS statistics"
	}
	return v.name
}

// netConfig is the geometry and training setup of a model.
type netConfig struct {
	v                variant
	hidden1, hidden2 int
	batch, evalBatch int
	lr, momentum     float64
	seed             int64
	dt               tensor.Dtype
}

// pass is one input size of a model: the input nodes and their tensors,
// the logits, and a machine over the part of the graph it needs.
type pass struct {
	batch  int
	xv, yv *tensor.Dense
	x, y   *gorgonia.Node
	logits *gorgonia.Node
	loss   *gorgonia.Node // training pass only
	vm     gorgonia.VM
}

// model is an MLP 784 → h1 → BN → ReLU → h2 → BN → ReLU → 10 with
// domain-specific BN layers over numDomains domains (domain 2 is a spare
// slot for AdaBN), in one graph with two inputs: a training batch (with the
// gradients) and an evaluation batch (forward only). The layers share one
// Selector.
type model struct {
	cfg         netConfig
	g           *gorgonia.ExprGraph
	sel         *domainbn.Selector
	bns         []*domainbn.Layer
	learn       gorgonia.Nodes
	train, eval *pass
	solver      gorgonia.Solver
	grads       []gorgonia.ValueGrad
}

func newModel(cfg netConfig) (*model, error) {
	if cfg.batch < 2 || cfg.evalBatch < 1 || cfg.hidden1 < 1 || cfg.hidden2 < 1 {
		return nil, fmt.Errorf("invalid configuration %+v", cfg)
	}
	m := &model{cfg: cfg, g: gorgonia.NewGraph()}
	var err error
	if m.sel, err = domainbn.NewSelector(numDomains); err != nil {
		return nil, err
	}
	rng := rand.New(rand.NewSource(cfg.seed))
	he := func(name string, fanIn int, shape ...int) *gorgonia.Node {
		v := cnn.Normal(rng, cfg.dt, cnn.HeStd(fanIn), shape...)
		nd := gorgonia.NewTensor(m.g, cfg.dt, len(shape), gorgonia.WithShape(shape...), gorgonia.WithName(name), gorgonia.WithValue(v))
		m.learn = append(m.learn, nd)
		return nd
	}
	w1 := he("w1", mnist.Pixels, mnist.Pixels, cfg.hidden1)
	w2 := he("w2", cfg.hidden1, cfg.hidden1, cfg.hidden2)
	w3 := he("w3", cfg.hidden2, cfg.hidden2, mnist.Classes)
	b3 := gorgonia.NewMatrix(m.g, cfg.dt, gorgonia.WithShape(1, mnist.Classes), gorgonia.WithName("b3"), gorgonia.WithInit(gorgonia.Zeroes()))
	m.learn = append(m.learn, b3)
	for i, c := range []int{cfg.hidden1, cfg.hidden2} {
		l, err := domainbn.New(m.g, c, numDomains, cfg.dt,
			domainbn.WithDomainNorm(cfg.v.norm), domainbn.WithDomainStats(cfg.v.stats), domainbn.WithDomainAffine(cfg.v.affine),
			domainbn.WithSelector(m.sel), domainbn.WithBN(bn.WithName(fmt.Sprintf("bn%d", i+1))))
		if err != nil {
			return nil, err
		}
		m.bns = append(m.bns, l)
		m.learn = append(m.learn, l.Learnables()...)
	}
	build := func(batch int, train bool) (*pass, error) {
		p := &pass{batch: batch}
		p.xv = tensor.New(tensor.Of(cfg.dt), tensor.WithShape(batch, 1, mnist.Rows, mnist.Cols))
		p.yv = tensor.New(tensor.Of(cfg.dt), tensor.WithShape(batch, mnist.Classes))
		name := fmt.Sprintf("%s%d", map[bool]string{true: "train", false: "eval"}[train], batch)
		p.x = gorgonia.NewTensor(m.g, cfg.dt, 4, gorgonia.WithName("x_"+name), gorgonia.WithValue(p.xv))
		p.y = gorgonia.NewMatrix(m.g, cfg.dt, gorgonia.WithName("y_"+name), gorgonia.WithValue(p.yv))
		h, err := gorgonia.Reshape(p.x, tensor.Shape{batch, mnist.Pixels})
		if err != nil {
			return nil, err
		}
		for i, w := range []*gorgonia.Node{w1, w2} {
			if h, err = gorgonia.Mul(h, w); err != nil {
				return nil, fmt.Errorf("linear %d: %w", i+1, err)
			}
			if h, err = m.bns[i].Apply(h); err != nil {
				return nil, fmt.Errorf("bn %d: %w", i+1, err)
			}
			if h, err = gorgonia.Rectify(h); err != nil {
				return nil, fmt.Errorf("relu %d: %w", i+1, err)
			}
		}
		if h, err = gorgonia.Mul(h, w3); err != nil {
			return nil, fmt.Errorf("linear 3: %w", err)
		}
		if p.logits, err = gorgonia.BroadcastAdd(h, b3, nil, []byte{0}); err != nil {
			return nil, fmt.Errorf("bias: %w", err)
		}
		if !train {
			p.vm = gorgonia.NewTapeMachine(m.g.SubgraphRoots(p.logits))
			return p, nil
		}
		if p.loss, err = cnn.CrossEntropy(p.logits, p.y); err != nil {
			return nil, err
		}
		gs, err := gorgonia.Grad(p.loss, m.learn...)
		if err != nil {
			return nil, fmt.Errorf("gradient: %w", err)
		}
		p.vm = gorgonia.NewTapeMachine(m.g.SubgraphRoots(append(gs, p.loss)...), gorgonia.BindDualValues(m.learn...))
		return p, nil
	}
	if m.train, err = build(cfg.batch, true); err != nil {
		return nil, err
	}
	if m.eval, err = build(cfg.evalBatch, false); err != nil {
		m.train.vm.Close()
		return nil, err
	}
	m.solver = gorgonia.NewMomentum(gorgonia.WithLearnRate(cfg.lr), gorgonia.WithMomentum(cfg.momentum))
	m.grads = gorgonia.NodesToValueGrads(m.learn)
	return m, nil
}

// Close releases the machines.
func (m *model) Close() error {
	m.train.vm.Close()
	return m.eval.vm.Close()
}

func (m *model) setMode(mode bn.Mode) error {
	for _, l := range m.bns {
		if err := l.SetMode(mode); err != nil {
			return err
		}
	}
	return nil
}

// step runs one training step on the images idx of set, whose samples
// belong to the domains ids, and returns the loss before the update.
func (m *model) step(set *mnist.Set, idx, ids []int) (float64, error) {
	p := m.train
	if err := set.FillImages(p.xv, idx); err != nil {
		return 0, err
	}
	if err := set.FillOneHot(p.yv, idx); err != nil {
		return 0, err
	}
	if err := m.sel.SetDomainIDs(ids); err != nil {
		return 0, err
	}
	p.vm.Reset()
	if err := p.vm.RunAll(); err != nil {
		return 0, err
	}
	loss, err := cnn.Scalar(p.loss.Value())
	if err != nil {
		return 0, err
	}
	if err := m.solver.Step(m.grads); err != nil {
		return 0, err
	}
	return loss, nil
}

// forward runs the evaluation pass on the images idx of set.
func (m *model) forward(set *mnist.Set, idx []int) error {
	if err := set.FillImages(m.eval.xv, idx); err != nil {
		return err
	}
	m.eval.vm.Reset()
	return m.eval.vm.RunAll()
}

// accuracy classifies set as domain d, in batches of the evaluation size
// with the layers in mode (the remainder of set.Len()/batch is left out).
func (m *model) accuracy(set *mnist.Set, d int, mode bn.Mode) (float64, error) {
	if err := m.setMode(mode); err != nil {
		return 0, err
	}
	if err := m.sel.SetDomain(d); err != nil {
		return 0, err
	}
	batches, err := mnist.Batches(mnist.Range(set.Len()), m.eval.batch, true)
	if err != nil {
		return 0, err
	}
	if len(batches) == 0 {
		return 0, fmt.Errorf("%d test images, fewer than one batch of %d", set.Len(), m.eval.batch)
	}
	ok, total := 0, 0
	for _, idx := range batches {
		if err := m.forward(set, idx); err != nil {
			return 0, err
		}
		c, err := cnn.Correct(m.eval.logits.Value(), set, idx)
		if err != nil {
			return 0, err
		}
		ok += c
		total += len(idx)
	}
	return float64(ok) / float64(total), nil
}
