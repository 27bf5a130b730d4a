package collective

import (
	"fmt"
	"strconv"
	"unsafe"
)

// Dtype is the element type of a [Buffer].
type Dtype int

// The element types a Communicator moves. The zero Dtype is invalid.
const (
	Float32 Dtype = iota + 1 // IEEE 754 binary32 (Go float32)
	Float64                  // IEEE 754 binary64 (Go float64)
)

// String returns "float32" or "float64" (or "Dtype(n)" for an invalid value).
func (d Dtype) String() string {
	switch d {
	case Float32:
		return "float32"
	case Float64:
		return "float64"
	}
	return "Dtype(" + strconv.Itoa(int(d)) + ")"
}

// Size returns the size of one element in bytes, or 0 for an invalid Dtype.
func (d Dtype) Size() int {
	switch d {
	case Float32:
		return 4
	case Float64:
		return 8
	}
	return 0
}

// ReduceOp is the element-wise operation of an all-reduce.
type ReduceOp int

// The reductions of AllReduce. The zero ReduceOp is invalid.
//
// Max and Min follow Go's built-in max and min: a NaN in any rank's input
// gives NaN, and max(-0, +0) = +0, min(-0, +0) = -0.
//
// Moments reduces statistics rather than numbers: the buffer is float64
// triples (n, mean, M2) — a count, a mean and the sum of squared
// deviations from the mean, one triple per channel — and the result is the
// moments of the union of every rank's sets, merged with Chan's rule
//
//	n = na+nb; d = mb−ma; mean = ma + d·nb/n; M2 = M2a + M2b + d²·na·nb/n
//
// in a fixed order, so that every rank gets the same bits. The host
// backends merge over the fixed binary tree T(lo, hi) = T(lo, mid) ⊕
// T(mid, hi), mid = lo + 2^(⌈log₂(hi−lo)⌉−1) — ((x0⊕x1)⊕(x2⊕x3))⊕... —
// except the MPI backend for large buffers, which reduces with MPI's own
// order-preserving tree to one rank and broadcasts its result; see each
// backend. The result differs from a merge in rank order only by rounding
// (relative 1e-15 per merge level). A triple with n = 0 is an empty set.
// The buffer must be Float64 and its length a multiple of 3, otherwise
// the call fails with ErrMismatch on every rank. Moments is what makes a
// synchronized batch norm's exchange independent of the number of ranks:
// O(C) values per rank instead of an all-gather's O(P·C), without the
// cancellation of all-reducing Σx and Σx².
const (
	Sum ReduceOp = iota + 1
	Max
	Min
	Moments
)

// String returns "sum", "max", "min" or "moments" (or "ReduceOp(n)" for an
// invalid value).
func (op ReduceOp) String() string {
	switch op {
	case Sum:
		return "sum"
	case Max:
		return "max"
	case Min:
		return "min"
	case Moments:
		return "moments"
	}
	return "ReduceOp(" + strconv.Itoa(int(op)) + ")"
}

func (op ReduceOp) valid() bool { return op >= Sum && op <= Moments }

// Undefined is the Split color of ranks that join no sub-group
// (MPI_UNDEFINED). Any negative color has the same meaning.
const Undefined = -1

// Buffer is the memory a collective reads or writes: a host []float32 or
// []float64, or device memory for a device backend. It is a small value
// type: creating and passing one does not allocate, and it aliases (never
// copies) the memory it describes.
//
// The zero Buffer is invalid: collectives reject it with ErrMismatch. Use
// Float32s(nil) or Float64s(nil) for an empty contribution.
type Buffer struct {
	dtype Dtype
	dev   bool
	f32   []float32
	f64   []float64
	ptr   uintptr
	n     int
}

// Float32s returns a Buffer for the host slice s.
func Float32s(s []float32) Buffer { return Buffer{dtype: Float32, f32: s, n: len(s)} }

// Float64s returns a Buffer for the host slice s.
func Float64s(s []float64) Buffer { return Buffer{dtype: Float64, f64: s, n: len(s)} }

// Device returns a Buffer for n elements of type dt at device address ptr.
// Only device backends accept it; host backends (in-process, MPI) report
// an error wrapping ErrMismatch and errors.ErrUnsupported.
func Device(ptr uintptr, n int, dt Dtype) Buffer {
	return Buffer{dtype: dt, dev: true, ptr: ptr, n: n}
}

// Len returns the number of elements in b.
func (b Buffer) Len() int { return b.n }

// Dtype returns the element type of b.
func (b Buffer) Dtype() Dtype { return b.dtype }

// Float32s returns the host slice of b, or nil if b is not a host float32
// buffer.
func (b Buffer) Float32s() []float32 { return b.f32 }

// Float64s returns the host slice of b, or nil if b is not a host float64
// buffer.
func (b Buffer) Float64s() []float64 { return b.f64 }

// DevicePtr returns the device address of b and true, or 0 and false if b
// is a host buffer.
func (b Buffer) DevicePtr() (uintptr, bool) { return b.ptr, b.dev }

// IsDevice reports whether b describes device memory.
func (b Buffer) IsDevice() bool { return b.dev }

// Slice returns the elements [lo, hi) of b, like b's slice[lo:hi] (for a
// device buffer, the address advances by lo elements). It panics if the
// bounds are out of range, as slicing does.
func (b Buffer) Slice(lo, hi int) Buffer {
	if lo < 0 || hi < lo || hi > b.n {
		panic(fmt.Sprintf("collective: Buffer.Slice[%d:%d] out of range for length %d", lo, hi, b.n))
	}
	switch {
	case b.dev:
		return Device(b.ptr+uintptr(lo*b.dtype.Size()), hi-lo, b.dtype)
	case b.dtype == Float32:
		return Float32s(b.f32[lo:hi])
	case b.dtype == Float64:
		return Float64s(b.f64[lo:hi])
	}
	return b
}

// String describes b, e.g. "float32[7]" or "device float64[1024]@0x7f00".
func (b Buffer) String() string {
	if b.dev {
		return fmt.Sprintf("device %v[%d]@%#x", b.dtype, b.n, b.ptr)
	}
	return fmt.Sprintf("%v[%d]", b.dtype, b.n)
}

// span returns the address range of a host buffer (empty for others).
func (b Buffer) span() (lo, hi uintptr) {
	switch {
	case b.dev:
	case b.dtype == Float32 && len(b.f32) > 0:
		lo = uintptr(unsafe.Pointer(unsafe.SliceData(b.f32)))
		return lo, lo + uintptr(len(b.f32))*4
	case b.dtype == Float64 && len(b.f64) > 0:
		lo = uintptr(unsafe.Pointer(unsafe.SliceData(b.f64)))
		return lo, lo + uintptr(len(b.f64))*8
	}
	return 0, 0
}
