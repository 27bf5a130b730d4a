package bn

// Model checkpoints in safetensors, under PyTorch's names.
//
// A StateDict lists what a checkpoint holds: the BN layers of a model, each
// under a prefix, and any other tensor the user names (convolution and
// linear weights). Its file is a safetensors file
// (github.com/nlpodyssey/safetensors: an 8-byte little-endian header
// length, a JSON header of names, dtypes, shapes and offsets, raw
// little-endian data), which PyTorch reads with safetensors.torch.load_file
// and load_state_dict, and which it writes with save_file(model.state_dict()).

import (
	"encoding/binary"
	"fmt"
	"math"
	"os"
	"slices"
	"strings"

	"github.com/nlpodyssey/safetensors"
	"gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// StateDict is a model's checkpoint layout: which tensors a file holds,
// under which keys. Build it once per model with AddLayer, AddNode and
// AddTensor (the order does not matter), then Save or Load any number of
// times.
//
// The keys of a layer added under prefix p are PyTorch's (torch.nn.BatchNorm1d,
// 2d and 3d), so a state dict of a PyTorch model loads into the equivalent
// Gorgonia model and back:
//
//	p.weight               γ, (C), the layer's dtype     (affine layers only)
//	p.bias                 β, (C), the layer's dtype     (affine layers only)
//	p.running_mean         (C), the layer's dtype        (layers that track running statistics)
//	p.running_var          (C), the layer's dtype, unbiased
//	p.num_batches_tracked  int64 scalar (shape ())
//
// A grouped layer (package domainbn: D sets of statistics) uses the same
// keys with a leading groups axis: running_mean and running_var (D, C),
// num_batches_tracked (D), and weight and bias (D, C) when γ and β are per
// domain, else (C). PyTorch has no such layer; the shapes say what they are.
//
// The running statistics are kept in float64 by the layer and stored in the
// layer's dtype, as PyTorch stores its buffers: a float32 layer's statistics
// are rounded to float32 in the file. (Layer.MarshalBinary keeps them in
// float64 bit for bit.)
type StateDict struct {
	entries []stateEntry
	keys    map[string]bool
	err     error
}

// stateEntry is one named item: a layer (l set) or a tensor (t or n set).
type stateEntry struct {
	key string // the prefix of a layer, the key of a tensor
	l   *Layer
	n   *gorgonia.Node
	t   tensor.Tensor
}

// NewStateDict returns an empty StateDict.
func NewStateDict() *StateDict { return &StateDict{keys: map[string]bool{}} }

// AddLayer adds the state of a BN layer (a *Layer, or a layer of package
// domainbn) under prefix: prefix.weight, prefix.bias, prefix.running_mean,
// prefix.running_var, prefix.num_batches_tracked (see StateDict). An empty
// or repeated key, or a nil layer, is ErrOption (reported by this call and
// by Save and Load).
func (sd *StateDict) AddLayer(prefix string, n Normalizer) error {
	if isNil(n) || n.BatchNorm() == nil {
		return sd.fail(fmt.Errorf("%w: state dict: layer %q is nil", ErrOption, prefix))
	}
	l := n.BatchNorm()
	var keys []string
	for _, k := range l.stateKeys() {
		keys = append(keys, prefix+"."+k)
	}
	if err := sd.claim(prefix, keys...); err != nil {
		return err
	}
	sd.entries = append(sd.entries, stateEntry{key: prefix, l: l})
	return nil
}

// AddNode adds the value of a node (a weight of the model) under key. The
// node must hold a float32 or float64 tensor when the dict is saved or
// loaded; Load copies into that tensor in place, so every graph that shares
// it (gorgonia.WithValue) sees the loaded values.
func (sd *StateDict) AddNode(key string, n *gorgonia.Node) error {
	if n == nil {
		return sd.fail(fmt.Errorf("%w: state dict: node %q is nil", ErrOption, key))
	}
	if err := sd.claim(key, key); err != nil {
		return err
	}
	sd.entries = append(sd.entries, stateEntry{key: key, n: n})
	return nil
}

// AddTensor adds a float32 or float64 tensor under key; Load copies into it
// in place.
func (sd *StateDict) AddTensor(key string, t tensor.Tensor) error {
	if t == nil {
		return sd.fail(fmt.Errorf("%w: state dict: tensor %q is nil", ErrOption, key))
	}
	if dt := t.Dtype(); dt != tensor.Float32 && dt != tensor.Float64 {
		return sd.fail(fmt.Errorf("%w: state dict: tensor %q is %v (want float32 or float64)", ErrDtype, key, dt))
	}
	if err := sd.claim(key, key); err != nil {
		return err
	}
	sd.entries = append(sd.entries, stateEntry{key: key, t: t})
	return nil
}

// Keys returns every key the dict's file holds, sorted.
func (sd *StateDict) Keys() []string {
	var out []string
	for k := range sd.keys {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

func (sd *StateDict) fail(err error) error {
	if sd.err == nil {
		sd.err = err
	}
	return err
}

// claim reserves the keys of one entry named name.
func (sd *StateDict) claim(name string, keys ...string) error {
	if sd.keys == nil {
		sd.keys = map[string]bool{}
	}
	if name == "" {
		return sd.fail(fmt.Errorf("%w: state dict: empty key", ErrOption))
	}
	for _, k := range keys {
		if sd.keys[k] {
			return sd.fail(fmt.Errorf("%w: state dict: key %q added twice", ErrOption, k))
		}
	}
	for _, k := range keys {
		sd.keys[k] = true
	}
	return nil
}

// stateKeys returns the suffixes of the layer's keys.
func (l *Layer) stateKeys() []string {
	var k []string
	if l.gamma != nil {
		k = append(k, "weight", "bias")
	}
	if l.cfg.track {
		k = append(k, "running_mean", "running_var", "num_batches_tracked")
	}
	return k
}

// Save returns the safetensors encoding of the dict's current values.
func (sd *StateDict) Save() ([]byte, error) {
	if sd.err != nil {
		return nil, sd.err
	}
	views := map[string]stView{}
	for _, e := range sd.entries {
		if e.l == nil {
			t, err := e.tensor()
			if err != nil {
				return nil, err
			}
			views[e.key] = viewOf(t)
			continue
		}
		if err := e.l.saveViews(e.key, views); err != nil {
			return nil, err
		}
	}
	b, err := safetensors.Serialize(views, map[string]string{"format": "pt"})
	if err != nil {
		return nil, fmt.Errorf("%w: state dict: %w", ErrState, err)
	}
	return b, nil
}

// WriteFile saves the dict (Save) to a file, with permissions 0644.
func (sd *StateDict) WriteFile(path string) error {
	b, err := sd.Save()
	if err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o644)
}

// ReadFile loads the dict (Load) from a file.
func (sd *StateDict) ReadFile(path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	return sd.Load(b)
}

// tensor returns the tensor of a node or tensor entry.
func (e stateEntry) tensor() (*tensor.Dense, error) {
	var v any = e.t
	if e.n != nil {
		if e.n.Value() == nil {
			return nil, fmt.Errorf("%w: state dict: node %s (%q) has no value", ErrState, e.n.Name(), e.key)
		}
		v = e.n.Value()
	}
	d, ok := v.(*tensor.Dense)
	if !ok || d.RequiresIterator() {
		return nil, fmt.Errorf("%w: state dict: %q holds a %T, want a contiguous *tensor.Dense", ErrState, e.key, v)
	}
	if dt := d.Dtype(); dt != tensor.Float32 && dt != tensor.Float64 {
		return nil, fmt.Errorf("%w: state dict: %q is %v (want float32 or float64)", ErrDtype, e.key, dt)
	}
	if d.IsScalar() {
		return nil, fmt.Errorf("%w: state dict: %q is a scalar; give it shape (1)", ErrShape, e.key)
	}
	return d, nil
}

// saveViews adds the layer's tensors under prefix to views.
func (l *Layer) saveViews(prefix string, views map[string]stView) error {
	statShape := []uint64{uint64(l.c)}
	trackShape := []uint64{} // PyTorch's 0-dim counter
	if l.groups > 1 {
		statShape = []uint64{uint64(l.groups), uint64(l.c)}
		trackShape = []uint64{uint64(l.groups)}
	}
	if l.gamma != nil {
		for i, n := range []*gorgonia.Node{l.gamma, l.beta} {
			v, err := floats(n.Value())
			if err != nil {
				return err
			}
			views[prefix+"."+[2]string{"weight", "bias"}[i]] = floatView(l.dt, shapeU64(n.Shape()), v)
		}
	}
	if !l.cfg.track {
		return nil
	}
	l.mu.Lock()
	views[prefix+".running_mean"] = floatView(l.dt, statShape, l.rmean)
	views[prefix+".running_var"] = floatView(l.dt, statShape, l.rvar)
	t := make([]byte, 0, 8*len(l.tracked))
	for _, v := range l.tracked {
		t = binary.LittleEndian.AppendUint64(t, uint64(v))
	}
	l.mu.Unlock()
	views[prefix+".num_batches_tracked"] = stView{dt: safetensors.I64, shape: trackShape, data: t}
	return nil
}

// stView is a safetensors.View. (safetensors.NewTensorView counts a
// 0-dimensional shape as 0 elements, so PyTorch's scalar counter needs its
// own view.)
type stView struct {
	dt    safetensors.DType
	shape []uint64
	data  []byte
}

func (v stView) DType() safetensors.DType { return v.dt }
func (v stView) Shape() []uint64          { return v.shape }
func (v stView) Data() []byte             { return v.data }
func (v stView) DataLen() uint64          { return uint64(len(v.data)) }

func shapeU64(s tensor.Shape) []uint64 {
	out := make([]uint64, len(s))
	for i, d := range s {
		out[i] = uint64(d)
	}
	return out
}

// floatView encodes v in dtype dt (float32 or float64), little-endian.
func floatView(dt tensor.Dtype, shape []uint64, v []float64) stView {
	if dt == tensor.Float32 {
		b := make([]byte, 0, 4*len(v))
		for _, x := range v {
			b = binary.LittleEndian.AppendUint32(b, math.Float32bits(float32(x)))
		}
		return stView{dt: safetensors.F32, shape: shape, data: b}
	}
	b := make([]byte, 0, 8*len(v))
	for _, x := range v {
		b = binary.LittleEndian.AppendUint64(b, math.Float64bits(x))
	}
	return stView{dt: safetensors.F64, shape: shape, data: b}
}

func viewOf(t *tensor.Dense) stView {
	shape := shapeU64(t.Shape())
	if t.Dtype() == tensor.Float32 {
		s := t.Data().([]float32)
		b := make([]byte, 0, 4*len(s))
		for _, x := range s {
			b = binary.LittleEndian.AppendUint32(b, math.Float32bits(x))
		}
		return stView{dt: safetensors.F32, shape: shape, data: b}
	}
	return floatView(tensor.Float64, shape, t.Data().([]float64))
}

// StateError is the error of StateDict.Load: every key that is missing
// from the file, every key of the file the dict does not have, and every
// key whose shape, dtype or values do not fit, all at once. It wraps
// ErrState.
type StateError struct {
	Missing    []string // keys the dict expects and the file lacks
	Unexpected []string // keys of the file the dict does not expect
	Mismatched []string // "key: what is wrong"
}

// Error lists the problems.
func (e *StateError) Error() string {
	var parts []string
	if len(e.Missing) > 0 {
		parts = append(parts, fmt.Sprintf("missing keys %q", e.Missing))
	}
	if len(e.Unexpected) > 0 {
		parts = append(parts, fmt.Sprintf("unexpected keys %q", e.Unexpected))
	}
	if len(e.Mismatched) > 0 {
		parts = append(parts, "mismatches: "+strings.Join(e.Mismatched, "; "))
	}
	return fmt.Sprintf("%v: state dict: %s", ErrState, strings.Join(parts, "; "))
}

// Unwrap returns ErrState.
func (e *StateError) Unwrap() error { return ErrState }

// Load sets the dict's tensors and layers from a safetensors encoding (a
// file that Save or PyTorch wrote). Every key of the dict must be in the
// file, and every key of the file in the dict (PyTorch's strict loading),
// with the same shape; float32 and float64 convert into each other (as
// PyTorch's load_state_dict copies), num_batches_tracked must be an
// integer type, running variances non-negative, everything finite.
// Problems are reported all at once in a *StateError (errors.Is(err,
// ErrState)), and then nothing is changed. Values are copied into the
// existing tensors, in place.
func (sd *StateDict) Load(b []byte) error {
	if sd.err != nil {
		return sd.err
	}
	st, err := safetensors.Deserialize(b)
	if err != nil {
		return fmt.Errorf("%w: state dict: not a safetensors file: %w", ErrState, err)
	}
	se := &StateError{}
	seen := map[string]bool{}
	// read returns the file's values of key, checked against shape, or nil.
	read := func(key string, shape []uint64, integer bool) []float64 {
		tv, ok := st.Tensor(key)
		if !ok {
			se.Missing = append(se.Missing, key)
			return nil
		}
		seen[key] = true
		if !slices.Equal(tv.Shape(), shape) {
			se.Mismatched = append(se.Mismatched, fmt.Sprintf("%s: shape %v in the file, the model has %v", key, tv.Shape(), shape))
			return nil
		}
		v, err := decode(tv, integer)
		if err != nil {
			se.Mismatched = append(se.Mismatched, fmt.Sprintf("%s: %v", key, err))
			return nil
		}
		return v
	}
	var apply []func()
	for _, e := range sd.entries {
		if e.l != nil {
			if f := e.l.loadViews(e.key, read, se); f != nil {
				apply = append(apply, f)
			}
			continue
		}
		t, err := e.tensor()
		if err != nil {
			return err
		}
		v := read(e.key, shapeU64(t.Shape()), false)
		if v == nil {
			continue
		}
		if i := nonFinite(v); i >= 0 {
			se.Mismatched = append(se.Mismatched, fmt.Sprintf("%s: element %d is %v", e.key, i, v[i]))
			continue
		}
		apply = append(apply, func() { setFloats(t, v) })
	}
	for _, k := range st.Names() {
		if !seen[k] && !sd.keys[k] {
			se.Unexpected = append(se.Unexpected, k)
		}
	}
	slices.Sort(se.Missing)
	slices.Sort(se.Unexpected)
	if len(se.Missing)+len(se.Unexpected)+len(se.Mismatched) > 0 {
		return se
	}
	for _, f := range apply {
		f()
	}
	return nil
}

// loadViews reads and checks the layer's keys under prefix and returns the
// function that sets them (nil when something did not fit).
func (l *Layer) loadViews(prefix string, read func(string, []uint64, bool) []float64, se *StateError) func() {
	ok := true
	var gam, bet, mean, variance, tracked []float64
	if l.gamma != nil {
		shape := shapeU64(l.gamma.Shape())
		gam, bet = read(prefix+".weight", shape, false), read(prefix+".bias", shape, false)
		for i, v := range [][]float64{gam, bet} {
			if v == nil {
				ok = false
			} else if j := nonFinite(v); j >= 0 {
				se.Mismatched = append(se.Mismatched, fmt.Sprintf("%s.%s: element %d is %v", prefix, [2]string{"weight", "bias"}[i], j, v[j]))
				ok = false
			}
		}
	}
	if l.cfg.track {
		statShape, trackShape := []uint64{uint64(l.c)}, []uint64{}
		if l.groups > 1 {
			statShape, trackShape = []uint64{uint64(l.groups), uint64(l.c)}, []uint64{uint64(l.groups)}
		}
		mean, variance = read(prefix+".running_mean", statShape, false), read(prefix+".running_var", statShape, false)
		tracked = read(prefix+".num_batches_tracked", trackShape, true)
		if mean == nil || variance == nil || tracked == nil {
			ok = false
		} else {
			if err := l.checkStats(mean, variance); err != nil {
				se.Mismatched = append(se.Mismatched, fmt.Sprintf("%s: %s", prefix, strings.TrimPrefix(err.Error(), ErrState.Error()+": ")))
				ok = false
			}
			for _, t := range tracked {
				if t < 0 {
					se.Mismatched = append(se.Mismatched, fmt.Sprintf("%s.num_batches_tracked: negative (%v)", prefix, t))
					ok = false
				}
			}
		}
	}
	if !ok {
		return nil
	}
	return func() {
		if gam != nil {
			setFloats(l.gamma.Value().(tensor.Tensor), gam)
			setFloats(l.beta.Value().(tensor.Tensor), bet)
		}
		if mean == nil {
			return
		}
		l.mu.Lock()
		copy(l.rmean, mean)
		copy(l.rvar, variance)
		for i, t := range tracked {
			l.tracked[i] = int64(t)
		}
		l.mu.Unlock()
	}
}

// decode returns a tensor's values as float64: floats, or integers when
// integer is set.
func decode(tv safetensors.TensorView, integer bool) ([]float64, error) {
	b := tv.Data()
	switch dt := tv.DType(); {
	case !integer && dt == safetensors.F32:
		v := make([]float64, len(b)/4)
		for i := range v {
			v[i] = float64(math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:])))
		}
		return v, nil
	case !integer && dt == safetensors.F64:
		v := make([]float64, len(b)/8)
		for i := range v {
			v[i] = math.Float64frombits(binary.LittleEndian.Uint64(b[8*i:]))
		}
		return v, nil
	case integer && dt == safetensors.I64:
		v := make([]float64, len(b)/8)
		for i := range v {
			v[i] = float64(int64(binary.LittleEndian.Uint64(b[8*i:])))
		}
		return v, nil
	case integer && dt == safetensors.I32:
		v := make([]float64, len(b)/4)
		for i := range v {
			v[i] = float64(int32(binary.LittleEndian.Uint32(b[4*i:])))
		}
		return v, nil
	default:
		want := "F32 or F64"
		if integer {
			want = "I64 or I32"
		}
		return nil, fmt.Errorf("dtype %v in the file, want %s", dt, want)
	}
}

// nonFinite returns the index of the first NaN or Inf of v, or -1.
func nonFinite(v []float64) int {
	for i, x := range v {
		if math.IsNaN(x) || math.IsInf(x, 0) {
			return i
		}
	}
	return -1
}

// setFloats copies v into the float32 or float64 tensor t, in place.
func setFloats(t tensor.Tensor, v []float64) {
	switch d := t.Data().(type) {
	case []float32:
		for i := range d {
			d[i] = float32(v[i])
		}
	case []float64:
		copy(d, v)
	}
}
