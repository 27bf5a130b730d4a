package bn

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nlpodyssey/safetensors"
	"gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// torchModel is the Gorgonia twin of testdata/torch_interop.py's Model.
type torchModel struct {
	g       *gorgonia.ExprGraph
	sd      *StateDict
	in      map[string]*tensor.Dense // x_a, x_s, x_b, x_c
	out     map[string]*gorgonia.Node
	layers  map[string]*Layer
	weights map[string]*tensor.Dense
}

func newTorchModel(t *testing.T, n int) *torchModel {
	t.Helper()
	g := gorgonia.NewGraph()
	m := &torchModel{g: g, sd: NewStateDict(), in: map[string]*tensor.Dense{}, out: map[string]*gorgonia.Node{},
		layers: map[string]*Layer{}, weights: map[string]*tensor.Dense{}}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	input := func(name string, shape ...int) *gorgonia.Node {
		v := tensor.New(tensor.Of(tensor.Float64), tensor.WithShape(shape...))
		m.in[name] = v
		return gorgonia.NewTensor(g, tensor.Float64, len(shape), gorgonia.WithShape(shape...), gorgonia.WithName(name), gorgonia.WithValue(v))
	}
	weight := func(key string, shape ...int) *tensor.Dense {
		v := tensor.New(tensor.Of(tensor.Float64), tensor.WithShape(shape...))
		must(m.sd.AddTensor(key, v))
		m.weights[key] = v
		return v
	}
	layer := func(key string, c int, x *gorgonia.Node, opts ...Option) *gorgonia.Node {
		l, err := New(g, c, tensor.Float64, append([]Option{WithName(key)}, opts...)...)
		must(err)
		must(l.SetMode(Eval))
		must(m.sd.AddLayer(key, l))
		m.layers[key] = l
		y, err := l.Apply(x)
		must(err)
		return y
	}
	node := func(v *tensor.Dense, shape ...int) *gorgonia.Node { // a view of v's memory
		d := tensor.New(tensor.WithShape(shape...), tensor.WithBacking(v.Data()))
		return gorgonia.NewTensor(g, tensor.Float64, len(shape), gorgonia.WithShape(shape...), gorgonia.WithValue(d))
	}
	fcw, fcb := weight("fc.weight", 3, 5), weight("fc.bias", 3)
	convw, convb := weight("conv.weight", 4, 2, 3, 3), weight("conv.bias", 4)

	a := gorgonia.Must(gorgonia.Mul(input("x_a", n, 5), gorgonia.Must(gorgonia.Transpose(node(fcw, 3, 5)))))
	a = gorgonia.Must(gorgonia.BroadcastAdd(a, node(fcb, 1, 3), nil, []byte{0}))
	m.out["y_a"] = layer("bn1", 3, a)
	m.out["y_s"] = layer("seq", 3, input("x_s", n, 3, 4), WithCumulativeAverage())
	h := gorgonia.Must(gorgonia.Conv2d(input("x_b", n, 2, 6, 6), node(convw, 4, 2, 3, 3), tensor.Shape{3, 3}, []int{1, 1}, []int{1, 1}, []int{1, 1}))
	h = gorgonia.Must(gorgonia.BroadcastAdd(h, node(convb, 1, 4, 1, 1), nil, []byte{0, 2, 3}))
	m.out["y_b"] = layer("bn2", 4, h)
	m.out["y_plain"] = layer("plain", 4, h, WithAffine(false))
	m.out["y_c"] = layer("bn3", 2, input("x_c", n, 2, 3, 3, 3), WithEps(1e-3))
	return m
}

// readIO reads the float64 tensors of a safetensors file.
func readIO(t *testing.T, path string) map[string]*tensor.Dense {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	st, err := safetensors.Deserialize(b)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]*tensor.Dense{}
	for _, nt := range st.Tensors() {
		v, err := decode(nt.TensorView, false)
		if err != nil {
			t.Fatal(nt.Name, err)
		}
		var shape []int
		for _, d := range nt.TensorView.Shape() {
			shape = append(shape, int(d))
		}
		out[nt.Name] = tensor.New(tensor.WithShape(shape...), tensor.WithBacking(v))
	}
	return out
}

// run sets the model's inputs from io, runs it in eval mode and returns the
// outputs (copies).
func (m *torchModel) run(t *testing.T, io map[string]*tensor.Dense) map[string][]float64 {
	t.Helper()
	for k, v := range m.in {
		copy(v.Data().([]float64), io[k].Data().([]float64))
	}
	vm := gorgonia.NewTapeMachine(m.g)
	defer vm.Close()
	if err := vm.RunAll(); err != nil {
		t.Fatal(err)
	}
	out := map[string][]float64{}
	for k, n := range m.out {
		out[k] = append([]float64(nil), n.Value().Data().([]float64)...)
	}
	return out
}

