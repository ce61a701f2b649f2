#!/usr/bin/env bash
# demo.sh: the whole job on a fresh Debian machine: dependencies, build, MNIST (checksummed),
# train the default model, and write sample grids and a denoising strip into samples/.
#   bash tools/demo.sh            (or: make demo)
# Environment overrides: STEPS (default 24000: about 30 minutes on 2 cores of a Zen 5 EPYC),
# CONFIG (models/mnist.cfg), THREADS (all cores), KEEP_EVERY (also keep models/ddpm_stepN.ckpt
# every N steps, for a quality-against-time curve; default 0 = off).
set -euo pipefail
cd "$(dirname "$0")/.."
CONFIG=${CONFIG:-models/mnist.cfg}
STEPS=${STEPS:-24000}
KEEP_EVERY=${KEEP_EVERY:-0}
THREADS=${THREADS:-$(nproc)}
make deps
make -j"$THREADS" ddpm
make data
mkdir -p samples
./ddpm train --config "$CONFIG" --data data --out models/ddpm.ckpt --steps "$STEPS" --batch 32 --lr 1e-3 \
  --warmup 100 --ema 0.999 --threads "$THREADS" --log samples/train_log.csv --keep-every "$KEEP_EVERY" \
  --sample-every 4000 --sample-dir samples/progress
# 100 samples (a class-conditional model draws each image's class at random and samples it with
# guidance), then one row per digit
./ddpm sample --model models/ddpm.ckpt --n 100 --rows 10 --seed 0 --threads "$THREADS" \
  --out samples/grid.png --strip samples/strip.png --idx samples/samples.idx
if ./ddpm info --model models/ddpm.ckpt | grep -q "^num_classes = [1-9]"; then
  ./ddpm sample --model models/ddpm.ckpt --n 100 --labels all --seed 0 --threads "$THREADS" --out samples/digits.png
fi
echo "demo: samples/grid.png (100 samples), samples/digits.png (one row per digit), samples/strip.png (denoising), samples/train_log.csv"
