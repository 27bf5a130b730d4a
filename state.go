package bn

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"math"
	"slices"

	"gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

const (
	stateMagic   = "GBNS"
	stateVersion = 1
	stateHeader  = 24
)

// MarshalBinary encodes the state of this one layer — running statistics,
// counters, γ and β — in this package's own format, version 1, which it
// reads back bit for bit (UnmarshalBinary). For a model's checkpoint, and
// for files PyTorch reads, use a StateDict (safetensors under PyTorch's
// keys); MarshalBinary stays for the states already saved with it and for
// float32 layers whose float64 running statistics must survive exactly
// (a StateDict stores them in the layer's dtype, as PyTorch does).
//
// All integers and floats are little-endian; floats are IEEE-754 float64
// whatever the layer's dtype:
//
//	offset  size  field
//	0       4     magic "GBNS"
//	4       4     version (uint32) = 1
//	8       1     dtype: 1 float32, 2 float64
//	9       1     flags: bit 0 affine, bit 1 track running stats
//	10      2     reserved, 0
//	12      4     channels C (uint32)
//	16      4     groups G of running statistics (uint32; 1 for plain BN)
//	20      4     groups A of γ/β (uint32; 1 or G)
//	24      8·G   batches tracked per group (int64)
//	…       8·G·C running mean
//	…       8·G·C running variance (unbiased)
//	…       8·A·C γ, then 8·A·C β — only when affine
//	end−4   4     CRC-32 (IEEE) of every preceding byte
//
// The format is stable across versions of this package.
func (l *Layer) MarshalBinary() ([]byte, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	G, A, C := l.groups, l.affGroups, l.c
	size := stateHeader + 8*G + 16*G*C + 4
	var gam, bet []float64
	if l.gamma != nil {
		var err error
		if gam, err = floats(l.gamma.Value()); err != nil {
			return nil, err
		}
		if bet, err = floats(l.beta.Value()); err != nil {
			return nil, err
		}
		size += 16 * A * C
	}
	b := make([]byte, 0, size)
	b = append(b, stateMagic...)
	b = binary.LittleEndian.AppendUint32(b, stateVersion)
	b = append(b, dtypeCode(l.dt), l.flags(), 0, 0)
	b = binary.LittleEndian.AppendUint32(b, uint32(C))
	b = binary.LittleEndian.AppendUint32(b, uint32(G))
	b = binary.LittleEndian.AppendUint32(b, uint32(A))
	for _, t := range l.tracked {
		b = binary.LittleEndian.AppendUint64(b, uint64(t))
	}
	for _, s := range [][]float64{l.rmean, l.rvar, gam, bet} {
		for _, v := range s {
			b = binary.LittleEndian.AppendUint64(b, math.Float64bits(v))
		}
	}
	return binary.LittleEndian.AppendUint32(b, crc32.ChecksumIEEE(b)), nil
}

// UnmarshalBinary restores a state written by MarshalBinary into a layer of
// the same configuration (channels, groups, dtype, affine, tracking). On any
// error (ErrState) the layer is left unchanged.
func (l *Layer) UnmarshalBinary(b []byte) error {
	G, A, C := l.groups, l.affGroups, l.c
	want := stateHeader + 8*G + 16*G*C + 4
	if l.gamma != nil {
		want += 16 * A * C
	}
	if len(b) < stateHeader+4 || string(b[:4]) != stateMagic {
		return fmt.Errorf("%w: not a bn layer state", ErrState)
	}
	if v := binary.LittleEndian.Uint32(b[4:]); v != stateVersion {
		return fmt.Errorf("%w: state version %d, this package reads %d", ErrState, v, stateVersion)
	}
	if crc32.ChecksumIEEE(b[:len(b)-4]) != binary.LittleEndian.Uint32(b[len(b)-4:]) {
		return fmt.Errorf("%w: checksum mismatch (corrupt state)", ErrState)
	}
	if b[8] != dtypeCode(l.dt) || b[9] != l.flags() {
		return fmt.Errorf("%w: state of dtype code %d flags %#x, layer has %d %#x", ErrState, b[8], b[9], dtypeCode(l.dt), l.flags())
	}
	c, g, a := binary.LittleEndian.Uint32(b[12:]), binary.LittleEndian.Uint32(b[16:]), binary.LittleEndian.Uint32(b[20:])
	if int(c) != C || int(g) != G || int(a) != A {
		return fmt.Errorf("%w: state for C=%d groups=%d/%d, layer has C=%d groups=%d/%d", ErrState, c, g, a, C, G, A)
	}
	if len(b) != want {
		return fmt.Errorf("%w: state of %d bytes, want %d", ErrState, len(b), want)
	}
	p := b[stateHeader:]
	tracked := make([]int64, G)
	for i := range tracked {
		tracked[i] = int64(binary.LittleEndian.Uint64(p))
		p = p[8:]
		if tracked[i] < 0 {
			return fmt.Errorf("%w: negative batch counter", ErrState)
		}
	}
	next := func(n int) []float64 {
		s := make([]float64, n)
		for i := range s {
			s[i] = math.Float64frombits(binary.LittleEndian.Uint64(p))
			p = p[8:]
		}
		return s
	}
	mean, variance := next(G*C), next(G*C)
	if err := l.checkStats(mean, variance); err != nil {
		return err
	}
	var gam, bet []float64
	if l.gamma != nil {
		gam, bet = next(A*C), next(A*C)
		for i := range gam {
			if math.IsNaN(gam[i]) || math.IsInf(gam[i], 0) || math.IsNaN(bet[i]) || math.IsInf(bet[i], 0) {
				return fmt.Errorf("%w: γ/β of channel %d not finite", ErrState, i)
			}
		}
		gt, ok1 := l.gamma.Value().(tensor.Tensor)
		bt, ok2 := l.beta.Value().(tensor.Tensor)
		if !ok1 || !ok2 {
			return fmt.Errorf("%w: the layer's γ or β has no tensor value", ErrState)
		}
		// In place: graphs that share γ and β (Layer.In) see the values.
		setFloats(gt, gam)
		setFloats(bt, bet)
	}
	l.mu.Lock()
	copy(l.rmean, mean)
	copy(l.rvar, variance)
	copy(l.tracked, tracked)
	l.mu.Unlock()
	return nil
}

