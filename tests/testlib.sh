# testlib.sh: the checks shared by the shell tests (source it after setting TMP).
#   pass MSG / fail MSG                      one result line; fail counts into $fails
#   expect_rc WANT DESCRIPTION CMD...        the command's exit status is WANT
#   expect_err PATTERN DESCRIPTION CMD...    non-zero exit and exactly one stderr line, matching PATTERN
fails=0
pass() { echo "  ok   $1"; }
fail() { echo "  FAIL $1"; fails=$((fails + 1)); }
expect_rc() {
  local want=$1 what=$2; shift 2
  "$@" >"$TMP/out" 2>"$TMP/err"; local rc=$?
  if [ "$rc" = "$want" ]; then pass "$what (exit $rc)"; else fail "$what: exit $rc, want $want; stderr: $(head -c 300 "$TMP/err")"; fi
}
expect_err() {
  local pat=$1 what=$2; shift 2
  "$@" >"$TMP/out" 2>"$TMP/err"; local rc=$?
  if [ "$rc" != 0 ] && grep -q -- "$pat" "$TMP/err" && [ "$(grep -c . "$TMP/err")" = 1 ] && ! grep -qi "sanitizer\|segmentation" "$TMP/err"; then
    pass "$what: $(cat "$TMP/err")"
  else fail "$what: exit $rc, stderr: $(head -c 400 "$TMP/err")"; fi
}