func maxDiff(a, b []float64) float64 {
	d := 0.0
	if len(a) != len(b) {
		return math.Inf(1)
	}
	for i := range a {
		d = math.Max(d, math.Abs(a[i]-b[i]))
	}
	return d
}

// TestStateDictTorchFixture loads a state dict written by PyTorch 1.13
// (testdata/torch_interop.py make) and checks the eval outputs; then writes
// the state back (after changing it) and, where python3-torch is installed,
// has PyTorch load it strictly and reproduce the Go outputs.
func TestStateDictTorchFixture(t *testing.T) {
	io := readIO(t, "testdata/torch_bn_io.safetensors")
	m := newTorchModel(t, 3)
	if err := m.sd.ReadFile("testdata/torch_bn.safetensors"); err != nil {
		t.Fatal(err)
	}
	if got := m.layers["bn2"].NumBatchesTracked(); got != 5 {
		t.Errorf("bn2 num_batches_tracked = %d, want 5", got)
	}
	got := m.run(t, io)
	for k, y := range got {
		if d := maxDiff(y, io[k].Data().([]float64)); !(d <= 1e-12) {
			t.Errorf("%s: max |Go − PyTorch| = %g, want ≤ 1e-12", k, d)
		}
	}

	// Go → PyTorch: new statistics, γ and weights, Go's outputs, PyTorch checks.
	for i, k := range []string{"bn1", "seq", "bn2", "plain", "bn3"} {
		l := m.layers[k]
		mean, variance := l.RunningStats()
		for c := range mean {
			mean[c] += 0.25 * float64(i+c)
			variance[c] *= 1.5
		}
		if err := l.SetRunningStats(mean, variance); err != nil {
			t.Fatal(err)
		}
		if g := l.Gamma(); g != nil {
			g.Value().Data().([]float64)[0] = -0.75
		}
	}
	m.weights["conv.weight"].Data().([]float64)[3] = 0.5
	got = m.run(t, io)
	dir := t.TempDir()
	state := filepath.Join(dir, "go_state.safetensors")
	if err := m.sd.WriteFile(state); err != nil {
		t.Fatal(err)
	}
	ioOut := map[string]stView{}
	for k, v := range io {
		if y, ok := got[k]; ok {
			ioOut[k] = floatView(tensor.Float64, shapeU64(v.Shape()), y)
		} else {
			ioOut[k] = floatView(tensor.Float64, shapeU64(v.Shape()), v.Data().([]float64))
		}
	}
	b, err := safetensors.Serialize(ioOut, nil)
	if err != nil {
		t.Fatal(err)
	}
	ioPath := filepath.Join(dir, "go_io.safetensors")
	if err := os.WriteFile(ioPath, b, 0o644); err != nil {
		t.Fatal(err)
	}
	// The file read back in Go gives the same outputs.
	m2 := newTorchModel(t, 3)
	if err := m2.sd.ReadFile(state); err != nil {
		t.Fatal(err)
	}
	for k, y := range m2.run(t, io) {
		if d := maxDiff(y, got[k]); d != 0 {
			t.Errorf("%s after a Go round trip: max diff %g", k, d)
		}
	}
	if err := exec.Command("/usr/bin/python3", "-c", "import torch").Run(); err != nil {
		t.Skipf("python3-torch not installed (%v): PyTorch's side of the round trip not checked", err)
	}
	out, err := exec.Command("/usr/bin/python3", "testdata/torch_interop.py", "check", state, ioPath).CombinedOutput()
	if err != nil {
		t.Fatalf("PyTorch rejected the Go state: %v\n%s", err, out)
	}
	t.Logf("PyTorch: %s", strings.TrimSpace(string(out)))
}

