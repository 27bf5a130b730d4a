package mnist

import (
	"fmt"
	"math/rand"

	"gorgonia.org/tensor"
)

// Images returns the images idx of s as a tensor of shape (len(idx), 1, 28,
// 28) and element type dt (tensor.Float32 or tensor.Float64), normalized to
// (p/255 − Mean)/Std.
func (s *Set) Images(dt tensor.Dtype, idx []int) (*tensor.Dense, error) {
	t := tensor.New(tensor.Of(dt), tensor.WithShape(len(idx), 1, Rows, Cols))
	if err := s.FillImages(t, idx); err != nil {
		return nil, err
	}
	return t, nil
}

// FillImages writes the normalized images idx of s into t, which must have
// shape (len(idx), 1, 28, 28) and element type float32 or float64. It lets a
// training loop reuse one input tensor.
func (s *Set) FillImages(t tensor.Tensor, idx []int) error {
	want := tensor.Shape{len(idx), 1, Rows, Cols}
	if !t.Shape().Eq(want) {
		return fmt.Errorf("mnist: image tensor has shape %v, want %v", t.Shape(), want)
	}
	if err := s.checkIdx(idx); err != nil {
		return err
	}
	switch d := t.Data().(type) {
	case []float32:
		fillImages(d, s.Pixels, idx)
	case []float64:
		fillImages(d, s.Pixels, idx)
	default:
		return fmt.Errorf("mnist: image tensor of type %v, want float32 or float64", t.Dtype())
	}
	return nil
}

func fillImages[T float32 | float64](dst []T, pix []uint8, idx []int) {
	var lut [256]T
	for p := range lut {
		lut[p] = T((float64(p)/255 - Mean) / Std)
	}
	for k, i := range idx {
		src := pix[i*Pixels : (i+1)*Pixels]
		out := dst[k*Pixels : (k+1)*Pixels]
		for j, p := range src {
			out[j] = lut[p]
		}
	}
}

// OneHot returns the labels idx of s as a one-hot tensor of shape
// (len(idx), 10) and element type dt.
func (s *Set) OneHot(dt tensor.Dtype, idx []int) (*tensor.Dense, error) {
	t := tensor.New(tensor.Of(dt), tensor.WithShape(len(idx), Classes))
	if err := s.FillOneHot(t, idx); err != nil {
		return nil, err
	}
	return t, nil
}

// FillOneHot writes the one-hot labels idx of s into t, which must have
// shape (len(idx), 10) and element type float32 or float64.
func (s *Set) FillOneHot(t tensor.Tensor, idx []int) error {
	want := tensor.Shape{len(idx), Classes}
	if !t.Shape().Eq(want) {
		return fmt.Errorf("mnist: label tensor has shape %v, want %v", t.Shape(), want)
	}
	if err := s.checkIdx(idx); err != nil {
		return err
	}
	switch d := t.Data().(type) {
	case []float32:
		fillOneHot(d, s.Labels, idx)
	case []float64:
		fillOneHot(d, s.Labels, idx)
	default:
		return fmt.Errorf("mnist: label tensor of type %v, want float32 or float64", t.Dtype())
	}
	return nil
}

func fillOneHot[T float32 | float64](dst []T, labels []uint8, idx []int) {
	clear(dst)
	for k, i := range idx {
		dst[k*Classes+int(labels[i])] = 1
	}
}

func (s *Set) checkIdx(idx []int) error {
	for _, i := range idx {
		if i < 0 || i >= s.Len() {
			return fmt.Errorf("mnist: index %d out of range for %d images", i, s.Len())
		}
	}
	return nil
}

// Shuffle returns a permutation of 0…n−1 drawn from rng. With
// rand.New(rand.NewSource(seed)) the order depends only on the seed.
func Shuffle(n int, rng *rand.Rand) []int {
	return rng.Perm(n)
}

// Batches cuts order into consecutive batches of size samples. The last,
// smaller batch is kept unless dropLast is set (a graph of fixed shape needs
// full batches). The batches share order's memory.
func Batches(order []int, size int, dropLast bool) ([][]int, error) {
	if size < 1 {
		return nil, fmt.Errorf("mnist: batch size %d, want ≥ 1", size)
	}
	var out [][]int
	for i := 0; i < len(order); i += size {
		j := min(i+size, len(order))
		if j-i < size && dropLast {
			break
		}
		out = append(out, order[i:j:j])
	}
	return out, nil
}

// Range returns 0, 1, …, n−1: the samples in file order.
func Range(n int) []int {
	r := make([]int, n)
	for i := range r {
		r[i] = i
	}
	return r
}
