#!/usr/bin/env bash
# test_interop.sh: ddpm.c with PyTorch: safetensors export and import (round trips, every
# mismatch and hostile file a one-line error), train --init, --noise torch; with a python3 that
# has torch: the strict load into tools/unet_torch.py with the output checked, the round trip
# ddpm.c -> PyTorch -> ddpm.c, a DDPM-Pytorch state_dict converted, and DDPM-Pytorch's sampling
# loop against ddpm sample --noise torch (else each is a named SKIP).
#   usage: bash tests/test_interop.sh ./ddpm      (MNIST_DIR: the MNIST gz files)
set -u
DDPM=$(readlink -f "${1:-./ddpm}")
CFG=tests/cfg/mini28.cfg
TMP=$(mktemp -d /tmp/ddpm_interop_XXXXXX)
trap 'rm -rf "$TMP"' EXIT
source "$(dirname "${BASH_SOURCE[0]}")/testlib.sh"
PY=$(command -v python3 || true)   # any python3 (json, struct) for the hostile files
TORCHPY=""                         # one with torch for the PyTorch checks
for p in ${PYTHON_TORCH:-} /usr/bin/python3 python3; do
  if command -v "$p" >/dev/null 2>&1 && "$p" -c "import torch, numpy" 2>/dev/null; then TORCHPY=$p; break; fi
done

echo "-- export"
"$DDPM" export --help >/dev/null && pass "ddpm export --help" || fail "export --help"
"$DDPM" export --model x >/dev/null 2>&1; [ $? = 2 ] && pass "export without --out: exit 2" || fail "export without --out"
"$DDPM" train --config $CFG --data "$MNIST_DIR" --limit 64 --batch 8 --steps 12 --threads 2 --save-every 0 \
  --out "$TMP/m.ckpt" 2>"$TMP/log" || fail "training run: $(tail -2 "$TMP/log")"
"$DDPM" export --model "$TMP/m.ckpt" --out "$TMP/m.safetensors" 2>/dev/null && pass "export of a checkpoint (EMA)" || fail "export"
"$DDPM" export --model "$TMP/m.ckpt" --raw --out "$TMP/raw.safetensors" 2>/dev/null
cmp -s "$TMP/m.safetensors" "$TMP/raw.safetensors" && fail "--raw equals the EMA export" || pass "--raw exports other weights than the EMA"
"$DDPM" export --model "$TMP/m.safetensors" --out "$TMP/m2.safetensors" 2>/dev/null
cmp -s "$TMP/m.safetensors" "$TMP/m2.safetensors" && pass "safetensors -> ddpm.c -> safetensors: byte-identical" || fail "re-export differs"
expect_err "same file" "export --out = --model" "$DDPM" export --model "$TMP/m.ckpt" --out "$TMP/m.ckpt"
expect_err "is for checkpoints" "--raw on a safetensors file" "$DDPM" export --model "$TMP/m.safetensors" --raw --out "$TMP/x.safetensors"

echo "-- import: sample and train --init"
"$DDPM" sample --model "$TMP/m.ckpt" --n 3 --sampler ddim --steps 5 --floats "$TMP/a.f32" --out "$TMP/a.png" 2>/dev/null
"$DDPM" sample --model "$TMP/m.safetensors" --n 3 --sampler ddim --steps 5 --floats "$TMP/b.f32" --out "$TMP/b.png" 2>/dev/null
[ -s "$TMP/a.f32" ] && cmp -s "$TMP/a.f32" "$TMP/b.f32" && pass "sample from the safetensors export == from the checkpoint (bit for bit)" \
  || fail "sample from safetensors differs"
"$DDPM" train --init "$TMP/m.safetensors" --data "$MNIST_DIR" --limit 64 --batch 8 --steps 2 --lr 1e-12 --ema 0 --threads 2 \
  --save-every 0 --out "$TMP/ft.ckpt" 2>"$TMP/log" || fail "train --init: $(tail -2 "$TMP/log")"
