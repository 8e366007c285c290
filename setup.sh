#!/usr/bin/env bash
# Sets up everything qemuser needs on a Debian 12 machine (run as root, or with sudo available):
# Debian's cross compilers (to build the guest test programs), Debian's qemu-user (a reference
# for tests and benchmarks only), a Python venv with qemuser installed, and the built fixtures.
# Safe to run again: each step is skipped when already done.
set -euo pipefail
cd "$(dirname "$0")"

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

APT_PACKAGES=(
    gcc-aarch64-linux-gnu g++-aarch64-linux-gnu libc6-dev-arm64-cross
    gcc-riscv64-linux-gnu g++-riscv64-linux-gnu libc6-dev-riscv64-cross
    qemu-user make python3-venv ca-certificates
)
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "setup: installing ${missing[*]}" >&2
    $SUDO apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q "${missing[@]}" >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
if ! .venv/bin/python -c 'import qemuser, unicorn, elftools, capstone, click, pytest' 2>/dev/null \
    || [ pyproject.toml -nt .venv/.qemuser-installed ]; then
    .venv/bin/pip install -q --upgrade pip >/dev/null 2>&1 || true
    .venv/bin/pip install -q -e '.[test]'
    touch .venv/.qemuser-installed
fi

make -s -C tests/fixtures -j"$(nproc)"
# Bare-metal guests for system mode (their own Makefile: other compiler flags, no libc).
if [ -f tests/fixtures/system/Makefile ]; then make -s -C tests/fixtures/system -j"$(nproc)"; fi
