#!/usr/bin/env python3
"""Build the GPU tables of cudaops/README.md from the raw outputs here.

    python3 table.py plan h100-cudaops-bench.txt h100-torch.txt
    python3 table.py ops h200-cudaops-bench.txt h200-ops-before.txt \
        h200-ops-onecopy-v1.txt h200-torch.txt [h200-bn-cuda-bench.txt]

plan: the bare cudaops pipeline, µs, GB/s (ideal traffic) and % of the
device copy measured in the same run, against PyTorch's cuDNN batch norm.
ops:
Medians over the runs in each file, µs per call: the bare cudaops pipeline
(BenchmarkForward / BenchmarkForwardBackward), the root ops' CUDA path
(BenchmarkCUDAOps) before and after the one-copy-per-pass change, PyTorch
(bench_torch.py: cuDNN and native kernels), and optionally a later run of
the ops' path.
"""
import collections
import re
import statistics
import sys

PASSES = {"fwd": ("Forward", 0), "fwd+bwd": ("ForwardBackward", 1)}
SHAPES = ["32x64x32x32", "8x256x14x14", "256x1024", "64x64x56x56", "64x256x56x56"]


def load(path):
    """{benchmark name without 'Benchmark' and the -P suffix: median µs}"""
    d = collections.defaultdict(list)
    for line in open(path):
        p = line.split()
        if len(p) > 3 and p[0].startswith("Benchmark") and p[3] == "ns/op":
            d[re.sub(r"-\d+$", "", p[0])[len("Benchmark"):]].append(float(p[2]) / 1e3)
    return {k: statistics.median(v) for k, v in d.items()}


def torch(path):
    t = {}
    for line in open(path):
        p = line.split()
        if len(p) >= 8 and p[2] in ("cudnn", "native"):
            t[(p[0], p[1], p[2])] = (float(p[3]), float(p[6]))
    return t


def ops(d, pas, sh, dt):
    """The ops' benchmark, whatever prefix the file gave it."""
    for k, v in d.items():
        if k.endswith(f"/{pas}/{sh}/{dt}"):
            return v
    raise KeyError(f"{pas}/{sh}/{dt}")


def metric(path, unit):
    """{name: median of the value reported before unit}"""
    d = collections.defaultdict(list)
    for line in open(path):
        p = line.split()
        if p and p[0].startswith("Benchmark") and unit in p:
            d[re.sub(r"-\d+$", "", p[0])[len("Benchmark"):]].append(float(p[p.index(unit) - 1]))
    return {k: statistics.median(v) for k, v in d.items()}


if sys.argv[1] == "plan":
    us, pct, th = load(sys.argv[2]), metric(sys.argv[2], "%copy"), torch(sys.argv[3])
    head = ["shape", "dtype", "fwd µs", "fwd % of copy", "cuDNN fwd µs", "fwd+bwd µs", "fwd+bwd % of copy", "cuDNN fwd+bwd µs", "cuDNN ÷ cudaops, fwd+bwd"]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for sh in SHAPES:
        for dt in ["float32", "float64"]:
            f, fb = f"Forward/{sh}/{dt}", f"ForwardBackward/{sh}/{dt}"
            cf, cfb = th[(sh, dt, "cudnn")]
            print(f"| {sh} | {dt[5:]} | {us[f]:.1f} | {pct[f]:.0f} % | {cf:.1f} | {us[fb]:.1f} | {pct[fb]:.0f} % | {cfb:.1f} | {cfb / us[fb]:.2f}× |")
    sys.exit()

sys.argv = sys.argv[1:]
plan, before, after, th = load(sys.argv[1]), load(sys.argv[2]), load(sys.argv[3]), torch(sys.argv[4])
later = load(sys.argv[5]) if len(sys.argv) > 5 else None
head = ["shape", "dtype", "pass", "cudaops pipeline", "bn ops, before", "bn ops, one copy (v1)", "cuDNN", "PyTorch native", "cuDNN ÷ bn ops v1"]
if later:
    head.append("bn ops, final code (another H200, later run)")
print("| " + " | ".join(head) + " |")
print("|" + "---|" * len(head))
for pas, (pn, ti) in PASSES.items():
    for sh in SHAPES:
        for dt in ["float32", "float64"]:
            cd, nat = th[(sh, dt, "cudnn")][ti], th[(sh, dt, "native")][ti]
            a = ops(after, pas, sh, dt)
            row = [sh, dt[5:], pas, f"{plan[f'{pn}/{sh}/{dt}']:.1f}", f"{ops(before, pas, sh, dt):.1f}",
                   f"{a:.1f}", f"{cd:.1f}", f"{nat:.1f}", f"{cd / a:.2f}×"]
            if later:
                row.append(f"{ops(later, pas, sh, dt):.1f}")
            print("| " + " | ".join(row) + " |")
