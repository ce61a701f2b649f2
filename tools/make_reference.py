#!/usr/bin/env python3
"""Write a PyTorch gold-standard reference file for ddpm.c's U-Net (forward, gradients, Adam).

    /usr/bin/python3 tools/make_reference.py --config models/tiny.cfg --out tests/ref_tiny.bin

(torch is in Debian's /usr/bin/python3, not in the pyenv `python3`.)

The model is tools/unet_torch.py's Unet (= explainingai-code/DDPM-Pytorch models/unet_base.py,
plus the down_attn extension), built with torch.manual_seed(seed) and PyTorch's default init in
float32, then converted to float64 (unless --float32) so the reference is accurate to ~1e-12;
the stored float32 inputs and initial parameters are exactly the values the model computed with.

Batch: x0 ~ U[-1, 1], eps ~ N(0, 1), x_t = 0.8 * x0 + 0.6 * eps (rounded to float32; it is only
a network input), t ~ U{0 .. num_timesteps-1}. out = model(x_t, t), loss = mean((out - eps)^2),
gradients of loss. Then n_adam_steps torch.optim.Adam(lr, betas=(0.9, 0.999), eps=1e-8,
weight_decay=0) updates on the same batch; losses[k] is the loss before update k.
The time embedding is computed in the compute dtype (float64 by default):
e = [sin(t / f_i), cos(t / f_i)], f_i = 10000 ** (i / (d/2)), i = 0 .. d/2-1.

File layout (little-endian; every array float32 regardless of the compute dtype):
    int32 magic = 0x52504444 ('D','D','P','R' as bytes)
    int32 version = 1
    int32 cfg_len; bytes cfg[cfg_len]          config file text verbatim (utf-8)
    int32 B, C (im_channels), S (im_size), n_adam_steps
    float32 lr
    int32 n_tensors; per tensor in state_dict order: int32 name_len; bytes name; int32 numel
    int64 n_params                             sum of numel
    float32 x_t[B*C*S*S]; int32 t[B]; float32 eps[B*C*S*S]
    float32 params[n_params]                   initial params, state_dict order, row-major
    float32 out[B*C*S*S]
    float32 loss
    float32 grads[n_params]                    d loss / d params at the initial params
    float32 losses[n_adam_steps]               losses[0] == loss
    float32 params_after[n_params]             after n_adam_steps Adam updates
"""
import argparse
import os
import struct
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import unet_torch  # noqa: E402

MAGIC = 0x52504444
VERSION = 1


def make_batch(cfg, batch, seed):
    """float32 x_t, int64 t, float32 eps (deterministic for a given seed)."""
    g = torch.Generator().manual_seed(seed + 1000003)
    C, S = cfg["im_channels"], cfg["im_size"]
    x0 = torch.rand(batch, C, S, S, generator=g, dtype=torch.float32) * 2 - 1
    eps = torch.randn(batch, C, S, S, generator=g, dtype=torch.float32)
    t = torch.randint(0, cfg["num_timesteps"], (batch,), generator=g, dtype=torch.int64)
    x_t = (x0 * 0.8 + eps * 0.6).float()
    return x_t, t, eps


def run(cfg, batch, seed, lr, steps, dtype):
    """Returns dict with names, init params, out, loss, grads, losses, params_after (numpy)."""
    torch.manual_seed(seed)
    model = unet_torch.Unet(cfg)
    x_t, t, eps = make_batch(cfg, batch, seed)
    names = list(model.state_dict().keys())
    pnames = [n for n, _ in model.named_parameters()]
    assert names == pnames, "state_dict has buffers or a different order than parameters()"
    init = [p.detach().clone().float().numpy().ravel() for p in model.parameters()]
    model = model.to(dtype)
    params = list(model.parameters())
    opt = torch.optim.Adam(params, lr=lr, betas=(0.9, 0.999), eps=1e-8)
    xin, ein = x_t.to(dtype), eps.to(dtype)
    res = {}
    losses = []
    for k in range(max(steps, 1)):
        opt.zero_grad(set_to_none=False)
        out = model(xin, t)
        loss = torch.mean((out - ein) ** 2)
        loss.backward()
        if k == 0:
            res["out"] = out.detach().float().numpy().ravel()
            res["loss"] = float(loss.item())
            res["grads"] = [p.grad.detach().float().numpy().ravel().copy() for p in params]
        if k < steps:
            losses.append(float(loss.item()))
            opt.step()
    res["losses"] = losses
    res["params_after"] = [p.detach().float().numpy().ravel().copy() for p in params]
    res["names"] = names
    res["numels"] = [p.numel() for p in params]
    res["params"] = init
    res["x_t"], res["t"], res["eps"] = x_t.numpy().ravel(), t.numpy().astype(np.int32), eps.numpy().ravel()
    return res


