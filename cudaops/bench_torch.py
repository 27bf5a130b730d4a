#!/usr/bin/env python3
"""Time PyTorch's training-mode batch norm on the GPU, on the shapes of
cudaops' Go benchmarks (bench_test.go), for a side-by-side comparison.

    python3 bench_torch.py               # table on stdout
    python3 bench_torch.py --json out.json

For every shape and dtype it times, with CUDA events (median of --reps runs of
--iters calls each, after warm-up):

  fwd       torch.nn.functional.batch_norm(x, running_mean, running_var, w, b,
            training=True, momentum=0.1, eps=1e-5) under no_grad
  fwd+bwd   the same with autograd, then torch.autograd.grad(y, (x, w, b), dy)
            with a contiguous dy (y.sum().backward() would hit a stride-0
            slow path)
  copy      y.copy_(x): the device-to-device copy ceiling of this size

with cuDNN enabled (what F.batch_norm uses by default) and disabled (PyTorch's
native CUDA kernels). GB/s uses the same ideal traffic as the Go benchmarks:
forward 3x the tensor bytes, forward+backward 8x.
"""

import argparse
import json
import statistics
import sys

import torch
import torch.nn.functional as F

SHAPES = [
    ("32x64x32x32", (32, 64, 32, 32)),
    ("8x256x14x14", (8, 256, 14, 14)),
    ("256x1024", (256, 1024)),
    ("64x64x56x56", (64, 64, 56, 56)),
    ("64x256x56x56", (64, 256, 56, 56)),
]


def timed(fn, iters, reps, warmup=3):
    """Median seconds per call of fn over reps runs of iters calls."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    start = torch.cuda.Event(enable_timing=True)
    end = torch.cuda.Event(enable_timing=True)
    times = []
    for _ in range(reps):
        start.record()
        for _ in range(iters):
            fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1e3 / iters)
    return statistics.median(times)


def bench(shape, dtype, cudnn, iters, reps):
    dev = torch.device("cuda")
    c = shape[1]
    x = torch.randn(shape, device=dev, dtype=dtype)
    dy = torch.randn(shape, device=dev, dtype=dtype)
    w = (torch.rand(c, device=dev, dtype=dtype) + 0.5).requires_grad_()
    b = torch.randn(c, device=dev, dtype=dtype).requires_grad_()
    rm = torch.zeros(c, device=dev, dtype=dtype)
    rv = torch.ones(c, device=dev, dtype=dtype)
    xg = x.clone().requires_grad_()
    out = torch.empty_like(x)
    nbytes = x.numel() * x.element_size()

    def fwd():
        with torch.no_grad():
            F.batch_norm(x, rm, rv, w, b, training=True, momentum=0.1, eps=1e-5)

    def fwdbwd():
        y = F.batch_norm(xg, rm, rv, w, b, training=True, momentum=0.1, eps=1e-5)
        torch.autograd.grad(y, (xg, w, b), dy)

    def copy():
        out.copy_(x)

    with torch.backends.cudnn.flags(enabled=cudnn):
        t_fwd = timed(fwd, iters, reps)
        t_fb = timed(fwdbwd, iters, reps)
    t_copy = timed(copy, iters, reps)
    copy_gbs = 2 * nbytes / t_copy / 1e9
    return {
        "fwd_us": t_fwd * 1e6,
        "fwd_GBs": 3 * nbytes / t_fwd / 1e9,
        "fwdbwd_us": t_fb * 1e6,
        "fwdbwd_GBs": 8 * nbytes / t_fb / 1e9,
        "copy_GBs": copy_gbs,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--iters", type=int, default=50)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--json", help="also write the results to this file")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        sys.exit("bench_torch.py: no CUDA device")
    print(f"# torch {torch.__version__}, CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}, "
          f"{torch.cuda.get_device_name(0)}")
    hdr = f"{'shape':14} {'dtype':8} {'backend':7} {'fwd us':>9} {'GB/s':>7} {'%copy':>6} {'fwd+bwd us':>11} {'GB/s':>7} {'%copy':>6} {'copy GB/s':>9}"
    print(hdr)
    results = []
    for name, shape in SHAPES:
        for dtype in (torch.float32, torch.float64):
            for cudnn in (True, False):
                r = bench(shape, dtype, cudnn, args.iters, args.reps)
                r.update(shape=name, dtype=str(dtype).replace("torch.", ""), backend="cudnn" if cudnn else "native")
                results.append(r)
                print(f"{name:14} {r['dtype']:8} {r['backend']:7} {r['fwd_us']:9.1f} {r['fwd_GBs']:7.0f} "
                      f"{100 * r['fwd_GBs'] / r['copy_GBs']:6.1f} {r['fwdbwd_us']:11.1f} {r['fwdbwd_GBs']:7.0f} "
                      f"{100 * r['fwdbwd_GBs'] / r['copy_GBs']:6.1f} {r['copy_GBs']:9.0f}", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
