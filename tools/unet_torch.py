#!/usr/bin/env python3
"""PyTorch gold-standard U-Net for ddpm.c.

This is explainingai-code/DDPM-Pytorch `models/unet_base.py` (the reference U-Net, models/reference.cfg),
with identical module/attribute names and registration order, so a state_dict of either model
loads into the other. The only extensions:

  * `down_attn` (config key, one flag per down level i, default all 1): when 0, DownBlock i and
    the UpBlock built for the same i (ups are built for i in reversed(range(n_down - 1))) have
    NO attention layers (empty attention_norms / attentions lists) and skip the attention step.
    MidBlocks always have attention.
  * `num_heads` is taken from the config (the original always uses its default of 4).
  * get_time_embedding takes an optional dtype (default float32 = the original); the Unet passes
    the dtype of its parameters, so a float64 model computes the embedding in float64. Time steps
    may be fractional (continuous-time objectives); integer ones give the original embedding.
  * `num_classes` > 0 (class-conditional models): `class_emb = nn.Embedding(num_classes + 1, d)`,
    registered right after t_proj, whose row y is added to t_proj's output; forward(x, t, y) with
    y = None meaning the null label num_classes.
  * the training-objective keys (objective, sigma_sampling, p_mean, p_std, sigma_data,
    min_snr_gamma, p_uncond) are parsed; they do not change the network.

Usage (torch is in Debian's python, not in the pyenv one):
    /usr/bin/python3 tools/unet_torch.py models/reference.cfg [more.cfg ...]
prints the trainable parameter count of each config (reference.cfg: 10,188,081).
"""
import sys

import torch
import torch.nn as nn

# ---------------------------------------------------------------------------------------------
# config files: `key = value`, `#` comments, comma-separated lists (mirrors src/config.c)

_INT_KEYS = {"im_channels", "im_size", "time_emb_dim", "num_down_layers", "num_mid_layers",
             "num_up_layers", "num_heads", "num_timesteps", "num_classes"}
_INT_LIST_KEYS = {"down_channels", "mid_channels"}
_BOOL_LIST_KEYS = {"down_sample", "down_attn"}
_FLOAT_KEYS = {"beta_start", "beta_end", "beta", "cosine_s", "p_mean", "p_std", "sigma_data",
               "min_snr_gamma", "p_uncond"}
_STR_VALUES = {"schedule": ("linear", "cosine", "constant"), "objective": ("eps", "v", "edm"),
               "sigma_sampling": ("uniform", "lognormal")}
_STR_KEYS = set(_STR_VALUES)
_ALL_KEYS = _INT_KEYS | _INT_LIST_KEYS | _BOOL_LIST_KEYS | _FLOAT_KEYS | _STR_KEYS
_REQUIRED = ["im_channels", "im_size", "down_channels", "mid_channels", "down_sample",
             "time_emb_dim", "num_down_layers", "num_mid_layers", "num_up_layers", "num_heads"]
_DEFAULTS = {"schedule": "linear", "num_timesteps": 1000, "beta_start": 1e-4, "beta_end": 0.02,
             "beta": 0.02, "cosine_s": 0.008, "objective": "eps", "p_mean": -1.2, "p_std": 1.2,
             "sigma_data": 0.0, "min_snr_gamma": 0.0, "num_classes": 0, "p_uncond": 0.1}


def _parse_bool(tok, where):
    if tok in ("1", "true", "True"):
        return True
    if tok in ("0", "false", "False"):
        return False
    raise ValueError(f"{where}: invalid boolean '{tok}'")