def write_reference(path, cfg_text, cfg, batch, lr, steps, r):
    i32 = lambda *v: struct.pack("<" + "i" * len(v), *v)  # noqa: E731
    f32 = lambda a: np.ascontiguousarray(a, dtype="<f4").tobytes()  # noqa: E731
    cfg_bytes = cfg_text.encode("utf-8")
    parts = [i32(MAGIC, VERSION, len(cfg_bytes)), cfg_bytes,
             i32(batch, cfg["im_channels"], cfg["im_size"], steps), struct.pack("<f", lr),
             i32(len(r["names"]))]
    for name, n in zip(r["names"], r["numels"]):
        nb = name.encode("utf-8")
        parts += [i32(len(nb)), nb, i32(n)]
    n_params = sum(r["numels"])
    parts.append(struct.pack("<q", n_params))
    parts += [f32(r["x_t"]), np.ascontiguousarray(r["t"], dtype="<i4").tobytes(), f32(r["eps"])]
    parts.append(f32(np.concatenate(r["params"])))
    parts += [f32(r["out"]), struct.pack("<f", r["loss"])]
    parts.append(f32(np.concatenate(r["grads"])))
    parts.append(f32(np.array(r["losses"], dtype=np.float64)))
    parts.append(f32(np.concatenate(r["params_after"])))
    data = b"".join(parts)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)
    return len(data), n_params


def rel_err(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--steps", type=int, default=10, help="Adam steps (default 10)")
    ap.add_argument("--float32", action="store_true", help="compute in float32 (default float64)")
    ap.add_argument("--no-compare", action="store_true",
                    help="skip the float32-vs-float64 discrepancy report")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's choice)")
    a = ap.parse_args()
    if a.threads > 0:
        torch.set_num_threads(a.threads)
    with open(a.config, "r", encoding="utf-8") as f:
        cfg_text = f.read()
    cfg = unet_torch.parse_config(cfg_text, a.config)
    lr = float(np.float32(a.lr))  # the file stores lr as float32: use exactly that value
    dtype = torch.float32 if a.float32 else torch.float64
    r = run(cfg, a.batch, a.seed, lr, a.steps, dtype)
    size, n_params = write_reference(a.out, cfg_text, cfg, a.batch, lr, a.steps, r)
    print(f"{a.out}: config {a.config}, {'float32' if a.float32 else 'float64'} compute, seed {a.seed}")
    print(f"  batch {a.batch}, C {cfg['im_channels']}, S {cfg['im_size']}, t = {r['t'].tolist()}")
    print(f"  n_tensors {len(r['names'])}, n_params {n_params}")
    print(f"  loss {r['loss']:.9g}, |grad|_2 {np.linalg.norm(np.concatenate(r['grads'])):.6g}")
    if a.steps:
        print(f"  adam lr {lr:g}: losses {r['losses'][0]:.6g} -> {r['losses'][-1]:.6g} over {a.steps} steps")
    print(f"  file size {size} bytes")
    if not a.float32 and not a.no_compare:
        r32 = run(cfg, a.batch, a.seed, lr, a.steps, torch.float32)
        g64, g32 = np.concatenate(r["grads"]), np.concatenate(r32["grads"])
        print("  float32 torch vs this reference (max abs err / max abs value):"
              f" out {rel_err(r32['out'], r['out']):.2e}, loss {abs(r32['loss'] - r['loss']) / abs(r['loss']):.2e},"
              f" grads {rel_err(g32, g64):.2e}, params_after"
              f" {rel_err(np.concatenate(r32['params_after']), np.concatenate(r['params_after'])):.2e}")


if __name__ == "__main__":
    main()
