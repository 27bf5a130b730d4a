#!/usr/bin/env python3
"""Prints README's benchmark table from the raw outputs of benchdata/rounds.sh.

Usage: benchdata/table.py GO.txt TORCH.txt PUREGO.txt

GO.txt: R rounds, each one run of
  bn.test -test.run '^$' -test.bench 'Copy|Kernels|Graph' -test.benchtime 300ms
TORCH.txt: the R rounds of /usr/bin/python3 bench_torch.py, each run right
  after the Go round of the same index.
PUREGO.txt: the kernels built with -tags purego (the portable loops).

Times are medians over the rounds. Ratios are taken within a round (both
sides measured in the same run, or for PyTorch in the adjacent one) and
the table gives their median and, for the targets, their range. The floor
is 3× (fwd) or 8× (fwd+bwd) the tensor's bytes at the copy bandwidth of
that shape and dtype in the same round: the faster of the single memmove
(Copy) and the copy split over all cores (CopyPar).
"""
import re
import statistics
import sys
from collections import defaultdict

LINE = re.compile(r"^Benchmark(\S+?)-\d+\s+\d+\s+([\d.]+) ns/op(?:\s+([\d.]+) MB/s)?(?:\s+(\d+) B/op\s+(\d+) allocs/op)?")
med = statistics.median


def load(path):
    """name -> per-round µs (in order), allocs/op values, MB/s values."""
    us, allocs, mbs = defaultdict(list), defaultdict(list), defaultdict(list)
    for line in open(path):
        m = LINE.match(line)
        if m:
            us[m.group(1)].append(float(m.group(2)) / 1000)
            if m.group(3):
                mbs[m.group(1)].append(float(m.group(3)))
            if m.group(5):
                allocs[m.group(1)].append(int(m.group(5)))
    return us, allocs, mbs


def load_torch(path):
    t = defaultdict(list)  # (shape, dtype, pass) -> per-round µs
    for line in open(path):
        f = line.split()
        if len(f) == 4 and f[0][0].isdigit():
            t[(f[0], f[1], "fwd")].append(float(f[2]))
            t[(f[0], f[1], "fwdbwd")].append(float(f[3]))
    return t


def rng(q):
    return f"{med(q):.1f}× ({min(q):.1f}–{max(q):.1f})"


def main(gopath, torchpath, purepath):
    g, allocs, mbs = load(gopath)
    t = load_torch(torchpath)
    pure, _, _ = load(purepath)
    rounds = len(g[next(k for k in g if k.startswith("Copy/"))])
    print(f"| shape | dtype | pass | kernels µs (portable) | % of copy floor | graph µs, bn | graph µs, bn + reuse | "
          f"graph µs, Gorgonia BN | Gorgonia ÷ bn | Gorgonia ÷ (bn + reuse) | PyTorch 1.13 µs | "
          f"PyTorch ÷ (bn + reuse) | PyTorch ÷ kernels |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    shapes = [k[len("Copy/"):] for k in g if k.startswith("Copy/")]
    for p in ("fwd", "fwdbwd"):
        for sd in shapes:
            shape, dt = sd.split("/")
            copy = [min(a, b) for a, b in zip(g["Copy/" + sd], g["CopyPar/" + sd])]
            k = g[f"Kernels/{p}/{sd}"]
            floor = [100 * (3 if p == "fwd" else 8) * c / 2 / x for c, x in zip(copy, k)]
            bn, re_, gg = g[f"Graph/bn/{p}/{sd}"], g[f"Graph/bnreuse/{p}/{sd}"], g[f"Graph/gorgonia/{p}/{sd}"]
            tq = t[(shape, dt, p)]
            print(f"| {shape} | {dt.replace('float', '')} | {'fwd' if p == 'fwd' else 'fwd+bwd'} | "
                  f"{med(k):.0f} ({med(pure[f'Kernels/{p}/{sd}']):.0f}) | {med(floor):.0f}% ({min(floor):.0f}–{max(floor):.0f}) | "
                  f"{med(bn):.0f} | {med(re_):.0f} | {med(gg):.0f} | "
                  f"{med([a / b for a, b in zip(gg, bn)]):.1f}× | {rng([a / b for a, b in zip(gg, re_)])} | "
                  f"{med(tq):.0f} | {rng([a / b for a, b in zip(tq, re_)])} | {med([a / b for a, b in zip(tq, k)]):.1f}× |")
    print()
    gbs = lambda k: f"{med(mbs[k]) / 1000:.0f}"
    print(f"{rounds} rounds. Copy GB/s (median), one memmove / split over all cores: " + ", ".join(
        f"{s.replace('/float', ' ')} {gbs('Copy/' + s)} / {gbs('CopyPar/' + s)}" for s in shapes))
    a = lambda pre: sorted({v for kk, vs in allocs.items() if kk.startswith(pre) for v in vs})
    for lbl, pre in (("bn graph allocs/op fwd", "Graph/bn/fwd/"), ("bn graph allocs/op fwd+bwd", "Graph/bn/fwdbwd/"),
                     ("bn + reuse graph allocs/op fwd", "Graph/bnreuse/fwd/"),
                     ("bn + reuse graph allocs/op fwd+bwd", "Graph/bnreuse/fwdbwd/"),
                     ("Gorgonia allocs/op fwd", "Graph/gorgonia/fwd/"),
                     ("Gorgonia allocs/op fwd+bwd", "Graph/gorgonia/fwdbwd/"), ("kernels allocs/op", "Kernels/")):
        v = a(pre)
        print(f"{lbl}: {v[0]}–{v[-1]}" if v else f"{lbl}: –")


if __name__ == "__main__":
    main(*sys.argv[1:4])
