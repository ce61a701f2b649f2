#!/usr/bin/env bash
# bench.sh: ddpm.c against PyTorch (Debian python3-torch) on the same configs, batch and
# threads, one after the other in one run; prints both and the ratios.
#   bash tools/bench.sh [CONFIG...]     (default: models/small.cfg models/reference.cfg)
# Env: THREADS (2), BATCH (64), STEPS (5), SCALING (1: also run ddpm.c on 1 thread and print the
# 1 -> THREADS speed-up), ISAS (1: also run the narrower GEMM variants this CPU has, DDPM_ISA=...,
# and print default/variant), LOAD (1: with a busy loop pinned to the last core, fast.cfg at batch
# 32 on THREADS threads against 1 thread, 3 alternating rounds each, medians; then the same with
# the busy loop on for 3 s and off for 3 s in turn, 150 steps, the mean step). On CPUs with
# AVX512_BF16 each config also runs with --precision bf16 (ratio to fp32). PyTorch runs with OPENBLAS_NUM_THREADS=1 and, on
# AVX-512 CPUs, OPENBLAS_CORETYPE=SkylakeX (its best setting there); on AVX2-only CPUs Haswell.
# TORCH_PY=/path/to/venv/bin/python (a current PyTorch from pip, not a dependency of ddpm.c) also
# times that PyTorch eager, under torch.compile and (on AVX512_BF16 CPUs) eager under bf16 autocast,
# and prints the ratios to each (the last against ddpm.c --precision bf16).
set -u
cd "$(dirname "$0")/.."
THREADS=${THREADS:-2}; BATCH=${BATCH:-64}; STEPS=${STEPS:-5}; SCALING=${SCALING:-1}; ISAS=${ISAS:-1}; LOAD=${LOAD:-1}
CONFIGS=("$@"); [ ${#CONFIGS[@]} = 0 ] && CONFIGS=(models/small.cfg models/reference.cfg)
if grep -qw avx512f /proc/cpuinfo; then CORE=SkylakeX; else CORE=Haswell; fi
PY=/usr/bin/python3
have_torch=1; $PY -c "import torch" 2>/dev/null || { have_torch=0; echo "bench: no PyTorch (apt-get install python3-torch): ddpm.c only"; }
TORCH_PY=${TORCH_PY:-}
if [ -n "$TORCH_PY" ] && ! "$TORCH_PY" -c "import torch" 2>/dev/null; then
  echo "bench: TORCH_PY=$TORCH_PY cannot import torch: skipped"; TORCH_PY=
fi
field() { tr " " "\n" <<< "$2" | sed -n "s/^$1=//p" | tail -1; }
rows=()
for cfg in "${CONFIGS[@]}"; do
  echo "== ddpm.c: $cfg"
  c_all=$(./ddpm bench --config "$cfg" --batch "$BATCH" --threads "$THREADS" --steps "$STEPS"); echo "$c_all"
  c_out=$(tail -1 <<< "$c_all")
  row="$(basename "$cfg" .cfg): ddpm.c train $(field train_img_s "$c_out") img/s, sample $(field sample_img_steps_s "$c_out") img-steps/s, $(field gflops "$c_out") GFLOP/s = $(awk -v e="$(field efficiency "$c_out")" 'BEGIN{printf "%.0f%%", 100*e}') of peak, RSS $(field peak_rss_mb "$c_out") MB"
  if [ "$SCALING" = 1 ] && [ "$THREADS" -gt 1 ]; then
    echo "== ddpm.c: $cfg on 1 thread"
    one_all=$(./ddpm bench --config "$cfg" --batch "$BATCH" --threads 1 --steps "$STEPS"); echo "$one_all"
    one_out=$(tail -1 <<< "$one_all")
    row="$row, 1 -> $THREADS threads $(awk -v a="$(field train_img_s "$c_out")" -v b="$(field train_img_s "$one_out")" 'BEGIN{printf "%.2fx", a/b}') (train; 1 thread $(awk -v e="$(field efficiency "$one_out")" 'BEGIN{printf "%.0f%%", 100*e}') of its peak)"
  fi
  if [ "$ISAS" = 1 ]; then
    default_isa=$(field isa "$c_out")
    for isa in $(./ddpm info --config "$cfg" | sed -n 's/^kernels: [a-z0-9]* (this CPU runs: \(.*\);.*/\1/p'); do
      [ "$isa" = "$default_isa" ] && continue
      echo "== ddpm.c: $cfg with DDPM_ISA=$isa"
      v_all=$(DDPM_ISA=$isa ./ddpm bench --config "$cfg" --batch "$BATCH" --threads "$THREADS" --steps "$STEPS"); echo "$v_all"
      v_out=$(tail -1 <<< "$v_all")
      row="$row, $default_isa/$isa $(awk -v a="$(field train_img_s "$c_out")" -v b="$(field train_img_s "$v_out")" 'BEGIN{printf "%.2fx", a/b}') train"
    done
  fi
  if grep -qw avx512_bf16 /proc/cpuinfo; then
    echo "== ddpm.c: $cfg with --precision bf16"
    b_all=$(./ddpm bench --config "$cfg" --batch "$BATCH" --threads "$THREADS" --steps "$STEPS" --precision bf16); echo "$b_all"
    b_out=$(tail -1 <<< "$b_all")
    row="$row, bf16/fp32 $(awk -v a="$(field train_img_s "$b_out")" -v b="$(field train_img_s "$c_out")" 'BEGIN{printf "%.2fx", a/b}') train"
    row="$row $(awk -v a="$(field sample_img_steps_s "$b_out")" -v b="$(field sample_img_steps_s "$c_out")" 'BEGIN{printf "%.2fx", a/b}') sample"
  fi
  if [ $have_torch = 1 ]; then
    echo "== PyTorch: $cfg (OPENBLAS_CORETYPE=$CORE OPENBLAS_NUM_THREADS=1)"
    t_all=$(OPENBLAS_CORETYPE=$CORE OPENBLAS_NUM_THREADS=1 $PY tools/bench_torch.py --config "$cfg" --batch "$BATCH" \
            --threads "$THREADS" --steps "$STEPS"); echo "$t_all"
    t_out=$(tail -1 <<< "$t_all")
    row="$row | PyTorch train $(field train_img_s "$t_out") img/s, sample $(field sample_img_steps_s "$t_out"), RSS $(field peak_rss_mb "$t_out") MB"
    row="$row | ratio train $(awk -v a="$(field train_img_s "$c_out")" -v b="$(field train_img_s "$t_out")" 'BEGIN{printf "%.2fx", a/b}')"
    row="$row, sample $(awk -v a="$(field sample_img_steps_s "$c_out")" -v b="$(field sample_img_steps_s "$t_out")" 'BEGIN{printf "%.2fx", a/b}')"
  fi
  if [ -n "$TORCH_PY" ]; then
    modes="eager compile"; grep -qw avx512_bf16 /proc/cpuinfo && modes="$modes bf16"
    ver=$("$TORCH_PY" -c "import torch; print(torch.__version__)")
    for mode in $modes; do
      case $mode in compile) flag=--compile; mine=$c_out ;; bf16) flag="--precision bf16"; mine=$b_out ;; *) flag=; mine=$c_out ;; esac
      echo "== PyTorch $ver ($TORCH_PY, $mode): $cfg"
      p_all=$("$TORCH_PY" tools/bench_torch.py --config "$cfg" --batch "$BATCH" --threads "$THREADS" --steps "$STEPS" $flag 2>&1)
      echo "$p_all"
      p_out=$(tail -1 <<< "$p_all")
      row="$row | PyTorch $ver $mode train $(field train_img_s "$p_out") img/s, sample $(field sample_img_steps_s "$p_out")"
      row="$row, ddpm.c$([ $mode = bf16 ] && echo " bf16")/it: train $(awk -v a="$(field train_img_s "$mine")" -v b="$(field train_img_s "$p_out")" 'BEGIN{printf "%.2fx", a/b}')"
      row="$row, sample $(awk -v a="$(field sample_img_steps_s "$mine")" -v b="$(field sample_img_steps_s "$p_out")" 'BEGIN{printf "%.2fx", a/b}')"
    done
  fi
  rows+=("$row")
