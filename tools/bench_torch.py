#!/usr/bin/env python3
"""Time PyTorch DDPM training steps and sampling passes for a ddpm.c model config (float32, CPU).

    OPENBLAS_CORETYPE=Haswell OPENBLAS_NUM_THREADS=1 \\
        /usr/bin/python3 tools/bench_torch.py --config models/small.cfg --threads 2 --steps 10

(torch is in Debian's /usr/bin/python3, not in the pyenv `python3`.) The best settings are
OPENBLAS_NUM_THREADS=1 and OPENBLAS_CORETYPE=SkylakeX on AVX-512 CPUs (Haswell on AVX2-only
ones; Debian's OpenBLAS 0.3.21 does not recognise recent CPUs), set before python starts; torch's
own --threads then controls the parallelism. tools/bench.sh picks them.

Training step: t ~ U{0..T-1}, eps ~ N(0,1), x_t = sqrt(abar_t) x0 + sqrt(1-abar_t) eps with a
linear beta schedule from the config, out = model(x_t, t), MSE(out, eps), backward, Adam step.
x0 is random data in [-1, 1] (the speed does not depend on it). Two warm-up steps are not timed
(three with --compile).
Sampling: --steps forward passes under torch.no_grad() at batch --sample-batch (one reverse
diffusion step each, with the DDPM update), after one warm-up pass (two with --compile).
The last line is machine-readable: train_img_s=... sample_img_steps_s=... peak_rss_mb=...
"""
import argparse
import os
import resource
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import unet_torch  # noqa: E402


def linear_schedule(cfg):
    T = cfg["num_timesteps"]
    if cfg.get("schedule", "linear") != "linear":
        print(f"note: schedule '{cfg['schedule']}' timed with a linear schedule (same cost)", file=sys.stderr)
    betas = torch.linspace(cfg["beta_start"], cfg["beta_end"], T)
    alphas = 1.0 - betas
    abar = torch.cumprod(alphas, dim=0)
    return betas, alphas, abar


def peak_rss_mb():
    # ru_maxrss is in KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def main():
    ap = argparse.ArgumentParser(description="time PyTorch DDPM training and sampling")
    ap.add_argument("--config", required=True)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--sample-batch", type=int, default=100)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=10, help="timed train steps and sampling passes")
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--compile", action="store_true",
                    help="torch.compile the model (PyTorch 2; inductor, needs a C++ compiler); the compiling "
                         "warm-up steps are not timed")
    ap.add_argument("--precision", choices=["fp32", "bf16"], default="fp32",
                    help="bf16: the forward passes under torch.autocast('cpu', torch.bfloat16) (the "
                         "counterpart of ddpm --precision bf16)")
    a = ap.parse_args()
    autocast = lambda: torch.autocast("cpu", dtype=torch.bfloat16, enabled=a.precision == "bf16")  # noqa: E731

    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    cfg = unet_torch.load_config(a.config)
    model = unet_torch.Unet(cfg)
    n_params = unet_torch.count_params(model)
    net = torch.compile(model) if a.compile else model
    C, S, T = cfg["im_channels"], cfg["im_size"], cfg["num_timesteps"]
    betas, alphas, abar = linear_schedule(cfg)
    opt = torch.optim.Adam(model.parameters(), lr=a.lr, betas=(0.9, 0.999), eps=1e-8)
    x0_all = torch.rand(4 * a.batch, C, S, S) * 2 - 1
    print(f"config {a.config}: {n_params} params, batch {a.batch}, sample batch {a.sample_batch}, "
          f"threads {torch.get_num_threads()}, torch {torch.__version__}{' compiled' if a.compile else ' eager'} {a.precision}, "
          f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '')} "
          f"OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS', '')}")

    def train_step(k):
        i0 = (k * a.batch) % (3 * a.batch)
        x0 = x0_all[i0:i0 + a.batch]
        t = torch.randint(0, T, (a.batch,))
        eps = torch.randn_like(x0)
        ab = abar[t][:, None, None, None]
        x_t = ab.sqrt() * x0 + (1 - ab).sqrt() * eps
        opt.zero_grad(set_to_none=True)
        with autocast():
            out = net(x_t, t)
        loss = torch.nn.functional.mse_loss(out.float(), eps)
        loss.backward()
        opt.step()
        return loss.item()

    model.train()
    for k in range(3 if a.compile else 2):
        train_step(k)
    t0 = time.perf_counter()
    for k in range(a.steps):
        loss = train_step(k + 2)
    train_s = (time.perf_counter() - t0) / max(a.steps, 1)
    train_img_s = a.batch / train_s
    print(f"train:  {train_s * 1e3:9.1f} ms/step  {train_img_s:9.2f} images/s  (last loss {loss:.4f})")

    # sampling: the reference samples with the model as is (train mode; no dropout/batchnorm here)
    xs = torch.randn(a.sample_batch, C, S, S)
    with torch.no_grad():
        def sample_step(ti):
            nonlocal xs
            t = torch.full((a.sample_batch,), ti, dtype=torch.long)
            with autocast():
                eps_hat = net(xs, t).float()
            mean = (xs - betas[ti] / (1 - abar[ti]).sqrt() * eps_hat) / alphas[ti].sqrt()
            if ti > 0:
                var = betas[ti] * (1 - abar[ti - 1]) / (1 - abar[ti])
                xs = mean + var.sqrt() * torch.randn_like(xs)
            else:
                xs = mean
        sample_step(T - 1)
        if a.compile:
            sample_step(T - 1)
        t0 = time.perf_counter()
        for k in range(a.steps):
            sample_step(max(T - 2 - k, 0))
        samp_s = (time.perf_counter() - t0) / max(a.steps, 1)
    sample_img_steps_s = a.sample_batch / samp_s
    print(f"sample: {samp_s * 1e3:9.1f} ms/step  {sample_img_steps_s:9.2f} image-steps/s")
    rss = peak_rss_mb()
    print(f"peak RSS {rss:.1f} MB")
    print(f"train_img_s={train_img_s:.3f} sample_img_steps_s={sample_img_steps_s:.3f} peak_rss_mb={rss:.1f}")


if __name__ == "__main__":
    main()
