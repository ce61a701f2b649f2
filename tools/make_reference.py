#!/usr/bin/env python3
"""Write a PyTorch gold-standard reference file for ddpm.c's U-Net (forward, gradients, Adam).

    /usr/bin/python3 tools/make_reference.py --config models/tiny.cfg --out tests/ref_tiny.bin

(torch is in Debian's /usr/bin/python3, not in the pyenv `python3`.)

The model is tools/unet_torch.py's Unet (= explainingai-code/DDPM-Pytorch models/unet_base.py,
plus the down_attn extension), built with torch.manual_seed(seed) and PyTorch's default init in
float32, then converted to float64 (unless --float32) so the reference is accurate to ~1e-12;
the stored float32 inputs and initial parameters are exactly the values the model computed with.

Version 1 (configs with the default objective, eps, unconditional): x0 ~ U[-1, 1], eps ~ N(0, 1),
x_t = 0.8 * x0 + 0.6 * eps (rounded to float32; it is only a network input), t ~ U{0 .. T-1}.
out = model(x_t, t), loss = mean((out - eps)^2), gradients of loss.

Version 2 (--v2, any objective and class-conditional configs): the training objective of
src/diffusion/objective.h, written here from the formulas, not from the C code. x0 ~ U[-1, 1],
eps ~ N(0, 1); a noise level per image: uniform: t ~ U{0 .. T-1}, sigma = sigma_t =
sqrt((1 - ab_t)/ab_t) of the config's linear schedule; lognormal: ln sigma ~ N(p_mean, p_std^2)
clamped to [sigma_0, sigma_{T-1}], t = its fractional timestep (ln sigma_t interpolated linearly),
rounded to float32, sigma = the level of that float32 t. y ~ U{0 .. num_classes} (the last one is
the null label). x = x0 + sigma eps, input c_in x, target F* = (x0 - c_skip x)/c_out, weight w
(min-SNR), loss = sum_b w_b |model(c_in x, t, y) - F*|^2 / (B D). Then n_adam_steps torch.optim.Adam(lr, betas=(0.9, 0.999), eps=1e-8,
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
    version 1: float32 x_t[B*C*S*S]; int32 t[B]; float32 eps[B*C*S*S]
    version 2: float32 x0[B*C*S*S]; float32 eps[B*C*S*S]; float32 t[B]; float64 sigma[B]; int32 y[B]
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


def schedule_sigmas(cfg):
    """sigma_t = sqrt((1 - ab_t)/ab_t), t = 0..T-1, of the linear schedule, in float64."""
    T = cfg["num_timesteps"]
    if cfg["schedule"] != "linear":
        raise SystemExit("--v2: only the linear schedule is implemented here")
    # the C code computes beta_start + (beta_end - beta_start) t/(T-1) from the float32 config values
    bs, be = float(np.float32(cfg["beta_start"])), float(np.float32(cfg["beta_end"]))
    betas = bs + (be - bs) * np.arange(T, dtype=np.float64) / max(T - 1, 1)
    ab = np.cumprod(1.0 - betas)
    return np.sqrt((1.0 - ab) / ab)


def t_of_sigma(ls, sig):
    """fractional timestep of sigma: ln sigma_t interpolated linearly between integer t"""
    return float(np.interp(np.log(sig), ls, np.arange(len(ls), dtype=np.float64)))


def sigma_of_t(ls, t):
    return float(np.exp(np.interp(t, np.arange(len(ls), dtype=np.float64), ls)))


def precond(cfg, sigma):
    """(c_in, c_skip, c_out) of the objective (EDM's Table 1 forms)"""
    s2 = sigma * sigma
    if cfg["objective"] == "v":
        return 1 / np.sqrt(1 + s2), 1 / (1 + s2), -sigma / np.sqrt(1 + s2)
    if cfg["objective"] == "edm":
        d2 = cfg["sigma_data"] ** 2
        return 1 / np.sqrt(s2 + d2), d2 / (s2 + d2), sigma * cfg["sigma_data"] / np.sqrt(s2 + d2)
    return 1 / np.sqrt(1 + s2), 1.0, -sigma


def make_batch_v2(cfg, batch, seed):
    """float32 x0, eps, t; float64 sigma; int y (deterministic for a given seed)"""
    g = torch.Generator().manual_seed(seed + 1000003)
    C, S = cfg["im_channels"], cfg["im_size"]
    x0 = torch.rand(batch, C, S, S, generator=g, dtype=torch.float32) * 2 - 1
    eps = torch.randn(batch, C, S, S, generator=g, dtype=torch.float32)
    sig = schedule_sigmas(cfg)
    ls = np.log(sig)
    t, sigma = np.zeros(batch, np.float32), np.zeros(batch, np.float64)
    for b in range(batch):
        if cfg["sigma_sampling"] == "lognormal":
            z = float(torch.randn(1, generator=g, dtype=torch.float64))
            sg = min(max(np.exp(cfg["p_mean"] + cfg["p_std"] * z), sig[0]), sig[-1])
            t[b] = np.float32(t_of_sigma(ls, sg))
            sigma[b] = sigma_of_t(ls, float(t[b]))
        else:
            ti = int(torch.randint(0, cfg["num_timesteps"], (1,), generator=g))
            t[b], sigma[b] = ti, sig[ti]
    nc = cfg["num_classes"]
    y = torch.randint(0, nc + 1, (batch,), generator=g).numpy().astype(np.int32) if nc > 0 else np.full(batch, 0, np.int32)
    return x0, eps, t, sigma, y


def loss_v2(cfg, model, x0, eps, t, sigma, y, dtype):
    B = x0.shape[0]
    D = x0[0].numel()
    sg = torch.tensor(sigma, dtype=torch.float64)
    c_in, c_skip, c_out = precond(cfg, sg)
    c_in, c_skip, c_out = (torch.as_tensor(c, dtype=torch.float64).reshape(-1, 1, 1, 1) * torch.ones(B, 1, 1, 1, dtype=torch.float64)
                           for c in (c_in, c_skip, c_out))
    x = x0.double() + sg.reshape(-1, 1, 1, 1) * eps.double()
    xin, target = (c_in * x).to(dtype), ((x0.double() - c_skip * x) / c_out).to(dtype)
    w = torch.ones(B, dtype=torch.float64)
    if cfg["min_snr_gamma"] > 0:
        w = torch.clamp(1 / sg ** 2, max=cfg["min_snr_gamma"]) * c_out.reshape(-1) ** 2
    out = model(xin, torch.tensor(t, dtype=dtype), torch.tensor(y).long() if cfg["num_classes"] > 0 else None)
    loss = torch.sum(w.to(dtype) * torch.sum((out - target) ** 2, dim=(1, 2, 3))) / (B * D)
    return out, loss


def make_batch(cfg, batch, seed):
    """float32 x_t, int64 t, float32 eps (deterministic for a given seed)."""
    g = torch.Generator().manual_seed(seed + 1000003)
    C, S = cfg["im_channels"], cfg["im_size"]
    x0 = torch.rand(batch, C, S, S, generator=g, dtype=torch.float32) * 2 - 1
    eps = torch.randn(batch, C, S, S, generator=g, dtype=torch.float32)
    t = torch.randint(0, cfg["num_timesteps"], (batch,), generator=g, dtype=torch.int64)
    x_t = (x0 * 0.8 + eps * 0.6).float()
    return x_t, t, eps


def run(cfg, batch, seed, lr, steps, dtype, v2=False):
    """Returns dict with names, init params, out, loss, grads, losses, params_after (numpy)."""
    torch.manual_seed(seed)
    model = unet_torch.Unet(cfg)
    if v2:
        x0, eps, t2, sigma, y = make_batch_v2(cfg, batch, seed)
    else:
        x_t, t, eps = make_batch(cfg, batch, seed)
    names = list(model.state_dict().keys())
    pnames = [n for n, _ in model.named_parameters()]
    assert names == pnames, "state_dict has buffers or a different order than parameters()"
    init = [p.detach().clone().float().numpy().ravel() for p in model.parameters()]
    model = model.to(dtype)
    params = list(model.parameters())
    opt = torch.optim.Adam(params, lr=lr, betas=(0.9, 0.999), eps=1e-8)
    if not v2:
        xin, ein = x_t.to(dtype), eps.to(dtype)
    res = {}
    losses = []
    for k in range(max(steps, 1)):
        opt.zero_grad(set_to_none=False)
        if v2:
            out, loss = loss_v2(cfg, model, x0, eps, t2, sigma, y, dtype)
        else:
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
    if v2:
        res["x0"], res["eps"], res["t"], res["sigma"], res["y"] = x0.numpy().ravel(), eps.numpy().ravel(), t2, sigma, y
    else:
        res["x_t"], res["t"], res["eps"] = x_t.numpy().ravel(), t.numpy().astype(np.int32), eps.numpy().ravel()
    return res


def write_reference(path, cfg_text, cfg, batch, lr, steps, r, v2=False):
    i32 = lambda *v: struct.pack("<" + "i" * len(v), *v)  # noqa: E731
    f32 = lambda a: np.ascontiguousarray(a, dtype="<f4").tobytes()  # noqa: E731
    cfg_bytes = cfg_text.encode("utf-8")
    parts = [i32(MAGIC, 2 if v2 else 1, len(cfg_bytes)), cfg_bytes,
             i32(batch, cfg["im_channels"], cfg["im_size"], steps), struct.pack("<f", lr),
             i32(len(r["names"]))]
    for name, n in zip(r["names"], r["numels"]):
        nb = name.encode("utf-8")
        parts += [i32(len(nb)), nb, i32(n)]
    n_params = sum(r["numels"])
    parts.append(struct.pack("<q", n_params))
    if v2:
        parts += [f32(r["x0"]), f32(r["eps"]), f32(r["t"]), np.ascontiguousarray(r["sigma"], dtype="<f8").tobytes(),
                  np.ascontiguousarray(r["y"], dtype="<i4").tobytes()]
    else:
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
    ap.add_argument("--v2", action="store_true", help="version 2: the config's training objective (see above)")
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
    if a.v2 and cfg["objective"] == "edm" and not cfg["sigma_data"] > 0:
        raise SystemExit("--v2 with objective = edm needs sigma_data > 0 in the config")
    r = run(cfg, a.batch, a.seed, lr, a.steps, dtype, a.v2)
    size, n_params = write_reference(a.out, cfg_text, cfg, a.batch, lr, a.steps, r, a.v2)
    print(f"{a.out}: config {a.config}, {'float32' if a.float32 else 'float64'} compute, seed {a.seed}")
    print(f"  batch {a.batch}, C {cfg['im_channels']}, S {cfg['im_size']}, t = {r['t'].tolist()}")
    print(f"  n_tensors {len(r['names'])}, n_params {n_params}")
    print(f"  loss {r['loss']:.9g}, |grad|_2 {np.linalg.norm(np.concatenate(r['grads'])):.6g}")
    if a.steps:
        print(f"  adam lr {lr:g}: losses {r['losses'][0]:.6g} -> {r['losses'][-1]:.6g} over {a.steps} steps")
    print(f"  file size {size} bytes")
    if not a.float32 and not a.no_compare:
        r32 = run(cfg, a.batch, a.seed, lr, a.steps, torch.float32, a.v2)
        g64, g32 = np.concatenate(r["grads"]), np.concatenate(r32["grads"])
        print("  float32 torch vs this reference (max abs err / max abs value):"
              f" out {rel_err(r32['out'], r['out']):.2e}, loss {abs(r32['loss'] - r['loss']) / abs(r['loss']):.2e},"
              f" grads {rel_err(g32, g64):.2e}, params_after"
              f" {rel_err(np.concatenate(r32['params_after']), np.concatenate(r['params_after'])):.2e}")


if __name__ == "__main__":
    main()
