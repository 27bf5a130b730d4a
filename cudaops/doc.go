// Package cudaops holds the CUDA kernels of bn and their Go launchers: the
// per-channel moments, their merge and finalization, the fused
// normalize-and-affine pass, the running-statistics update, the backward sums
// and the fused backward pass, for float32 and float64 tensors in NCHW order,
// with ghost batches and per-sample segment (domain) ids.
//
// The kernels are written in CUDA C (bn.cu); their PTX is generated with
//
//	go generate ./cudaops
//
// (nvcc from a CUDA ≥ 11.8 toolkit, see gen_ptx.sh), committed, embedded and
// loaded with gorgonia.org/cu. The package does not import Gorgonia.
//
// Everything but this file is built only with the build tag cuda (or
// bncuda, which builds the root package's CUDA path against Gorgonia without
// its cuda build; see README.md): importing
// gorgonia.org/cu needs cuda.h and libcuda at build time, and cu's init exits
// the process on a machine without a GPU. Without the tag the package is
// empty. See README.md for the layout of the kernels, the tests and the
// benchmarks.
package cudaops

//go:generate sh ./gen_ptx.sh
