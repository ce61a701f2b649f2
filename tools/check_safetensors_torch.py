#!/usr/bin/env python3
"""Check a ddpm.c safetensors file in PyTorch: it loads strictly into tools/unet_torch.py's Unet
(the DDPM-Pytorch U-Net), and PyTorch's output on ddpm.c's fixed input equals ddpm.c's output.

    ./ddpm export --model M.ckpt --out M.safetensors
    ./ddpm export --model M.safetensors --forward M.fwd
    /usr/bin/python3 tools/check_safetensors_torch.py M.safetensors M.fwd [--config F.cfg]
        [--seed S] [--resave OUT.safetensors] [--tol 1e-4]

M.fwd (ddpm export --forward) holds the input x [N, C, H, W], the timesteps t [N] and ddpm.c's
eps_theta(x, t). The check: max|torch - ddpm.c| / max|torch| <= --tol (float32 on both sides),
and with --seed S, x equals torch.manual_seed(S); torch.randn(N, C, H, W) bit for bit.
--resave writes the model's state_dict back as safetensors (PyTorch -> safetensors, for the
round trip ddpm.c -> PyTorch -> ddpm.c). Exit status 0 when every check passes.
"""
import argparse
import os
import struct
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import safetensors_io  # noqa: E402
import unet_torch  # noqa: E402


def read_forward(path):
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:8] != b"DDPMFWD1":
        raise ValueError(f"{path}: not a ddpm export --forward file")
    n, c, h, w = struct.unpack("<4i", raw[8:24])
    d = n * c * h * w
    off = 24
    t = np.frombuffer(raw, "<i4", n, off).astype(np.int64)
    off += 4 * n
    x = np.frombuffer(raw, "<f4", d, off).reshape(n, c, h, w)
    off += 4 * d
    out = np.frombuffer(raw, "<f4", d, off).reshape(n, c, h, w)
    return torch.from_numpy(x.copy()), torch.from_numpy(t.copy()), torch.from_numpy(out.copy())


def main(argv):
    ap = argparse.ArgumentParser(description="check a ddpm.c safetensors file in PyTorch")
    ap.add_argument("safetensors")
    ap.add_argument("forward")
    ap.add_argument("--config")
    ap.add_argument("--seed", type=int)
    ap.add_argument("--resave")
    ap.add_argument("--tol", type=float, default=1e-4)
    a = ap.parse_args(argv)
    sd, meta = safetensors_io.load(a.safetensors)
    if a.config:
        cfg = unet_torch.load_config(a.config)
    elif "ddpm_config" in meta:
        cfg = unet_torch.parse_config(meta["ddpm_config"], a.safetensors + " ddpm_config")
    else:
        print(f"error: {a.safetensors}: no ddpm_config metadata; give --config", file=sys.stderr)
        return 1
    model = unet_torch.Unet(cfg)
    model.load_state_dict(sd, strict=True)
    model.eval()
    x, t, out_c = read_forward(a.forward)
    ok = True
    if a.seed is not None:
        torch.manual_seed(a.seed)
        xr = torch.randn(x.shape)
        same = torch.equal(xr, x)
        print(f"input x = torch.randn{tuple(x.shape)} after manual_seed({a.seed}): {'bit for bit' if same else 'DIFFERS'}")
        ok &= same
    with torch.no_grad():
        out_t = model(x, t)
    err = (out_t - out_c).abs().max().item()
    scale = out_t.abs().max().item()
    rel = err / max(scale, 1e-30)
    print(f"{len(sd)} tensors loaded strictly; output of {x.shape[0]} images at t = {t.tolist()}: "
          f"max|torch - ddpm.c| {err:.3e}, / max|torch| {scale:.3e} = {rel:.3e} (tol {a.tol:g})")
    ok &= rel <= a.tol
    if a.resave:
        safetensors_io.save(a.resave, model.state_dict(), meta)
        print(f"{a.resave}: the PyTorch model's state_dict")
    print("check_safetensors_torch: " + ("ok" if ok else "FAILED"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
