package domainbn

import (
	"context"
	"fmt"

	"github.com/gorgonia-bn/bn"
)

// AdaBN re-estimates the statistics of one domain from unlabeled data (Li et
// al., "Revisiting Batch Normalization for Practical Domain Adaptation",
// 2016): with every weight and γ/β frozen, the population statistics of the
// layers for that domain are replaced by the exact mean and variance of the
// features the layers see on the new data.
//
// It is the PreciseBN pass (bn.Precise, see there for run, opt, the report
// and the errors) restricted to domain: for its duration the Selector of
// every layer is set to domain, so each batch run executes is normalized as
// domain's samples and its statistics fold into domain's running statistics
// only — the other domains keep theirs bit for bit. Afterwards every
// selector and mode is restored. run must not change the selectors.
//
// A layer without domain-specific statistics has one shared set, which
// AdaBN replaces. For a new domain, give the layers a spare domain slot and
// start it from a trained domain with CopyDomain (γ/β and statistics), then
// run AdaBN on it.
func AdaBN(ctx context.Context, layers []*Layer, domain int, run bn.BatchFunc, opt bn.PreciseOptions) (bn.PreciseReport, error) {
	norms := make([]bn.Normalizer, len(layers))
	var sels []*Selector
	for i, l := range layers {
		if l == nil {
			return bn.PreciseReport{}, fmt.Errorf("%w: nil layer %d", bn.ErrOption, i)
		}
		if err := l.check(domain); err != nil {
			return bn.PreciseReport{}, err
		}
		norms[i] = l
		seen := false
		for _, s := range sels {
			seen = seen || s == l.sel
		}
		if !seen {
			sels = append(sels, l.sel)
		}
	}
	saved := make([]selection, len(sels))
	for i, s := range sels {
		saved[i] = s.get()
	}
	defer func() {
		for i, s := range sels {
			s.restore(saved[i])
		}
	}()
	for _, s := range sels {
		if err := s.SetDomain(domain); err != nil {
			return bn.PreciseReport{}, err
		}
	}
	return bn.Precise(ctx, norms, run, opt)
}
