#!/usr/bin/env python3
"""Prints README's step-cost tables from the raw outputs of benchdata/step.sh.

Usage: benchdata/step.py STEP-GO STEP-BASE PROFILE KERNELS-GO KERNELS-BASE

Step table: per model, medians over the rounds of the wall time and CPU time
per step with and without BN, BN's wall overhead (median over rounds of the
within-round difference), and BN's share of the CPU and the workers' spin
from the profile, for this tree ("go") and the base. Kernel table: the bare
kernels' median times of both trees and the median of the per-round ratio.
"""
import re
import statistics
import sys
from collections import defaultdict

med = statistics.median
LINE = re.compile(r"^Benchmark(\S+?)-\d+\s+\d+\s+([\d.]+) ns/op(?:\s+([\d.]+) cpu-ns/op)?")
KLINE = re.compile(r"^Benchmark(\S+?)-\d+\s+\d+\s+([\d.]+) ns/op")


def load(path):
    wall, cpu = defaultdict(list), defaultdict(list)
    for line in open(path):
        m = LINE.match(line)
        if m:
            wall[m.group(1)].append(float(m.group(2)) / 1e6)
            if m.group(3):
                cpu[m.group(1)].append(float(m.group(3)) / 1e6)
    return wall, cpu


def profile(path):
    share = {}
    key = None
    for line in open(path):
        if line.startswith("== "):
            key = tuple(line.split()[1:4])
        else:
            m = re.search(r"accounting for [^,]*, ([\d.]+)% of", line)
            if m and key:
                share[key] = float(m.group(1))
    return share


def main(sgo, sbase, prof, kgo, kbase):
    sh = profile(prof)
    print("| model | tree | ms/step with BN | ms/step without | BN's wall overhead | CPU ms/step with BN | without | BN's CPU share (profile) | of which workers spinning |")
    print("|---|---|---|---|---|---|---|---|---|")
    for tree, path in (("go", sgo), ("base", sbase)):
        wall, cpu = load(path)
        for model in ("mlp", "convnet", "deepconv"):
            w1, w0 = wall[f"Step/{model}/bn/float32"], wall[f"Step/{model}/nobn/float32"]
            c1, c0 = cpu[f"Step/{model}/bn/float32"], cpu[f"Step/{model}/nobn/float32"]
            d = med([(a - b) / b * 100 for a, b in zip(w1, w0)])
            print(f"| {model} | {'this' if tree == 'go' else 'before'} | {med(w1):.2f} | {med(w0):.2f} | {d:+.1f} % "
                  f"({min((a - b) / b * 100 for a, b in zip(w1, w0)):+.0f} to {max((a - b) / b * 100 for a, b in zip(w1, w0)):+.0f}) | "
                  f"{med(c1):.2f} | {med(c0):.2f} | {sh.get((model, tree, 'bn'), float('nan')):.1f} % | "
                  f"{sh.get((model, tree, 'spin'), float('nan')):.2f} % |")
            wf, cf = wall.get(f"Step/{model}/fused/float32"), cpu.get(f"Step/{model}/fused/float32")
            if wf:
                d = [(a - b) / b * 100 for a, b in zip(wf, w0)]
                print(f"| {model} | {'this' if tree == 'go' else 'before'}, fused | {med(wf):.2f} | {med(w0):.2f} | {med(d):+.1f} % "
                      f"({min(d):+.0f} to {max(d):+.0f}) | {med(cf):.2f} | {med(c0):.2f} | – | – |")
    print()
    kg, kb = defaultdict(list), defaultdict(list)
    for path, d in ((kgo, kg), (kbase, kb)):
        for line in open(path):
            m = KLINE.match(line)
            if m:
                d[m.group(1)].append(float(m.group(2)) / 1e3)
    print("| kernels | this µs | before µs | this ÷ before (median of rounds, range) |")
    print("|---|---|---|---|")
    for k in kg:
        r = [a / b for a, b in zip(kg[k], kb[k])]
        print(f"| {k.removeprefix('Kernels/')} | {med(kg[k]):.0f} | {med(kb[k]):.0f} | {med(r):.2f} ({min(r):.2f}–{max(r):.2f}) |")
    allr = [a / b for k in kg for a, b in zip(kg[k], kb[k])]
    print(f"\ngeomean of per-round ratios: {statistics.geometric_mean(allr):.3f}")


if __name__ == "__main__":
    main(*sys.argv[1:6])
