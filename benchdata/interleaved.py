#!/usr/bin/env python3
"""Prints README's interleaved small-shape table from the raw outputs.

Usage: benchdata/interleaved.py GO.txt TORCH.txt

GO.txt: R rounds of
  ./bnsimd.test -test.run '^$' -test.bench 'Kernels/.*/(256x1024|8x256x14x14)/|Graph/bn(reuse)?/.*/(256x1024|8x256x14x14)/' -test.benchtime 300ms
TORCH.txt: the R rounds of /usr/bin/python3 bench_torch.py --reps 200 --only 256x1024,8x256x14x14
run alternately (Go round i, then PyTorch round i). Medians over the rounds;
the ratio column is the median and range of the per-round ratios
PyTorch ÷ (graph, bn + reuse).
"""
import re
import statistics
import sys
from collections import defaultdict

LINE = re.compile(r"^Benchmark(\S+?)-\d+\s+\d+\s+([\d.]+) ns/op")


def main(gopath, torchpath):
    gor = defaultdict(list)  # name -> per-round µs, in round order
    for line in open(gopath):
        m = LINE.match(line)
        if m:
            gor[m.group(1)].append(float(m.group(2)) / 1000)
    tor = defaultdict(list)
    for line in open(torchpath):
        f = line.split()
        if len(f) == 4 and f[0][0].isdigit():
            tor[(f[0], f[1], "fwd")].append(float(f[2]))
            tor[(f[0], f[1], "fwdbwd")].append(float(f[3]))
    med = statistics.median
    print("| shape | dtype | pass | kernels (simd) µs | graph bn µs | graph bn + reuse µs | PyTorch µs "
          "| PyTorch ÷ bn + reuse (range of rounds) |")
    print("|---|---|---|---|---|---|---|---|")
    for p in ("fwd", "fwdbwd"):
        for shape in ("8x256x14x14", "256x1024"):
            for dt in ("float32", "float64"):
                sd = f"{p}/{shape}/{dt}"
                k, g, r = gor[f"Kernels/{sd}"], gor[f"Graph/bn/{sd}"], gor[f"Graph/bnreuse/{sd}"]
                t = tor[(shape, dt, p)]
                ratios = [a / b for a, b in zip(t, r)]
                print(f"| {shape} | {dt.replace('float', '')} | {'fwd' if p == 'fwd' else 'fwd+bwd'} | "
                      f"{med(k):.0f} | {med(g):.0f} | {med(r):.0f} | {med(t):.0f} | "
                      f"{med(ratios):.2f}× ({min(ratios):.2f}–{max(ratios):.2f}) |")


if __name__ == "__main__":
    main(*sys.argv[1:3])
