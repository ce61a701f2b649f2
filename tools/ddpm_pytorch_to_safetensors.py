#!/usr/bin/env python3
"""Convert a DDPM-Pytorch checkpoint (explainingai-code/DDPM-Pytorch: ddpm_ckpt.pth, the
state_dict of models/unet_base.py saved with torch.save) to a safetensors file ddpm.c reads:

    /usr/bin/python3 tools/ddpm_pytorch_to_safetensors.py CKPT.pth OUT.safetensors [--config FILE.cfg]
    ./ddpm sample --model OUT.safetensors [--config FILE.cfg] --sigma posterior --no-clip --noise torch

--config (a ddpm.c config, e.g. models/reference.cfg, which is DDPM-Pytorch's default.yaml)
checks that the state_dict loads strictly into tools/unet_torch.py's Unet of that config and
stores the config in the file's metadata (ddpm_config), so ddpm needs no --config later.
Every tensor is written as F32, in the state_dict's order.
"""
import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import safetensors_io  # noqa: E402
import unet_torch  # noqa: E402


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.strip().split("\n\n")[0])
    ap.add_argument("ckpt")
    ap.add_argument("out")
    ap.add_argument("--config", help="ddpm.c config of the model (checked, stored in the metadata)")
    a = ap.parse_args(argv)
    sd = torch.load(a.ckpt, map_location="cpu")
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict) or not all(torch.is_tensor(v) for v in sd.values()):
        print(f"error: {a.ckpt}: not a state_dict (a dict of tensors)", file=sys.stderr)
        return 1
    meta = {"format": "pt", "ddpm_source": "DDPM-Pytorch state_dict " + os.path.basename(a.ckpt)}
    if a.config:
        cfg = unet_torch.load_config(a.config)
        model = unet_torch.Unet(cfg)
        model.load_state_dict(sd, strict=True)  # names and shapes of the config, nothing else
        with open(a.config, encoding="utf-8") as f:
            meta["ddpm_config"] = f.read()
    safetensors_io.save(a.out, sd, meta)
    n = sum(v.numel() for v in sd.values())
    print(f"{a.out}: {len(sd)} tensors, {n} parameters")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
