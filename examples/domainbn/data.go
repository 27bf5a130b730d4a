package main

import (
	"fmt"
	"math"
	"math/rand"

	"github.com/gorgonia-bn/bn/examples/internal/mnist"
)

// The domains of the example, all derived from real MNIST images:
//
//	0 original  the images as they are
//	1 inverted  255 − p: white background, black ink
//	2 faded     0.4·p + 80 + N(0, 20²), clipped to [0, 255]: low contrast,
//	            grey background and noise — never seen in training; AdaBN
//	            adapts to it from unlabeled images
const (
	original = iota
	inverted
	faded
	numDomains
)

var domainNames = [numDomains]string{"original", "inverted", "faded+noise"}

// shift returns a copy of s with every pixel of every image transformed for
// domain d. The noise of the faded domain is drawn from
// rand.New(rand.NewSource(seed)).
func shift(s *mnist.Set, d int, seed int64) (*mnist.Set, error) {
	out := &mnist.Set{Pixels: make([]uint8, len(s.Pixels)), Labels: s.Labels}
	switch d {
	case original:
		copy(out.Pixels, s.Pixels)
	case inverted:
		for i, p := range s.Pixels {
			out.Pixels[i] = 255 - p
		}
	case faded:
		rng := rand.New(rand.NewSource(seed))
		for i, p := range s.Pixels {
			v := 0.4*float64(p) + 80 + 20*rng.NormFloat64()
			out.Pixels[i] = uint8(math.Round(math.Max(0, math.Min(255, v))))
		}
	default:
		return nil, fmt.Errorf("unknown domain %d", d)
	}
	return out, nil
}
