#!/usr/bin/env bash
# Channels-last against NCHW (BenchmarkChannelsLast, layout_bench_test.go)
# and PyTorch's NCHW and channels_last on the same shapes
# (bench_torch.py --channels-last), in R rounds (default 5), each the Go run
# then the PyTorch run. Raw outputs: OUT/layout-{go,torch}-DATE.txt;
# benchdata/layout.py prints the table.
#
#   bash benchdata/layout.sh [R] [OUT]
set -euo pipefail
cd "$(dirname "$0")/.."
R=${1:-5}
OUT=${2:-benchdata}
day=$(date +%F)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
go test -c -o "$tmp/bn.test" .
: >"$OUT/layout-go-$day.txt"
: >"$OUT/layout-torch-$day.txt"
for i in $(seq "$R"); do
	echo "round $i/$R" >&2
	"$tmp/bn.test" -test.run '^$' -test.bench 'ChannelsLast' -test.benchtime 200ms >>"$OUT/layout-go-$day.txt"
	/usr/bin/python3 bench_torch.py --channels-last >>"$OUT/layout-torch-$day.txt"
done
echo "python3 benchdata/layout.py $OUT/layout-{go,torch}-$day.txt" >&2