def parse_config(text, name="<config>"):
    """Parse config text into a dict (the model_config dict of the original code)."""
    cfg = {}
    for lineno, raw in enumerate(text.split("\n"), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if "=" not in line:
            raise ValueError(f"{name}:{lineno}: expected 'key = value', got '{line[:40]}'")
        key, val = (s.strip() for s in line.split("=", 1))
        where = f"{name}:{lineno}: key '{key}'"
        if key not in _ALL_KEYS:
            raise ValueError(f"{name}:{lineno}: unknown key '{key}'")
        if key in cfg:
            raise ValueError(f"{name}:{lineno}: key '{key}' given twice")
        if not val:
            raise ValueError(f"{name}:{lineno}: key '{key}' has no value")
        try:
            if key in _INT_KEYS:
                v = int(val)
            elif key in _INT_LIST_KEYS:
                v = [int(s.strip()) for s in val.split(",") if s.strip()]
            elif key in _BOOL_LIST_KEYS:
                v = [_parse_bool(s.strip(), where) for s in val.split(",") if s.strip()]
            elif key in _FLOAT_KEYS:
                v = float(val)
            else:
                if val not in _STR_VALUES[key]:
                    raise ValueError(val)
                v = val
        except ValueError:
            raise ValueError(f"{where}: invalid value '{val[:40]}'") from None
        if isinstance(v, list) and not v:
            raise ValueError(f"{where}: invalid value '{val[:40]}'")
        cfg[key] = v
    for k in _REQUIRED:
        if k not in cfg:
            raise ValueError(f"{name}: missing key '{k}'")
    for k, v in _DEFAULTS.items():
        cfg.setdefault(k, v)
    cfg.setdefault("sigma_sampling", "lognormal" if cfg["objective"] == "edm" else "uniform")
    n_down = len(cfg["down_channels"])
    if n_down < 2:
        raise ValueError(f"{name}: key 'down_channels': need at least 2 entries")
    if len(cfg["down_sample"]) != n_down - 1:
        raise ValueError(f"{name}: key 'down_sample': has {len(cfg['down_sample'])} entries, "
                         f"down_channels needs {n_down - 1}")
    if "down_attn" not in cfg:
        cfg["down_attn"] = [True] * (n_down - 1)
    if len(cfg["down_attn"]) != n_down - 1:
        raise ValueError(f"{name}: key 'down_attn': has {len(cfg['down_attn'])} entries, "
                         f"down_channels needs {n_down - 1}")
    _validate(cfg, name)
    return cfg


def _validate(c, name):
    def bad(msg):
        raise ValueError(f"{name}: {msg}")
    dc, mc, h = c["down_channels"], c["mid_channels"], c["num_heads"]
    if len(mc) < 2:
        bad("key 'mid_channels': need at least 2 entries")
    if mc[0] != dc[-1]:
        bad(f"key 'mid_channels': first entry {mc[0]} must equal the last down channel {dc[-1]}")
    if mc[-1] != dc[-2]:
        bad(f"key 'mid_channels': last entry {mc[-1]} must equal the second-to-last down channel {dc[-2]}")
    if c["time_emb_dim"] % 2:
        bad(f"key 'time_emb_dim': {c['time_emb_dim']} is not even")
    for key in ("down_channels", "mid_channels"):
        for ch in c[key]:
            if ch % 8:
                bad(f"key '{key}': {ch} is not divisible by the 8 GroupNorm groups")
            if ch % h:
                bad(f"key '{key}': {ch} is not divisible by num_heads {h}")
    if 16 % h:
        bad(f"key 'num_heads': {h} does not divide the 16 output channels")
    size = c["im_size"]
    for i, ds in enumerate(c["down_sample"]):
        if ds:
            if size % 2:
                bad(f"key 'down_sample': size {size} at level {i} is odd and cannot be halved")
            size //= 2


def load_config(path):
    with open(path, "r", encoding="utf-8") as f:
        return parse_config(f.read(), path)


# ---------------------------------------------------------------------------------------------
# the model (explainingai-code/DDPM-Pytorch models/unet_base.py)

def get_time_embedding(time_steps, temb_dim, dtype=torch.float32):
    r"""B time steps -> B x temb_dim: [sin(t / f_0..f_{d/2-1}), cos(t / f_0..)],
    f_i = 10000 ** (i / (d/2))."""
    assert temb_dim % 2 == 0, "time embedding dimension must be divisible by 2"
    factor = 10000 ** ((torch.arange(
        start=0, end=temb_dim // 2, dtype=dtype, device=time_steps.device) / (temb_dim // 2))
    )
    t_emb = time_steps[:, None].repeat(1, temb_dim // 2) / factor
    t_emb = torch.cat([torch.sin(t_emb), torch.cos(t_emb)], dim=-1)
    return t_emb


def _attend(norm, attn, out):
    batch_size, channels, h, w = out.shape
    in_attn = out.reshape(batch_size, channels, h * w)
    in_attn = norm(in_attn)
    in_attn = in_attn.transpose(1, 2)
    out_attn, _ = attn(in_attn, in_attn, in_attn)
    out_attn = out_attn.transpose(1, 2).reshape(batch_size, channels, h, w)
    return out + out_attn


class DownBlock(nn.Module):
    r"""num_layers x (ResNet with time embedding, attention), then a 4x4 stride-2 conv."""
    def __init__(self, in_channels, out_channels, t_emb_dim,
                 down_sample=True, num_heads=4, num_layers=1, attn=True):
        super().__init__()
        self.num_layers = num_layers
        self.down_sample = down_sample
        self.attn = attn
        self.resnet_conv_first = nn.ModuleList(
            [
                nn.Sequential(
                    nn.GroupNorm(8, in_channels if i == 0 else out_channels),
                    nn.SiLU(),
                    nn.Conv2d(in_channels if i == 0 else out_channels, out_channels,
                              kernel_size=3, stride=1, padding=1),
                )
                for i in range(num_layers)
            ]
        )
        self.t_emb_layers = nn.ModuleList([
            nn.Sequential(
                nn.SiLU(),
                nn.Linear(t_emb_dim, out_channels)
            )
            for _ in range(num_layers)
        ])
        self.resnet_conv_second = nn.ModuleList(
            [
                nn.Sequential(
                    nn.GroupNorm(8, out_channels),
                    nn.SiLU(),
                    nn.Conv2d(out_channels, out_channels,
                              kernel_size=3, stride=1, padding=1),
                )
                for _ in range(num_layers)
            ]
        )
        n_attn = num_layers if attn else 0
        self.attention_norms = nn.ModuleList(
            [nn.GroupNorm(8, out_channels)
             for _ in range(n_attn)]
        )
        self.attentions = nn.ModuleList(
            [nn.MultiheadAttention(out_channels, num_heads, batch_first=True)
             for _ in range(n_attn)]
        )
        self.residual_input_conv = nn.ModuleList(
            [
                nn.Conv2d(in_channels if i == 0 else out_channels, out_channels, kernel_size=1)
                for i in range(num_layers)
            ]
        )
        self.down_sample_conv = nn.Conv2d(out_channels, out_channels,
                                          4, 2, 1) if self.down_sample else nn.Identity()

    def forward(self, x, t_emb):
        out = x
        for i in range(self.num_layers):
            # Resnet block
            resnet_input = out
            out = self.resnet_conv_first[i](out)
            out = out + self.t_emb_layers[i](t_emb)[:, :, None, None]
            out = self.resnet_conv_second[i](out)
            out = out + self.residual_input_conv[i](resnet_input)
            # Attention block
            if self.attn:
                out = _attend(self.attention_norms[i], self.attentions[i], out)
        out = self.down_sample_conv(out)
        return out


class MidBlock(nn.Module):
    r"""ResNet, then num_layers x (attention, ResNet)."""
    def __init__(self, in_channels, out_channels, t_emb_dim, num_heads=4, num_layers=1):
        super().__init__()
        self.num_layers = num_layers
        self.resnet_conv_first = nn.ModuleList(
            [
                nn.Sequential(
                    nn.GroupNorm(8, in_channels if i == 0 else out_channels),
                    nn.SiLU(),
                    nn.Conv2d(in_channels if i == 0 else out_channels, out_channels, kernel_size=3, stride=1,
                              padding=1),
                )
                for i in range(num_layers + 1)
            ]
        )
        self.t_emb_layers = nn.ModuleList([
            nn.Sequential(
                nn.SiLU(),
                nn.Linear(t_emb_dim, out_channels)
            )
            for _ in range(num_layers + 1)
        ])
        self.resnet_conv_second = nn.ModuleList(
            [
                nn.Sequential(
                    nn.GroupNorm(8, out_channels),
                    nn.SiLU(),
                    nn.Conv2d(out_channels, out_channels, kernel_size=3, stride=1, padding=1),
                )
                for _ in range(num_layers + 1)
            ]
        )
        self.attention_norms = nn.ModuleList(
            [nn.GroupNorm(8, out_channels)
             for _ in range(num_layers)]
        )
        self.attentions = nn.ModuleList(
            [nn.MultiheadAttention(out_channels, num_heads, batch_first=True)
             for _ in range(num_layers)]
        )
        self.residual_input_conv = nn.ModuleList(
            [
                nn.Conv2d(in_channels if i == 0 else out_channels, out_channels, kernel_size=1)
                for i in range(num_layers + 1)
            ]
        )

    def forward(self, x, t_emb):
        out = x
        # First resnet block
        resnet_input = out
        out = self.resnet_conv_first[0](out)
        out = out + self.t_emb_layers[0](t_emb)[:, :, None, None]
        out = self.resnet_conv_second[0](out)
        out = out + self.residual_input_conv[0](resnet_input)
        for i in range(self.num_layers):
            # Attention block
            out = _attend(self.attention_norms[i], self.attentions[i], out)
            # Resnet block
            resnet_input = out
            out = self.resnet_conv_first[i + 1](out)
            out = out + self.t_emb_layers[i + 1](t_emb)[:, :, None, None]
            out = self.resnet_conv_second[i + 1](out)
            out = out + self.residual_input_conv[i + 1](resnet_input)
        return out


class UpBlock(nn.Module):
    r"""Transposed 4x4 stride-2 conv on in/2 channels, concat [upsampled, skip],
    then num_layers x (ResNet, attention)."""
    def __init__(self, in_channels, out_channels, t_emb_dim, up_sample=True, num_heads=4, num_layers=1,
                 attn=True):
        super().__init__()
        self.num_layers = num_layers
        self.up_sample = up_sample
        self.attn = attn
        self.resnet_conv_first = nn.ModuleList(
            [
                nn.Sequential(
                    nn.GroupNorm(8, in_channels if i == 0 else out_channels),
                    nn.SiLU(),
                    nn.Conv2d(in_channels if i == 0 else out_channels, out_channels, kernel_size=3, stride=1,
                              padding=1),
                )
                for i in range(num_layers)
            ]
        )
        self.t_emb_layers = nn.ModuleList([
            nn.Sequential(
                nn.SiLU(),
                nn.Linear(t_emb_dim, out_channels)
            )
            for _ in range(num_layers)
        ])
        self.resnet_conv_second = nn.ModuleList(
            [
                nn.Sequential(
                    nn.GroupNorm(8, out_channels),
                    nn.SiLU(),
                    nn.Conv2d(out_channels, out_channels, kernel_size=3, stride=1, padding=1),
                )
                for _ in range(num_layers)
            ]
        )
        n_attn = num_layers if attn else 0
        self.attention_norms = nn.ModuleList(
            [
                nn.GroupNorm(8, out_channels)
                for _ in range(n_attn)
            ]
        )
        self.attentions = nn.ModuleList(
            [
                nn.MultiheadAttention(out_channels, num_heads, batch_first=True)
                for _ in range(n_attn)
            ]
        )
        self.residual_input_conv = nn.ModuleList(
            [
                nn.Conv2d(in_channels if i == 0 else out_channels, out_channels, kernel_size=1)
                for i in range(num_layers)
            ]
        )
        self.up_sample_conv = nn.ConvTranspose2d(in_channels // 2, in_channels // 2,
                                                 4, 2, 1) \
            if self.up_sample else nn.Identity()

    def forward(self, x, out_down, t_emb):
        x = self.up_sample_conv(x)
        x = torch.cat([x, out_down], dim=1)
        out = x
        for i in range(self.num_layers):
            resnet_input = out
            out = self.resnet_conv_first[i](out)
            out = out + self.t_emb_layers[i](t_emb)[:, :, None, None]
            out = self.resnet_conv_second[i](out)
            out = out + self.residual_input_conv[i](resnet_input)
            if self.attn:
                out = _attend(self.attention_norms[i], self.attentions[i], out)
        return out


class Unet(nn.Module):
    r"""Down blocks, mid blocks and up blocks (the reference U-Net)."""
    def __init__(self, model_config):
        super().__init__()
        im_channels = model_config['im_channels']
        self.down_channels = model_config['down_channels']
        self.mid_channels = model_config['mid_channels']
        self.t_emb_dim = model_config['time_emb_dim']
        self.down_sample = model_config['down_sample']
        self.num_down_layers = model_config['num_down_layers']
        self.num_mid_layers = model_config['num_mid_layers']
        self.num_up_layers = model_config['num_up_layers']
        self.num_heads = model_config.get('num_heads', 4)
        self.down_attn = model_config.get('down_attn', [True] * (len(self.down_channels) - 1))

        assert self.mid_channels[0] == self.down_channels[-1]
        assert self.mid_channels[-1] == self.down_channels[-2]
        assert len(self.down_sample) == len(self.down_channels) - 1
        assert len(self.down_attn) == len(self.down_channels) - 1

        # Initial projection from sinusoidal time embedding
        self.t_proj = nn.Sequential(
            nn.Linear(self.t_emb_dim, self.t_emb_dim),
            nn.SiLU(),
            nn.Linear(self.t_emb_dim, self.t_emb_dim)
        )
        self.num_classes = model_config.get('num_classes', 0)
        if self.num_classes > 0:  # the last row is the null label
            self.class_emb = nn.Embedding(self.num_classes + 1, self.t_emb_dim)

        self.up_sample = list(reversed(self.down_sample))
        self.conv_in = nn.Conv2d(im_channels, self.down_channels[0], kernel_size=3, padding=(1, 1))

        self.downs = nn.ModuleList([])
        for i in range(len(self.down_channels) - 1):
            self.downs.append(DownBlock(self.down_channels[i], self.down_channels[i + 1], self.t_emb_dim,
                                        down_sample=self.down_sample[i], num_heads=self.num_heads,
                                        num_layers=self.num_down_layers, attn=bool(self.down_attn[i])))

        self.mids = nn.ModuleList([])
        for i in range(len(self.mid_channels) - 1):
            self.mids.append(MidBlock(self.mid_channels[i], self.mid_channels[i + 1], self.t_emb_dim,
                                      num_heads=self.num_heads, num_layers=self.num_mid_layers))

        self.ups = nn.ModuleList([])
        for i in reversed(range(len(self.down_channels) - 1)):
            self.ups.append(UpBlock(self.down_channels[i] * 2, self.down_channels[i - 1] if i != 0 else 16,
                                    self.t_emb_dim, up_sample=self.down_sample[i], num_heads=self.num_heads,
                                    num_layers=self.num_up_layers, attn=bool(self.down_attn[i])))

        self.norm_out = nn.GroupNorm(8, 16)
        self.conv_out = nn.Conv2d(16, im_channels, kernel_size=3, padding=1)

    def forward(self, x, t, y=None):
        out = self.conv_in(x)
        dtype = self.t_proj[0].weight.dtype
        t_emb = get_time_embedding(torch.as_tensor(t).to(dtype), self.t_emb_dim, dtype=dtype)
        t_emb = self.t_proj(t_emb)
        if self.num_classes > 0:
            if y is None:
                y = torch.full((x.shape[0],), self.num_classes, dtype=torch.long)
            t_emb = t_emb + self.class_emb(torch.as_tensor(y).long())

        down_outs = []
        for down in self.downs:
            down_outs.append(out)  # skips are the INPUTS of each down block
            out = down(out, t_emb)
        for mid in self.mids:
            out = mid(out, t_emb)
        for up in self.ups:
            down_out = down_outs.pop()
            out = up(out, down_out, t_emb)
        out = self.norm_out(out)
        out = nn.SiLU()(out)
        out = self.conv_out(out)
        return out


def count_params(model):
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def main(argv):
    if not argv:
        print(__doc__.strip().split("\n\n")[-1], file=sys.stderr)
        return 2
    for path in argv:
        try:
            cfg = load_config(path)
        except (OSError, ValueError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        model = Unet(cfg)
        n = count_params(model)
        print(f"{path}: {n} parameters ({n:,})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
