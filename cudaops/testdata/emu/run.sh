#!/usr/bin/env bash
# run.sh — run the cuda-tagged tests of cudaops and collective/nccl on the
# CPU, without a GPU, CUDA driver or NCCL: a stand-in for gorgonia.org/cu
# (./cu: bn.cu compiled for the CPU, each CUDA thread a fiber) and a fake
# libnccl.so.2 (./fakenccl: in-process ranks on worker threads). It checks
# the kernels' logic, the launchers and the NCCL backend's Go code; it says
# nothing about performance or about the real driver and NCCL. Needs g++ and
# cuda.h is NOT needed. Slow: the emulated cudaops suite takes ~6 min on 2
# cores.
#
# Usage: cudaops/testdata/emu/run.sh [cudaops|nccl|bn|all] [test flags...]
#   e.g. run.sh cudaops -test.run TestStats -test.v
#        run.sh bn        (the ops' CUDA path, op_cuda_test.go: tag bncuda)
#        run.sh nccl -test.run TestConformance   (runs with 1, 2, 3, 4 ranks)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../../.." && pwd)
what=${1:-all}
[[ $# -gt 0 ]] && shift
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

gcc -shared -fPIC -O1 -o "$tmp/libnccl.so.2" "$here/fakenccl/fakenccl.c" -lpthread
cat >"$tmp/go.work" <<WORK
go $(cd "$repo" && go list -m -f '{{.GoVersion}}')

use $repo

replace gorgonia.org/cu v0.9.4 => $here/cu
WORK
export GOWORK=$tmp/go.work BN_NCCL_LIB=$tmp/libnccl.so.2

if [[ $what == cudaops || $what == all ]]; then
	(cd "$repo" && go test -c -tags cuda -o "$tmp/cudaops.test" ./cudaops/)
	(cd "$repo/cudaops" && "$tmp/cudaops.test" "$@")
fi
if [[ $what == bn || $what == all ]]; then
	(cd "$repo" && go test -c -tags bncuda -o "$tmp/bn.test" .)
	(cd "$repo" && "$tmp/bn.test" -test.run CUDA "$@")
fi
if [[ $what == nccl || $what == all ]]; then
	(cd "$repo" && go test -c -tags cuda -o "$tmp/nccl.test" ./collective/nccl/)
	for n in 1 2 3 4; do
		echo "== nccl with $n fake GPU(s)"
		(cd "$repo/collective/nccl" && FAKE_NDEV=$n "$tmp/nccl.test" "$@")
	done
fi
