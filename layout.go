package bn

import (
	"fmt"

	"gorgonia.org/tensor"
)

// WithChannelsLast makes the layer take inputs whose channel axis is the
// last one: (N, C), (N, L, C), (N, H, W, C), (N, D, H, W, C) — PyTorch's
// channels_last memory format, Keras' default axis −1, the (N, L, C) of
// sequence models. The statistics are per channel over the batch and every
// other axis, exactly those of the NCHW input with the channel axis moved
// to the second place, and every mode, ghost batches, SyncBN, domains,
// PreciseBN and both machines behave as for NCHW inputs; ghost groups and
// domains still take whole samples. A 2-D input (N, C) is the same in
// either layout.
//
// The kernels see a channels-last input as N·L rows of C contiguous values
// and run the row kernels of 2-D inputs: per-channel sums down the rows,
// vectorized across channels (AVX-512, AVX2 or portable Go, as for NCHW),
// and no transposition. C = 1 is read as the NCHW tensor it is in memory.
// The CUDA path runs the same row layout through cudaops' kernels.
//
// An input whose last axis does not have the layer's channel count is
// ErrShape (naming the option when its second axis has it instead).
func WithChannelsLast() Option {
	return func(c *config) error { c.channelsLast = true; return nil }
}

// ChannelsLast reports whether the layer was made WithChannelsLast.
func (l *Layer) ChannelsLast() bool { return l.cfg.channelsLast }

// channelAxis returns the channel axis of an input of the given rank.
func (l *Layer) channelAxis(rank int) int {
	if l.cfg.channelsLast {
		return rank - 1
	}
	return 1
}

// axesName describes the layout inputs must have, for error messages.
func (l *Layer) axesName() string {
	if l.cfg.channelsLast {
		return "N, …, C: channels last"
	}
	return "N, C, …"
}

// channelMismatch is the error for an input s whose channel axis ax does
// not have the layer's channel count; it names the other layout when that
// one would fit.
func (l *Layer) channelMismatch(s tensor.Shape, ax int) error {
	hint := ""
	switch {
	case !l.cfg.channelsLast && s[len(s)-1] == l.c && len(s) > 2:
		hint = "; its last axis has the layer's channels: for a channels-last input create the layer with bn.WithChannelsLast()"
	case l.cfg.channelsLast && s[1] == l.c && len(s) > 2:
		hint = "; its second axis has the layer's channels, but the layer is WithChannelsLast (channels on the last axis)"
	}
	return fmt.Errorf("%w: input has %d channels on axis %d (shape %v, %s), layer has %d%s", ErrShape, s[ax], ax, s, l.axesName(), l.c, hint)
}

// view returns how the kernels see an input of shape s: n samples of rows
// rows each, every row c channels of sp contiguous values (NCHW: rows = 1,
// sp = H·W·…; channels-last: rows = H·W·…, sp = 1, except C = 1, which is
// the NCHW tensor (N, 1, H·W·…) in memory).
func (l *Layer) view(s tensor.Shape) (n, c, sp, rows int) {
	sp = 1
	if !l.cfg.channelsLast {
		for _, d := range s[2:] {
			sp *= d
		}
		return s[0], s[1], sp, 1
	}
	inner := 1
	for _, d := range s[1 : len(s)-1] {
		inner *= d
	}
	c = s[len(s)-1]
	if c == 1 {
		return s[0], 1, inner, 1
	}
	return s[0], c, 1, inner
}

// perRow expands per-sample segments (nil: one segment) to the rows of a
// channels-last input, rows rows per sample, in s.rseg.
func (s *saved) perRow(seg []int, rows int) []int {
	if seg == nil {
		return nil
	}
	s.rseg = grow(s.rseg, len(seg)*rows)
	for i, g := range seg {
		r := s.rseg[i*rows : (i+1)*rows]
		for j := range r {
			r[j] = g
		}
	}
	return s.rseg
}
