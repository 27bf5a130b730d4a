package main

import (
	"context"
	"fmt"
	"math"
	"math/rand"
	"sort"

	"github.com/gorgonia-bn/bn"
	"github.com/gorgonia-bn/bn/examples/internal/cnn"
	"github.com/gorgonia-bn/bn/examples/internal/mnist"
	"gorgonia.org/tensor"
)

// config is one federated run.
type config struct {
	nodes, rounds, localSteps int
	batch, popBatch           int // training batch; batch of the population passes
	lr                        float64
	split                     split
	truthEveryRound           bool // (c) every round, not only the last
	seed                      int64
	dtype                     tensor.Dtype
}

// The three ways the server gets the BN statistics of the averaged model.
const (
	avgRunning = iota // (a) average of the nodes' running mean and variance
	merged            // (b) exact merge of the nodes' populations
	union             // (c) PreciseBN over the union of the data (the truth)
	ways
)

var wayNames = [ways]string{"(a) average of running stats", "(b) merged populations", "(c) PreciseBN over the union"}

// roundResult is what one round measured.
type roundResult struct {
	acc [ways]float64 // test accuracy with each way's statistics (c: NaN when not computed)
	// truth reports whether (c) was computed this round; if not, the
	// errors are measured against (b).
	truth bool
	// meanErr[w][l], varErr[w][l]: the error of way w (a or b) at layer l
	// against (c): RMS over channels of (μ−μc)/σc and σ²/σc² − 1.
	meanErr, varErr [2][]float64
	// maxRel is the largest |b − c| / max(1, |c|) over every mean and
	// variance: (b) equals (c) up to rounding.
	maxRel float64
}

// split is how the training data is divided among the nodes.
type split int

const (
	labelSkew   split = iota // about two classes per node
	featureSkew              // i.i.d. labels, each node's images with its own contrast and brightness
	iid
	numSplits
)

var splitNames = [numSplits]string{"label-skewed", "feature-skewed", "i.i.d."}
var splitFlags = [numSplits]string{"label", "feature", "iid"}

func (s split) String() string { return splitNames[s] }

// transform returns node k's (of K) contrast and brightness for the
// feature-skewed split: p ↦ c·p + b, from (1, 0) at node 0 to (0.4, 120) at
// node K−1 — as if each node's camera or scanner differed. (Inverting the
// odd nodes' images as well, tried once with -quick, made the statistic
// errors of (a) larger still, but (a) then scored 2.9 points above (b):
// the model is trained on node-local batch statistics, which neither
// estimate reproduces.)
func transform(k, K int) (c, b float64) {
	f := float64(k) / float64(max(K-1, 1))
	return 1 - 0.6*f, 120 * f
}

func applyTransform(dst, src []uint8, c, b float64) {
	for i, p := range src {
		dst[i] = uint8(math.Round(math.Max(0, math.Min(255, c*float64(p)+b))))
	}
}

// featureShift returns copies of the training set, every node's images
// transformed as that node's (transform), and of the test set, each image
// transformed as a node drawn at random: the test data is the union of the
// nodes' distributions.
func featureShift(trainSet, test *mnist.Set, parts [][]int, rng *rand.Rand) (*mnist.Set, *mnist.Set) {
	K := len(parts)
	tr := &mnist.Set{Pixels: append([]uint8(nil), trainSet.Pixels...), Labels: trainSet.Labels}
	for k, part := range parts {
		c, b := transform(k, K)
		for _, i := range part {
			applyTransform(tr.Pixels[i*mnist.Pixels:(i+1)*mnist.Pixels], trainSet.Pixels[i*mnist.Pixels:(i+1)*mnist.Pixels], c, b)
		}
	}
	te := &mnist.Set{Pixels: make([]uint8, len(test.Pixels)), Labels: test.Labels}
	for i := range test.Len() {
		c, b := transform(rng.Intn(K), K)
		applyTransform(te.Pixels[i*mnist.Pixels:(i+1)*mnist.Pixels], test.Pixels[i*mnist.Pixels:(i+1)*mnist.Pixels], c, b)
	}
	return tr, te
}

// shards splits the first n samples of set among k nodes, each shard a
// multiple of mult samples. Label-skewed: the samples sorted by label are
// cut into 2k runs and each node gets two runs drawn at random (McMahan
// et al.'s pathological non-i.i.d. split: about two classes per node).
// i.i.d.: a random permutation cut into k.
func shards(set *mnist.Set, k, mult int, skew bool, rng *rand.Rand) ([][]int, error) {
	// (featureSkew shards are i.i.d. ones, transformed.)
	n := set.Len()
	per := n / k / mult * mult
	if per < mult {
		return nil, fmt.Errorf("%d images for %d nodes: fewer than %d per node", n, k, mult)
	}
	order := mnist.Shuffle(n, rng)
	if !skew {
		out := make([][]int, k)
		for i := range out {
			out[i] = order[i*per : (i+1)*per]
		}
		return out, nil
	}
	sort.SliceStable(order, func(a, b int) bool { return set.Labels[order[a]] < set.Labels[order[b]] })
	half := per / 2
	runs := rng.Perm(2 * k)
	out := make([][]int, k)
	for i := range out {
		for _, r := range runs[2*i : 2*i+2] {
			out[i] = append(out[i], order[r*half:(r+1)*half]...)
		}
		// Pad to a multiple of mult with the node's own samples.
		for j := 0; len(out[i])%mult != 0; j++ {
			out[i] = append(out[i], out[i][j])
		}
	}
	return out, nil
}

