package collective_test

import (
	"context"
	"errors"
	"testing"

	"github.com/gorgonia-bn/bn/collective"
	"github.com/gorgonia-bn/bn/collective/internal/proto"
)

func TestBuffer(t *testing.T) {
	f32 := []float32{1, 2, 3}
	b := collective.Float32s(f32)
	if b.Len() != 3 || b.Dtype() != collective.Float32 || &b.Float32s()[0] != &f32[0] || b.Float64s() != nil || b.IsDevice() {
		t.Errorf("Float32s: %v", b)
	}
	if p, ok := b.DevicePtr(); ok || p != 0 {
		t.Errorf("host buffer DevicePtr = %v, %v", p, ok)
	}
	f64 := []float64{1, 2}
	b = collective.Float64s(f64)
	if b.Len() != 2 || b.Dtype() != collective.Float64 || &b.Float64s()[0] != &f64[0] || b.Float32s() != nil {
		t.Errorf("Float64s: %v", b)
	}
	if s := b.Slice(1, 2); s.Len() != 1 || &s.Float64s()[0] != &f64[1] {
		t.Errorf("Slice: %v", s)
	}
	d := collective.Device(0x1000, 10, collective.Float64)
	if p, ok := d.DevicePtr(); !ok || p != 0x1000 || d.Len() != 10 || d.Float64s() != nil {
		t.Errorf("Device: %v", d)
	}
	if s := d.Slice(2, 5); s.Len() != 3 {
		t.Errorf("device Slice: %v", s)
	} else if p, _ := s.DevicePtr(); p != 0x1000+16 {
		t.Errorf("device Slice address %#x, want %#x", p, 0x1000+16)
	}
	if got := d.String(); got != "device float64[10]@0x1000" {
		t.Errorf("String = %q", got)
	}
	defer func() {
		if recover() == nil {
			t.Error("Slice out of range did not panic")
		}
	}()
	b.Slice(1, 3)
}

func TestBufferNoAlloc(t *testing.T) {
	x := make([]float32, 8)
	var sink collective.Buffer
	if a := testing.AllocsPerRun(100, func() { sink = collective.Float32s(x).Slice(1, 4) }); a != 0 {
		t.Errorf("%v allocations", a)
	}
	_ = sink
}

// TestNames checks that the names the backends print agree with the
// String methods.
func TestNames(t *testing.T) {
	for _, d := range []collective.Dtype{0, collective.Float32, collective.Float64, 9} {
		if d.Size() != 0 && proto.DtypeName(int(d)) != d.String() {
			t.Errorf("dtype %d: proto %q, String %q", d, proto.DtypeName(int(d)), d.String())
		}
	}
	for _, op := range []collective.ReduceOp{collective.Sum, collective.Max, collective.Min} {
		if proto.OpName(int(op)) != op.String() {
			t.Errorf("op %d: proto %q, String %q", op, proto.OpName(int(op)), op.String())
		}
	}
	if collective.Dtype(7).String() != "Dtype(7)" || collective.ReduceOp(0).String() != "ReduceOp(0)" {
		t.Error("invalid values print wrong")
	}
	if collective.Float32.Size() != 4 || collective.Float64.Size() != 8 || collective.Dtype(0).Size() != 0 {
		t.Error("Size")
	}
}

// TestSentinelsDistinct guards against two sentinels matching each other.
func TestSentinelsDistinct(t *testing.T) {
	all := []error{collective.ErrAborted, collective.ErrClosed, collective.ErrMismatch, collective.ErrPeerGone, collective.ErrNotBuilt}
	for i, a := range all {
		for j, b := range all {
			if (i == j) != errors.Is(a, b) {
				t.Errorf("errors.Is(%v, %v) = %v", a, b, errors.Is(a, b))
			}
		}
	}
	if errors.Is(collective.ErrAborted, context.Canceled) {
		t.Error("ErrAborted is context.Canceled")
	}
}