"$DDPM" export --model "$TMP/ft.ckpt" --out "$TMP/ft.safetensors" 2>/dev/null
if [ -n "$PY" ]; then
  d=$("$PY" - "$TMP/m.safetensors" "$TMP/ft.safetensors" <<'PYEOF'
import json, struct, sys, array
def data(p):
    b = open(p, "rb").read(); n = struct.unpack("<Q", b[:8])[0]
    a = array.array("f"); a.frombytes(b[8 + n:]); return a
a, b = data(sys.argv[1]), data(sys.argv[2])
print(max(abs(x - y) for x, y in zip(a, b)) if len(a) == len(b) else "sizes")
PYEOF
)
  "$PY" -c "import sys; sys.exit(0 if float('$d') < 1e-9 else 1)" 2>/dev/null \
    && pass "train --init starts from the file's weights (2 steps at lr 1e-12: max change $d)" || fail "train --init weights: $d"
else echo "SKIP train --init weight check: no python3"; fi
expect_err "starts a new run" "--init with --resume" "$DDPM" train --init "$TMP/m.safetensors" --resume "$TMP/m.ckpt" --steps 3

echo "-- --noise torch"
"$DDPM" sample --model "$TMP/m.ckpt" --n 4 --sampler ddpm --noise torch --seed 2 --floats "$TMP/t4.f32" --out "$TMP/t.png" 2>"$TMP/log" \
  && grep -q "PyTorch noise (batch 4)" "$TMP/log" && pass "--noise torch: one batch of n by default" || fail "--noise torch: $(cat "$TMP/log")"
"$DDPM" sample --model "$TMP/m.ckpt" --n 4 --sampler ddpm --noise torch --seed 2 --batch 2 --floats "$TMP/t2.f32" --out "$TMP/t.png" 2>/dev/null
cmp -s "$TMP/t4.f32" "$TMP/t2.f32" && fail "--noise torch: batch 2 == batch 4" || pass "--noise torch: the images depend on --batch (documented)"
"$DDPM" sample --model "$TMP/m.ckpt" --n 4 --sampler ddpm --seed 2 --floats "$TMP/d4.f32" --out "$TMP/t.png" 2>/dev/null
cmp -s "$TMP/t4.f32" "$TMP/d4.f32" && fail "--noise torch equals ddpm.c's noise" || pass "--noise torch differs from ddpm.c's streams"
expect_err "is not ddpmc or torch" "--noise numpy" "$DDPM" sample --model "$TMP/m.ckpt" --noise numpy

echo "-- mismatches and hostile files: one line naming the file and the tensor"
sed 's/down_channels = 16, 16, 16/down_channels = 16, 16, 32/;s/mid_channels = 16, 16, 16/mid_channels = 32, 32, 16/' $CFG > "$TMP/wide.cfg"
expect_err "tensor 'downs.1.resnet_conv_first.0.2.weight' has shape \[16, 16, 3, 3\], the config needs \[32, 16, 3, 3\]" \
  "a config of other shapes" "$DDPM" sample --model "$TMP/m.safetensors" --config "$TMP/wide.cfg" --n 1
sed 's/num_mid_layers = 1/num_mid_layers = 2/' $CFG > "$TMP/deep.cfg"
expect_err "tensor 'mids.0.resnet_conv_first.2.0.weight' \[16\] is missing" "a config with more tensors" \
  "$DDPM" sample --model "$TMP/m.safetensors" --config "$TMP/deep.cfg" --n 1
if [ -n "$PY" ]; then
  # mutate the header of a good file: mutate.py IN OUT MODE
  cat > "$TMP/mutate.py" <<'PYEOF'
