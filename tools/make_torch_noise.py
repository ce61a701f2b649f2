#!/usr/bin/env python3
"""Write the fixture of PyTorch's CPU normal samples that tests/test_torch_rng.c checks ddpm.c's
src/core/torch_rng.c against, bit for bit:

    /usr/bin/python3 tools/make_torch_noise.py tests/torch_noise.bin     (the committed fixture)
    /usr/bin/python3 tools/make_torch_noise.py --big FILE                (a million values more)

Each case is torch.manual_seed(seed) followed by torch.randn(n) calls in order (float32, CPU).
Sizes below 16 take torch's scalar path (double Box-Muller with a cached second value, so the
cases chain calls), sizes of 16 and more its vectorised path (with the redrawn tail when n % 16).

Layout (little-endian):
    char magic[4] = "TRND"; uint32 version = 1; uint32 n_cases
    per case: uint64 seed; uint32 n_calls; per call: uint32 n; float32 values[n]
"""
import struct
import sys

import torch

CASES = [
    (0, [1, 2, 3, 5, 15, 1, 4]),          # scalar path, the cache carried across calls
    (42, [16, 17, 31, 32, 100]),          # vectorised path, tails
    (2**32 + 5, [7, 1000]),               # torch keeps the low 32 bits of the seed
    (123456789, [2 * 784 + 7, 3]),        # a batch of two 28x28 images, then a scalar draw
    (2024, [640, 1, 640]),                # vector, scalar, vector: the scalar cache does not leak
]

BIG = [(s, [1 << 20]) for s in (1, 99)] + [(7, [3] * 2000)]


def write(path, cases):
    out = [b"TRND", struct.pack("<II", 1, len(cases))]
    for seed, calls in cases:
        torch.manual_seed(seed)
        out.append(struct.pack("<QI", seed, len(calls)))
        for n in calls:
            v = torch.randn(n, dtype=torch.float32)
            out.append(struct.pack("<I", n))
            out.append(v.numpy().astype("<f4").tobytes())
    with open(path, "wb") as f:
        f.write(b"".join(out))


def main(argv):
    if len(argv) == 2 and argv[0] == "--big":
        write(argv[1], BIG)
    elif len(argv) == 1:
        write(argv[0], CASES)
    else:
        print(__doc__.strip().split("\n\n")[1], file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
