#!/usr/bin/env python3
"""Prints README's channels-last table from benchdata/layout.sh's outputs.

Usage: benchdata/layout.py LAYOUT-GO LAYOUT-TORCH

Medians over the rounds (µs) of the bare kernels in NCHW and channels-last
(BenchmarkChannelsLast) and of PyTorch 1.13 (2 threads) on the same tensors
in NCHW and channels_last; ratios are per round, then the median.
"""
import re
import statistics
import sys
from collections import defaultdict

med = statistics.median
LINE = re.compile(r"^BenchmarkChannelsLast/(\w+)/(\w+)/(\S+?)/(\w+)-\d+\s+\d+\s+([\d.]+) ns/op")


def main(gopath, torchpath):
    g = defaultdict(list)
    for line in open(gopath):
        m = LINE.match(line)
        if m:
            g[m.groups()[:4]].append(float(m.group(5)) / 1e3)
    t = defaultdict(list)
    for line in open(torchpath):
        f = line.split()
        if len(f) == 6 and f[0][0].isdigit():
            for i, k in enumerate([("fwd", "nchw"), ("fwdbwd", "nchw"), ("fwd", "last"), ("fwdbwd", "last")]):
                t[(k[0], k[1], f[0], f[1])].append(float(f[2 + i]))
    print("| shape (NCHW order) | dtype | pass | bn NCHW µs | bn channels-last µs | last ÷ NCHW | PyTorch NCHW µs | PyTorch channels_last µs | PyTorch last ÷ bn last |")
    print("|---|---|---|---|---|---|---|---|---|")
    for p in ("fwd", "fwdbwd"):
        for (pp, lay, shape, dt) in list(g):
            if pp != p or lay != "nchw":
                continue
            a, b = g[(p, "nchw", shape, dt)], g[(p, "last", shape, dt)]
            tn, tl = t[(p, "nchw", shape, dt)], t[(p, "last", shape, dt)]
            r = [y / x for x, y in zip(a, b)]
            rt = [y / x for x, y in zip(b, tl)]
            print(f"| {shape} | {dt.replace('float', '')} | {'fwd' if p == 'fwd' else 'fwd+bwd'} | {med(a):.0f} | {med(b):.0f} | "
                  f"{med(r):.2f} | {med(tn):.0f} | {med(tl):.0f} | {med(rt):.1f}× ({min(rt):.1f}–{max(rt):.1f}) |")


if __name__ == "__main__":
    main(*sys.argv[1:3])