done
if [ "$LOAD" = 1 ] && [ "$THREADS" -gt 1 ]; then
  core=$(( $(nproc) - 1 ))
  echo "== under load: a busy loop on core $core; fast.cfg, batch 32, $THREADS threads against 1, 3 rounds"
  taskset -c $core sh -c 'while :; do :; done' & busy=$!
  many=(); one=()
  for round in 1 2 3; do
    m=$(./ddpm bench --config models/fast.cfg --batch 32 --threads "$THREADS" --steps 20 | tail -1); many+=("$(field train_img_s "$m")")
    o=$(./ddpm bench --config models/fast.cfg --batch 32 --threads 1 --steps 20 | tail -1); one+=("$(field train_img_s "$o")")
    echo "   round $round: $THREADS threads $(field train_img_s "$m") img/s (ended on $(field train_threads "$m")), 1 thread $(field train_img_s "$o") img/s"
  done
  kill $busy; wait $busy 2>/dev/null
  med() { printf '%s\n' "$@" | sort -g | sed -n 2p; }
  rows+=("under load (1 core busy): fast.cfg train $THREADS threads $(med "${many[@]}") img/s, 1 thread $(med "${one[@]}") img/s (medians of 3), ratio $(awk -v a="$(med "${many[@]}")" -v b="$(med "${one[@]}")" 'BEGIN{printf "%.2fx", a/b}')")
  echo "== load coming and going: a busy loop on core $core, 3 s on, 3 s off; fast.cfg, batch 32, 150 steps, mean step, 2 rounds"
  ( trap 'kill $b 2>/dev/null; exit 0' TERM
    while :; do taskset -c $core sh -c 'while :; do :; done' & b=$!; sleep 3 & wait $!; kill $b; sleep 3 & wait $!; done ) & toggler=$!
  many=(); one=()
  for round in 1 2; do
    m=$(./ddpm bench --config models/fast.cfg --batch 32 --threads "$THREADS" --steps 150 | tail -1); many+=("$(field train_mean_img_s "$m") $(field sample_mean_img_steps_s "$m")")
    o=$(./ddpm bench --config models/fast.cfg --batch 32 --threads 1 --steps 150 | tail -1); one+=("$(field train_mean_img_s "$o") $(field sample_mean_img_steps_s "$o")")
    echo "   round $round: $THREADS threads train ${many[-1]% *} img/s, sample ${many[-1]#* } image-steps/s; 1 thread ${one[-1]% *}, ${one[-1]#* }"
  done
  kill $toggler; wait $toggler 2>/dev/null
  rows+=("load coming and going: fast.cfg $THREADS threads / 1 thread, mean of 150 steps, 2 rounds: train $(awk -v a="${many[0]% *}" -v b="${one[0]% *}" -v c="${many[1]% *}" -v d="${one[1]% *}" 'BEGIN{printf "%.2fx %.2fx", a/b, c/d}'), sample $(awk -v a="${many[0]#* }" -v b="${one[0]#* }" -v c="${many[1]#* }" -v d="${one[1]#* }" 'BEGIN{printf "%.2fx %.2fx", a/b, c/d}')")
fi
echo
echo "== summary (threads $THREADS, batch $BATCH; $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(grep -o 'avx512[a-z_0-9]*\|avx2' /proc/cpuinfo | sort -u | tr '\n' ' '))"
printf '%s\n' "${rows[@]}"
