#!/usr/bin/env bash
# Tests of the MPI backend of package collective (collective/mpi, build tag
# mpi): the conformance suite under mpirun with 1, 2 and 4 ranks (with the
# race detector), the go test -exec path, and process-level fault checks
# (a rank that exits, fails, leaves or hangs: the others must get an error
# in time and the job must end with a non-zero status).
#
# Assumes Open MPI is installed:
#   apt-get install -y libopenmpi-dev openmpi-bin
set -euo pipefail
cd "$(dirname "$0")/.."

# Root in CI containers, 4 ranks on 2 cores: allow both, and do not let
# idle ranks spin.
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMPI_MCA_rmaps_base_oversubscribe=1
mpirun=(mpirun --oversubscribe --bind-to none --mca mpi_yield_when_idle 1)

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

echo "--- go vet -tags mpi"
go vet -tags mpi ./collective/...

echo "--- build"
go test -c -race -tags mpi -o "$tmp/mpi.test" ./collective/mpi
go build -tags mpi -o "$tmp/faultcheck" ./collective/mpi/internal/faultcheck

for np in 1 2 4; do
	echo "--- conformance, $np rank(s), -race"
	timeout 600 "${mpirun[@]}" -np "$np" "$tmp/mpi.test" -test.timeout 300s -test.count 1
done

echo "--- go test -exec mpirun, 2 ranks"
timeout 600 go test -tags mpi -p 1 -count 1 -short -exec "${mpirun[*]} -np 2" ./collective/mpi

# fault MODE WANT: run faultcheck with 4 ranks; WANT is "zero" or
# "nonzero" (the job's exit status). The job must end within 30 s, and for
# error/leave/hang the 3 other ranks must report FAULT-DETECTED.
fault() {
	local mode=$1 want=$2 rc=0 start end ms
	echo "--- fault check: $mode"
	start=$(date +%s%N)
	timeout 120 "${mpirun[@]}" -np 4 "$tmp/faultcheck" -mode "$mode" >"$tmp/out" 2>&1 || rc=$?
	end=$(date +%s%N)
	ms=$(((end - start) / 1000000))
	grep -E 'FAULT|MPI_Abort' "$tmp/out" || true
	echo "exit status $rc after ${ms} ms"
	if [[ $rc == 124 ]]; then
		echo "FAIL: the job hung"; cat "$tmp/out"; return 1
	fi
	if [[ $want == zero && $rc != 0 ]] || [[ $want == nonzero && $rc == 0 ]]; then
		echo "FAIL: exit status $rc, want $want"; cat "$tmp/out"; return 1
	fi
	if ((ms > 30000)); then
		echo "FAIL: the job took ${ms} ms, want < 30 s"; return 1
	fi
	if grep -q FAULT-WRONG "$tmp/out"; then
		echo "FAIL: a rank got the wrong error"; cat "$tmp/out"; return 1
	fi
	if [[ $mode == error || $mode == leave || $mode == hang ]]; then
		local n
		n=$(grep -c FAULT-DETECTED "$tmp/out" || true)
		if [[ $n != 3 ]]; then
			echo "FAIL: $n ranks detected the fault, want 3"; cat "$tmp/out"; return 1
		fi
	fi
	# The first survivor to see the rank leave exits, which aborts the
	# others: at least one must have seen the leave itself.
	if [[ $mode == leave ]] && ! grep -q 'FAULT-DETECTED.*peer left the group' "$tmp/out"; then
		echo "FAIL: no rank saw the peer leave"; cat "$tmp/out"; return 1
	fi
}
fault ok zero
fault exit nonzero
fault error nonzero
fault leave nonzero
fault hang nonzero

echo "--- MPI tests passed"
