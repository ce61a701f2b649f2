#!/usr/bin/env bash
# test_layout.sh: the source tree keeps its floors. Each folder of src/ may include only from
# itself and the folders listed for it below (the data flow: core at the bottom, cli at the top);
# the plain reference layers (src/nn/ref/) use no optimised kernel. Fails naming every
# forbidden include.
set -u
cd "$(dirname "$0")/.."
declare -A ALLOW=(
  [core]="core"
  [kernels]="core kernels"
  [nn]="core kernels nn nn/ref"
  [nn/ref]="core nn"
  [model]="core nn model"
  [data]="core data"
  [diffusion]="core diffusion"
  [train]="core data diffusion model nn train"
  [eval]="core data nn train eval"
  [cli]="core data diffusion model nn kernels train eval cli"
)
bad=0; n=0
for f in $(find src -name '*.[ch]' | sort); do
  dir=$(dirname "${f#src/}")
  allowed=${ALLOW[$dir]:-}
  if [ -z "$allowed" ]; then echo "  FAIL $f: folder src/$dir has no place in the layout"; bad=$((bad + 1)); continue; fi
  while IFS= read -r inc; do
    n=$((n + 1))
    target=$(dirname "$inc")
    [ "$dir" = nn/ref ] && [ "$target" = nn/ref ] && continue
    ok=0; for a in $allowed; do [ "$target" = "$a" ] && ok=1; done
    [ $ok = 1 ] || { echo "  FAIL $f includes \"$inc\": src/$dir may use only: $allowed"; bad=$((bad + 1)); }
  done < <(sed -n 's/^#include "\([a-z_]*\/[a-z_/]*\.h\)".*/\1/p' "$f")
done
if [ $bad = 0 ]; then echo "test_layout: all checks passed ($n includes in $(find src -name '*.[ch]' | wc -l) files follow the floors)"; exit 0; fi
echo "test_layout: $bad forbidden include(s)"; exit 1
