#!/usr/bin/env python3
"""Write the seed corpora of the fuzz harnesses (tests/fuzz/corpus/<harness>/): small valid inputs
of every format and a few damaged ones, from which the fuzzers mutate.

    python3 tools/make_fuzz_corpus.py [OUT_DIR]      (default tests/fuzz/corpus)

The checkpoint seed follows docs/FORMAT.md (version 3) for a 11,921-parameter model whose config
is below; its arrays are small random values, its state a consistent one."""
import gzip, os, random, struct, sys, zlib

out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), '..', 'tests', 'fuzz', 'corpus')
rnd = random.Random(1)

def put(harness, name, data):
    d = os.path.join(out, harness)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), 'wb') as f:
        f.write(data)

def idx(magic, dims, payload):
    return struct.pack('>I', magic) + b''.join(struct.pack('>I', x) for x in dims) + payload

# ---- IDX
imgs = bytes(rnd.randrange(256) for _ in range(3 * 28 * 28))
put('idx', 'images.gz', gzip.compress(idx(0x803, (3, 28, 28), imgs), mtime=0))
put('idx', 'images_plain', idx(0x803, (3, 28, 28), imgs))
put('idx', 'labels.gz', gzip.compress(idx(0x801, (3,), bytes([1, 7, 9])), mtime=0))
put('idx', 'truncated.gz', gzip.compress(idx(0x803, (3, 28, 28), imgs), mtime=0)[:200])
put('idx', 'small.gz', gzip.compress(idx(0x803, (1, 2, 2), bytes([0, 64, 128, 255])), mtime=0))

# ---- configs
micro = """im_channels = 1
im_size = 4
down_channels = 8, 8
mid_channels = 8, 8
down_sample = 1
down_attn = 0
time_emb_dim = 8
num_down_layers = 1
num_mid_layers = 1
num_up_layers = 1
num_heads = 1
schedule = linear
num_timesteps = 10
beta_start = 9.99999975e-05
beta_end = 0.0199999996
beta = 0.0199999996
cosine_s = 0.00800000038
"""
put('config', 'micro.cfg', micro.encode())
root = os.path.join(os.path.dirname(__file__), '..')
for name in ('models/tiny.cfg', 'models/small.cfg', 'models/fast.cfg', 'models/reference.cfg', 'tests/cfg/mini28.cfg'):
    with open(os.path.join(root, name), 'rb') as f:
        put('config', os.path.basename(name), f.read())
put('config', 'cosine.cfg', micro.replace('schedule = linear', 'schedule = cosine').encode())

# ---- checkpoint (version 3): magic, version, cfg, state, n, params, adam m, adam v, ema, crc
n = 11921
cfg = micro.encode()
batch, n_data, epoch, pos = 8, 100, 2, 16
spe = n_data // batch
step = epoch * spe + pos // batch
state = struct.pack('<iQfffffiqqqq', batch, 7, 1e-3, 0.9, 0.999, 1e-8, 0.999, 10, step, epoch, pos, n_data)
state += struct.pack('<4Q', 1, 2, 3, 4) + struct.pack('<qfi', 0, 0.0, 0)
arrays = b''.join(struct.pack('<%df' % n, *[rnd.uniform(-0.1, 0.1) for _ in range(n)]) for _ in range(4))
body = b'DDPMCKPT' + struct.pack('<II', 3, len(cfg)) + cfg + state + struct.pack('<Q', n) + arrays
put('checkpoint', 'micro.ckpt', body + struct.pack('<I', zlib.crc32(body)))
no_ema = body[:16 + len(cfg) + 28] + struct.pack('<f', 0.0) + body[16 + len(cfg) + 32:-4 * n]
put('checkpoint', 'micro_no_ema.ckpt', no_ema + struct.pack('<I', zlib.crc32(no_ema)))

# ---- images: PNGs (8-bit gray) of the right size and a wrong one
def png(w, h, pixels):
    def chunk(t, d):
        return struct.pack('>I', len(d)) + t + d + struct.pack('>I', zlib.crc32(t + d))
    raw = b''.join(b'\x00' + pixels[y * w:(y + 1) * w] for y in range(h))
    return (b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', struct.pack('>IIBBBBB', w, h, 8, 0, 0, 0, 0))
            + chunk(b'IDAT', zlib.compress(raw)) + chunk(b'IEND', b''))
put('images', 'digit.png', png(28, 28, imgs[:784]))
put('images', 'small.png', png(4, 4, imgs[:16]))
put('images', 'truncated.png', png(28, 28, imgs[:784])[:80])

# ---- safetensors: small files of the format (the parser's paths), and, when ./ddpm is built, the
# micro checkpoint exported (a file the harness maps onto its model: micro.safetensors)
import json, subprocess
def st(tensors, meta=None, pad=True):
    h, blob = {}, b''
    if meta is not None:
        h['__metadata__'] = meta
    for name, shape, vals in tensors:
        d = struct.pack('<%df' % len(vals), *vals)
        h[name] = {'dtype': 'F32', 'shape': shape, 'data_offsets': [len(blob), len(blob) + len(d)]}
        blob += d
    j = json.dumps(h).encode()
    if pad:
        j += b' ' * (-len(j) % 8)
    return struct.pack('<Q', len(j)) + j + blob
put('safetensors', 'two.safetensors', st([('a.weight', [2, 3], [0.5] * 6), ('a.bias', [2], [1.0, -1.0])], {'format': 'pt'}))
put('safetensors', 'scalar.safetensors', st([('s', [], [3.0]), ('e', [0], [])], None, pad=False))
put('safetensors', 'escapes.safetensors', st([('x\u00e9\\"', [1], [2.0])], {'k\n': 'v\u20ac\ud83d\ude00'}))
put('safetensors', 'empty.safetensors', struct.pack('<Q', 2) + b'{}')
ddpm = os.path.join(root, 'ddpm')
if os.path.exists(ddpm):
    tmp = os.path.join(out, 'safetensors', 'micro.safetensors')
    subprocess.run([ddpm, 'export', '--model', os.path.join(out, 'checkpoint', 'micro.ckpt'), '--out', tmp], check=True,
                   stderr=subprocess.DEVNULL)
