#!/usr/bin/env python3
"""Write the fixture of the seed exercise's DDPM step, computed by PyTorch, that
tests/test_torch_rng.c checks ddpm_step (with PyTorch's noise) against:

    /usr/bin/python3 tools/make_torch_step.py tests/torch_step.bin

Per case: a linear schedule computed in float64 and rounded to float32 (as ddpm.c stores it;
DDPM-Pytorch's float32 cumprod differs from it by up to ~3e-4 relative in 1 - alpha_bar at small t,
which the sampling comparison shows), inputs x_t and eps_pred (torch.randn under another seed), then
    torch.manual_seed(seed)
    mean = (1 / sqrt(alpha_t)) (x_t - beta_t / sqrt(1 - alpha_bar_t) eps_pred)
    x_{t-1} = mean + sqrt(beta_t) z,  z = torch.randn_like(x_t)       (t > 0; x_{t-1} = mean at t = 0)
all in float32 torch operations. z is stored too (ddpm.c must draw it bit for bit).

Layout (little-endian): char magic[4] = "TSTP"; uint32 version = 1; uint32 n_cases;
per case: uint64 seed; int32 T; float32 beta_start, beta_end; int32 t; uint32 n;
float32 x_t[n], eps_pred[n], z[n], x_prev[n]   (z is all 0 at t = 0)
"""
import struct
import sys

import torch

# (seed, T, t, n): n < 16 takes torch's scalar normal path, n >= 16 its vectorised one
CASES = [(0, 1000, 999, 10), (1, 1000, 500, 784), (7, 1000, 1, 2 * 784 + 5), (3, 1000, 0, 20), (2**40 + 9, 50, 25, 3)]


def main(argv):
    if len(argv) != 1:
        print(__doc__.strip().split("\n\n")[1], file=sys.stderr)
        return 2
    out = [b"TSTP", struct.pack("<II", 1, len(CASES))]
    b0, b1 = 1e-4, 0.02
    for seed, T, t, n in CASES:
        b64 = torch.linspace(b0, b1, T, dtype=torch.float64)
        betas, alphas = b64.float(), (1.0 - b64).float()
        s1m = torch.sqrt(1.0 - torch.cumprod(1.0 - b64, dim=0)).float()
        torch.manual_seed(seed + 1000)
        xt = torch.randn(n)
        eps = torch.randn(n)
        torch.manual_seed(seed)
        mean = (1.0 / torch.sqrt(alphas[t])) * (xt - (betas[t] / s1m[t]) * eps)  # float32 ops
        if t > 0:
            z = torch.randn_like(xt)
            x_prev = mean + torch.sqrt(betas[t]) * z
        else:
            z = torch.zeros(n)
            x_prev = mean
        out.append(struct.pack("<Qiffii", seed, T, b0, b1, t, n))
        for v in (xt, eps, z, x_prev):
            out.append(v.numpy().astype("<f4").tobytes())
    with open(argv[0], "wb") as f:
        f.write(b"".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
