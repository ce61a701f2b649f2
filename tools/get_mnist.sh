#!/usr/bin/env bash
# get_mnist.sh [DEST_DIR]: put the four MNIST .gz files in DEST_DIR (default data/), MD5-verified.
#   1. a file already in DEST_DIR with the right MD5 is kept;
#   2. else it is copied from $MNIST_DIR, if set and holding it with the right MD5;
#   3. else it is downloaded with curl (or wget), trying each mirror in turn.
# $MNIST_MIRRORS (space-separated URL prefixes) replaces the default mirror list ("" = no downloads).
# New files go to a temp name and are renamed only when the MD5 matches, so a failed or corrupt
# download never leaves a partial file. Exit status 0 only if all four files are in place.
set -u

DEST="${1:-data}"
FILES="train-images-idx3-ubyte.gz train-labels-idx1-ubyte.gz t10k-images-idx3-ubyte.gz t10k-labels-idx1-ubyte.gz"
DEFAULT_MIRRORS="https://ossci-datasets.s3.amazonaws.com/mnist/
https://storage.googleapis.com/cvdf-datasets/mnist/
https://raw.githubusercontent.com/fgnt/mnist/master/
http://yann.lecun.com/exdb/mnist/
https://web.archive.org/web/2022id_/http://yann.lecun.com/exdb/mnist/"
MIRRORS="${MNIST_MIRRORS-$DEFAULT_MIRRORS}"

expected_md5() {
  case "$1" in
    train-images-idx3-ubyte.gz) echo f68b3c2dcbeaaa9fbdd348bbdeb94873 ;;
    train-labels-idx1-ubyte.gz) echo d53e105ee54ea40749a09fcbcd1e9432 ;;
    t10k-images-idx3-ubyte.gz)  echo 9fb629c4189551a2d022fa330f9573f3 ;;
    t10k-labels-idx1-ubyte.gz)  echo ec29112dd5afa0611ce80d1b7f02629c ;;
  esac
}

md5_of() {  # md5 of a file, or "" if unreadable
  if command -v md5sum >/dev/null 2>&1; then md5sum "$1" 2>/dev/null | cut -d' ' -f1
  elif command -v md5 >/dev/null 2>&1; then md5 -q "$1" 2>/dev/null
  else echo "get_mnist: need md5sum (coreutils) or md5" >&2; exit 2; fi
}

fetch() {  # fetch URL OUT: download with timeouts and retries; non-zero on any failure
  if command -v curl >/dev/null 2>&1; then
    curl --fail --silent --show-error --location --connect-timeout 15 --max-time 600 \
         --speed-limit 1024 --speed-time 60 --retry 2 --retry-delay 2 -o "$2" "$1"
  elif command -v wget >/dev/null 2>&1; then
    wget -q --timeout=30 --tries=3 -O "$2" "$1"
  else
    echo "get_mnist: need curl or wget to download" >&2; return 1
  fi
}

mkdir -p "$DEST" || { echo "get_mnist: cannot create $DEST" >&2; exit 1; }
TMP=""
trap 'if [ -n "$TMP" ]; then rm -f "$TMP"; fi' EXIT
trap 'exit 130' INT TERM

failed=""
for f in $FILES; do
  want=$(expected_md5 "$f")
  out="$DEST/$f"
  if [ -f "$out" ] && [ "$(md5_of "$out")" = "$want" ]; then
    echo "get_mnist: $out: ok (already present)"
    continue
  fi
  stale=0
  if [ -e "$out" ]; then stale=1; echo "get_mnist: $out: wrong MD5, replacing it" >&2; fi
  TMP="$DEST/.$f.$$.tmp"
  done_=0
  # 2. local copy
  if [ -n "${MNIST_DIR:-}" ] && [ -f "$MNIST_DIR/$f" ]; then
    if cp "$MNIST_DIR/$f" "$TMP" 2>/dev/null && [ "$(md5_of "$TMP")" = "$want" ]; then
      mv -f "$TMP" "$out" && done_=1 && echo "get_mnist: $out: copied from $MNIST_DIR"
    else
      echo "get_mnist: $MNIST_DIR/$f: unreadable or wrong MD5 (want $want), not using it" >&2
    fi
    rm -f "$TMP"
  fi
  # 3. mirrors
  if [ "$done_" = 0 ]; then
    for m in $MIRRORS; do
      url="${m%/}/$f"
      echo "get_mnist: downloading $url"
      if fetch "$url" "$TMP"; then
        got=$(md5_of "$TMP")
        if [ "$got" = "$want" ]; then
          mv -f "$TMP" "$out" && done_=1 && echo "get_mnist: $out: ok (MD5 $want)"
        else
          echo "get_mnist: $url: MD5 mismatch (got ${got:-none}, want $want), trying next mirror" >&2
        fi
      else
        echo "get_mnist: $url: download failed, trying next mirror" >&2
      fi
      rm -f "$TMP"
      [ "$done_" = 1 ] && break
    done
  fi
  TMP=""
  if [ "$done_" = 0 ]; then
    # a wrong-MD5 file must not stay where the loader would read it
    if [ "$stale" = 1 ]; then rm -f "$out"; echo "get_mnist: removed $out (wrong MD5)" >&2; fi
    mirrors_1line=$(echo $MIRRORS)
    echo "get_mnist: ERROR: could not get $f (no valid copy in \$MNIST_DIR=${MNIST_DIR:-<unset>}; all mirrors failed: ${mirrors_1line:-<none>})" >&2
    failed="$failed $f"
  fi
done

if [ -n "$failed" ]; then
  echo "get_mnist: FAILED:$failed (nothing partial was left in $DEST)" >&2
  exit 1
fi
echo "get_mnist: all 4 MNIST files in $DEST, MD5-verified"
