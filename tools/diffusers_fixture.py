#!/usr/bin/env python3
"""Write tests/fixtures/diffusers_samplers.txt: what HuggingFace diffusers' DPM-Solver++(2M) and
Heun schedulers do on an exactly solvable problem, for tests/test_samplers_diffusers.c.

How it was run (torch from Debian's /usr/bin/python3, diffusers from PyPI into a side folder;
pip's own numpy 2.x is removed there so that Debian's numpy 1.24, which torch 1.13 was built
against, is used):

    /usr/bin/python3 -m pip install --target /tmp/dfpkgs diffusers==0.42.1
    rm -rf /tmp/dfpkgs/numpy /tmp/dfpkgs/numpy-*.dist-info /tmp/dfpkgs/numpy.libs
    PYTHONPATH=/tmp/dfpkgs /usr/bin/python3 tools/diffusers_fixture.py --out tests/fixtures/diffusers_samplers.txt

diffusers 0.42 asks torch.accelerator (torch >= 2.6) when it is imported, to pick a device; torch
1.13 lacks it, so a stub saying "no accelerator" is put in its place before the import (only
then). The schedulers themselves use nothing newer than torch 1.13.

The problem: data N(0, s^2) per value, s = 0.25, so the exact denoiser at noise level sigma (VE view,
x = x0 + sigma n) is D(x; sigma) = s^2/(s^2 + sigma^2) x. The "network" is an eps predictor: it gets
the VP input x_in = x/sqrt(1 + sigma^2) and returns eps = (x - D(x; sigma))/sigma. It evaluates that
at the scheduler's own current sigma (scheduler.sigmas[scheduler.step_index]), not at a sigma
decoded from the timestep it is passed, so the gain measures the solver alone. (How far the
timestep diffusers passes is from that sigma is written in the header: DPM-Solver rounds its
timesteps to integers, Heun does not.)

The whole sampler is then linear in its initial noise z ~ N(0, 1): the final sample is G z, with the
gain G a property of (sampler, K) alone. The loop is diffusers' pipeline loop:

    latents = z * scheduler.init_noise_sigma
    for t in scheduler.timesteps:
        eps = model(scheduler.scale_model_input(latents, t), t)
        latents = scheduler.step(eps, t, latents).prev_sample
    G = latents / z

on a few values of z in float64 (the schedulers' sigmas are float32, and DPM-Solver's update casts
the sample to float32 inside each step). Output lines: `sampler K nfe G sigma_0 ... sigma_K`, the
sigmas being the distinct noise levels the scheduler visits (Heun repeats each inner sigma for its
two stages; they are listed once), the last one 0.
"""
import argparse
import math
import sys
import types

import torch

if not hasattr(torch, "accelerator"):  # torch < 2.6: see the docstring
    torch.accelerator = types.SimpleNamespace(is_available=lambda: False, current_accelerator=lambda: None)

import diffusers  # noqa: E402
from diffusers import DPMSolverMultistepScheduler, HeunDiscreteScheduler  # noqa: E402

S_DATA = 0.25
BETAS = dict(num_train_timesteps=1000, beta_schedule="linear", beta_start=1e-4, beta_end=0.02)
DPM_CFG = dict(BETAS, algorithm_type="dpmsolver++", solver_order=2, solver_type="midpoint",
               use_karras_sigmas=True, final_sigmas_type="zero", lower_order_final=True,
               euler_at_final=False, prediction_type="epsilon", timestep_spacing="linspace",
               thresholding=False)
HEUN_CFG = dict(BETAS, use_karras_sigmas=True, prediction_type="epsilon", timestep_spacing="linspace",
                clip_sample=False)
KS = (10, 15, 25, 50)
Z = [1.0, -0.7, 2.3, 0.05, -1.6]


