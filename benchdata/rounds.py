#!/usr/bin/env python3
"""Per-round ratios of two graph benchmarks, from R repeated runs.

Usage: benchdata/rounds.py ROUNDS.txt [A B]

ROUNDS.txt: R rounds of
  ./bnsimd.test -test.run '^$' -test.bench 'Graph/(bnreuse|gorgonia)/fwdbwd/' -test.benchtime 300ms
appended to one file. Within a round both variants of a row run back to
back, so their ratio is taken per round; prints, for every row, the median
time of each variant and the median and range of the per-round ratios
A ÷ B (default: gorgonia ÷ bnreuse).
"""
import re
import statistics
import sys
from collections import defaultdict

LINE = re.compile(r"^BenchmarkGraph/(\w+)/(\w+)/(\S+?)-\d+\s+\d+\s+([\d.]+) ns/op")


def main(path, a="gorgonia", b="bnreuse"):
    t = defaultdict(list)  # (variant, pass, row) -> µs per round, in order
    for line in open(path):
        m = LINE.match(line)
        if m:
            t[(m.group(1), m.group(2), m.group(3))].append(float(m.group(4)) / 1000)
    rows = sorted({(p, r) for (_, p, r) in t}, key=lambda k: (k[0], k[1]))
    med = statistics.median
    print(f"| pass | shape/dtype | {a} µs | {b} µs | {a} ÷ {b} (range of rounds) | rounds |")
    print("|---|---|---|---|---|---|")
    for p, r in rows:
        ta, tb = t[(a, p, r)], t[(b, p, r)]
        q = [x / y for x, y in zip(ta, tb)]
        if not q:
            continue
        print(f"| {p} | {r} | {med(ta):.0f} | {med(tb):.0f} | {med(q):.1f}× ({min(q):.1f}–{max(q):.1f}) | {len(q)} |")


if __name__ == "__main__":
    main(*sys.argv[1:4])
