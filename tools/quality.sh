#!/usr/bin/env bash
# quality.sh: the sample-quality rows of the README table for one checkpoint, as markdown.
#   bash tools/quality.sh CKPT [ROWS...]
# ROWS (default: dpm50 heun25 ddim50 ddpm_post):
#   dpm50 / dpm25 / dpm15  DPM++ 2M, 50 / 25 / 15 steps, clipped x0, EMA weights, n = N (default 1000)
#   heun25             Heun (EDM), 25 steps = 49 network evaluations, clipped, EMA, n = N
#   noclip50           DPM++ 2M 50 without clipping, EMA, n = N
#   raw50              DPM++ 2M 50, clipped, raw weights (--no-ema), n = N
#   ddim50 / ddim100   DDIM 50 / 100 steps, clipped, EMA, n = N
#   ddpm_beta          DDPM 1000 steps, sigma^2 = beta, clipped, EMA, n = NDDPM (default 200)
#   ddpm_post          DDPM 1000 steps, posterior sigma, clipped, EMA, n = NDDPM
#   cond_gW            class-conditional models: --labels all (every class equally often), guidance W,
#                      DPM++ 2M at 50 evaluations (25 steps; 50 for W = 1), n = N: also the share of
#                      samples judged as their requested class
# Environment: N, NDDPM, THREADS (default: all cores), DATA (default data), DDPM (default ./ddpm).
# Each row is one 'ddpm eval' command, printed with its figures; FLD depends on n, so every row
# carries the real-data reference at the same n.
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 1 ] || { echo "usage: bash tools/quality.sh CKPT [ROWS...]" >&2; exit 2; }
CKPT=$1; shift
ROWS=("$@")
[ ${#ROWS[@]} -gt 0 ] || ROWS=(dpm50 heun25 ddim50 ddpm_post)
N=${N:-1000}
NDDPM=${NDDPM:-200}
THREADS=${THREADS:-$(nproc)}
DATA=${DATA:-data}
DDPM=${DDPM:-./ddpm}
[ -f "$CKPT" ] || { echo "quality.sh: $CKPT: no such checkpoint" >&2; exit 1; }

echo "| sampler | weights | n | FLD | IS | p >= 0.9 | class match | real FLD | real IS | sampling time |"
echo "|---|---|---|---|---|---|---|---|---|---|"
for row in "${ROWS[@]}"; do
  case $row in
    dpm50|dpm25|dpm15) k=${row#dpm}; desc="DPM++ 2M $k, clip"; w=EMA; n=$N; flags=(--sampler dpm++ --steps "$k") ;;
    heun25)    desc="Heun 25 (49 evaluations), clip"; w=EMA; n=$N; flags=(--sampler heun --steps 25) ;;
    noclip50)  desc="DPM++ 2M 50, no clip"; w=EMA; n=$N; flags=(--sampler dpm++ --steps 50 --no-clip) ;;
    raw50)     desc="DPM++ 2M 50, clip"; w=raw; n=$N; flags=(--sampler dpm++ --steps 50 --no-ema) ;;
    cond_g*)   g=${row#cond_g}; desc="DPM++ 2M, all classes, guidance $g"; w=EMA; n=$N; flags=(--labels all --guidance "$g") ;;
    ddim50)    desc="DDIM 50, clip";  w=EMA; n=$N;     flags=(--sampler ddim --steps 50 --clip) ;;
    ddim100)   desc="DDIM 100, clip"; w=EMA; n=$N;     flags=(--sampler ddim --steps 100 --clip) ;;
    ddpm_beta) desc="DDPM 1000, sigma^2 = beta, clip"; w=EMA; n=$NDDPM; flags=(--sampler ddpm --sigma beta --clip) ;;
    ddpm_post) desc="DDPM 1000, posterior sigma, clip"; w=EMA; n=$NDDPM; flags=(--sampler ddpm --sigma posterior --clip) ;;
    *) echo "quality.sh: unknown row '$row'" >&2; exit 2 ;;
  esac
  t0=$(date +%s)
  line=$("$DDPM" eval --model "$CKPT" --data "$DATA" --threads "$THREADS" --n "$n" "${flags[@]}" 2>/dev/null | tail -1)
  t1=$(date +%s)
  get() { sed -n "s/.*\b$1=\([^ ]*\).*/\1/p" <<<"$line"; }
  fld=$(get fld); is=$(get is); conf=$(get confident); rfld=$(get real_fld); ris=$(get real_is); lm=$(get label_match)
  [ -n "$fld" ] || { echo "quality.sh: eval failed for row $row: $line" >&2; exit 1; }
  match=-; [ -n "$lm" ] && match=$(awk -v c="$lm" 'BEGIN{printf "%.1f%%", 100*c}')
  printf '| %s | %s | %s | %.1f | %.2f | %.1f%% | %s | %.1f | %.2f | %d s |\n' "$desc" "$w" "$n" "$fld" "$is" \
    "$(awk -v c="$conf" 'BEGIN{print 100*c}')" "$match" "$rfld" "$ris" $((t1 - t0))
  echo "    ddpm eval --model $CKPT --n $n ${flags[*]}" >&2
done
