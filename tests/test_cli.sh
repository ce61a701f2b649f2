#!/usr/bin/env bash
# test_cli.sh: the ddpm command line as a user runs it: help and flag errors, exact resume
# (byte-identical checkpoints), interruption, NaN stop, bad data and checkpoints, sampling.
#   usage: bash tests/test_cli.sh ./ddpm      (MNIST_DIR: the MNIST gz files)
set -u
DDPM=$(readlink -f "${1:-./ddpm}")
BUILD_DIR=${BUILD_DIR:-build/native}
CFG=tests/cfg/mini28.cfg
TMP=$(mktemp -d /tmp/ddpm_cli_XXXXXX)
trap 'rm -rf "$TMP"' EXIT
source "$(dirname "${BASH_SOURCE[0]}")/testlib.sh"

echo "-- help and flags"
for c in train sample info bench judge eval export; do expect_rc 0 "ddpm $c --help" "$DDPM" $c --help; done
expect_rc 0 "ddpm --help" "$DDPM" --help
expect_rc 2 "unknown command" "$DDPM" frobnicate
expect_rc 2 "unknown flag" "$DDPM" train --config $CFG --bogus
expect_rc 2 "non-numeric --steps" "$DDPM" train --config $CFG --steps ten
expect_rc 2 "negative --batch" "$DDPM" train --config $CFG --batch -3
expect_rc 2 "--steps and --epochs" "$DDPM" train --config $CFG --steps 3 --epochs 1
expect_rc 2 "missing value" "$DDPM" sample --model
expect_rc 2 "bad --sampler" "$DDPM" sample --model x --sampler euler
"$DDPM" info --config models/reference.cfg >"$TMP/info" 2>&1
if grep -qx "parameters: 10188081" "$TMP/info"; then pass "reference.cfg has 10188081 parameters"; else fail "info --config models/reference.cfg: $(cat "$TMP/info")"; fi

echo "-- bad configs"
printf 'im_channels = 1\nim_size = 28\n' > "$TMP/missing.cfg"
expect_err "missing key" "config with missing keys" "$DDPM" info --config "$TMP/missing.cfg"
sed 's/num_heads = 2/num_heads = 3/' $CFG > "$TMP/heads.cfg"
expect_err "heads.cfg.*num_heads" "channels not divisible by num_heads" "$DDPM" info --config "$TMP/heads.cfg"
sed 's/down_channels = 16, 16, 16/down_channels = 12, 16, 16/' $CFG > "$TMP/groups.cfg"
expect_err "groups.cfg.*GroupNorm" "channels not divisible by 8 groups" "$DDPM" info --config "$TMP/groups.cfg"
(cat $CFG; echo "learning_rate = 3") > "$TMP/unknown.cfg"
expect_err "unknown.cfg:14: unknown key 'learning_rate'" "unknown key, with file and line" "$DDPM" info --config "$TMP/unknown.cfg"
sed 's/time_emb_dim = 16/time_emb_dim = sixteen/' $CFG > "$TMP/garbage.cfg"
expect_err "garbage.cfg:8: key 'time_emb_dim': invalid value" "garbage value" "$DDPM" info --config "$TMP/garbage.cfg"
sed 's/im_size = 28/im_size = 30/;s/down_sample = 1, 1/down_sample = 1, 1/' $CFG > "$TMP/odd.cfg"
expect_err "cannot be halved" "size that does not divide" "$DDPM" info --config "$TMP/odd.cfg"
expect_err "cannot open config" "missing config file" "$DDPM" info --config "$TMP/nope.cfg"

if [ -z "${MNIST_DIR:-}" ] || [ ! -f "$MNIST_DIR/train-images-idx3-ubyte.gz" ]; then
  echo "test_cli: FAILED: MNIST_DIR=${MNIST_DIR:-} lacks train-images-idx3-ubyte.gz: run 'make data' (or set MNIST_DIR)"
  exit 1
fi
D="$MNIST_DIR"
COMMON=(--config $CFG --data "$D" --limit 128 --batch 16 --seed 3 --threads 2 --save-every 0 --log-every 5)

echo "-- exact resume"
"$DDPM" train "${COMMON[@]}" --steps 20 --out "$TMP/full.ckpt" 2>"$TMP/log" || fail "20-step run: $(tail -3 "$TMP/log")"
"$DDPM" train "${COMMON[@]}" --steps 10 --out "$TMP/half.ckpt" 2>"$TMP/log" || fail "10-step run: $(tail -3 "$TMP/log")"
"$DDPM" train --resume "$TMP/half.ckpt" --data "$D" --limit 128 --threads 2 --steps 20 --save-every 0 --out "$TMP/half.ckpt" 2>"$TMP/log" \
  || fail "resume 10 -> 20: $(tail -3 "$TMP/log")"
