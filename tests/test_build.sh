#!/usr/bin/env bash
# test_build.sh: the Makefile follows the conventions of C builds: CC, CPPFLAGS, CFLAGS, LDFLAGS
# and LDLIBS from the command line reach the compiler and the linker without dropping the flags
# the build needs; ARCH= picks the CPU level; REF=1 and MPI=1 (mpicc) build apart; install honours PREFIX and
# DESTDIR. Dry runs (make -n) where a build is not needed.
set -u
cd "$(dirname "$0")/.."
# the dry runs below must not inherit the variables of the make that runs the tests; the install
# (a real run) keeps its variant, so that it does not relink ./ddpm as another one
variant=()
for v in REF ARCH PORTABLE NO_OMP MPI; do [ -n "${!v:-}" ] && variant+=("$v=${!v}"); done
unset MAKEFLAGS MAKEOVERRIDES MFLAGS REF ARCH PORTABLE NO_OMP MPI MPICC CC CPPFLAGS CFLAGS LDFLAGS LDLIBS
TMP=$(mktemp -d /tmp/ddpm_build_XXXXXX); trap 'rm -rf "$TMP"' EXIT
source tests/testlib.sh
dry() { make -B -n "$@" ddpm 2>&1; }

out=$(dry CFLAGS=-O2)
grep -q -- "-O2" <<< "$out" && grep -q -- "-Isrc" <<< "$out" && ! grep -q -- "-O3" <<< "$out" \
  && pass "make CFLAGS=-O2: -O2 replaces -O3, -Isrc kept" || fail "make CFLAGS=-O2: $(grep -m1 -- ' -c ' <<< "$out")"
out=$(CFLAGS=-O1 make -B -n ddpm 2>&1)
grep -q -- "-O1" <<< "$out" && pass "CFLAGS from the environment" || fail "CFLAGS from the environment ignored"
out=$(dry CPPFLAGS=-DZZ_TEST=1)
grep -q -- "-DZZ_TEST=1" <<< "$out" && grep -q -- "-Isrc" <<< "$out" && pass "CPPFLAGS reach the compiler" || fail "CPPFLAGS"
out=$(dry LDFLAGS=-Wl,--as-needed LDLIBS=-lrt)
link=$(grep -- "-o ddpm" <<< "$out")
grep -q -- "-Wl,--as-needed" <<< "$link" && grep -q -- "-lrt" <<< "$link" && grep -q -- "-lz" <<< "$link" \
  && pass "LDFLAGS and LDLIBS reach the link (with -lz kept)" || fail "LDFLAGS/LDLIBS: $link"
out=$(dry CC=my-cc)
grep -q "^my-cc " <<< "$out" && pass "CC=my-cc compiles and links" || fail "CC ignored"
out=$(dry ARCH=x86-64-v2)
grep -q -- "-march=x86-64-v2" <<< "$out" && grep -q "build/x86-64-v2/" <<< "$out" \
  && pass "ARCH=x86-64-v2: -march=x86-64-v2 in build/x86-64-v2" || fail "ARCH"
out=$(dry PORTABLE=1)
! grep -q -- "-march" <<< "$out" && grep -q "build/portable/" <<< "$out" && pass "PORTABLE=1: no -march" || fail "PORTABLE=1"
out=$(dry REF=1)
grep -q -- "-DDDPM_REF" <<< "$out" && grep -q "build/native-ref/" <<< "$out" && pass "REF=1: -DDDPM_REF in build/native-ref" || fail "REF=1"
out=$(dry MPI=1)
grep -q "^mpicc .*-DDDPM_MPI" <<< "$out" && grep -q "build/native-mpi/" <<< "$out" && grep -q "^mpicc .*-o ddpm" <<< "$out" \
  && pass "MPI=1: mpicc, -DDDPM_MPI in build/native-mpi" || fail "MPI=1: $(grep -m1 -- ' -c ' <<< "$out")"
out=$(dry)
! grep -q -- "-DDDPM_MPI\|mpicc" <<< "$out" && pass "the default build has no MPI" || fail "MPI in the default build"

if [ -x ./ddpm ]; then
  make --no-print-directory "${variant[@]}" install DESTDIR="$TMP/stage" PREFIX=/opt/ddpm >/dev/null 2>"$TMP/err" || fail "install: $(cat "$TMP/err")"
  [ -x "$TMP/stage/opt/ddpm/bin/ddpm" ] && [ -f "$TMP/stage/opt/ddpm/share/ddpm/models/judge.bin" ] \
    && [ -f "$TMP/stage/opt/ddpm/share/ddpm/models/small.cfg" ] && "$TMP/stage/opt/ddpm/bin/ddpm" --help >/dev/null \
    && pass "make install DESTDIR=... PREFIX=/opt/ddpm: bin/ddpm runs, share/ddpm/models has the judge and configs" \
    || fail "install layout: $(find "$TMP/stage" | head -20 | tr '\n' ' ')"
else fail "./ddpm not built (make ddpm first)"; fi

if [ $fails = 0 ]; then echo "test_build: all checks passed"; exit 0; fi
echo "test_build: $fails check(s) FAILED"; exit 1
