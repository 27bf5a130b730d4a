#!/usr/bin/env bash
# Latency across hosts (bash .ci/multihost.sh bench): on the simulated hosts
# of internal/hosts/hosts.sh (network namespaces on one bridge, TCP),
#   - collective/mpi's BenchmarkAllReduce (float32, 128 / 2048 / 2^20 values
#     = 2·C for C = 64, 1024, and 4 MB) over 4 hosts × 1 rank, and over 4
#     ranks on one host (shared memory) for comparison;
#   - internal/mpitest's BenchmarkSyncBN (32×64×32×32 float32 per rank,
#     SyncBN vs plain BN) over 2 hosts × 1 rank, and over 2 ranks on one host.
#   - collective/mpi's BenchmarkMoments (a synchronized layer's forward
#     exchange, C = 64 / 512 / 2048: the all-gather merged in rank order vs
#     the Moments all-reduce by its automatic path, reduce + broadcast and
#     MPI_Iallreduce) over 4 hosts × 1 rank (argument moments only).
# Raw outputs: benchdata/multihost-allreduce.txt, benchdata/multihost-syncbn.txt,
# benchdata/scale-multihost-moments.txt (arguments: allreduce, syncbn,
# moments; default allreduce syncbn).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=/usr/local/go/bin:$PATH
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
repo=$PWD
. internal/hosts/hosts.sh
hosts_down
work=$(mktemp -d /tmp/bnmh.XXXXXX)
trap 'hosts_down; rm -rf "$work"' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

timeout -k 5 300 go test -c -tags mpi -o "$work/mpi.test" ./collective/mpi
timeout -k 5 300 go test -c -tags mpi -o "$work/bnmpi.test" ./internal/mpitest
mkdir -p "$work/tmp" benchdata

across() { # across NHOSTS CMD…: mpirun over NHOSTS hosts × 1 rank
	local n=$1 k
	shift
	hosts_up "$n"
	for ((k = 0; k < n; k++)); do echo "mh$k slots=1"; done >"$work/hostfile"
	timeout -k 5 300 bash internal/hosts/hosts.sh exec mh0 env TMPDIR="$work/tmp" \
		mpirun --hostfile "$work/hostfile" -np "$n" --map-by node \
		--mca plm_rsh_agent "$repo/internal/hosts/rsh" --mca plm_rsh_no_tree_spawn 1 \
		--mca orte_tmpdir_base "$work/tmp" \
		--mca btl tcp,self --mca pml ob1 \
		--mca btl_tcp_if_include "$BNMH_NET.0/24" --mca oob_tcp_if_include "$BNMH_NET.0/24" \
		--bind-to none --mca mpi_yield_when_idle 1 "$@"
	hosts_down
}
onehost() { # onehost NRANKS CMD…: mpirun on this host (shared memory)
	local n=$1
	shift
	TMPDIR=$work/tmp timeout -k 5 300 mpirun --oversubscribe -np "$n" --bind-to none --mca mpi_yield_when_idle 1 "$@"
}
header() {
	echo "# $1"
	echo "# $(date -u +%FT%TZ), commit $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- collective internal/mpitest ./*.go || echo ' + uncommitted changes'), $(nproc) CPUs: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2)"
	echo "# $(mpirun --version | head -1); hosts: network namespaces on one Linux bridge (veth), TCP (btl tcp,self; pml ob1)"
	echo "# command: bash .ci/multihost.sh bench (.ci/multihost-bench.sh)"
}

what=${*:-allreduce syncbn}

small=(-test.run '^$' -test.bench 'AllReduce/n=(128|2048)$' -test.benchtime 2000x -test.count 3)
large=(-test.run '^$' -test.bench 'AllReduce/n=1048576$' -test.benchtime 40x -test.count 3)
if [[ $what == *allreduce* ]]; then {
	header "collective/mpi BenchmarkAllReduce, float32 Sum"
	echo "## 4 hosts × 1 rank, TCP"
	across 4 "$work/mpi.test" "${small[@]}"
	across 4 "$work/mpi.test" "${large[@]}"
	echo "## 1 host × 4 ranks, shared memory"
	onehost 4 "$work/mpi.test" "${small[@]}"
	onehost 4 "$work/mpi.test" "${large[@]}"
} 2>&1 | tee benchdata/multihost-allreduce.txt; fi

moments=(-test.run '^$' -test.bench 'Moments' -test.benchtime 300x -test.count 5)
if [[ $what == *moments* ]]; then {
	header "collective/mpi BenchmarkMoments: all-gather + rank-order merge vs the Moments all-reduce (auto, reduce+bcast, MPI_Iallreduce)"
	echo "## 4 hosts × 1 rank, TCP"
	across 4 "$work/mpi.test" "${moments[@]}"
} 2>&1 | tee benchdata/scale-multihost-moments.txt; fi

syncbn=(-test.run '^$' -test.bench SyncBN -test.benchtime 20x -test.count 9)
if [[ $what == *syncbn* ]]; then {
	header "internal/mpitest BenchmarkSyncBN: 32×64×32×32 float32 per rank, training mode, SyncBN vs plain BN"
	echo "## 2 hosts × 1 rank, TCP"
	across 2 "$work/bnmpi.test" "${syncbn[@]}"
	echo "## 1 host × 2 ranks, shared memory"
	onehost 2 "$work/bnmpi.test" "${syncbn[@]}"
} 2>&1 | tee benchdata/multihost-syncbn.txt; fi
