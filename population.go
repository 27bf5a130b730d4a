package bn

// Population statistics as exact moments.
//
// A layer's running statistics (mean and unbiased variance) cannot be
// merged: the average of several nodes' variances is not the variance of
// their union, because it leaves out the spread of the nodes' means (law of
// total variance), which is largest exactly when the nodes see different
// data (federated learning, label-skewed shards). A Population keeps what
// the merge needs — per channel the count n, the mean and M2, the sum of
// squared deviations from the mean, in float64 — so that populations
// computed on different machines, at different times, with no communicator
// between them, merge offline into the exact population of the union with
// Chan's rule (MergePopulations), the same rule every other merge of this
// package uses.
//
// A Precise pass returns the population of every layer it updated
// (PreciseReport.Populations); MarshalBinary/UnmarshalBinary carry it to
// another process; SetPopulation writes it into a layer's running
// statistics as Precise does.

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"math"

	"github.com/gorgonia-bn/bn/internal/kern"
)

// Population is the exact population statistics of one layer: for every
// group (domain; 1 for a plain layer) and channel, the number of values
// seen, their mean and M2 = Σ(x−mean)², all float64. Index g·Channels+c
// holds group g, channel c. A group or channel with N = 0 saw no data.
type Population struct {
	// Layer is the name of the layer the statistics belong to. Merging
	// populations of differently named layers is an error.
	Layer string
	// Groups and Channels give the layout of N, Mean and M2 (each of
	// length Groups·Channels).
	Groups, Channels int
	// N, Mean and M2 are the count, mean and sum of squared deviations.
	N, Mean, M2 []float64
}

// populationOf returns the population of layer l from its moments.
func populationOf(l *Layer, moms []kern.Moments) Population {
	p := Population{Layer: l.Name(), Groups: l.groups, Channels: l.c}
	p.N, p.Mean, p.M2 = make([]float64, len(moms)), make([]float64, len(moms)), make([]float64, len(moms))
	for i, m := range moms {
		p.N[i], p.Mean[i], p.M2[i] = m.N, m.Mean, m.M2
	}
	return p
}

func (p Population) moments(i int) kern.Moments {
	return kern.Moments{N: p.N[i], Mean: p.Mean[i], M2: p.M2[i]}
}

// Var returns the biased variance M2/N of every group and channel (NaN
// where N = 0).
func (p Population) Var() []float64 {
	out := make([]float64, len(p.N))
	for i := range out {
		out[i] = p.moments(i).Var()
	}
	return out
}

// UnbiasedVar returns M2/(N−1), the variance a layer's running statistics
// hold, of every group and channel (NaN where N ≤ 1).
func (p Population) UnbiasedVar() []float64 {
	out := make([]float64, len(p.N))
	for i := range out {
		out[i] = p.moments(i).UnbiasedVar()
	}
	return out
}

// Check reports (ErrState) a population whose slices do not have the
// length Groups·Channels, or with a count that is negative, fractional or
// not finite, a mean that is not finite, or an M2 that is negative or not
// finite.
func (p Population) Check() error {
	if p.Groups < 1 || p.Channels < 1 || p.Channels > MaxChannels/p.Groups {
		return fmt.Errorf("%w: population of %d groups × %d channels", ErrState, p.Groups, p.Channels)
	}
	n := p.Groups * p.Channels
	if len(p.N) != n || len(p.Mean) != n || len(p.M2) != n {
		return fmt.Errorf("%w: population of %d groups × %d channels has %d/%d/%d counts/means/M2", ErrState, p.Groups, p.Channels, len(p.N), len(p.Mean), len(p.M2))
	}
	for i := range n {
		c, m, s := p.N[i], p.Mean[i], p.M2[i]
		if !(c >= 0) || math.IsInf(c, 0) || c != math.Trunc(c) || math.IsNaN(m) || math.IsInf(m, 0) || !(s >= 0) || math.IsInf(s, 0) {
			return fmt.Errorf("%w: population %s, entry %d: count %v, mean %v, M2 %v", ErrState, p.Layer, i, c, m, s)
		}
	}
	return nil
}

// MergePopulations returns the population of the union of the data the
// populations ps were computed on: per group and channel, the Chan merge
// of their moments, in the order given (exact up to float64 rounding;
// empty entries, N = 0, leave the others unchanged bit for bit). All must
// be valid (see Check, ErrState), have the same Groups and Channels
// (ErrShape) and the same layer name where both are set (ErrState). At
// least one population is needed (ErrOption). The result has the first
// non-empty layer name.
func MergePopulations(ps ...Population) (Population, error) {
	if len(ps) == 0 {
		return Population{}, fmt.Errorf("%w: MergePopulations of no populations", ErrOption)
	}
	out := Population{Groups: ps[0].Groups, Channels: ps[0].Channels}
	for i, p := range ps {
		if err := p.Check(); err != nil {
			return Population{}, fmt.Errorf("population %d of %d: %w", i, len(ps), err)
		}
		if p.Groups != out.Groups || p.Channels != out.Channels {
			return Population{}, fmt.Errorf("%w: population %d is of %d groups × %d channels, population 0 of %d × %d", ErrShape, i, p.Groups, p.Channels, out.Groups, out.Channels)
		}
		if p.Layer != "" {
			if out.Layer == "" {
				out.Layer = p.Layer
			} else if p.Layer != out.Layer {
				return Population{}, fmt.Errorf("%w: population %d is of layer %q, an earlier one of layer %q", ErrState, i, p.Layer, out.Layer)
			}
		}
	}
	n := out.Groups * out.Channels
	out.N, out.Mean, out.M2 = make([]float64, n), make([]float64, n), make([]float64, n)
	for k := range n {
		var m kern.Moments
		for _, p := range ps {
			m = m.Merge(p.moments(k))
		}
		out.N[k], out.Mean[k], out.M2[k] = m.N, m.Mean, m.M2
	}
	return out, nil
}