if cmp -s "$TMP/full.ckpt" "$TMP/half.ckpt"; then pass "stopped at 10 + resumed to 20 == uninterrupted 20 (byte-identical, across 2 epochs)"
else fail "resumed checkpoint differs from the uninterrupted one"; fi
echo "-- the thread count does not change the result (gradients are summed per fixed chunk of the batch)"
"$DDPM" train "${COMMON[@]}" --threads 1 --steps 10 --out "$TMP/one.ckpt" 2>"$TMP/log" || fail "1-thread run: $(tail -3 "$TMP/log")"
"$DDPM" train --resume "$TMP/one.ckpt" --data "$D" --limit 128 --threads 2 --steps 20 --save-every 0 --out "$TMP/one.ckpt" 2>"$TMP/log" \
  || fail "2-thread resume: $(tail -3 "$TMP/log")"
cmp -s "$TMP/full.ckpt" "$TMP/one.ckpt" && pass "10 steps on 1 thread + 10 on 2 threads == 20 on 2 threads (byte-identical)" \
  || fail "1-thread and 2-thread training differ"
echo "-- exact resume with cosine lr decay, gradient clipping and --keep-every"
DEC=(--lr 2e-3 --warmup 4 --lr-decay cosine --grad-clip 0.5)
"$DDPM" train "${COMMON[@]}" "${DEC[@]}" --steps 20 --keep-every 10 --out "$TMP/dec.ckpt" 2>"$TMP/log" || fail "cosine run: $(tail -3 "$TMP/log")"
[ -s "$TMP/dec_step0000010.ckpt" ] && [ -s "$TMP/dec_step0000020.ckpt" ] && cmp -s "$TMP/dec.ckpt" "$TMP/dec_step0000020.ckpt" \
  && pass "--keep-every 10 kept dec_step0000010.ckpt and dec_step0000020.ckpt" || fail "--keep-every: $(ls "$TMP")"
"$DDPM" train --resume "$TMP/dec_step0000010.ckpt" --data "$D" --limit 128 --threads 2 --steps 20 --save-every 0 --out "$TMP/dec10.ckpt" 2>"$TMP/log" \
  || fail "cosine resume: $(tail -3 "$TMP/log")"
cmp -s "$TMP/dec.ckpt" "$TMP/dec10.ckpt" && pass "cosine decay + clipping: resumed from the step-10 copy == uninterrupted (byte-identical)" \
  || fail "cosine resume differs from the uninterrupted run"
"$DDPM" info --model "$TMP/dec.ckpt" | grep -qx "lr decay: cosine" && pass "info shows the lr decay" || fail "info lacks lr decay"
expect_err "decays over" "resume of a cosine run with another length" "$DDPM" train --resume "$TMP/dec_step0000010.ckpt" --data "$D" --limit 128 --steps 30 --out "$TMP/x.ckpt"
expect_err "is not none or cosine" "--lr-decay nonsense" "$DDPM" train "${COMMON[@]}" --lr-decay linear --steps 5 --out "$TMP/x.ckpt"
"$DDPM" info --model "$TMP/full.ckpt" > "$TMP/info" 2>&1
if grep -qx "step: 20" "$TMP/info" && grep -qx "epoch: 2" "$TMP/info" && grep -qx "batch: 16" "$TMP/info"; then pass "info --model shows step 20, epoch 2, batch 16"
else fail "info --model: $(cat "$TMP/info")"; fi
"$DDPM" train --resume "$TMP/full.ckpt" --data "$D" --limit 128 --steps 20 --out "$TMP/full.ckpt" >/dev/null 2>"$TMP/log" && grep -q "nothing to do" "$TMP/log" \
  && pass "resume at the total: nothing to do" || fail "resume at total: $(cat "$TMP/log")"

"$DDPM" train "${COMMON[@]}" --steps 4 --log-every 2 --log "$TMP/log.csv" --sample-every 4 --sample-dir "$TMP/progress" \
  --out "$TMP/diag.ckpt" >/dev/null 2>&1
if [ "$(head -1 "$TMP/log.csv")" = "step,epoch,loss,images_per_s,wall_s,loss_t0,loss_t1,loss_t2,loss_t3,loss_t4,loss_t5,loss_t6,loss_t7,loss_t8,loss_t9,lr,grad_norm" ] \
   && [ "$(grep -c . "$TMP/log.csv")" = 3 ] && [ -s "$TMP/progress/step_0000004.png" ]; then
  pass "CSV log with per-t-bucket losses; --sample-every grid written"
