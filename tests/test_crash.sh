#!/usr/bin/env bash
# test_crash.sh: SIGKILL at random moments of a training run that saves every step. After every
# kill the checkpoint loads, its step never goes back, and --resume continues; at the end the
# checkpoint equals an uninterrupted run's, byte for byte. No temp file survives a resume.
#   bash tests/test_crash.sh ./ddpm [KILLS]     (default 25; MNIST_DIR: the MNIST gz files)
set -u
DDPM=$(readlink -f "${1:-./ddpm}"); KILLS=${2:-25}
cd "$(dirname "$0")/.."
D=${MNIST_DIR:-data}
[ -f "$D/train-images-idx3-ubyte.gz" ] || { echo "test_crash: FAILED: $D lacks the MNIST files: run 'make data'"; exit 1; }
TMP=$(mktemp -d /tmp/ddpm_crash_XXXXXX); trap 'rm -rf "$TMP"' EXIT
STEPS=$((KILLS * 40 > 600 ? KILLS * 40 : 600)) # more than the kills reach: every kill lands in training
# the reference layers (make REF=1) take about 0.4 s a step here: a kill lands within a step or two
"$DDPM" info --config tests/cfg/mini28.cfg | grep -q "^layers: reference" && STEPS=$((KILLS + 10))
RUN=(--data "$D" --limit 256 --batch 16 --threads 2 --steps $STEPS)
"$DDPM" train --config tests/cfg/mini28.cfg "${RUN[@]}" --seed 9 --save-every 0 --out "$TMP/ref.ckpt" 2>/dev/null \
  || { echo "test_crash: FAILED: the uninterrupted run"; exit 1; }
fails=0; last=-1; kills=0; loads=0; started=0
for k in $(seq "$KILLS"); do
  if [ -e "$TMP/run.ckpt" ]; then args=(--resume "$TMP/run.ckpt"); else args=(--config tests/cfg/mini28.cfg --seed 9 --out "$TMP/run.ckpt"); fi
  "$DDPM" train "${args[@]}" "${RUN[@]}" --save-every 1 --log-every 1 >/dev/null 2>"$TMP/log" & pid=$!
  # wait until it trains (its first step line: loading MNIST, or a slow REF=1 build, take a while),
  # then kill it at a random moment of the next ~0.3 s
  for _ in $(seq 600); do grep -q "^step " "$TMP/log" 2>/dev/null && break; kill -0 $pid 2>/dev/null || break; sleep 0.05; done
  sleep "$(printf '0.%02d' $((RANDOM % 30)))"
  kill -9 $pid 2>/dev/null && kills=$((kills + 1)); wait $pid 2>/dev/null
  [ -e "$TMP/run.ckpt" ] || continue
  started=1
  step=$("$DDPM" info --model "$TMP/run.ckpt" 2>"$TMP/err" | sed -n 's/^step: //p')
  if [ -z "$step" ]; then echo "  FAIL kill $k: the checkpoint does not load: $(cat "$TMP/err")"; fails=$((fails + 1)); break; fi
  loads=$((loads + 1))
  if [ "$step" -lt "$last" ]; then echo "  FAIL kill $k: step went back from $last to $step"; fails=$((fails + 1)); fi
  last=$step
done
"$DDPM" train --resume "$TMP/run.ckpt" "${RUN[@]}" --save-every 0 >/dev/null 2>"$TMP/err" || { echo "  FAIL final resume: $(tail -1 "$TMP/err")"; fails=$((fails + 1)); }
ls "$TMP"/run.ckpt.tmp.* >/dev/null 2>&1 && { echo "  FAIL temp files left after the resume"; fails=$((fails + 1)); }
if cmp -s "$TMP/run.ckpt" "$TMP/ref.ckpt"; then echo "  ok   $kills kills (last at step $last), $loads loadable checkpoints, resumed to step $STEPS == uninterrupted"
else echo "  FAIL the resumed run differs from the uninterrupted one"; fails=$((fails + 1)); fi
[ $started = 1 ] || { echo "  FAIL no kill left a checkpoint (the runs never started)"; fails=$((fails + 1)); }
if [ $fails = 0 ]; then echo "test_crash: all checks passed"; exit 0; fi
echo "test_crash: $fails check(s) FAILED"; exit 1
