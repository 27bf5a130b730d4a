package bn

import (
	"math/rand"
	"testing"

	"github.com/gorgonia-bn/bn/internal/kern"
	"gorgonia.org/tensor"
)

// layoutShapes are the NCHW shapes of BenchmarkChannelsLast; the
// channels-last runs use the same tensors transposed, (N, H, W, C) or
// (N, L, C). 32×256×128 is a sequence batch (N, C, L).
var layoutShapes = []tensor.Shape{
	{32, 64, 32, 32},
	{8, 256, 14, 14},
	{64, 64, 56, 56},
	{32, 256, 128},
}

// BenchmarkChannelsLast times one training step of the bare kernels (as
// BenchmarkKernels) on each shape of layoutShapes in the NCHW layout and in
// the channels-last one, as a WithChannelsLast layer runs it. Names use the
// NCHW shape; benchdata/layout.sh runs it in rounds with PyTorch's
// channels_last (bench_torch.py --channels-last).
func BenchmarkChannelsLast(b *testing.B) {
	for _, pass := range []string{"fwd", "fwdbwd"} {
		for _, layout := range []string{"nchw", "last"} {
			for _, s := range layoutShapes {
				for _, dt := range benchDtypes {
					b.Run(pass+"/"+layout+"/"+shapeName(s, dt), func(b *testing.B) {
						if dt == tensor.Float32 {
							benchLayout[float32](b, s, dt, layout == "last", pass == "fwdbwd")
						} else {
							benchLayout[float64](b, s, dt, layout == "last", pass == "fwdbwd")
						}
					})
				}
			}
		}
	}
}

func benchLayout[T kern.Float](b *testing.B, s tensor.Shape, dt tensor.Dtype, last, backward bool) {
	r := rand.New(rand.NewSource(1))
	x := benchTensor(r, s, dt).Data().([]T)
	dy := benchTensor(r, s, dt).Data().([]T)
	y, dx := make([]T, len(x)), make([]T, len(x))
	l := &Layer{cfg: config{channelsLast: last}}
	shape := s
	if last {
		shape = lastShape(s)
	}
	N, C, S, rows := l.view(shape)
	p := kern.NewPlan[T](kern.Layout{N: N * rows, C: C, S: S}, 0)
	ms := make([]kern.Moments, C)
	f := func() []float64 { return make([]float64, C) }
	mean, inv, scale, shift, a, bb, c := f(), f(), f(), f(), f(), f(), f()
	sums := make([][2]float64, C)
	k := int64(3)
	if backward {
		k = 8
	}
	kernelStep(p, x, y, dy, dx, C, backward, ms, mean, inv, scale, shift, a, bb, c, sums)
	b.SetBytes(k * tensorBytes(s, dt))
	for b.Loop() {
		kernelStep(p, x, y, dy, dx, C, backward, ms, mean, inv, scale, shift, a, bb, c, sums)
	}
}