import json, struct, sys
src, dst, mode = sys.argv[1:4]
b = open(src, "rb").read(); n = struct.unpack("<Q", b[:8])[0]
h = json.loads(b[8:8 + n]); data = b[8 + n:]
names = [k for k in h if k != "__metadata__"]
first, second = names[0], names[1]
raw = None
if mode == "f16": h[first]["dtype"] = "F16"
elif mode == "drop": del h[names[-1]]; data = data[:h[names[-2]]["data_offsets"][1]]
elif mode == "extra": h["bogus.weight"] = {"dtype": "F32", "shape": [1], "data_offsets": [len(data), len(data) + 4]}; data += b"\0" * 4
elif mode == "overlap": h[second]["data_offsets"] = [0, h[second]["data_offsets"][1] - h[second]["data_offsets"][0]]
elif mode == "outside": h[first]["data_offsets"] = [0, len(data) + 4]
elif mode == "hugeshape": h[first]["shape"] = [1 << 30, 1 << 30, 1 << 30]
elif mode == "nometa": del h["__metadata__"]
elif mode == "nan": data = struct.pack("<f", float("nan")) + data[4:]
elif mode == "badjson": raw = json.dumps(h).encode()[:-3] + b"]]"
elif mode == "hugeheader": raw = json.dumps(h).encode(); open(dst, "wb").write(struct.pack("<Q", 1 << 40) + raw + data); sys.exit(0)
elif mode == "truncated": open(dst, "wb").write(b[:len(b) - 10]); sys.exit(0)
if raw is None: raw = json.dumps(h).encode()
open(dst, "wb").write(struct.pack("<Q", len(raw)) + raw + data)
PYEOF
  M="$TMP/m.safetensors"; X="$TMP/x.safetensors"; S=(sample --n 1 --sampler ddim --steps 2 --out "$TMP/x.png")
  "$PY" "$TMP/mutate.py" "$M" "$X" f16;       expect_err "x.safetensors: tensor 't_proj.0.weight' has dtype F16; ddpm reads F32 only" "an F16 tensor" "$DDPM" "${S[@]}" --model "$X"
  "$PY" "$TMP/mutate.py" "$M" "$X" drop;      expect_err "x.safetensors: tensor 'conv_out.bias' \[1\] is missing" "a missing tensor" "$DDPM" "${S[@]}" --model "$X"
  "$PY" "$TMP/mutate.py" "$M" "$X" extra;     expect_err "tensor 'bogus.weight' is not a parameter of this config" "an extra tensor" "$DDPM" "${S[@]}" --model "$X"
  "$PY" "$TMP/mutate.py" "$M" "$X" overlap;   expect_err "x.safetensors: tensor 't_proj.0.bias': data_offsets .* hold .* bytes\|overlaps" "overlapping tensors" "$DDPM" "${S[@]}" --model "$X"
  "$PY" "$TMP/mutate.py" "$M" "$X" outside;   expect_err "x.safetensors: tensor 't_proj.0.weight': data_offsets .* outside" "offsets out of range" "$DDPM" "${S[@]}" --model "$X"
  "$PY" "$TMP/mutate.py" "$M" "$X" hugeshape; expect_err "x.safetensors: tensor 't_proj.0.weight': its shape holds more values" "a huge shape" "$DDPM" "${S[@]}" --model "$X"
  "$PY" "$TMP/mutate.py" "$M" "$X" nometa;    expect_err "x.safetensors: no ddpm_config in its __metadata__: give the model's config with --config" "no config" "$DDPM" "${S[@]}" --model "$X"
  "$DDPM" "${S[@]}" --model "$X" --config $CFG 2>/dev/null && pass "no metadata: --config reads it" || fail "--config on a file without metadata"
  "$PY" "$TMP/mutate.py" "$M" "$X" nan;       expect_err "x.safetensors: tensor 't_proj.0.weight' holds 1 non-finite values" "a NaN weight" "$DDPM" "${S[@]}" --model "$X"
  "$PY" "$TMP/mutate.py" "$M" "$X" badjson;   expect_err "x.safetensors: bad safetensors header" "broken JSON" "$DDPM" "${S[@]}" --model "$X"
  "$PY" "$TMP/mutate.py" "$M" "$X" hugeheader; expect_err "x.safetensors: not a safetensors file (header length 1099511627776" "a header length past the file" "$DDPM" "${S[@]}" --model "$X"
  "$PY" "$TMP/mutate.py" "$M" "$X" truncated; expect_err "x.safetensors: tensor '.*': data_offsets .* outside\|belong to no tensor" "a truncated file" "$DDPM" "${S[@]}" --model "$X"
