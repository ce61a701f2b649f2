#!/usr/bin/env bash
# demo.sh: the whole job on a fresh Debian machine: dependencies, build, MNIST (checksummed),
# train the default model, and write a sample grid and a denoising strip into samples/.
#   bash tools/demo.sh            (or: make demo)
# Environment overrides: STEPS (default 6500), CONFIG (models/fast.cfg), THREADS (all cores).
set -euo pipefail
cd "$(dirname "$0")/.."
CONFIG=${CONFIG:-models/fast.cfg}
STEPS=${STEPS:-6500}
THREADS=${THREADS:-$(nproc)}
make deps
make -j"$THREADS" ddpm
make data
mkdir -p samples
./ddpm train --config "$CONFIG" --data data --out models/ddpm.ckpt --steps "$STEPS" --batch 32 --lr 1e-3 \
  --warmup 100 --ema 0.999 --threads "$THREADS" --log samples/train_log.csv \
  --sample-every 1000 --sample-dir samples/progress
./ddpm sample --model models/ddpm.ckpt --n 100 --rows 10 --seed 0 --threads "$THREADS" \
  --out samples/grid.png --strip samples/strip.png --idx samples/samples.idx
echo "demo: samples/grid.png (100 samples), samples/strip.png (denoising), samples/train_log.csv"
