#!/usr/bin/python3
"""Medians and ratios of benchdata/fused-rounds.sh's raw outputs.

    python3 benchdata/fused_table.py benchdata/fused-{go,torch,step}-DATE.txt

For each pass, shape and dtype: the median over the rounds of the time per
call (µs) of the pair Apply → gorgonia.Rectify, the pair Apply → fastReLU
(this package's vector ReLU as its own op), the fused ApplyReLU and
PyTorch's relu(batch_norm(x)); and the ratios of the medians, with the
range of the per-round ratios (each round runs all of them back to back).
Then the training step of examples/internal/cnn (ms): two ops, fused,
without BN.
"""
import re
import statistics
import sys
from collections import defaultdict


def load_go(path):
    t = defaultdict(list)  # (variant, pass, shape, dtype) -> per-round µs
    pat = re.compile(r"^BenchmarkFused/(\w+)/(\w+)/([\dx]+)/(float\d+)-\d+\s+\d+\s+([\d.]+) ns/op")
    for line in open(path):
        m = pat.match(line)
        if m:
            v, p, s, d, ns = m.groups()
            t[(v, p, s, d)].append(float(ns) / 1e3)
    return t


def load_torch(path):
    t = defaultdict(list)
    for line in open(path):
        f = line.split()
        if len(f) == 5 and f[0] == "relu":
            t[("torch", "fwd", f[1], f[2])].append(float(f[3]))
            t[("torch", "fwdbwd", f[1], f[2])].append(float(f[4]))
    return t


def ratio(a, b):
    rs = [x / y for x, y in zip(a, b)]
    return f"{statistics.median(a) / statistics.median(b):.2f}× ({min(rs):.2f}–{max(rs):.2f})"


def main(gopath, torchpath, steppath=None):
    t = load_go(gopath)
    t.update(load_torch(torchpath))
    keys = sorted({(p, s, d) for (_, p, s, d) in t}, key=lambda k: (k[0], -len(k[1]), k[1], k[2]))
    print("| pass | shape | dtype | Rectify pair µs | fastReLU pair µs | fused µs | PyTorch µs | fused vs Rectify pair | fused vs fastReLU pair | fused vs PyTorch |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for p, s, d in keys:
        q = {v: t.get((v, p, s, d)) for v in ("pair", "fastpair", "fused", "torch")}
        if not q["fused"]:
            continue
        med = {v: (f"{statistics.median(x):.0f}" if x else "–") for v, x in q.items()}
        cmp = [ratio(q[v], q["fused"]) if q[v] else "–" for v in ("pair", "fastpair", "torch")]
        print(f"| {p} | {s} | {d} | {med['pair']} | {med['fastpair']} | {med['fused']} | {med['torch']} | {cmp[0]} | {cmp[1]} | {cmp[2]} |")
    print(f"\nrounds: {len(t[next(iter(t))])}")
    if steppath:
        st = defaultdict(list)
        pat = re.compile(r"^BenchmarkTrainStep/(\w+)/(float\d+)-\d+\s+\d+\s+([\d.]+) ns/op")
        for line in open(steppath):
            m = pat.match(line)
            if m:
                st[(m.group(2), m.group(1))].append(float(m.group(3)) / 1e6)
        print("\n| training step | BN + ReLU two ops ms | fused ms | no BN ms | two ops / fused |")
        print("|---|---|---|---|---|")
        for d in ("float32", "float64"):
            q = {v: st[(d, v)] for v in ("pair", "fused", "nobn")}
            if q["fused"]:
                print(f"| {d} | {statistics.median(q['pair']):.1f} | {statistics.median(q['fused']):.1f} | {statistics.median(q['nobn']):.1f} | {ratio(q['pair'], q['fused'])} |")


if __name__ == "__main__":
    main(*sys.argv[1:4])