// TestStateDictMismatches checks that Load reports every problem at once
// and changes nothing.
func TestStateDictMismatches(t *testing.T) {
	b, err := os.ReadFile("testdata/torch_bn.safetensors")
	if err != nil {
		t.Fatal(err)
	}
	g := gorgonia.NewGraph()
	sd := NewStateDict()
	l1, _ := New(g, 3, tensor.Float64, WithName("bn1"))
	l2, _ := New(g, 5, tensor.Float64, WithName("bn2"))   // file has 4 channels
	l3, _ := New(g, 2, tensor.Float32, WithName("bn3"))   // float64 in the file: converts
	l4, _ := New(g, 4, tensor.Float64, WithName("plain")) // affine here, not in the file
	for k, l := range map[string]*Layer{"bn1": l1, "bn2": l2, "bn3": l3, "plain": l4, "extra": mustLayer(t, g)} {
		if err := sd.AddLayer(k, l); err != nil {
			t.Fatal(err)
		}
	}
	before, _ := l1.RunningStats()
	err = sd.Load(b)
	var se *StateError
	if !errors.As(err, &se) || !errors.Is(err, ErrState) {
		t.Fatalf("Load = %v, want a *StateError wrapping ErrState", err)
	}
	wantMissing := []string{"extra.bias", "extra.num_batches_tracked", "extra.running_mean", "extra.running_var", "extra.weight", "plain.bias", "plain.weight"}
	if strings.Join(sortedCopy(se.Missing), ",") != strings.Join(wantMissing, ",") {
		t.Errorf("missing %q, want %q", se.Missing, wantMissing)
	}
	wantUnexpected := []string{"conv.bias", "conv.weight", "fc.bias", "fc.weight", "seq.bias", "seq.num_batches_tracked", "seq.running_mean", "seq.running_var", "seq.weight"}
	if strings.Join(se.Unexpected, ",") != strings.Join(wantUnexpected, ",") {
		t.Errorf("unexpected %q, want %q", se.Unexpected, wantUnexpected)
	}
	if len(se.Mismatched) != 4 { // bn2: weight, bias, running_mean, running_var of shape (4)
		t.Errorf("mismatched %q, want bn2's four (C) tensors", se.Mismatched)
	}
	if after, _ := l1.RunningStats(); maxDiff(before, after) != 0 {
		t.Error("a failed Load changed a layer")
	}
	t.Log(err)

	// Corrupt inputs: not safetensors, NaN, negative variance, wrong dtype.
	if err := sd.Load([]byte("junk")); !errors.Is(err, ErrState) {
		t.Errorf("Load(junk) = %v, want ErrState", err)
	}
	bad := func(edit func(map[string]stView)) error {
		g := gorgonia.NewGraph()
		l, _ := New(g, 2, tensor.Float64, WithName("b"))
		s := NewStateDict()
		if err := s.AddLayer("b", l); err != nil {
			t.Fatal(err)
		}
		views := map[string]stView{}
		if err := l.saveViews("b", views); err != nil {
			t.Fatal(err)
		}
		edit(views)
		enc, err := safetensors.Serialize(views, nil)
		if err != nil {
			t.Fatal(err)
		}
		return s.Load(enc)
	}
	for name, edit := range map[string]func(map[string]stView){
		"nan-weight": func(v map[string]stView) {
			v["b.weight"] = floatView(tensor.Float64, []uint64{2}, []float64{1, math.NaN()})
		},
		"negative-var": func(v map[string]stView) {
			v["b.running_var"] = floatView(tensor.Float64, []uint64{2}, []float64{1, -1})
		},
		"float-count": func(v map[string]stView) {
			v["b.num_batches_tracked"] = floatView(tensor.Float64, []uint64{}, []float64{1})
		},
		"negative-count": func(v map[string]stView) {
			v["b.num_batches_tracked"] = stView{dt: safetensors.I64, shape: []uint64{}, data: binary.LittleEndian.AppendUint64(nil, math.MaxUint64)}
		},
		"int-weight": func(v map[string]stView) {
			v["b.weight"] = stView{dt: safetensors.I64, shape: []uint64{2}, data: make([]byte, 16)}
		},
	} {
		if err := bad(edit); !errors.As(err, &se) || len(se.Mismatched) != 1 {
			t.Errorf("%s: Load = %v, want one mismatch", name, err)
		}
	}
	// Misuse is ErrOption.
	s := NewStateDict()
	if err := s.AddLayer("a", l1); err != nil {
		t.Fatal(err)
	}
	if err := s.AddTensor("a.weight", tensor.New(tensor.WithShape(1), tensor.WithBacking([]float64{1}))); !errors.Is(err, ErrOption) {
		t.Errorf("a key added twice: %v, want ErrOption", err)
	}
	if _, err := s.Save(); !errors.Is(err, ErrOption) {
		t.Errorf("Save after a failed Add: %v, want ErrOption", err)
	}
	if err := NewStateDict().AddLayer("x", (*Layer)(nil)); !errors.Is(err, ErrOption) {
		t.Errorf("nil layer: %v, want ErrOption", err)
	}
}

