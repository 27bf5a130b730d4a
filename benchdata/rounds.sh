#!/usr/bin/env bash
# Runs README's benchmark table measurement: R rounds (default 5), each one
# process running every Go benchmark of the table once (the package's
# kernels and graph, Gorgonia's BatchNorm and the copy floor, back to back
# in one run), then PyTorch on the same shapes; then the portable kernels
# (-tags purego). Raw outputs go to OUT (default benchdata/), named by date;
# benchdata/table.py turns them into the table.
#
#   bash benchdata/rounds.sh [R] [OUT]
set -euo pipefail
cd "$(dirname "$0")/.."
R=${1:-5}
OUT=${2:-benchdata}
day=$(date +%F)
go=$OUT/rounds-go-$day.txt
torch=$OUT/rounds-torch-$day.txt
pure=$OUT/rounds-purego-$day.txt
tmp=$(mktemp -d)
go test -c -o "$tmp/bn.test" .
go test -c -tags purego -o "$tmp/bnpure.test" .
: >"$go"
: >"$torch"
for i in $(seq "$R"); do
	echo "round $i/$R" >&2
	"$tmp/bn.test" -test.run '^$' -test.bench 'Copy|Kernels|Graph' -test.benchtime 300ms >>"$go"
	/usr/bin/python3 bench_torch.py >>"$torch"
done
"$tmp/bnpure.test" -test.run '^$' -test.bench 'Kernels' -test.benchtime 300ms -test.count 3 >"$pure"
rm -rf "$tmp"
echo "python3 benchdata/table.py $go $torch $pure" >&2
