#!/usr/bin/env bash
# Measures what BN costs in a training step (BenchmarkStep, step_bench_test.go)
# in the rounds protocol, for this tree ("new") and for BASE (a commit, default
# 8a6a0be: the worker pool before workers parked after an op's last phase),
# whose test binary is built from that commit with this tree's step benchmark
# files. Each round runs both binaries (alternating which goes first), every
# model with and without BN. Then one CPU profile per model and binary gives
# BN's share of the CPU (pprof: samples under the BN ops or the kernels'
# workers) and the workers' spin (under kern.worker, outside the kernels);
# then R rounds of the bare kernels (BenchmarkKernels) of both binaries.
# Raw outputs: OUT/step-{go,base,profile,kernels-go,kernels-base}-DATE.txt;
# benchdata/step.py prints the tables.
#
#   bash benchdata/step.sh [R] [OUT] [BASE]
set -euo pipefail
cd "$(dirname "$0")/.."
R=${1:-5}
OUT=${2:-benchdata}
BASE=${3:-8a6a0be}
day=$(date +%F)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
go test -c -o "$tmp/new.test" .
git archive "$BASE" | tar x -C "$tmp" --one-top-level=base
cp step_bench_test.go step_rusage_*_test.go "$tmp/base/"
(cd "$tmp/base" && go test -c -o "$tmp/base.test" .)
for b in go base; do : >"$OUT/step-$b-$day.txt"; : >"$OUT/step-kernels-$b-$day.txt"; done
bin() { [[ $1 == go ]] && echo "$tmp/new.test" || echo "$tmp/base.test"; }
for i in $(seq "$R"); do
	echo "round $i/$R" >&2
	order="go base"
	((i % 2 == 0)) && order="base go"
	for b in $order; do
		"$(bin $b)" -test.run '^$' -test.bench 'Step' -test.benchtime 20x >>"$OUT/step-$b-$day.txt"
	done
done
prof=$OUT/step-profile-$day.txt
: >"$prof"
for m in mlp convnet deepconv; do
	for b in go base; do
		"$(bin $b)" -test.run '^$' -test.bench "Step/$m/bn/" -test.benchtime "$([[ $m == mlp ]] && echo 400x || echo 120x)" -test.cpuprofile "$tmp/$m-$b.prof" >/dev/null
		for what in 'bn=bn\.\(\*(fwdOp|sumsOp|dxOp|rowOp)\)|kern\.worker' 'spin=kern\.worker'; do
			echo "== $m $b ${what%%=*}" >>"$prof"
			ign=()
			[[ ${what%%=*} == spin ]] && ign=(-ignore 'kern\.\(\*Plan')
			go tool pprof -top -focus "${what#*=}" "${ign[@]}" "$(bin $b)" "$tmp/$m-$b.prof" 2>/dev/null | sed -n '/^Showing nodes/p' >>"$prof"
		done
	done
done
for i in $(seq "$R"); do
	echo "kernels round $i/$R" >&2
	for b in go base; do
		"$(bin $b)" -test.run '^$' -test.bench 'Kernels' -test.benchtime 300ms >>"$OUT/step-kernels-$b-$day.txt"
	done
done
echo "python3 benchdata/step.py $OUT/step-{go,base,profile,kernels-go,kernels-base}-$day.txt" >&2
