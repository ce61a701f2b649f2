#!/usr/bin/env bash
# test_mpi.sh: data-parallel training and sampling under mpirun (make MPI=1). 2 ranks give the
# parameters of 1 process within 1e-6 relative (ckpt_diff: not bit for bit, the ranks' gradients
# are summed in another order than one process sums the batch), 3 ranks split a batch of 16
# unevenly, a checkpoint of 2 ranks resumes on 1 and the other way round, a resume with the same
# rank count is byte-identical, SIGTERM to rank 1 or SIGUSR1 to mpirun stops both ranks with a
# checkpoint, and sampling on 2 ranks (also the preview grid of --sample-every) writes the files
# of 1 process byte for byte.
#   bash tests/test_mpi.sh build/native-mpi/ddpm [./ddpm]   (MNIST_DIR: the MNIST gz files)
# Without mpirun or the MPI build: a SKIP line (make deps MPI=1 installs Open MPI).
set -u
DDPM=${1:-build/native-mpi/ddpm}; PLAIN=${2:-./ddpm}
cd "$(dirname "$0")/.."
if ! command -v mpirun >/dev/null 2>&1; then echo "SKIP MPI training: no mpirun (make deps MPI=1 installs Open MPI)"; exit 0; fi
if [ ! -x "$DDPM" ]; then echo "SKIP MPI training: $DDPM not built (make MPI=1 $DDPM; needs mpicc)"; exit 0; fi
DDPM=$(readlink -f "$DDPM"); DIFF=$(dirname "$DDPM")/ckpt_diff
D=${MNIST_DIR:-data}
[ -f "$D/train-images-idx3-ubyte.gz" ] || { echo "test_mpi: FAILED: $D lacks the MNIST files: run 'make data'"; exit 1; }
TMP=$(mktemp -d /tmp/ddpm_mpi_XXXXXX); trap 'rm -rf "$TMP"' EXIT
MPI=(mpirun --oversubscribe --bind-to none); [ "$(id -u)" = 0 ] && MPI+=(--allow-run-as-root)
source tests/testlib.sh
near() { # near A B DESCRIPTION: within 1e-6 relative
  if "$DIFF" "$1" "$2" 1e-6 >"$TMP/diff" 2>&1; then pass "$3"; sed 's/^/       /' "$TMP/diff"
  else fail "$3:"; cat "$TMP/diff"; fi
}
RUN=(--data "$D" --limit 256 --threads 1 --save-every 0 --log-every 5)
NEW=(--config tests/cfg/mini28.cfg --batch 16 --seed 3 --lr 1e-3)
train() { local np=$1; shift; if [ "$np" = 0 ]; then "$DDPM" train "$@" "${RUN[@]}"; else "${MPI[@]}" -np "$np" "$DDPM" train "$@" "${RUN[@]}"; fi; }

echo "-- 10 steps of batch 16: 1 process, 2 ranks of 8 images, 3 ranks of 5, 5 and 6"
train 0 "${NEW[@]}" --steps 10 --out "$TMP/p1.ckpt" 2>"$TMP/log" || fail "1 process: $(tail -3 "$TMP/log")"
if [ -x "$PLAIN" ]; then
  "$PLAIN" train "${NEW[@]}" --steps 10 --out "$TMP/plain.ckpt" "${RUN[@]}" 2>/dev/null
  cmp -s "$TMP/p1.ckpt" "$TMP/plain.ckpt" && pass "the MPI build as 1 process == the build without MPI (byte-identical)" \
    || fail "the MPI build as 1 process differs from $PLAIN"
fi
train 2 "${NEW[@]}" --steps 10 --out "$TMP/r2.ckpt" --sample-every 10 --sample-dir "$TMP/pv" 2>"$TMP/log" || fail "2 ranks: $(tail -3 "$TMP/log")"
grep -q "2 MPI ranks, 8-8 images each" "$TMP/log" && [ "$(grep -c "^ddpm train: done" "$TMP/log")" = 1 ] \
  && pass "2 ranks: one log (rank 0's), 8 images per rank" || fail "2-rank log: $(head -c 600 "$TMP/log")"