def run(kind, K):
    sch = (DPMSolverMultistepScheduler if kind == "dpm++" else HeunDiscreteScheduler)(**(DPM_CFG if kind == "dpm++" else HEUN_CFG))
    sch.set_timesteps(K)
    # the training sigmas, as the scheduler computes them (float32), to decode the timesteps passed
    train_log_sig = torch.log(((1 - sch.alphas_cumprod) / sch.alphas_cumprod) ** 0.5).double()
    calls, t_dev = 0, 0.0

    def model(x_in, t):
        nonlocal calls, t_dev
        calls += 1
        idx = sch.step_index if sch.step_index is not None else 0  # DPM: set by its first step()
        sg = float(sch.sigmas[idx])
        x = x_in * math.sqrt(1.0 + sg * sg)
        d = S_DATA ** 2 / (S_DATA ** 2 + sg * sg) * x
        # the sigma of the timestep diffusers passes (ln sigma interpolated between integer t)
        tf = float(t)
        lo = min(int(math.floor(tf)), 998)
        f = tf - lo
        sg_t = math.exp((1 - f) * train_log_sig[lo] + f * train_log_sig[lo + 1])
        t_dev = max(t_dev, abs(sg_t / sg - 1))
        return (x - d) / sg

    z = torch.tensor(Z, dtype=torch.float64)
    lat = z * sch.init_noise_sigma
    for t in sch.timesteps:
        eps = model(sch.scale_model_input(lat, t), t)
        lat = sch.step(eps, t, lat).prev_sample
    g = (lat.double() / z).tolist()
    spread = max(abs(v / g[0] - 1) for v in g)
    sig = sch.sigmas.double().tolist()
    if kind == "heun":  # [s0, s1, s1, ..., s_{K-1}, s_{K-1}, 0]
        assert len(sig) == 2 * K
        sig = [sig[0]] + sig[1:-1:2] + [sig[-1]]
    assert len(sig) == K + 1 and sig[-1] == 0.0
    return dict(G=g[0], spread=spread, nfe=calls, sig=sig, init=float(sch.init_noise_sigma), t_dev=t_dev,
                ts=[float(t) for t in sch.timesteps])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="tests/fixtures/diffusers_samplers.txt")
    a = ap.parse_args()
    rows, notes = [], []
    for kind in ("dpm++", "heun"):
        for K in KS:
            r = run(kind, K)
            if r["spread"] > 1e-6:
                sys.exit(f"{kind} K={K}: not linear in z (gain spread {r['spread']:.3g})")
            rows.append(f"{kind} {K} {r['nfe']} {r['G']:.17g} " + " ".join(f"{v:.17g}" for v in r["sig"]))
            notes.append(f"#   {kind} K={K}: init_noise_sigma {r['init']:.9g}, gain spread over z {r['spread']:.2g}, "
                         f"max |sigma(t passed)/sigma - 1| {r['t_dev']:.3g}, first/last timesteps "
                         f"{r['ts'][0]:g} {r['ts'][1]:g} .. {r['ts'][-1]:g}")
    with open(a.out, "w") as f:
        f.write("# tests/fixtures/diffusers_samplers.txt: written by tools/diffusers_fixture.py (see there); read by\n")
        f.write("# tests/test_samplers_diffusers.c. Do not edit by hand.\n")
        f.write(f"# diffusers {diffusers.__version__}, torch {torch.__version__}, python {sys.version.split()[0]}\n")
        f.write(f"# DPMSolverMultistepScheduler({', '.join(f'{k}={v!r}' for k, v in DPM_CFG.items())})\n")
        f.write(f"# HeunDiscreteScheduler({', '.join(f'{k}={v!r}' for k, v in HEUN_CFG.items())})\n")
        f.write(f"# problem: data N(0, {S_DATA}^2), exact eps at the scheduler's current sigma; latents = z * init_noise_sigma,\n")
        f.write("# z float64; G = final / z. Line: sampler K nfe G sigma_0 .. sigma_K (the distinct sigmas visited, float32 values)\n")
        for n in notes:
            f.write(n + "\n")
        for r in rows:
            f.write(r + "\n")
    print("\n".join(notes + rows))


if __name__ == "__main__":
    main()
