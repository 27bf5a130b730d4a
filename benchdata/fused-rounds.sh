#!/usr/bin/env bash
# The fused BN + ReLU benchmark in the rounds protocol of rounds.sh: R
# rounds (default 5), each one process running BenchmarkFused once (the
# two-op pairs and the fused op on every shape, back to back), then
# PyTorch's relu(batch_norm(x)) on the same shapes, then a training step of
# examples/internal/cnn's net (BenchmarkTrainStep: BN and ReLU as two ops,
# fused, and without BN). The load average is
# logged before each round. Raw outputs go to OUT (default benchdata/);
# benchdata/fused_table.py turns them into medians and ratios.
#
#   bash benchdata/fused-rounds.sh [R] [OUT]
set -euo pipefail
cd "$(dirname "$0")/.."
R=${1:-5}
OUT=${2:-benchdata}
day=$(date +%F)
go=$OUT/fused-go-$day.txt
torch=$OUT/fused-torch-$day.txt
step=$OUT/fused-step-$day.txt
tmp=$(mktemp -d)
go test -c -o "$tmp/bn.test" .
go test -c -o "$tmp/cnn.test" ./examples/internal/cnn
: >"$go"
: >"$torch"
: >"$step"
for i in $(seq "$R"); do
	echo "round $i/$R" >&2
	echo "# round $i $(uptime)" | tee -a "$go" "$step" >>"$torch"
	"$tmp/bn.test" -test.run '^$' -test.bench '^BenchmarkFused$' -test.benchtime 300ms >>"$go"
	/usr/bin/python3 bench_torch.py --relu >>"$torch"
	"$tmp/cnn.test" -test.run '^$' -test.bench 'TrainStep' -test.benchtime 30x >>"$step"
done
rm -rf "$tmp"
echo "python3 benchdata/fused_table.py $go $torch $step" >&2