near "$TMP/r2.ckpt" "$TMP/p1.ckpt" "2 ranks == 1 process within 1e-6 relative"
"$DDPM" sample --model "$TMP/r2.ckpt" --n 64 --rows 8 --sampler dpm++ --steps 25 --batch 64 --threads 1 --out "$TMP/pv.png" 2>/dev/null
cmp -s "$TMP/pv.png" "$TMP/pv/step_0000010.png" && pass "the preview grid sampled on 2 ranks == ddpm sample of the checkpoint" \
  || fail "2-rank preview grid differs from ddpm sample of its checkpoint"
train 3 "${NEW[@]}" --steps 10 --out "$TMP/r3.ckpt" 2>"$TMP/log" || fail "3 ranks: $(tail -3 "$TMP/log")"
near "$TMP/r3.ckpt" "$TMP/p1.ckpt" "3 ranks (5, 5, 6 images) == 1 process within 1e-6 relative"

echo "-- a class-conditional EDM model (log-normal sigmas, label drops, weighted loss): 2 ranks == 1 process"
(cat tests/cfg/mini28.cfg; printf 'objective = edm\nnum_classes = 10\np_uncond = 0.25\nmin_snr_gamma = 5\n') > "$TMP/cond.cfg"
COND=(--config "$TMP/cond.cfg" --batch 16 --seed 3 --lr 1e-3)
train 0 "${COND[@]}" --steps 10 --out "$TMP/c1.ckpt" 2>"$TMP/log" || fail "conditional, 1 process: $(tail -3 "$TMP/log")"
train 2 "${COND[@]}" --steps 10 --out "$TMP/c2.ckpt" 2>"$TMP/log" || fail "conditional, 2 ranks: $(tail -3 "$TMP/log")"
near "$TMP/c2.ckpt" "$TMP/c1.ckpt" "conditional EDM with Min-SNR weights: 2 ranks == 1 process within 1e-6 relative"
"${MPI[@]}" -np 2 "$DDPM" sample --model "$TMP/c2.ckpt" --n 20 --labels all --threads 1 --out "$TMP/cg2.png" 2>/dev/null
"$DDPM" sample --model "$TMP/c2.ckpt" --n 20 --labels all --threads 1 --out "$TMP/cg1.png" 2>/dev/null
cmp -s "$TMP/cg1.png" "$TMP/cg2.png" && pass "guided --labels all sampling on 2 ranks == 1 process (byte-identical)" \
  || fail "guided sampling on 2 ranks differs"

echo "-- resume: 2 ranks -> 2 ranks (exact), 2 ranks -> 1 process, 1 process -> 2 ranks"
train 2 "${NEW[@]}" --steps 5 --out "$TMP/h2.ckpt" 2>"$TMP/log" || fail "2 ranks, 5 steps: $(tail -3 "$TMP/log")"
cp "$TMP/h2.ckpt" "$TMP/h21.ckpt"
train 2 --resume "$TMP/h2.ckpt" --steps 10 2>"$TMP/log" || fail "2-rank resume: $(tail -3 "$TMP/log")"
cmp -s "$TMP/h2.ckpt" "$TMP/r2.ckpt" && pass "2 ranks: 5 steps + resumed to 10 == 10 steps (byte-identical)" \
  || fail "2-rank resume differs from the uninterrupted 2-rank run"
train 0 --resume "$TMP/h21.ckpt" --steps 10 2>"$TMP/log" || fail "1-process resume of a 2-rank checkpoint: $(tail -3 "$TMP/log")"
near "$TMP/h21.ckpt" "$TMP/p1.ckpt" "5 steps on 2 ranks + 5 on 1 process == 10 on 1 process"
train 0 "${NEW[@]}" --steps 5 --out "$TMP/h1.ckpt" 2>/dev/null
train 2 --resume "$TMP/h1.ckpt" --steps 10 2>"$TMP/log" || fail "2-rank resume of a 1-process checkpoint: $(tail -3 "$TMP/log")"
near "$TMP/h1.ckpt" "$TMP/p1.ckpt" "5 steps on 1 process + 5 on 2 ranks == 10 on 1 process"

echo "-- errors"
train 2 --config tests/cfg/mini28.cfg --batch 1 --steps 2 --out "$TMP/b1.ckpt" >/dev/null 2>"$TMP/log"; rc=$?
[ $rc != 0 ] && grep -q "batch 1 is smaller than the 2 MPI ranks" "$TMP/log" && pass "batch 1 on 2 ranks refused: $(grep -m1 "smaller" "$TMP/log")" \
  || fail "batch 1 on 2 ranks: exit $rc, $(head -c 300 "$TMP/log")"

