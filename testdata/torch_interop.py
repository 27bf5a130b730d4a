#!/usr/bin/python3
"""Interop fixture for bn's StateDict (safetensors under PyTorch's keys).

    /usr/bin/python3 testdata/torch_interop.py make
        trains a small float64 torch model with BatchNorm1d/2d/3d a few steps
        and writes testdata/torch_bn.safetensors (its state_dict) and
        testdata/torch_bn_io.safetensors (eval-mode inputs and outputs).
    /usr/bin/python3 testdata/torch_interop.py check STATE IO
        loads STATE (written by Go) into the same torch model with
        load_state_dict(strict=True) and checks its eval outputs on the inputs
        of IO against the outputs of IO (max abs difference <= 1e-12).

Written for Debian's python3-torch 1.13, which has no safetensors package: the
layout (8-byte little-endian header length, JSON header, raw little-endian
data) is written and read by hand below.
"""
import json
import struct
import sys

import numpy as np
import torch
from torch import nn

torch.set_num_threads(2)

DT = {torch.float64: "F64", torch.float32: "F32", torch.int64: "I64"}
NP = {"F64": np.float64, "F32": np.float32, "I64": np.int64, "I32": np.int32}


def save(path, tensors):
    header, blobs, off = {"__metadata__": {"format": "pt"}}, [], 0
    for name in sorted(tensors):
        t = tensors[name].detach().contiguous()
        b = t.numpy().astype(t.numpy().dtype.newbyteorder("<")).tobytes()
        header[name] = {"dtype": DT[t.dtype], "shape": list(t.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def load(path):
    with open(path, "rb") as f:
        buf = f.read()
    (n,) = struct.unpack("<Q", buf[:8])
    header = json.loads(buf[8:8 + n])
    data, out = buf[8 + n:], {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        b, e = info["data_offsets"]
        a = np.frombuffer(data[b:e], dtype=np.dtype(NP[info["dtype"]]).newbyteorder("<"))
        out[name] = (torch.from_numpy(a.astype(NP[info["dtype"]]).reshape(info["shape"])), info["dtype"])
    return out


class Model(nn.Module):
    """Four branches, one per BN kind; the Go test builds the same graph."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(5, 3)
        self.bn1 = nn.BatchNorm1d(3)                    # (N, C)
        self.seq = nn.BatchNorm1d(3, momentum=None)     # (N, C, L), cumulative average
        self.conv = nn.Conv2d(2, 4, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(4)                    # (N, C, H, W)
        self.plain = nn.BatchNorm2d(4, affine=False)    # no weight/bias keys
        self.bn3 = nn.BatchNorm3d(2, eps=1e-3)          # (N, C, D, H, W)

    def forward(self, a, s, b, c):
        h = self.conv(b)
        return self.bn1(self.fc(a)), self.seq(s), self.bn2(h), self.plain(h), self.bn3(c)


INPUTS = ["x_a", "x_s", "x_b", "x_c"]
OUTPUTS = ["y_a", "y_s", "y_b", "y_plain", "y_c"]


def inputs(n, g):
    return [torch.randn(n, 5, generator=g, dtype=torch.float64) * 2 + 1,
            torch.randn(n, 3, 4, generator=g, dtype=torch.float64) - 3,
            torch.randn(n, 2, 6, 6, generator=g, dtype=torch.float64) * 0.5 + 0.2,
            torch.randn(n, 2, 3, 3, 3, generator=g, dtype=torch.float64) * 3]


def make():
    g = torch.Generator().manual_seed(20)
    torch.manual_seed(20)
    m = Model().double()
    with torch.no_grad():
        for mod in (m.bn1, m.seq, m.bn2, m.bn3):
            mod.weight.copy_(torch.rand(mod.weight.shape, generator=g, dtype=torch.float64) + 0.5)
            mod.bias.copy_(torch.randn(mod.bias.shape, generator=g, dtype=torch.float64))
    m.train()
    with torch.no_grad():
        for _ in range(5):
            m(*inputs(6, g))
    m.eval()
    xs = inputs(3, g)
    with torch.no_grad():
        ys = m(*xs)
    save("testdata/torch_bn.safetensors", m.state_dict())
    save("testdata/torch_bn_io.safetensors", dict(zip(INPUTS + OUTPUTS, list(xs) + list(ys))))
    print("wrote testdata/torch_bn.safetensors:", sorted(m.state_dict()))


def check(state_path, io_path):
    st = load(state_path)
    io = load(io_path)
    m = Model().double()
    for k, (t, dt) in st.items():
        want = "I64" if k.endswith("num_batches_tracked") else "F64"
        if dt != want:
            sys.exit(f"{k}: dtype {dt}, want {want}")
    m.load_state_dict({k: t for k, (t, _) in st.items()}, strict=True)
    m.eval()
    with torch.no_grad():
        ys = m(*[io[k][0] for k in INPUTS])
    worst = 0.0
    for name, y in zip(OUTPUTS, ys):
        d = (y - io[name][0]).abs().max().item()
        worst = max(worst, d)
        if not d <= 1e-12:
            sys.exit(f"{name}: max abs difference {d} > 1e-12")
    print(f"ok: {len(st)} tensors loaded strictly, eval outputs within {worst:.3g}")


if __name__ == "__main__":
    if sys.argv[1:] == ["make"]:
        make()
    elif len(sys.argv) == 4 and sys.argv[1] == "check":
        check(sys.argv[2], sys.argv[3])
    else:
        sys.exit(__doc__)