else fail "CSV log / --sample-every: $(cat "$TMP/log.csv"; ls "$TMP/progress" 2>&1)"; fi

echo "-- bf16 mixed precision"
layers=$("$DDPM" info --config $CFG | sed -n 's/^layers: //p')
if [ "${layers#reference}" != "$layers" ]; then
  echo "SKIP bf16 training: this ddpm runs the reference layers (make REF=1)"
  expect_err "REF=1" "--precision bf16 in a REF=1 build" "$DDPM" train "${COMMON[@]}" --precision bf16 --steps 2 --out "$TMP/bf.ckpt"
elif [ "${layers#*AVX512_BF16}" = "$layers" ]; then
  "$DDPM" train "${COMMON[@]}" --precision bf16 --steps 10 --out "$TMP/bf.ckpt" 2>"$TMP/log" || fail "bf16 run: $(tail -2 "$TMP/log")"
  "$DDPM" train "${COMMON[@]}" --precision bf16 --steps 5 --out "$TMP/bf5.ckpt" 2>/dev/null
  "$DDPM" train --resume "$TMP/bf5.ckpt" --data "$D" --limit 128 --threads 2 --steps 10 --save-every 0 2>/dev/null
  cmp -s "$TMP/bf.ckpt" "$TMP/bf5.ckpt" && pass "bf16: resumed (without --precision) == uninterrupted, byte for byte" || fail "bf16 resume differs"
  "$DDPM" info --model "$TMP/bf.ckpt" | grep -qx "precision: bf16" && pass "the checkpoint records bf16" || fail "info: precision"
  cmp -s "$TMP/bf.ckpt" "$TMP/full.ckpt" && fail "bf16 run equals the fp32 run" || pass "bf16 and fp32 runs differ"
  expect_err "contradicts" "--precision fp32 on a bf16 checkpoint" "$DDPM" train --resume "$TMP/bf.ckpt" --data "$D" --limit 128 --precision fp32 --steps 12
else
  echo "SKIP bf16 training: this CPU lacks AVX512_BF16"
  expect_err "AVX512_BF16" "--precision bf16 without AVX512_BF16" "$DDPM" train "${COMMON[@]}" --precision bf16 --steps 2 --out "$TMP/bf.ckpt"
fi
expect_rc 2 "bad --precision" "$DDPM" sample --model "$TMP/full.ckpt" --precision fp16

echo "-- --resume without --out continues the file it resumed from"
cp "$TMP/half.ckpt" "$TMP/cont.ckpt"
(cd "$TMP" && mkdir -p models && "$DDPM" train --resume cont.ckpt --data "$D" --limit 128 --threads 2 --steps 22 --save-every 0 2>"$TMP/log") \
  || fail "resume without --out: $(tail -2 "$TMP/log")"
[ "$("$DDPM" info --model "$TMP/cont.ckpt" | sed -n 's/^step: //p')" = 22 ] && [ ! -e "$TMP/models/ddpm.ckpt" ] \
  && pass "resumed file advanced to step 22, models/ddpm.ckpt not written" || fail "resume without --out wrote elsewhere"

echo "-- contradicting flags leave the checkpoint untouched"
sum=$(md5sum < "$TMP/full.ckpt")
expect_err "contradicts" "--batch contradicting the checkpoint" "$DDPM" train --resume "$TMP/full.ckpt" --data "$D" --limit 128 --batch 8 --steps 30
expect_err "contradicts" "--lr contradicting the checkpoint" "$DDPM" train --resume "$TMP/full.ckpt" --data "$D" --limit 128 --lr 0.5 --steps 30
expect_err "differs" "--config contradicting the checkpoint" "$DDPM" train --resume "$TMP/full.ckpt" --config models/tiny.cfg --data "$D" --steps 30
expect_err "trained on 128" "different data size" "$DDPM" train --resume "$TMP/full.ckpt" --data "$D" --limit 100 --steps 30
[ "$(md5sum < "$TMP/full.ckpt")" = "$sum" ] && pass "checkpoint unchanged" || fail "checkpoint modified by a rejected resume"