else echo "SKIP hostile safetensors files: no python3"; fi

echo "-- PyTorch"
if [ -n "$TORCHPY" ]; then
  "$DDPM" export --model "$TMP/m.safetensors" --forward "$TMP/m.fwd" --forward-seed 7 2>/dev/null
  "$TORCHPY" tools/check_safetensors_torch.py "$TMP/m.safetensors" "$TMP/m.fwd" --seed 7 --resave "$TMP/torch.safetensors" >"$TMP/log" 2>&1 \
    && pass "strict load into unet_torch.py, PyTorch's output == ddpm.c's: $(grep -o 'max|torch.*' "$TMP/log" | head -1)" \
    || fail "check_safetensors_torch: $(tail -3 "$TMP/log")"
  grep -q "after manual_seed(7): bit for bit" "$TMP/log" && pass "the fixed input is torch.randn after torch.manual_seed(7), bit for bit" \
    || fail "forward input vs torch.randn: $(head -2 "$TMP/log")"
  "$DDPM" export --model "$TMP/torch.safetensors" --out "$TMP/back.safetensors" 2>/dev/null
  cmp -s "$TMP/m.safetensors" "$TMP/back.safetensors" && pass "ddpm.c -> safetensors -> PyTorch -> safetensors -> ddpm.c: identical weights (byte-identical file)" \
    || fail "round trip through PyTorch differs"
  # a DDPM-Pytorch checkpoint: a state_dict saved with torch.save
  "$TORCHPY" - "$CFG" "$TMP/ddpm_ckpt.pth" <<'PYEOF' 2>"$TMP/log" || fail "torch.save: $(tail -2 "$TMP/log")"
import sys; sys.path.insert(0, "tools")
import torch, unet_torch
torch.manual_seed(11)
torch.save(unet_torch.Unet(unet_torch.load_config(sys.argv[1])).state_dict(), sys.argv[2])
PYEOF
  "$TORCHPY" tools/ddpm_pytorch_to_safetensors.py "$TMP/ddpm_ckpt.pth" "$TMP/conv.safetensors" --config $CFG >/dev/null 2>"$TMP/log" \
    || fail "ddpm_pytorch_to_safetensors: $(tail -2 "$TMP/log")"
  "$DDPM" export --model "$TMP/conv.safetensors" --forward "$TMP/conv.fwd" 2>/dev/null \
    && "$TORCHPY" tools/check_safetensors_torch.py "$TMP/conv.safetensors" "$TMP/conv.fwd" >"$TMP/log" 2>&1 \
    && pass "a DDPM-Pytorch state_dict (.pth) converted, read by ddpm, same output as PyTorch: $(grep -o 'max|torch.*' "$TMP/log" | head -1)" \
    || fail "converted DDPM-Pytorch checkpoint: $(tail -3 "$TMP/log")"
  # DDPM-Pytorch's sample_ddpm.py loop vs ddpm sample --noise torch --sigma posterior --no-clip
  "$DDPM" sample --model "$TMP/m.safetensors" --n 4 --sampler ddpm --seed 5 --noise torch --sigma posterior --no-clip --floats "$TMP/c.f32" \
    --out "$TMP/c.png" 2>/dev/null
  "$TORCHPY" tools/sample_ddpm_torch.py "$TMP/m.safetensors" "$TMP/p.f32" --n 4 --seed 5 --compare "$TMP/c.f32" --tol 1e-4 >"$TMP/log" 2>&1 \
    && pass "DDPM-Pytorch's sampling loop (T = 50, 4 images) == ddpm sample --noise torch: $(grep -o 'max|.*' "$TMP/log")" \
    || fail "sampling comparison: $(tail -2 "$TMP/log")"
else
  for s in "strict load into unet_torch.py and output check" "round trip through PyTorch" "DDPM-Pytorch checkpoint conversion" \
           "DDPM-Pytorch sampling comparison"; do echo "SKIP $s: no python3 with torch and numpy"; done
fi

if [ $fails = 0 ]; then echo "test_interop: all checks passed"; exit 0; fi
echo "test_interop: $fails check(s) FAILED"; exit 1
