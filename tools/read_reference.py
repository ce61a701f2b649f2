#!/usr/bin/env python3
"""Parse and check a reference file written by tools/make_reference.py.

    /usr/bin/python3 tools/read_reference.py tests/ref_tiny.bin [--recompute]

Checks that the sizes add up to the file length exactly, that losses[0] == loss and that every
array is finite, then prints the header and the tensor table. --recompute rebuilds the model
from the stored config and parameters with tools/unet_torch.py (needs torch) in float64 and
compares the stored out / loss / grads with it.
"""
import argparse
import os
import struct
import sys

import numpy as np

MAGIC = 0x52504444


def load(path):
    with open(path, "rb") as f:
        data = f.read()
    pos = 0

    def take(n):
        nonlocal pos
        if pos + n > len(data):
            raise ValueError(f"{path}: truncated at offset {pos} (need {n} more bytes, file {len(data)})")
        b = data[pos:pos + n]
        pos += n
        return b

    def i32(k=1):
        v = struct.unpack("<" + "i" * k, take(4 * k))
        return v if k > 1 else v[0]

    def f32arr(n):
        return np.frombuffer(take(4 * n), dtype="<f4").astype(np.float32)

    r = {}
    magic, version = i32(2)
    if magic != MAGIC:
        raise ValueError(f"{path}: bad magic 0x{magic & 0xffffffff:08x}")
    if version != 1:
        raise ValueError(f"{path}: unsupported version {version}")
    r["version"] = version
    cfg_len = i32()
    assert 0 <= cfg_len < (1 << 20), cfg_len
    r["cfg_text"] = take(cfg_len).decode("utf-8")
    B, C, S, steps = i32(4)
    assert B > 0 and C > 0 and S > 0 and steps >= 0, (B, C, S, steps)
    r.update(B=B, C=C, S=S, n_adam_steps=steps)
    r["lr"] = struct.unpack("<f", take(4))[0]
    n_tensors = i32()
    assert n_tensors > 0
    names, numels = [], []
    for _ in range(n_tensors):
        nl = i32()
        assert 0 < nl < 1024, nl
        names.append(take(nl).decode("utf-8"))
        numels.append(i32())
        assert numels[-1] > 0
    r["names"], r["numels"] = names, numels
    n_params = struct.unpack("<q", take(8))[0]
    if n_params != sum(numels):
        raise ValueError(f"{path}: n_params {n_params} != sum of numel {sum(numels)}")
    r["n_params"] = n_params
    n_img = B * C * S * S
    r["x_t"] = f32arr(n_img)
    r["t"] = np.frombuffer(take(4 * B), dtype="<i4").astype(np.int32)
    r["eps"] = f32arr(n_img)
    r["params"] = f32arr(n_params)
    r["out"] = f32arr(n_img)
    r["loss"] = struct.unpack("<f", take(4))[0]
    r["grads"] = f32arr(n_params)
    r["losses"] = f32arr(steps)
    r["params_after"] = f32arr(n_params)
    if pos != len(data):
        raise ValueError(f"{path}: {len(data) - pos} trailing bytes after the last section")
    r["file_size"] = len(data)
    return r


def split(r, flat):
    """flat array -> {name: array} in the stored order."""
    out, off = {}, 0
    for name, n in zip(r["names"], r["numels"]):
        out[name] = flat[off:off + n]
        off += n
    return out


def check(r):
    for k in ("x_t", "eps", "params", "out", "grads", "losses", "params_after"):
        assert np.all(np.isfinite(r[k])), f"{k} has non-finite values"
    assert np.isfinite(r["loss"])
    if r["n_adam_steps"]:
        assert r["losses"][0] == np.float32(r["loss"]), (r["losses"][0], r["loss"])
    # the loss is the mean squared error of the stored out against eps (float32 rounding only)
    mse = float(np.mean((r["out"].astype(np.float64) - r["eps"]) ** 2))
    assert abs(mse - r["loss"]) <= 1e-5 * abs(r["loss"]) + 1e-7, (mse, r["loss"])
    assert np.all(r["t"] >= 0)


def recompute(r):
    import torch
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import unet_torch
    cfg = unet_torch.parse_config(r["cfg_text"], "<stored config>")
    model = unet_torch.Unet(cfg)
    sd = model.state_dict()
    assert list(sd) == r["names"], "tensor names/order differ from tools/unet_torch.py"
    p = split(r, r["params"])
    model.load_state_dict({k: torch.from_numpy(p[k].copy()).reshape(v.shape) for k, v in sd.items()})
    model = model.double()
    B, C, S = r["B"], r["C"], r["S"]
    x = torch.from_numpy(r["x_t"].copy()).double().reshape(B, C, S, S)
    eps = torch.from_numpy(r["eps"].copy()).double().reshape(B, C, S, S)
    t = torch.from_numpy(r["t"].astype(np.int64))
    out = model(x, t)
    loss = torch.mean((out - eps) ** 2)
    loss.backward()
    g = np.concatenate([q.grad.numpy().ravel() for q in model.parameters()])
    e_out = np.max(np.abs(out.detach().numpy().ravel() - r["out"])) / np.max(np.abs(r["out"]))
    e_g = np.max(np.abs(g - r["grads"])) / np.max(np.abs(r["grads"]))
    e_l = abs(loss.item() - r["loss"]) / abs(r["loss"])
    print(f"recompute (float64): out rel err {e_out:.2e}, loss rel err {e_l:.2e}, grads rel err {e_g:.2e}")
    assert e_out < 1e-6 and e_l < 1e-6 and e_g < 1e-6, "recomputed values differ from the file"


def main():
    ap = argparse.ArgumentParser(description="parse and check a ddpm.c reference file")
    ap.add_argument("file")
    ap.add_argument("--recompute", action="store_true", help="re-run the model with torch and compare")
    a = ap.parse_args()
    r = load(a.file)
    check(r)
    print(f"{a.file}: version {r['version']}, {r['file_size']} bytes (sizes add up exactly)")
    print(f"  B {r['B']}, C {r['C']}, S {r['S']}, n_adam_steps {r['n_adam_steps']}, lr {r['lr']:g}, t {r['t'].tolist()}")
    print(f"  loss {r['loss']:.9g}; losses {' '.join(f'{v:.6g}' for v in r['losses'])}")
    print(f"  n_tensors {len(r['names'])}, n_params {r['n_params']}")
    print("  config:")
    for line in r["cfg_text"].rstrip("\n").split("\n"):
        print("    | " + line)
    g, p0, p1 = split(r, r["grads"]), split(r, r["params"]), split(r, r["params_after"])
    print(f"  {'#':>3} {'name':<48} {'numel':>8} {'offset':>9} {'|param|max':>11} {'|grad|max':>11} {'|dparam|max':>11}")
    off = 0
    for i, (name, n) in enumerate(zip(r["names"], r["numels"])):
        print(f"  {i:3d} {name:<48} {n:8d} {off:9d} {np.max(np.abs(p0[name])):11.4g}"
              f" {np.max(np.abs(g[name])):11.4g} {np.max(np.abs(p1[name] - p0[name])):11.4g}")
        off += n
    if a.recompute:
        recompute(r)
    print("OK")


if __name__ == "__main__":
    main()
