#!/usr/bin/env bash
# bench_mpi.sh: the training speed of the hybrid layouts on one machine: 1 rank x 1 thread,
# 2 ranks x 1 thread (mpirun, one core each) and 1 rank x 2 threads, on the same config and
# global batch; ROUNDS alternating rounds, the median of each; ends with a Markdown table row and
# the ratio 2 ranks x 1 thread / 1 rank x 2 threads (the target of docs/SCALING.md: >= 0.9).
#   bash tools/bench_mpi.sh [CONFIG]    (default models/small.cfg; MNIST_DIR: the MNIST gz files)
# Env: BATCH (64), STEPS (40: timed from the end of step WARM to the end of step STEPS), WARM (10),
# ROUNDS (3). Builds the MPI variant (make MPI=1, build/native-mpi/ddpm) if needed. Run it on an
# idle machine: every layout uses both cores.
set -u
cd "$(dirname "$0")/.."
CFG=${1:-models/small.cfg}; BATCH=${BATCH:-64}; STEPS=${STEPS:-40}; WARM=${WARM:-10}; ROUNDS=${ROUNDS:-3}
D=${MNIST_DIR:-data}
[ -f "$D/train-images-idx3-ubyte.gz" ] || { echo "bench_mpi: $D lacks the MNIST files: run 'make data' or set MNIST_DIR"; exit 1; }
command -v mpirun >/dev/null || { echo "bench_mpi: no mpirun (make deps MPI=1)"; exit 1; }
make --no-print-directory -j2 MPI=1 build/native-mpi/ddpm >/dev/null || exit 1
DDPM=build/native-mpi/ddpm
TMP=$(mktemp -d /tmp/ddpm_bench_mpi_XXXXXX); trap 'rm -rf "$TMP"' EXIT
MPI=(mpirun --bind-to core); [ "$(id -u)" = 0 ] && MPI+=(--allow-run-as-root)
export DDPM_FIXED_THREADS=1 # no thread tuner: the layouts as given
ARGS=(train --config "$CFG" --data "$D" --limit $((BATCH * (STEPS + 1))) --batch "$BATCH" --steps "$STEPS"
      --save-every 0 --log-every "$WARM")
# images/s between the CSV rows of step WARM and step STEPS (wall_s is column 5)
rate() { awk -F, -v w="$WARM" -v s="$STEPS" -v b="$BATCH" '$1 == w {t0 = $5} $1 == s {t1 = $5} END {printf "%.1f", (s - w) * b / (t1 - t0)}' "$1"; }
run() { # run NAME THREADS [LAUNCHER...]: one timed run, its images/s appended to TMP/NAME
  local name=$1 threads=$2; shift 2
  rm -f "$TMP/log.csv" "$TMP/x.ckpt"
  "$@" "$DDPM" "${ARGS[@]}" --threads "$threads" --log "$TMP/log.csv" --out "$TMP/x.ckpt" 2>"$TMP/err" \
    || { echo "bench_mpi: $name failed: $(tail -3 "$TMP/err")"; exit 1; }
  local r; r=$(rate "$TMP/log.csv"); echo "$r" >> "$TMP/$name"
  echo "  $name: $r img/s"
}
median() { sort -g "$TMP/$1" | awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)]}'; }
echo "bench_mpi: $CFG, batch $BATCH, steps $WARM..$STEPS timed, $ROUNDS rounds, $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')"
for r in $(seq "$ROUNDS"); do
  echo "round $r"
  run "1 rank x 1 thread" 1
  run "2 ranks x 1 thread" 1 "${MPI[@]}" -np 2 -x DDPM_FIXED_THREADS
  run "1 rank x 2 threads" 2
done
a=$(median "1 rank x 1 thread"); b=$(median "2 ranks x 1 thread"); c=$(median "1 rank x 2 threads")
echo
echo "| config | batch | 1 rank x 1 thread | 2 ranks x 1 thread | 1 rank x 2 threads | 2x1 / 1x2 |"
echo "|---|---|---|---|---|---|"
echo "| $(basename "$CFG") | $BATCH | $a img/s | $b img/s ($(awk -v a="$a" -v b="$b" 'BEGIN{printf "%.2fx", b/a}') of 1x1) | $c img/s ($(awk -v a="$a" -v c="$c" 'BEGIN{printf "%.2fx", c/a}') of 1x1) | $(awk -v b="$b" -v c="$c" 'BEGIN{printf "%.2f", b/c}') |"