echo "-- SIGTERM to rank 1 stops both ranks with a checkpoint; the resume == uninterrupted"
STEPS=150
train 2 "${NEW[@]}" --steps $STEPS --out "$TMP/u.ckpt" 2>/dev/null || fail "uninterrupted 2-rank run"
"${MPI[@]}" -np 2 "$DDPM" train "${NEW[@]}" --steps $STEPS --out "$TMP/s.ckpt" "${RUN[@]}" >/dev/null 2>"$TMP/log" & mp=$!
for _ in $(seq 400); do grep -q "^step 10/" "$TMP/log" 2>/dev/null && break; kill -0 $mp 2>/dev/null || break; sleep 0.05; done
r1=""; for p in $(pgrep -P $mp); do tr '\0' '\n' < /proc/$p/environ 2>/dev/null | grep -qx "OMPI_COMM_WORLD_RANK=1" && r1=$p; done
if [ -n "$r1" ]; then kill -TERM "$r1"; else fail "rank 1 of mpirun $mp not found"; fi
wait $mp; rc=$?
stopped=$(sed -n 's/.*interrupted by signal 15 at step \([0-9]*\).*/\1/p' "$TMP/log")
if [ -n "$stopped" ] && [ "$stopped" -lt $STEPS ] && [ -s "$TMP/s.ckpt" ]; then
  pass "rank 1 got SIGTERM: rank 0 saved at step $stopped, mpirun exit $rc"
  train 2 --resume "$TMP/s.ckpt" --steps $STEPS 2>"$TMP/log2" || fail "resume after SIGTERM: $(tail -3 "$TMP/log2")"
  cmp -s "$TMP/s.ckpt" "$TMP/u.ckpt" && pass "resumed to $STEPS == uninterrupted (byte-identical)" || fail "resume after SIGTERM differs"
else fail "SIGTERM to rank 1: exit $rc, $(tail -c 600 "$TMP/log")"; fi

echo "-- SIGUSR1 to mpirun (which forwards it) stops every rank with a checkpoint"
rm -f "$TMP/s.ckpt"
"${MPI[@]}" -np 2 "$DDPM" train "${NEW[@]}" --steps $STEPS --out "$TMP/s.ckpt" "${RUN[@]}" >/dev/null 2>"$TMP/log" & mp=$!
for _ in $(seq 400); do grep -q "^step 10/" "$TMP/log" 2>/dev/null && break; kill -0 $mp 2>/dev/null || break; sleep 0.05; done
kill -USR1 $mp; wait $mp; rc=$?
stopped=$(sed -n 's/.*interrupted by signal 10 at step \([0-9]*\).*/\1/p' "$TMP/log")
[ $rc = 130 ] && [ -n "$stopped" ] && [ -s "$TMP/s.ckpt" ] && pass "saved at step $stopped, mpirun exit 130" \
  || fail "SIGUSR1 to mpirun: exit $rc, $(tail -c 400 "$TMP/log")"

echo "-- sampling: 2 ranks write the files of 1 process"
S=(sample --model "$TMP/p1.ckpt" --n 6 --rows 2 --sampler ddim --steps 10 --eta 1 --batch 2 --strip-n 4 --threads 1)
"$DDPM" "${S[@]}" --out "$TMP/g1.png" --idx "$TMP/g1.idx" --strip "$TMP/s1.png" 2>"$TMP/log" || fail "1-process sample: $(tail -2 "$TMP/log")"
"${MPI[@]}" -np 2 "$DDPM" "${S[@]}" --out "$TMP/g2.png" --idx "$TMP/g2.idx" --strip "$TMP/s2.png" 2>"$TMP/log" || fail "2-rank sample: $(tail -2 "$TMP/log")"
cmp -s "$TMP/g1.png" "$TMP/g2.png" && cmp -s "$TMP/g1.idx" "$TMP/g2.idx" && cmp -s "$TMP/s1.png" "$TMP/s2.png" \
  && pass "6 images (3 per rank) and a 4-row strip across both ranks: grid, IDX and strip byte-identical" || fail "2-rank samples differ"

if [ $fails = 0 ]; then echo "test_mpi: all checks passed"; exit 0; fi
echo "test_mpi: $fails check(s) FAILED"; exit 1
