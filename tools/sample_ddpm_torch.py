#!/usr/bin/env python3
"""DDPM-Pytorch's sampling loop (tools/sample_ddpm.py with scheduler/linear_noise_scheduler.py of
explainingai-code/DDPM-Pytorch) on a safetensors model, with tools/unet_torch.py as the U-Net,
to compare with ddpm.c's `ddpm sample --noise torch --sampler ddpm --sigma posterior --no-clip`:

    /usr/bin/python3 tools/sample_ddpm_torch.py MODEL.safetensors OUT.f32 --n N --seed S [--config F.cfg]
        [--compare DDPM.f32]

The loop, as the original (float32, CPU; the original calls no manual_seed: S is ours):
    torch.manual_seed(S); xt = torch.randn((n, C, H, W))
    for i in reversed(range(T)):
        noise_pred = model(xt, torch.as_tensor(i).unsqueeze(0))
        mean = (xt - betas[i] noise_pred / sqrt(1 - alpha_bar[i])) / sqrt(alphas[i])
        xt = mean                                                        if i == 0
        xt = mean + sqrt((1 - alpha_bar[i-1]) / (1 - alpha_bar[i]) betas[i]) torch.randn(xt.shape)  else
(betas = torch.linspace(beta_start, beta_end, T) and their cumprod in float32; the x0 estimate
the scheduler clamps is only returned, never used for the mean.) OUT.f32 gets clamp(xt, -1, 1)
as raw float32 [n, C, H, W], the images sample_ddpm.py saves. --compare reads ddpm.c's
`ddpm sample --floats` file and prints the max abs difference and the 8-bit pixels that differ.
--schedule64 builds the schedule in float64 (rounded to float32, as ddpm.c stores it) instead of
DDPM-Pytorch's float32 linspace/cumprod, to separate the schedule's rounding from the rest.
"""
import argparse
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import safetensors_io  # noqa: E402
import unet_torch  # noqa: E402


def main(argv):
    ap = argparse.ArgumentParser(description="DDPM-Pytorch's sample_ddpm.py loop on a safetensors model")
    ap.add_argument("model")
    ap.add_argument("out")
    ap.add_argument("--n", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--config")
    ap.add_argument("--compare")
    ap.add_argument("--schedule64", action="store_true")
    ap.add_argument("--tol", type=float, default=1e-3)
    a = ap.parse_args(argv)
    torch.set_num_threads(2)
    sd, meta = safetensors_io.load(a.model)
    cfg = unet_torch.load_config(a.config) if a.config else unet_torch.parse_config(meta["ddpm_config"], a.model)
    if cfg["schedule"] != "linear":
        print("error: DDPM-Pytorch has only the linear schedule", file=sys.stderr)
        return 1
    model = unet_torch.Unet(cfg)
    model.load_state_dict(sd, strict=True)
    model.eval()
    T, b0, b1 = cfg["num_timesteps"], cfg["beta_start"], cfg["beta_end"]
    if a.schedule64:
        b64 = torch.linspace(b0, b1, T, dtype=torch.float64)
        betas, alphas = b64.float(), (1 - b64).float()
        ab64 = torch.cumprod(1 - b64, dim=0)
        alpha_cum_prod = ab64.float()
        sqrt_1m = torch.sqrt(1 - ab64).float()
        post_var = torch.cat([torch.zeros(1, dtype=torch.float64),
                              (1 - ab64[:-1]) / (1 - ab64[1:]) * b64[1:]]).float()
    else:  # LinearNoiseScheduler
        betas = torch.linspace(b0, b1, T)
        alphas = 1. - betas
        alpha_cum_prod = torch.cumprod(alphas, dim=0)
        sqrt_1m = torch.sqrt(1 - alpha_cum_prod)
        post_var = None
    C, S = cfg["im_channels"], cfg["im_size"]
    torch.manual_seed(a.seed)
    with torch.no_grad():
        xt = torch.randn((a.n, C, S, S))
        for i in reversed(range(T)):
            noise_pred = model(xt, torch.as_tensor(i).unsqueeze(0))
            mean = xt - (betas[i] * noise_pred) / sqrt_1m[i]
            mean = mean / torch.sqrt(alphas[i])
            if i == 0:
                xt = mean
            else:
                if post_var is None:
                    variance = (1 - alpha_cum_prod[i - 1]) / (1.0 - alpha_cum_prod[i]) * betas[i]
                else:
                    variance = post_var[i]
                sigma = variance ** 0.5
                z = torch.randn(xt.shape)
                xt = mean + sigma * z
    ims = torch.clamp(xt, -1., 1.).numpy().astype("<f4")
    ims.tofile(a.out)
    print(f"{a.out}: {a.n} images, {T} steps, seed {a.seed}" + (" (float64 schedule)" if a.schedule64 else ""))
    if a.compare:
        c = np.fromfile(a.compare, dtype="<f4").reshape(ims.shape)
        d = np.abs(c.astype(np.float64) - ims).max()
        u8 = lambda v: np.clip(np.floor((v.astype(np.float64) + 1) * 127.5 + 0.5), 0, 255)  # noqa: E731
        px = int((u8(c) != u8(ims)).sum())
        print(f"max|ddpm.c - DDPM-Pytorch| = {d:.3e} over {ims.size} values; 8-bit pixels differing: {px}")
        return 0 if d <= a.tol else 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