// model is the server's model and the nets the simulation uses.
type model struct {
	w     *cnn.Weights
	train *cnn.Net // local training (shared by the nodes, one at a time)
	pop   *cnn.Net // population passes and evaluation
	sgd   *cnn.SGD
}

func (m *model) Close() {
	for _, n := range []*cnn.Net{m.train, m.pop} {
		if n != nil {
			n.Close()
		}
	}
}

// bnStats holds the running mean and variance of every BN layer.
type bnStats [][2][]float64

func running(n *cnn.Net) bnStats {
	s := make(bnStats, len(n.BNs))
	for i, l := range n.BNs {
		s[i][0], s[i][1] = l.RunningStats()
	}
	return s
}

func (s bnStats) set(n *cnn.Net) error {
	for i, l := range n.BNs {
		if err := l.SetRunningStats(s[i][0], s[i][1]); err != nil {
			return err
		}
	}
	return nil
}

// federate runs cfg on the training set and evaluates on test after every
// round; stage prints one line per round.
func federate(ctx context.Context, cfg config, trainSet, test *mnist.Set, stage func(string, ...any)) ([]roundResult, error) {
	rng := rand.New(rand.NewSource(cfg.seed))
	parts, err := shards(trainSet, cfg.nodes, cfg.popBatch, cfg.split == labelSkew, rng)
	if err != nil {
		return nil, err
	}
	if cfg.split == featureSkew {
		trainSet, test = featureShift(trainSet, test, parts, rng)
	}
	w, err := cnn.NewWeights(cfg.dtype, cfg.seed, cnn.ClassifierStd)
	if err != nil {
		return nil, err
	}
	m := &model{w: w}
	defer m.Close()
	if m.train, err = cnn.New(w, cnn.Config{Batch: cfg.batch, Train: true}); err != nil {
		return nil, err
	}
	if m.pop, err = cnn.New(w, cnn.Config{Batch: cfg.popBatch}); err != nil {
		return nil, err
	}
	if m.sgd, err = cnn.NewSGD(m.train, cfg.lr); err != nil {
		return nil, err
	}
	server := m.train.Values()
	serverStats := running(m.train) // (a) at the server: what FedAvg averages
	var out []roundResult
	for r := range cfg.rounds {
		// Every node starts from the server's weights and statistics,
		// trains on its shard, and sends its weights and running
		// statistics back (equal shard sizes: equal weights).
		sum := make([]float64, len(server))
		var avg bnStats
		for k, part := range parts {
			if err := m.train.SetValues(server); err != nil {
				return nil, err
			}
			if err := serverStats.set(m.train); err != nil {
				return nil, err
			}
			if err := m.train.SetMode(bn.Train); err != nil {
				return nil, err
			}
			var batches [][]int
			for s := range cfg.localSteps {
				if err := ctx.Err(); err != nil {
					return nil, err
				}
				if len(batches) == 0 {
					shuffled := make([]int, len(part))
					for i, j := range rng.Perm(len(part)) {
						shuffled[i] = part[j]
					}
					if batches, err = mnist.Batches(shuffled, cfg.batch, true); err != nil {
						return nil, err
					}
				}
				if _, err := m.sgd.Step(trainSet, batches[0]); err != nil {
					return nil, fmt.Errorf("round %d, node %d, step %d: %w", r+1, k, s, err)
				}
				batches = batches[1:]
			}
			for i, v := range m.train.Values() {
				sum[i] += v / float64(len(parts))
			}
			avg = addStats(avg, running(m.train), 1/float64(len(parts)))
		}
		server, serverStats = sum, avg
		if err := m.train.SetValues(server); err != nil { // the Weights the pop net shares
			return nil, err
		}
		if err := m.pop.CopyAffine(m.train); err != nil {
			return nil, err
		}
		rr, err := evaluate(ctx, m, trainSet, test, parts, serverStats, cfg.truthEveryRound || r == cfg.rounds-1)
		if err != nil {
			return nil, fmt.Errorf("round %d: %w", r+1, err)
		}
		out = append(out, rr)
		last := len(rr.meanErr[0]) - 1
		if rr.truth {
			stage("%s, seed %d, round %d/%d: test accuracy %.2f / %.2f / %.2f %% with (a) / (b) / (c); bn2 mean error against (c) of (a) %.3f, of (b) %.1e",
				cfg.split, cfg.seed, r+1, cfg.rounds, 100*rr.acc[avgRunning], 100*rr.acc[merged], 100*rr.acc[union], rr.meanErr[0][last], rr.meanErr[1][last])
		} else {
			stage("%s, seed %d, round %d/%d: test accuracy %.2f / %.2f %% with (a) / (b); bn2 mean error of (a) against (b) %.3f",
				cfg.split, cfg.seed, r+1, cfg.rounds, 100*rr.acc[avgRunning], 100*rr.acc[merged], rr.meanErr[0][last])
		}
	}
	return out, nil
}

