#!/bin/sh
# gen_ptx.sh regenerates the committed PTX of package cudaops from bn.cu.
# Run through `go generate` in this directory (see doc.go).
#
# One PTX file per virtual architecture: compute_70 (Volta), compute_80
# (Ampere) and compute_90 (Hopper). The driver JIT-compiles PTX for the GPU it
# runs on, so compute_70 alone runs on every GPU of compute capability ≥ 7.0;
# Load picks the newest file the device supports so that code paths specific
# to newer architectures can be added later. Today the three differ only in
# their .target line.
#
# Tested with Debian bookworm's nvidia-cuda-toolkit (CUDA 11.8), whose nvcc
# needs g++-11 as host compiler. Override with NVCC=... CCBIN=...
set -eu
NVCC=${NVCC:-nvcc}
CCBIN=${CCBIN:-g++-11}
for arch in 70 80 90; do
	"$NVCC" -ccbin "$CCBIN" -std=c++14 -ptx -arch=compute_$arch -o bn_compute_$arch.ptx bn.cu
done
