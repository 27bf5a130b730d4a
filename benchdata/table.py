#!/usr/bin/env python3
"""Prints README's benchmark table from the raw outputs.

Usage: benchdata/table.py BENCH.txt BENCH-SIMD.txt TORCH.txt

BENCH.txt: go test -run '^$' -bench 'Copy|Kernels|Graph' -benchtime 300ms -count 5 .
BENCH-SIMD.txt: the same with GOEXPERIMENT=simd and -bench 'Copy|Kernels|Graph/bn'
TORCH.txt: /usr/bin/python3 bench_torch.py
Medians of the repeated runs; the floor is 3× (fwd) or 8× (fwd+bwd) the
tensor's bytes at the copy bandwidth of that shape and dtype: the faster of
the single memmove (Copy) and the copy split over all cores (CopyPar), taken
from the simd file when it has them (the same run as the simd kernels).
"""
import re
import statistics
import sys
from collections import defaultdict

LINE = re.compile(r"^Benchmark(\S+?)-\d+\s+\d+\s+([\d.]+) ns/op(?:\s+([\d.]+) MB/s)?(?:\s+(\d+) B/op\s+(\d+) allocs/op)?")


def load(path):
    ns, mbs, allocs = defaultdict(list), defaultdict(list), defaultdict(list)
    for line in open(path):
        m = LINE.match(line)
        if not m:
            continue
        name = m.group(1)
        ns[name].append(float(m.group(2)) / 1000)
        if m.group(3):
            mbs[name].append(float(m.group(3)))
        if m.group(5):
            allocs[name].append(int(m.group(5)))
    med = lambda d: {k: statistics.median(v) for k, v in d.items()}
    return med(ns), med(mbs), med(allocs)


def main(bench, simd, torch):
    ns, mbs, allocs = load(bench)
    sns, smbs, sallocs = load(simd)
    tq = {}
    for line in open(torch):
        f = line.split()
        if len(f) == 4 and f[0][0].isdigit():
            tq[(f[0], f[1], "fwd")] = float(f[2])
            tq[(f[0], f[1], "fwdbwd")] = float(f[3])
    print("| shape | dtype | pass | bare kernels µs, portable / simd | % of copy floor, simd | "
          "graph µs, bn simd (portable) | graph µs, bn + reuse simd (portable) | graph µs, Gorgonia BN | "
          "Gorgonia ÷ bn (÷ bn + reuse) | PyTorch 1.13 µs | PyTorch ÷ bn (÷ bn + reuse) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    shapes = []
    for k in ns:
        if k.startswith("Copy/"):
            shapes.append(k[len("Copy/"):])
    for p in ("fwd", "fwdbwd"):
        for sd in shapes:
            shape, dt = sd.split("/")
            # A copy moves the tensor twice (read + write).
            cp = sns if "Copy/" + sd in sns else ns
            copy_us = min(cp[k + sd] for k in ("Copy/", "CopyPar/") if k + sd in cp)
            floor_us = (3 if p == "fwd" else 8) * copy_us / 2
            kp, ks = ns.get(f"Kernels/{p}/{sd}"), sns.get(f"Kernels/{p}/{sd}")
            gp, gs = ns.get(f"Graph/bn/{p}/{sd}"), sns.get(f"Graph/bn/{p}/{sd}")
            rp, rs = ns.get(f"Graph/bnreuse/{p}/{sd}"), sns.get(f"Graph/bnreuse/{p}/{sd}")
            gg = ns.get(f"Graph/gorgonia/{p}/{sd}")
            t = tq.get((shape, dt, p))
            print(f"| {shape} | {dt.replace('float', '')} | {'fwd' if p == 'fwd' else 'fwd+bwd'} | "
                  f"{kp:.0f} / {ks:.0f} | {100 * floor_us / ks:.0f}% | {gs:.0f} ({gp:.0f}) | {rs:.0f} ({rp:.0f}) | "
                  f"{gg:.0f} | {gg / gs:.1f}× ({gg / rs:.1f}×) | {t:.0f} | {t / gs:.2f}× ({t / rs:.2f}×) |")
    print()
    cm = smbs if any(k.startswith("Copy") for k in smbs) else mbs
    gbs = lambda k: f"{cm[k] / 1000:.0f}" if k in cm else "–"
    print("copy GB/s, one memmove / split over all cores: " + ", ".join(
        f"{s.replace('/float', ' ')} {gbs('Copy/' + s)} / {gbs('CopyPar/' + s)}" for s in shapes))
    a = lambda d, pre: sorted(v for k, v in d.items() if k.startswith(pre))
    for lbl, d, pre in (("bn graph allocs/op fwd (simd)", sallocs, "Graph/bn/fwd/"),
                        ("bn graph allocs/op fwd+bwd (simd)", sallocs, "Graph/bn/fwdbwd/"),
                        ("bn + reuse graph allocs/op fwd (simd)", sallocs, "Graph/bnreuse/fwd/"),
                        ("bn + reuse graph allocs/op fwd+bwd (simd)", sallocs, "Graph/bnreuse/fwdbwd/"),
                        ("Gorgonia allocs/op fwd", allocs, "Graph/gorgonia/fwd/"),
                        ("Gorgonia allocs/op fwd+bwd", allocs, "Graph/gorgonia/fwdbwd/"),
                        ("kernels allocs/op", allocs, "Kernels/")):
        v = a(d, pre)
        print(f"{lbl}: {v[0]}–{v[-1]}")


if __name__ == "__main__":
    main(*sys.argv[1:4])