echo "-- bad checkpoints"
head -c 5000 "$TMP/full.ckpt" > "$TMP/trunc.ckpt"
expect_err "trunc.ckpt: .*CRC" "truncated checkpoint" "$DDPM" sample --model "$TMP/trunc.ckpt" --n 1
printf 'garbage' > "$TMP/garbage.ckpt"
expect_err "garbage.ckpt: not a ddpm.c checkpoint" "garbage checkpoint" "$DDPM" train --resume "$TMP/garbage.ckpt" --data "$D" --steps 5
expect_err "cannot open checkpoint" "missing checkpoint" "$DDPM" info --model "$TMP/none.ckpt"
cp "$TMP/full.ckpt" "$TMP/flip.ckpt"; printf '\x55' | dd of="$TMP/flip.ckpt" bs=1 seek=3000 conv=notrunc 2>/dev/null
expect_err "CRC" "bit-flipped checkpoint" "$DDPM" info --model "$TMP/flip.ckpt"

echo "-- bad data"
expect_err "/nonexistent" "missing data directory" "$DDPM" train --config $CFG --data /nonexistent --steps 1 --out "$TMP/x.ckpt"
mkdir -p "$TMP/baddata"; cp "$D"/train-labels-idx1-ubyte.gz "$TMP/baddata/"
head -c 100000 "$D/train-images-idx3-ubyte.gz" > "$TMP/baddata/train-images-idx3-ubyte.gz"
expect_err "train-images-idx3-ubyte.gz" "truncated gz images" "$DDPM" train --config $CFG --data "$TMP/baddata" --steps 1 --out "$TMP/x.ckpt"
[ ! -e "$TMP/x.ckpt" ] && pass "no checkpoint written on bad data" || fail "checkpoint written despite bad data"

FM=/usr/share/datasets/fashion-mnist
if [ -f "$FM/train-images-idx3-ubyte.gz" ]; then
  "$DDPM" train --config $CFG --data "$FM" --limit 64 --batch 16 --steps 2 --threads 2 --out "$TMP/fm.ckpt" >/dev/null 2>&1 \
    && pass "Fashion-MNIST (Debian dataset-fashion-mnist) trains with no code change" || fail "Fashion-MNIST training"
else echo "SKIP Fashion-MNIST training: $FM not installed (apt-get install dataset-fashion-mnist)"; fi

echo "-- NaN stops training, last good checkpoint kept"
"$BUILD_DIR/test_checkpoint" --poison "$TMP/full.ckpt" "$TMP/nan.ckpt" 2>/dev/null || fail "cannot make poisoned checkpoint"
sum=$(md5sum < "$TMP/nan.ckpt")
"$DDPM" train --resume "$TMP/nan.ckpt" --data "$D" --limit 128 --steps 25 --save-every 1 --out "$TMP/nan.ckpt" >/dev/null 2>"$TMP/err"; rc=$?
[ $rc = 1 ] && grep -q "loss is NaN at step 21; stopping" "$TMP/err" && pass "NaN loss: exit 1, '$(grep NaN "$TMP/err")'" \
  || fail "NaN loss: exit $rc, $(cat "$TMP/err")"
[ "$(md5sum < "$TMP/nan.ckpt")" = "$sum" ] && pass "checkpoint untouched after NaN" || fail "checkpoint changed after NaN"