// addStats returns acc + f·s (acc nil: f·s).
func addStats(acc, s bnStats, f float64) bnStats {
	if acc == nil {
		acc = make(bnStats, len(s))
		for i := range s {
			acc[i] = [2][]float64{make([]float64, len(s[i][0])), make([]float64, len(s[i][1]))}
		}
	}
	for i := range s {
		for j := range 2 {
			for c, v := range s[i][j] {
				acc[i][j][c] += f * v
			}
		}
	}
	return acc
}

// populations computes the BN statistics of the server's model layer by
// layer, each layer's population over the given data with the layers before
// it normalizing with the statistics already found (bn.Eval): the inputs
// every layer sees at inference. Each element of parts is one holder of
// data (a node, or the server holding the union); a holder runs a PreciseBN
// pass over its own samples and sends its bn.Population; the server merges
// them (bn.MergePopulations) and sets the layer before the next one. The
// exchanges are offline: one small message per node and layer.
func populations(ctx context.Context, n *cnn.Net, set *mnist.Set, parts [][]int) (bnStats, error) {
	if err := n.SetMode(bn.Eval); err != nil {
		return nil, err
	}
	B := n.Batch
	for _, l := range n.BNs {
		var ps []bn.Population
		for _, part := range parts {
			rep, err := bn.Precise(ctx, []bn.Normalizer{l}, func(ctx context.Context, i int) (int, error) {
				return B, n.Run(set, part[i*B:(i+1)*B])
			}, bn.PreciseOptions{Batches: len(part) / B})
			if err != nil {
				return nil, fmt.Errorf("%s: %w", l.Name(), err)
			}
			// What a node would send: the encoded population.
			enc, err := rep.Populations[0].MarshalBinary()
			if err != nil {
				return nil, err
			}
			var p bn.Population
			if err := p.UnmarshalBinary(enc); err != nil {
				return nil, err
			}
			ps = append(ps, p)
		}
		all, err := bn.MergePopulations(ps...)
		if err != nil {
			return nil, err
		}
		if err := l.SetPopulation(all); err != nil {
			return nil, err
		}
	}
	return running(n), nil
}

// evaluate measures the server's model with the three kinds of statistics.
// Without truth, (c) is not computed (its accuracy is NaN) and the errors
// are measured against (b), which equals (c) to rounding where both are.
func evaluate(ctx context.Context, m *model, trainSet, test *mnist.Set, parts [][]int, avg bnStats, truth bool) (roundResult, error) {
	rr := roundResult{truth: truth}
	rr.acc[union] = math.NaN()
	b, err := populations(ctx, m.pop, trainSet, parts)
	if err != nil {
		return rr, err
	}
	c := b
	if truth {
		var all []int
		for _, p := range parts {
			all = append(all, p...)
		}
		if c, err = populations(ctx, m.pop, trainSet, [][]int{all}); err != nil {
			return rr, err
		}
	}
	for w, s := range [ways]bnStats{avg, b, c} {
		if w == union && !truth {
			continue
		}
		if err := s.set(m.pop); err != nil {
			return rr, err
		}
		if rr.acc[w], err = cnn.Accuracy(ctx, m.pop, test, nil); err != nil {
			return rr, err
		}
	}
	for w, s := range []bnStats{avg, b} {
		for l := range s {
			me, ve := statError(s[l], c[l])
			rr.meanErr[w] = append(rr.meanErr[w], me)
			rr.varErr[w] = append(rr.varErr[w], ve)
		}
	}
	for l := range b {
		if !truth {
			break
		}
		for j := range 2 {
			for ch, v := range b[l][j] {
				t := c[l][j][ch]
				rr.maxRel = math.Max(rr.maxRel, math.Abs(v-t)/math.Max(1, math.Abs(t)))
			}
		}
	}
	return rr, nil
}

// statError is the RMS over channels of (μ−μt)/σt and of σ²/σt² − 1.
func statError(est, truth [2][]float64) (meanErr, varErr float64) {
	C := len(truth[0])
	for c := range C {
		dm := (est[0][c] - truth[0][c]) / math.Sqrt(truth[1][c])
		dv := est[1][c]/truth[1][c] - 1
		meanErr += dm * dm
		varErr += dv * dv
	}
	return math.Sqrt(meanErr / float64(C)), math.Sqrt(varErr / float64(C))
}
