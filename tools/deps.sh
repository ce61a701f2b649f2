#!/usr/bin/env bash
# Install the Debian packages ddpm.c needs to build and test: a C compiler with OpenMP,
# make, pkg-config, zlib, stb (stb_image / stb_image_write), curl (for `make data`), and
# Fashion-MNIST (dataset-fashion-mnist: a second dataset the CLI tests train on); with MPI=1 also
# Open MPI (libopenmpi-dev, openmpi-bin: mpicc and mpirun for make MPI=1 and the MPI test); with
# TORCH=1 also PyTorch and NumPy (python3-torch, python3-numpy: the checks of test_interop.sh that
# load ddpm.c's exports into PyTorch and compare outputs, and `make bench`'s PyTorch columns).
set -u
PKGS="gcc make pkg-config zlib1g-dev libstb-dev curl ca-certificates dataset-fashion-mnist"
[ "${MPI:-}" = 1 ] && PKGS="$PKGS libopenmpi-dev openmpi-bin"
[ "${TORCH:-}" = 1 ] && PKGS="$PKGS python3-torch python3-numpy"
missing=""
for p in $PKGS; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -z "$missing" ]; then echo "deps: all present ($PKGS)"; exit 0; fi
if [ "$(id -u)" = 0 ]; then
  echo "deps: installing$missing"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y --no-install-recommends $missing || { apt-get update && apt-get install -y --no-install-recommends $missing; } || exit 1
else
  echo "deps: missing$missing; run:"
  echo "  sudo apt-get install -y$missing"
  exit 1
fi
