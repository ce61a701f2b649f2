#!/usr/bin/env bash
# run_tests.sh: run every test, go on after a failure, and end with the count.
#   bash tests/run_tests.sh TEST...   (a TEST is a binary, "BINARY:asan" for a sanitizer build,
#                                      or a quoted command line)
# A test passes when it exits 0. Lines a test prints as "SKIP <name>: <reason>" are counted and
# listed at the end (a skip is never silent). Exit status: 0 if every test passed.
set -u
passed=0; failed=0; failed_names=(); skips=()
log=$(mktemp /tmp/ddpm_test_XXXXXX); trap 'rm -f "$log"' EXIT
t_all=$(date +%s)
for t in "$@"; do
  name=$t; envs=()
  case "$t" in *:asan) t=${t%:asan}; name="$t (asan+ubsan)"; envs=(OMP_NUM_THREADS=2) ;; esac
  echo "== $name"
  t0=$(date +%s)
  env "${envs[@]}" bash -c "$t" 2>&1 | tee "$log"; rc=${PIPESTATUS[0]}
  while IFS= read -r line; do skips+=("$name: ${line#SKIP }"); done < <(grep '^SKIP ' "$log")
  if [ "$rc" = 0 ]; then passed=$((passed + 1)); echo "== ok   $name ($(( $(date +%s) - t0 )) s)"
  else failed=$((failed + 1)); failed_names+=("$name (exit $rc)"); echo "== FAIL $name (exit $rc)"; fi
done
echo
echo "== ${#skips[@]} skipped checks"
for s in "${skips[@]}"; do echo "   $s"; done
[ $failed -gt 0 ] && printf '== failed: %s\n' "${failed_names[@]}"
echo "== $passed passed, $failed failed ($(( $(date +%s) - t_all )) s)"
[ $failed = 0 ]