echo "-- a diverging run (--lr 10) never saves a non-finite value"
for seed in 1 4 6; do # seed 1 reaches non-finite parameters within 60 steps: an unchecked save writes them
  "$DDPM" train --config $CFG --data "$D" --limit 128 --batch 16 --seed $seed --threads 2 --lr 10 --steps 60 --save-every 1 \
    --out "$TMP/div$seed.ckpt" >/dev/null 2>"$TMP/err"; rc=$?
  # the arrays read independently of ddpm (layout: docs/FORMAT.md): every value finite
  finite=$(python3 - "$TMP/div$seed.ckpt" <<'PY' 2>&1
import math, struct, sys
try: b = open(sys.argv[1], 'rb').read()
except FileNotFoundError: print('no file'); sys.exit()
cfg_len = struct.unpack_from('<I', b, 12)[0]
off = 16 + cfg_len + 116
n = struct.unpack_from('<Q', b, off)[0]
vals = struct.unpack_from('<%df' % ((len(b) - off - 12) // 4), b, off + 8)
print('finite' if all(math.isfinite(v) for v in vals) else '%d non-finite' % sum(not math.isfinite(v) for v in vals))
PY
)
  if [ "$finite" = finite ] || [ "$finite" = "no file" ]; then
    pass "seed $seed, lr 10: exit $rc, checkpoint: $finite"
  else fail "seed $seed, lr 10: $(tail -2 "$TMP/err")"; fi
done
cp "$TMP/full.ckpt" "$TMP/nanraw.ckpt"
python3 - "$TMP/nanraw.ckpt" <<'PY' 2>/dev/null || echo "SKIP raw NaN checkpoint: no python3"
import struct, sys, zlib
p = sys.argv[1]; b = bytearray(open(p, 'rb').read())
b[-404:-400] = struct.pack('<f', float('nan'))  # a value of the last array
b[-4:] = struct.pack('<I', zlib.crc32(bytes(b[:-4])) & 0xffffffff)
open(p, 'wb').write(b)
PY
[ -e "$TMP/nanraw.ckpt" ] && expect_err "non-finite" "a checkpoint with a NaN (valid CRC)" "$DDPM" info --model "$TMP/nanraw.ckpt"

echo "-- one writer per checkpoint; stale temp files of a killed save are removed"
touch "$TMP/two.ckpt.tmp.Zz9Yy8"
"$DDPM" train "${COMMON[@]}" --steps 100000 --out "$TMP/two.ckpt" 2>"$TMP/log1" & pid1=$!
for _ in $(seq 100); do grep -q "step 2/" "$TMP/log1" 2>/dev/null && break; sleep 0.1; done
expect_err "another 'ddpm train' (pid $pid1) is writing" "a second run on the same --out" "$DDPM" train "${COMMON[@]}" --steps 5 --out "$TMP/two.ckpt"
expect_err "another 'ddpm train'" "a resume of the checkpoint being written" "$DDPM" train --resume "$TMP/two.ckpt" --data "$D" --limit 128 --steps 5
kill -INT $pid1; wait $pid1; rc=$?
[ $rc = 130 ] && "$DDPM" info --model "$TMP/two.ckpt" >/dev/null 2>&1 && pass "the first run saved and exited 130" || fail "first run: exit $rc"
[ ! -e "$TMP/two.ckpt.tmp.Zz9Yy8" ] && grep -q "removed .*two.ckpt.tmp.Zz9Yy8" "$TMP/log1" && pass "stale two.ckpt.tmp.Zz9Yy8 removed" || fail "stale temp file kept"
[ ! -e "$TMP/two.ckpt.lock" ] && pass "lock file removed at exit" || fail "lock file left"

echo "-- a full disk (a file-size limit): every write fails loudly, nothing is lost"
cp "$TMP/full.ckpt" "$TMP/fs.ckpt"; sum=$(md5sum < "$TMP/fs.ckpt")
(ulimit -f 200; exec "$DDPM" train --resume "$TMP/fs.ckpt" --data "$D" --limit 128 --threads 2 --steps 25 --save-every 1) >/dev/null 2>"$TMP/err"; rc=$?
[ $rc = 1 ] && grep -q "File too large" "$TMP/err" && [ "$(md5sum < "$TMP/fs.ckpt")" = "$sum" ] \
  && pass "checkpoint save past the limit: exit 1, '$(tail -1 "$TMP/err")', previous checkpoint unchanged" || fail "limited save: exit $rc, $(tail -2 "$TMP/err")"
ls "$TMP"/fs.ckpt.tmp.* >/dev/null 2>&1 && fail "temp file left by the failed save" || pass "no temp file left"
printf 'old' > "$TMP/fz.png"
(ulimit -f 1; exec "$DDPM" sample --model "$TMP/full.ckpt" --n 64 --sampler ddim --steps 2 --out "$TMP/fz.png") >/dev/null 2>"$TMP/err"; rc=$?
[ $rc = 1 ] && [ "$(cat "$TMP/fz.png")" = old ] && grep -q "File too large" "$TMP/err" && pass "PNG past the limit: exit 1, old file kept" \
  || fail "limited PNG: exit $rc, $(tail -1 "$TMP/err")"
dd if=/dev/zero of="$TMP/biglog.csv" bs=1024 count=2047 2>/dev/null # 1 KB left for rows; the checkpoint (1.1 MB) fits
(ulimit -f 2048; exec "$DDPM" train "${COMMON[@]}" --steps 30 --log-every 1 --log "$TMP/biglog.csv" --out "$TMP/lg.ckpt" --resume "$TMP/full.ckpt") >/dev/null 2>"$TMP/err"; rc=$?
[ $rc = 1 ] && grep -q "cannot write the log" "$TMP/err" && "$DDPM" info --model "$TMP/lg.ckpt" >/dev/null 2>&1 \
  && pass "log past the limit: exit 1, '$(tail -1 "$TMP/err" | cut -c1-90)...', checkpoint saved" || fail "limited log: exit $rc, $(tail -2 "$TMP/err")"

echo "-- SIGINT saves and exits 130"
"$DDPM" train "${COMMON[@]}" --steps 100000 --out "$TMP/int.ckpt" 2>"$TMP/log" & pid=$!
for _ in $(seq 100); do grep -q "step 5/" "$TMP/log" 2>/dev/null && break; sleep 0.2; done
kill -INT $pid; wait $pid; rc=$?
if [ $rc = 130 ] && grep -q "interrupted" "$TMP/log" && "$DDPM" info --model "$TMP/int.ckpt" >/dev/null 2>&1; then
  pass "interrupted run: exit 130, checkpoint at step $("$DDPM" info --model "$TMP/int.ckpt" | sed -n 's/^step: //p')"
else fail "SIGINT: exit $rc, log: $(tail -2 "$TMP/log")"; fi

echo "-- sampling"
"$DDPM" sample --model "$TMP/full.ckpt" --n 6 --rows 2 --seed 4 --out "$TMP/a.png" --idx "$TMP/a.idx" --strip "$TMP/s.png" --strip-n 3 --threads 2 2>"$TMP/log" \
  || fail "sample: $(cat "$TMP/log")"
"$DDPM" sample --model "$TMP/full.ckpt" --n 6 --rows 2 --seed 4 --out "$TMP/b.png" --threads 2 2>/dev/null
cmp -s "$TMP/a.png" "$TMP/b.png" && pass "same seed, same PNG bytes" || fail "sampling is not deterministic"
"$DDPM" sample --model "$TMP/full.ckpt" --n 6 --rows 2 --seed 5 --out "$TMP/c.png" --threads 2 2>/dev/null
cmp -s "$TMP/a.png" "$TMP/c.png" && fail "different seeds gave the same PNG" || pass "different seed, different PNG"
# PNG size: 3 columns x 2 rows of 28x28 with 2-pixel borders = 92 x 62; strip 10 x 3 = 302 x 92
pngsize() { od -An -tu1 -j16 -N8 "$1" | awk '{print $3*256+$4 "x" $7*256+$8}'; }
[ "$(pngsize "$TMP/a.png")" = "92x62" ] && pass "grid is 92x62" || fail "grid size $(pngsize "$TMP/a.png")"
[ "$(pngsize "$TMP/s.png")" = "302x92" ] && pass "strip is 302x92" || fail "strip size $(pngsize "$TMP/s.png")"
[ "$(stat -c %s "$TMP/a.idx")" = $((16 + 6 * 784)) ] && [ "$(od -An -tx1 -N4 "$TMP/a.idx" | tr -d ' ')" = 00000803 ] \
  && pass "IDX file: magic 0x803, 6 images" || fail "IDX file size/magic"
"$DDPM" sample --model "$TMP/full.ckpt" --n 4 --sampler ddim --steps 10 --out "$TMP/d1.png" 2>/dev/null \
  && "$DDPM" sample --model "$TMP/full.ckpt" --n 4 --sampler ddim --steps 10 --out "$TMP/d2.png" 2>/dev/null \
  && cmp -s "$TMP/d1.png" "$TMP/d2.png" && pass "DDIM sampling runs and is deterministic" || fail "DDIM sampling"
"$DDPM" sample --model "$TMP/full.ckpt" --n 4 --sigma posterior --no-ema --out "$TMP/p.png" 2>/dev/null \
  && pass "posterior sigma, raw weights" || fail "sample --sigma posterior --no-ema"

"$DDPM" sample --model "$TMP/full.ckpt" --n 6 --rows 2 --seed 4 --clip --out "$TMP/clip.png" --threads 2 2>/dev/null
"$DDPM" sample --model "$TMP/full.ckpt" --n 6 --rows 2 --seed 4 --no-clip --out "$TMP/noclip.png" --threads 2 2>"$TMP/log"
cmp -s "$TMP/a.png" "$TMP/clip.png" && ! cmp -s "$TMP/a.png" "$TMP/noclip.png" && grep -q "clipped x0" <(head -1 "$TMP/log"; "$DDPM" sample --model "$TMP/full.ckpt" --n 1 --out "$TMP/e.png" 2>&1 | head -1) \
  && pass "sampling clips x0 by default (--clip changes nothing, --no-clip differs)" || fail "sample clip default"

for smp in ddpm ddim heun dpm++; do
  "$DDPM" sample --model "$TMP/full.ckpt" --n 2 --sampler $smp --steps 3 --out "$TMP/smp.png" 2>"$TMP/log" \
    && grep -qi "${smp%%+*}" "$TMP/log" && pass "--sampler $smp: $(head -1 "$TMP/log" | cut -d, -f2)" || fail "--sampler $smp: $(cat "$TMP/log")"
done
"$DDPM" sample --model "$TMP/full.ckpt" --n 2 --out "$TMP/def.png" 2>"$TMP/log" && grep -q "DPM++ 2M 50 steps" "$TMP/log" \
  && pass "the default sampler is DPM++ 2M with 50 evaluations" || fail "default sampler: $(head -1 "$TMP/log")"
expect_err "needs a class-conditional model" "--label on an unconditional model" "$DDPM" sample --model "$TMP/full.ckpt" --n 2 --label 3 --out "$TMP/x.png"
expect_err "applies to a class-conditional" "--guidance on an unconditional model" "$DDPM" sample --model "$TMP/full.ckpt" --n 2 --guidance 3 --out "$TMP/x.png"
expect_err "is not all, random or none" "--labels some" "$DDPM" sample --model "$TMP/full.ckpt" --n 2 --labels some --out "$TMP/x.png"

echo "-- class-conditional EDM model: exact resume, labels, guidance"
(cat $CFG; printf 'objective = edm\nnum_classes = 10\np_uncond = 0.2\n') > "$TMP/cond.cfg"
CC=(--config "$TMP/cond.cfg" --data "$D" --limit 128 --batch 16 --seed 3 --threads 2 --save-every 0 --log-every 5)
"$DDPM" train "${CC[@]}" --steps 12 --out "$TMP/cfull.ckpt" 2>"$TMP/log" || fail "conditional run: $(tail -3 "$TMP/log")"
"$DDPM" train "${CC[@]}" --steps 6 --out "$TMP/chalf.ckpt" 2>/dev/null
"$DDPM" train --resume "$TMP/chalf.ckpt" --data "$D" --limit 128 --threads 2 --steps 12 --save-every 0 2>/dev/null
cmp -s "$TMP/cfull.ckpt" "$TMP/chalf.ckpt" && pass "conditional EDM: 6 + resumed 6 == 12 steps (byte-identical: sigmas, eps and label drops)" \
  || fail "conditional EDM resume differs"
"$DDPM" info --model "$TMP/cfull.ckpt" > "$TMP/info" 2>&1
grep -qx "objective = edm" "$TMP/info" && grep -q "^sigma_data = 0\.[0-9]" "$TMP/info" && grep -qx "num_classes = 10" "$TMP/info" \
  && pass "the checkpoint records the objective, the measured sigma_data and the classes" || fail "info: $(cat "$TMP/info")"
"$DDPM" sample --model "$TMP/cfull.ckpt" --n 20 --labels all --out "$TMP/all.png" 2>"$TMP/log" \
  && grep -q "guidance 1.25" "$TMP/log" && grep -q "DPM++ 2M 25 steps" "$TMP/log" \
  && [ "$(pngsize "$TMP/all.png")" = "62x302" ] && pass "--labels all: 10 rows of 2, guided, 25 steps (50 evaluations)" \
  || fail "--labels all: $(pngsize "$TMP/all.png") $(cat "$TMP/log")"
"$DDPM" sample --model "$TMP/cfull.ckpt" --n 4 --label 7 --guidance 1 --out "$TMP/g1.png" 2>"$TMP/log" && grep -q "DPM++ 2M 50 steps" "$TMP/log" \
  && pass "--guidance 1: one evaluation per step, 50 steps" || fail "--guidance 1: $(cat "$TMP/log")"
"$DDPM" sample --model "$TMP/cfull.ckpt" --n 4 --label 7 --out "$TMP/l7.png" 2>/dev/null
"$DDPM" sample --model "$TMP/cfull.ckpt" --n 4 --label 3 --out "$TMP/l3.png" 2>/dev/null
"$DDPM" sample --model "$TMP/cfull.ckpt" --n 4 --labels none --out "$TMP/lu.png" 2>"$TMP/log"
grep -q "null label" "$TMP/log" && ! cmp -s "$TMP/l7.png" "$TMP/l3.png" && ! cmp -s "$TMP/l7.png" "$TMP/lu.png" \
  && pass "labels 7, 3 and the null label give different images" || fail "labels do not change the samples: $(cat "$TMP/log")"
"$DDPM" sample --model "$TMP/cfull.ckpt" --n 4 --out "$TMP/lr.png" 2>"$TMP/log"
"$DDPM" sample --model "$TMP/cfull.ckpt" --n 4 --labels random --out "$TMP/lr2.png" 2>/dev/null
grep -q "guidance 1.25" "$TMP/log" && cmp -s "$TMP/lr.png" "$TMP/lr2.png" \
  && pass "no label on a class-conditional model: random labels, guided (= --labels random)" || fail "default labels: $(cat "$TMP/log")"
expect_err "applies to a class-conditional model sampled with labels" "--guidance with --labels none" \
  "$DDPM" sample --model "$TMP/cfull.ckpt" --n 2 --labels none --guidance 3 --out "$TMP/x.png"
expect_err "has classes 0..9" "--label 12 on a 10-class model" "$DDPM" sample --model "$TMP/cfull.ckpt" --n 2 --label 12 --out "$TMP/x.png"
expect_err "give one of --label" "--label and --labels all" "$DDPM" sample --model "$TMP/cfull.ckpt" --n 2 --label 1 --labels all --out "$TMP/x.png"

echo "-- an output is never an input or another output; only regular files are replaced"
cp "$TMP/full.ckpt" "$TMP/m.ckpt"; sum=$(md5sum < "$TMP/m.ckpt")
expect_err "same file as --model" "sample --out = --model" "$DDPM" sample --model "$TMP/m.ckpt" --out "$TMP/m.ckpt"
expect_err "same file as --model" "sample --idx = --model (another spelling)" "$DDPM" sample --model "$TMP/m.ckpt" --idx "$TMP/./m.ckpt"
ln -sf "$TMP/m.ckpt" "$TMP/m_link.ckpt"
expect_err "same file as --model" "sample --out = a link to --model" "$DDPM" sample --model "$TMP/m.ckpt" --out "$TMP/m_link.ckpt"
expect_err "same file as --strip" "--strip s.png --out s.png" "$DDPM" sample --model "$TMP/m.ckpt" --strip "$TMP/s2.png" --out "$TMP/s2.png"
[ "$(md5sum < "$TMP/m.ckpt")" = "$sum" ] && pass "the model is unchanged" || fail "the model was overwritten"
cp $CFG "$TMP/t.cfg"
expect_err "same file as --config" "train --out = --config" "$DDPM" train --config "$TMP/t.cfg" --data "$D" --out "$TMP/t.cfg" --steps 1
expect_err "same file as --config" "train --log = --config" "$DDPM" train --config "$TMP/t.cfg" --data "$D" --log "$TMP/t.cfg" --steps 1
cmp -s $CFG "$TMP/t.cfg" && pass "the config is unchanged" || fail "the config was overwritten"
mkdir -p "$TMP/dat"; cp "$D"/*.gz "$TMP/dat/"
expect_err "is the data file" "train --out = the training images" "$DDPM" train --config $CFG --data "$TMP/dat" --out "$TMP/dat/train-images-idx3-ubyte.gz" --steps 1
mkfifo "$TMP/fifo"; mkdir -p "$TMP/adir.png"
expect_err "not a regular file" "sample --out a FIFO" "$DDPM" sample --model "$TMP/m.ckpt" --n 2 --sampler ddim --steps 2 --out "$TMP/fifo"
expect_err "not a regular file" "sample --out a directory" "$DDPM" sample --model "$TMP/m.ckpt" --n 2 --sampler ddim --steps 2 --out "$TMP/adir.png"
printf 'old' > "$TMP/target.png"; ln -sf "$TMP/target.png" "$TMP/via_link.png"
"$DDPM" sample --model "$TMP/m.ckpt" --n 2 --sampler ddim --steps 2 --out "$TMP/via_link.png" 2>/dev/null
[ -L "$TMP/via_link.png" ] && [ "$(head -c 4 "$TMP/target.png" | od -An -c | tr -d ' ')" = "211PNG" ] \
  && pass "a symbolic link is written through (the link stays, its target gets the PNG)" || fail "symlink output"

echo "-- messages keep their reason"
long="$TMP/$(printf 'd%.0s' $(seq 200))/$(printf 'e%.0s' $(seq 200))/$(printf 'f%.0s' $(seq 200))"
mkdir -p "$long"
expect_err "none.ckpt: cannot open checkpoint" "a 600+ character path" "$DDPM" info --model "$long/none.ckpt"
mkdir -p "$TMP/trpng/3"; head -c 60 "$TMP/a.png" > "$TMP/trpng/3/x.png"
expect_err "x.png: cannot decode image: [a-z]" "a truncated PNG in an image folder" "$DDPM" train --config $CFG --data "$TMP/trpng" --steps 1 --out "$TMP/tp.ckpt"

if [ $fails = 0 ]; then echo "test_cli: all checks passed"; exit 0; fi
echo "test_cli: $fails check(s) FAILED"; exit 1