func (l *Layer) flags() byte {
	var f byte
	if l.cfg.affine {
		f |= 1
	}
	if l.cfg.track {
		f |= 2
	}
	return f
}

func dtypeCode(dt tensor.Dtype) byte {
	if dt == tensor.Float32 {
		return 1
	}
	return 2
}

// floats returns a tensor value's elements as float64.
func floats(v gorgonia.Value) ([]float64, error) {
	if v == nil {
		return nil, fmt.Errorf("%w: parameter has no value", ErrState)
	}
	switch v.Dtype() {
	case tensor.Float32:
		s, err := data[float32](v)
		if err != nil {
			return nil, err
		}
		r := make([]float64, len(s))
		for i := range s {
			r[i] = float64(s[i])
		}
		return r, nil
	case tensor.Float64:
		s, err := data[float64](v)
		if err != nil {
			return nil, err
		}
		return append([]float64(nil), s...), nil
	}
	return nil, fmt.Errorf("%w: %v", ErrDtype, v.Dtype())
}

// SetAffine sets γ and β from tensors of the layer's dtype (ErrDtype) and
// the shape of Gamma() — (C), or (groups, C) for per-group γ/β — (ErrShape),
// with finite values (ErrState), for parameters that come from elsewhere
// (another framework, a hand-made initialization). The values are copied
// into the layer's γ and β tensors in place, so every graph that shares
// them (Layer.In) sees them; a layer without affine parameters is
// ErrOption. On error nothing changes.
func (l *Layer) SetAffine(gamma, beta tensor.Tensor) error {
	if l == nil || l.gamma == nil {
		return fmt.Errorf("%w: SetAffine on a layer without γ and β (WithAffine(false))", ErrOption)
	}
	want := l.gamma.Shape()
	var vals [2][]float64
	for i, t := range []tensor.Tensor{gamma, beta} {
		name := [2]string{"γ", "β"}[i]
		if t == nil {
			return fmt.Errorf("%w: SetAffine: nil %s", ErrShape, name)
		}
		if t.Dtype() != l.dt {
			return fmt.Errorf("%w: SetAffine: %s is %v, layer %s is %v", ErrDtype, name, t.Dtype(), l.cfg.name, l.dt)
		}
		if !slices.Equal(t.Shape(), want) {
			return fmt.Errorf("%w: SetAffine: %s has shape %v, layer %s wants %v", ErrShape, name, t.Shape(), l.cfg.name, want)
		}
		v, err := floats(t)
		if err != nil {
			return err
		}
		if j := nonFinite(v); j >= 0 {
			return fmt.Errorf("%w: SetAffine: %s[%d] is %v", ErrState, name, j, v[j])
		}
		vals[i] = v
	}
	gt, ok1 := l.gamma.Value().(tensor.Tensor)
	bt, ok2 := l.beta.Value().(tensor.Tensor)
	if !ok1 || !ok2 {
		return fmt.Errorf("%w: the layer's γ or β has no tensor value", ErrState)
	}
	setFloats(gt, vals[0])
	setFloats(bt, vals[1])
	return nil
}