func mustLayer(t *testing.T, g *gorgonia.ExprGraph) *Layer {
	l, err := New(g, 2, tensor.Float64)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func sortedCopy(s []string) []string {
	out := append([]string(nil), s...)
	for i := range out {
		for j := i + 1; j < len(out); j++ {
			if out[j] < out[i] {
				out[i], out[j] = out[j], out[i]
			}
		}
	}
	return out
}

// TestStateDictRoundTrip saves and loads float32 and grouped layers and a
// weight node: values come back (running statistics rounded to the
// layer's dtype), keys and shapes as documented.
func TestStateDictRoundTrip(t *testing.T) {
	g := gorgonia.NewGraph()
	l32, _ := New(g, 3, tensor.Float32, WithName("a"))
	grp, err := newGrouped(g, 2, tensor.Float64, 3, true, WithName("d"))
	if err != nil {
		t.Fatal(err)
	}
	w := gorgonia.NewTensor(g, tensor.Float32, 2, gorgonia.WithShape(2, 2), gorgonia.WithName("w"), gorgonia.WithInit(gorgonia.Gaussian(0, 1)))
	set := func(l *Layer, k int, tr []int64) {
		m, v := l.RunningStats()
		for i := range m {
			m[i], v[i] = 0.1*float64(i+k)+1.0/3, 1+0.01*float64(i)
		}
		if err := l.SetRunningStats(m, v); err != nil {
			t.Fatal(err)
		}
		l.mu.Lock()
		copy(l.tracked, tr)
		l.mu.Unlock()
		setFloats(l.gamma.Value().(tensor.Tensor), m)
	}
	set(l32, 1, []int64{7})
	set(grp, 2, []int64{1, 2, 3})
	sd := NewStateDict()
	for _, err := range []error{sd.AddLayer("a", l32), sd.AddLayer("dom", grp), sd.AddNode("w", w)} {
		if err != nil {
			t.Fatal(err)
		}
	}
	b, err := sd.Save()
	if err != nil {
		t.Fatal(err)
	}
	st, err := safetensors.Deserialize(b)
	if err != nil {
		t.Fatal(err)
	}
	shapes := map[string]string{}
	for _, nt := range st.Tensors() {
		shapes[nt.Name] = nt.TensorView.DType().String() + fmtShape(nt.TensorView.Shape())
	}
	want := map[string]string{
		"a.weight": "F32[3]", "a.bias": "F32[3]", "a.running_mean": "F32[3]", "a.running_var": "F32[3]", "a.num_batches_tracked": "I64[]",
		"dom.weight": "F64[3,2]", "dom.bias": "F64[3,2]", "dom.running_mean": "F64[3,2]", "dom.running_var": "F64[3,2]", "dom.num_batches_tracked": "I64[3]",
		"w": "F32[2,2]",
	}
	for k, v := range want {
		if shapes[k] != v {
			t.Errorf("%s: %s, want %s", k, shapes[k], v)
		}
	}
	if len(shapes) != len(want) {
		t.Errorf("keys %v, want %v", shapes, want)
	}
	if got := strings.Join(sd.Keys(), ","); got != "a.bias,a.num_batches_tracked,a.running_mean,a.running_var,a.weight,dom.bias,dom.num_batches_tracked,dom.running_mean,dom.running_var,dom.weight,w" {
		t.Errorf("Keys() = %s", got)
	}
	wantA, _ := l32.RunningStats()
	wantD, _ := grp.RunningStats()
	wantW := append([]float32(nil), w.Value().Data().([]float32)...)
	l32.ResetRunningStats()
	grp.ResetRunningStats()
	clear(w.Value().Data().([]float32))
	if err := sd.Load(b); err != nil {
		t.Fatal(err)
	}
	gotA, _ := l32.RunningStats()
	gotD, _ := grp.RunningStats()
	for i := range wantA {
		if gotA[i] != float64(float32(wantA[i])) {
			t.Errorf("float32 layer mean[%d] = %v, want %v rounded to float32", i, gotA[i], wantA[i])
		}
	}
	if maxDiff(gotD, wantD) != 0 || l32.NumBatchesTracked() != 7 || fmtInts(grp.trackedGroups()) != "[1 2 3]" {
		t.Errorf("grouped %v want %v; tracked %d %v", gotD, wantD, l32.NumBatchesTracked(), grp.trackedGroups())
	}
	for i, v := range w.Value().Data().([]float32) {
		if v != wantW[i] {
			t.Errorf("w[%d] = %v, want %v", i, v, wantW[i])
		}
	}
}

func fmtShape(s []uint64) string { return strings.ReplaceAll(fmtAny(s), " ", ",") }
func fmtInts(s []int64) string   { return fmtAny(s) }

func fmtAny(v any) string { return strings.TrimSpace(fmt.Sprint(v)) }
