"""safetensors files for PyTorch state_dicts, without the safetensors package (Debian has none).

    uint64 N (little-endian); N bytes of JSON header, padded with spaces to a multiple of 8:
      {"__metadata__": {str: str}, NAME: {"dtype": "F32", "shape": [...], "data_offsets": [b, e]}, ...}
    then the data: tensor NAME is bytes [b, e) after the header, row-major little-endian.

save() writes float32 tensors in the given order, tiling the data; load() reads F32 tensors
(any other dtype is refused, as ddpm.c does).
"""
import json
import struct

import torch


def save(path, state_dict, metadata=None):
    header, blobs, off = {}, [], 0
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    for name, t in state_dict.items():
        data = t.detach().to(torch.float32).contiguous().cpu().numpy().astype("<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(t.shape), "data_offsets": [off, off + len(data)]}
        blobs.append(data)
        off += len(data)
    h = json.dumps(header, separators=(",", ":")).encode("utf-8")
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def load(path):
    """Returns (state_dict of float32 tensors in file order, metadata dict)."""
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    data = raw[8 + n:]
    meta = header.pop("__metadata__", {})
    out = {}
    for name, d in header.items():
        if d["dtype"] != "F32":
            raise ValueError(f"{path}: tensor '{name}' has dtype {d['dtype']}, not F32")
        b, e = d["data_offsets"]
        t = torch.frombuffer(bytearray(data[b:e]), dtype=torch.float32) if e > b else torch.zeros(0)
        out[name] = t.reshape(d["shape"]).clone()
    return out, meta
