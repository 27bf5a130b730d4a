#!/usr/bin/python3
"""Times PyTorch's CPU batch norm on the shapes of bench_test.go.

Run with Debian's python3 and python3-torch (1.13), 2 threads:

    apt-get install -y python3-torch
    /usr/bin/python3 bench_torch.py

Training mode (batch statistics, running-statistics update), NCHW input.
Forward: F.batch_norm. Forward+backward: F.batch_norm then
torch.autograd.grad(y, (x, w, b), dy) with a contiguous dy (y.sum().backward()
would take a slow stride-0 path). Prints the median of 20 timed calls (after
3 warm-up calls) in microseconds.

    /usr/bin/python3 bench_torch.py --reps 200 --only 256x1024,8x256x14x14

times only the named shapes, with more calls.

    /usr/bin/python3 bench_torch.py --relu

times F.relu(F.batch_norm(x)) instead (PyTorch's eager BN followed by a
ReLU, two kernels each way: what BenchmarkFused's fused op is compared
with), on lines that start with "relu".

    /usr/bin/python3 bench_torch.py --channels-last

times the shapes of layout_bench_test.go (named in NCHW order) twice: NCHW
and channels-last input — torch.channels_last memory for 4-D, for 3-D the
(N, L, C) tensor seen as (N, C, L) by transpose(1, 2), as a sequence model
hands it to F.batch_norm — printing fwd and fwd+bwd of both.
"""
import argparse
import statistics
import time

import torch
import torch.nn.functional as F

SHAPES = [(32, 64, 32, 32), (8, 256, 14, 14), (256, 1024), (64, 64, 56, 56)]
DTYPES = [torch.float32, torch.float64]
LAYOUT_SHAPES = [(32, 64, 32, 32), (8, 256, 14, 14), (64, 64, 56, 56), (32, 256, 128)]


def channels_last(t):
    """t (NCHW values) in channels-last memory, same logical shape."""
    if t.dim() == 4:
        return t.contiguous(memory_format=torch.channels_last)
    if t.dim() == 3:
        return t.transpose(1, 2).contiguous().transpose(1, 2)
    return t


def median_us(fn, reps=20, warm=3):
    for _ in range(warm):
        fn()
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts) * 1e6


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=20, help="timed calls per median")
    ap.add_argument("--only", default="", help="comma-separated shapes, e.g. 256x1024")
    ap.add_argument("--relu", action="store_true", help="time relu(batch_norm(x))")
    ap.add_argument("--channels-last", action="store_true", help="NCHW vs channels-last on LAYOUT_SHAPES")
    args = ap.parse_args()
    if args.channels_last:
        return layouts(args)
    only = set(filter(None, args.only.split(",")))
    torch.set_num_threads(2)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}")
    print(f"{'shape':>16} {'dtype':>8} {'fwd µs':>10} {'fwd+bwd µs':>11}")
    for shape in SHAPES:
        if only and "x".join(map(str, shape)) not in only:
            continue
        for dt in DTYPES:
            g = torch.Generator().manual_seed(1)
            c = shape[1]
            x = (torch.randn(shape, generator=g, dtype=dt) * 2 + 1).requires_grad_()
            dy = torch.randn(shape, generator=g, dtype=dt).contiguous()
            w = torch.ones(c, dtype=dt, requires_grad=True)
            b = torch.zeros(c, dtype=dt, requires_grad=True)
            rm, rv = torch.zeros(c, dtype=dt), torch.ones(c, dtype=dt)

            act = F.relu if args.relu else (lambda v: v)

            def fwd():
                with torch.no_grad():
                    act(F.batch_norm(x, rm, rv, w, b, training=True, momentum=0.1, eps=1e-5))

            def fwdbwd():
                y = act(F.batch_norm(x, rm, rv, w, b, training=True, momentum=0.1, eps=1e-5))
                torch.autograd.grad(y, (x, w, b), dy)

            name = "x".join(map(str, shape))
            tag = "relu " if args.relu else ""
            print(f"{tag}{name:>16} {str(dt).replace('torch.', ''):>8} {median_us(fwd, args.reps):10.0f} {median_us(fwdbwd, args.reps):11.0f}")


def layouts(args):
    torch.set_num_threads(2)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}")
    print(f"{'shape':>16} {'dtype':>8} {'nchw fwd':>9} {'nchw f+b':>9} {'last fwd':>9} {'last f+b':>9}")
    for shape in LAYOUT_SHAPES:
        for dt in DTYPES:
            g = torch.Generator().manual_seed(1)
            c = shape[1]
            x0 = torch.randn(shape, generator=g, dtype=dt) * 2 + 1
            dy0 = torch.randn(shape, generator=g, dtype=dt)
            w = torch.ones(c, dtype=dt, requires_grad=True)
            b = torch.zeros(c, dtype=dt, requires_grad=True)
            rm, rv = torch.zeros(c, dtype=dt), torch.ones(c, dtype=dt)
            row = []
            for conv in (lambda t: t.contiguous(), channels_last):
                x, dy = conv(x0).requires_grad_(), conv(dy0)

                def fwd():
                    with torch.no_grad():
                        F.batch_norm(x, rm, rv, w, b, training=True, momentum=0.1, eps=1e-5)

                def fwdbwd():
                    y = F.batch_norm(x, rm, rv, w, b, training=True, momentum=0.1, eps=1e-5)
                    torch.autograd.grad(y, (x, w, b), dy)

                row += [median_us(fwd, args.reps), median_us(fwdbwd, args.reps)]
            name = "x".join(map(str, shape))
            print(f"{name:>16} {str(dt).replace('torch.', ''):>8} " + " ".join(f"{v:9.0f}" for v in row))


if __name__ == "__main__":
    main()