// SetPopulation replaces the running statistics of l with p, as Precise
// does: the mean, and the unbiased variance M2/(N−1), of every group and
// channel with N > 1; the others keep their statistics. p must be valid
// (ErrState) and of the layer's groups and channels (ErrShape); the layer
// name is not checked.
func (l *Layer) SetPopulation(p Population) error {
	if l == nil {
		return fmt.Errorf("%w: SetPopulation on a nil *Layer", ErrOption)
	}
	if err := p.Check(); err != nil {
		return err
	}
	if p.Groups != l.groups || p.Channels != l.c {
		return fmt.Errorf("%w: population of %d groups × %d channels for layer %s of %d × %d", ErrShape, p.Groups, p.Channels, l.Name(), l.groups, l.c)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for k := range p.N {
		if m := p.moments(k); m.N > 1 {
			l.rmean[k], l.rvar[k] = m.Mean, m.UnbiasedVar()
		}
	}
	return nil
}

// The population encoding, version 1, little-endian, floats IEEE-754
// float64:
//
//	offset  size   field
//	0       4      magic "GBNP"
//	4       4      version (uint32) = 1
//	8       4      groups G (uint32)
//	12      4      channels C (uint32)
//	16      4      length L of the layer name (uint32)
//	20      L      layer name (UTF-8)
//	…       8·G·C  counts N, then 8·G·C means, then 8·G·C M2
//	end−4   4      CRC-32 (IEEE) of every preceding byte
const (
	populationMagic   = "GBNP"
	populationVersion = 1
	populationHeader  = 20
	maxPopulationName = 1 << 16
)

// MarshalBinary encodes the population (see the format above). An invalid
// population (see Check) is an error.
func (p Population) MarshalBinary() ([]byte, error) {
	if err := p.Check(); err != nil {
		return nil, err
	}
	if len(p.Layer) > maxPopulationName {
		return nil, fmt.Errorf("%w: layer name of %d bytes", ErrState, len(p.Layer))
	}
	n := p.Groups * p.Channels
	b := make([]byte, 0, populationHeader+len(p.Layer)+24*n+4)
	b = append(b, populationMagic...)
	b = binary.LittleEndian.AppendUint32(b, populationVersion)
	b = binary.LittleEndian.AppendUint32(b, uint32(p.Groups))
	b = binary.LittleEndian.AppendUint32(b, uint32(p.Channels))
	b = binary.LittleEndian.AppendUint32(b, uint32(len(p.Layer)))
	b = append(b, p.Layer...)
	for _, s := range [][]float64{p.N, p.Mean, p.M2} {
		for _, v := range s {
			b = binary.LittleEndian.AppendUint64(b, math.Float64bits(v))
		}
	}
	return binary.LittleEndian.AppendUint32(b, crc32.ChecksumIEEE(b)), nil
}

// UnmarshalBinary decodes a population written by MarshalBinary. A
// truncated, corrupt or invalid encoding is ErrState; p is then unchanged.
func (p *Population) UnmarshalBinary(b []byte) error {
	if len(b) < populationHeader+4 || string(b[:4]) != populationMagic {
		return fmt.Errorf("%w: not a bn population", ErrState)
	}
	if v := binary.LittleEndian.Uint32(b[4:]); v != populationVersion {
		return fmt.Errorf("%w: population version %d, this package reads %d", ErrState, v, populationVersion)
	}
	if crc32.ChecksumIEEE(b[:len(b)-4]) != binary.LittleEndian.Uint32(b[len(b)-4:]) {
		return fmt.Errorf("%w: checksum mismatch (corrupt population)", ErrState)
	}
	G, C, L := binary.LittleEndian.Uint32(b[8:]), binary.LittleEndian.Uint32(b[12:]), binary.LittleEndian.Uint32(b[16:])
	if G < 1 || C < 1 || uint64(G)*uint64(C) > MaxChannels || L > maxPopulationName {
		return fmt.Errorf("%w: population of %d groups × %d channels, name of %d bytes", ErrState, G, C, L)
	}
	n := int(G) * int(C)
	if want := populationHeader + int(L) + 24*n + 4; len(b) != want {
		return fmt.Errorf("%w: population of %d bytes, want %d", ErrState, len(b), want)
	}
	q := Population{Groups: int(G), Channels: int(C), Layer: string(b[populationHeader : populationHeader+L])}
	r := b[populationHeader+L:]
	next := func() []float64 {
		s := make([]float64, n)
		for i := range s {
			s[i] = math.Float64frombits(binary.LittleEndian.Uint64(r))
			r = r[8:]
		}
		return s
	}
	q.N, q.Mean, q.M2 = next(), next(), next()
	if err := q.Check(); err != nil {
		return err
	}
	*p = q
	return nil
}
