#!/usr/bin/env bash
# cuda-check.sh — compile-check the CUDA path (build tag cuda) of bn on a
# machine without a GPU:
#
#   1. install the CUDA headers, driver stub and nvcc from Debian's
#      contrib/non-free (nvidia-cuda-dev, nvidia-cuda-toolkit: CUDA 11.8,
#      ~1.6 GB download) if cuda.h or nvcc is missing (needs root);
#   2. check that the committed PTX matches bn.cu (regenerated with nvcc into
#      a temporary directory);
#   3. go vet and go test -c the cuda-tagged packages, and go vet/test them
#      untagged;
#   4. go vet and go test -c the root package with the tag bncuda: the ops'
#      CUDA path (op_cuda.go) built against Gorgonia without its own cuda
#      build, which needs cuDNN (not in Debian);
#   5. go vet and go test -c the root package and domainbn with the tag cuda,
#      i.e. with Gorgonia's own cuda build, against a copy of gorgonia.org/cu
#      whose cu/dnn (cuDNN) is a compile-only stub: Gorgonia's cuda code uses
#      nothing of cuDNN but a Context type, and this checks
#      op_cuda_gorgonia.go, the part of the ops' wiring that needs that build;
#   6. run the tests of the ops' CUDA path (op_cuda_test.go) against the CPU
#      emulation of cudaops (testdata/emu: bn.cu compiled for the CPU, a
#      stand-in for gorgonia.org/cu; needs g++): safe, it has no GPU check.
#
# It never runs a cuda-tagged binary: gorgonia.org/cu's init exits the
# process when there is no GPU. Run the tagged tests on a GPU machine (see
# cudaops/README.md).
#
# Usage: .ci/cuda-check.sh   (from anywhere inside the repository)
# Env:   CUDA_CHECK_NO_INSTALL=1  fail instead of installing missing packages
set -euo pipefail

cd "$(dirname "$0")/.."
pkgs=(./cudaops/... ./collective/nccl/...)
start=$(date +%s)
log() { printf '[cuda-check %3ds] %s\n' "$(($(date +%s) - start))" "$*"; }

# ---------------------------------------------------------------- toolkit
need_install=0
[[ -f /usr/include/cuda.h || -f /usr/local/cuda/include/cuda.h ]] || need_install=1
command -v nvcc >/dev/null 2>&1 || need_install=1
if ((need_install)); then
	if [[ ${CUDA_CHECK_NO_INSTALL:-0} == 1 ]]; then
		echo "cuda-check: cuda.h or nvcc missing and CUDA_CHECK_NO_INSTALL=1" >&2
		exit 1
	fi
	if [[ $(id -u) != 0 ]]; then
		echo "cuda-check: cuda.h or nvcc missing; run as root to install nvidia-cuda-dev and nvidia-cuda-toolkit" >&2
		exit 1
	fi
	. /etc/os-release
	src=/etc/apt/sources.list.d/bn-cuda-nonfree.sources
	if ! grep -rqsE '^[^#]*(non-free([^-]|$))' /etc/apt/sources.list /etc/apt/sources.list.d/; then
		log "adding Debian ${VERSION_CODENAME} contrib non-free to $src"
		cat >"$src" <<EOF
Types: deb
URIs: http://deb.debian.org/debian
Suites: ${VERSION_CODENAME} ${VERSION_CODENAME}-updates
Components: contrib non-free
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
	fi
	log "apt-get update"
	apt-get update -qq
	log "installing nvidia-cuda-dev nvidia-cuda-toolkit (large download)"
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
		nvidia-cuda-dev nvidia-cuda-toolkit >/dev/null
	log "installed: $(nvcc --version | tail -1)"
fi

# gorgonia.org/cu triggers deprecation warnings with CUDA 11.8's cuda.h.
export CGO_ENABLED=1
export CGO_CFLAGS="${CGO_CFLAGS:--O2 -g -Wno-deprecated-declarations -Wno-implicit-function-declaration}"

# ------------------------------------------------------------ PTX fresh?
log "regenerating the PTX into a temporary directory"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cp cudaops/bn.cu cudaops/gen_ptx.sh "$tmp"/
(cd "$tmp" && sh ./gen_ptx.sh)
for f in "$tmp"/bn_compute_*.ptx; do
	if ! cmp -s "$f" "cudaops/$(basename "$f")"; then
		echo "cuda-check: cudaops/$(basename "$f") is stale: run 'go generate ./cudaops' and commit the PTX" >&2
		exit 1
	fi
done

# ------------------------------------------------------------- Go checks
log "go vet (untagged)"
go vet "${pkgs[@]}"
log "go test (untagged: stubs only, no CUDA)"
go test -count=1 "${pkgs[@]}"
log "go vet -tags cuda"
go vet -tags cuda "${pkgs[@]}"
for p in $(go list -tags cuda "${pkgs[@]}"); do
	log "go test -c -tags cuda $p (build only, never run)"
	go test -c -tags cuda -o /dev/null "$p"
done
log "go vet -tags bncuda . (the ops' CUDA path)"
go vet -tags bncuda .
log "go test -c -tags bncuda . (build only, never run)"
go test -c -tags bncuda -o /dev/null .

stub=$(mktemp -d)
trap 'rm -rf "$tmp" "$stub"' EXIT
go mod download gorgonia.org/cu
cp -r "$(go list -m -f '{{.Dir}}' gorgonia.org/cu)" "$stub/cu"
chmod -R u+w "$stub/cu"
rm -rf "$stub/cu/dnn"
mkdir "$stub/cu/dnn"
cat >"$stub/cu/dnn/stub.go" <<'GO'
// Package cudnn is a compile-only stand-in for gorgonia.org/cu/dnn.
package cudnn

// Context stands in for a cuDNN handle.
type Context struct{}

// NewContext returns a stand-in handle.
func NewContext() *Context { return &Context{} }

// Close does nothing.
func (c *Context) Close() error { return nil }
GO
cat >"$stub/go.work" <<WORK
go $(go list -m -f '{{.GoVersion}}')

use $(pwd)

replace gorgonia.org/cu $(go list -m -f '{{.Version}}' gorgonia.org/cu) => $stub/cu
WORK
log "go vet -tags cuda . ./domainbn (Gorgonia's cuda build, stub cuDNN)"
# (cgo warnings of cu's deprecated driver calls go to the log, shown on failure)
GOWORK=$stub/go.work go vet -tags cuda . ./domainbn/ >"$stub/vet.log" 2>&1 || { cat "$stub/vet.log"; exit 1; }
log "go test -c -tags cuda . (Gorgonia's cuda build, stub cuDNN; build only)"
GOWORK=$stub/go.work go test -c -tags cuda -o /dev/null . >"$stub/build.log" 2>&1 || { cat "$stub/build.log"; exit 1; }
log "the ops' CUDA path against the CPU ops, on the emulation of cudaops"
cudaops/testdata/emu/run.sh bn
log "ok"
