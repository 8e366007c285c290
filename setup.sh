#!/usr/bin/env bash
# Sets up everything qemuser needs on a Debian 12 machine (run as root, or with sudo available):
# Debian's cross compilers (to build the guest test programs), Debian's qemu-user (a reference
# for tests and benchmarks only), gdb-multiarch (the debugger the -g tests drive), a Python venv
# with qemuser installed, the built fixtures, and a root of real Debian arm64 packages
# (busybox-static, python3.11) in cache/ for tests/real.
# Safe to run again: each step is skipped when already done.
set -euo pipefail
cd "$(dirname "$0")"

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "setup: run as root (or install sudo)" >&2; exit 1; }
    SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive

APT_PACKAGES=(
    gcc-aarch64-linux-gnu g++-aarch64-linux-gnu libc6-dev-arm64-cross
    gcc-riscv64-linux-gnu g++-riscv64-linux-gnu libc6-dev-riscv64-cross
    qemu-user make python3 python3-venv ca-certificates time
    gcc libc6-dev util-linux gdb-multiarch
    # system mode: -netdev user's TCP/IP stack (the library QEMU uses); QEMU's image tools, the
    # references the block-layer tests compare qemuser-img/-io/-nbd with
    libslirp0 qemu-utils
    # UEFI boots (tests/system/test_uefi.py, test_edk2_doc_example.py): Debian's EDK2 for arm64,
    # and what builds the GPT + FAT EFI system partition in a plain file without root
    # (sfdisk from fdisk, mtools); the host's ssh client logs in to the guests
    qemu-efi-aarch64 fdisk mtools openssh-client
    # foreign containers and chroots (tests/containers): podman with runc, debootstrap; and what
    # `qemuser-binfmt build` links its self-contained interpreter from (Debian's static
    # libpython3.11, libffi, zlib, expat; dpkg-dev for `apt-get source`)
    podman runc uidmap slirp4netns fuse-overlayfs debootstrap
    python3.11 libpython3.11-dev libffi-dev zlib1g-dev libexpat1-dev dpkg-dev
)
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
# tests/real downloads arm64 packages: apt must know the architecture (once per machine).
need_update=0
if ! dpkg --print-foreign-architectures | grep -qx arm64; then
    echo "setup: dpkg --add-architecture arm64" >&2
    $SUDO dpkg --add-architecture arm64
    need_update=1
fi
if [ ${#missing[@]} -gt 0 ] || [ "$need_update" -eq 1 ] \
    || ! apt-cache show busybox-static:arm64 >/dev/null 2>&1; then
    echo "setup: apt-get update" >&2
    $SUDO apt-get update -q >/dev/null
fi
if [ ${#missing[@]} -gt 0 ]; then
    echo "setup: installing ${missing[*]}" >&2
    $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
if ! .venv/bin/python -c 'import qemuser, unicorn, elftools, capstone, click, pytest, xdist' \
        2>/dev/null || [ pyproject.toml -nt .venv/.qemuser-installed ]; then
    .venv/bin/pip install -q --upgrade pip >/dev/null 2>&1 || true
    .venv/bin/pip install -q -e '.[test]'
    touch .venv/.qemuser-installed
fi
# Byte-compile qemuser now: where PYTHONDONTWRITEBYTECODE is set, every start would otherwise
# compile our modules again (~2x the start-up of a small program). Cheap when already current.
.venv/bin/python -m compileall -q qemuser

make -s -C tests/fixtures -j"$(nproc)"
# Bare-metal guests for system mode (their own Makefile: other compiler flags, no libc).
if [ -f tests/fixtures/system/Makefile ]; then make -s -C tests/fixtures/system -j"$(nproc)"; fi

# Real Debian arm64 programs for tests/real and the benchmarks (apt-get download + dpkg-deb -x).
.venv/bin/python tests/real/debroot.py >/dev/null
# Debian trixie riscv64 packages (Debian 12 has no riscv64): the kernel for the riscv64 Linux
# boots and a userland for the riscv64 real-program tests, through an apt configuration of their
# own under /tmp (the machine's apt sources are not touched).
.venv/bin/python tests/real/trixie.py kernel >/dev/null
.venv/bin/python tests/real/trixie.py root >/dev/null
# The self-contained binfmt_misc interpreter (static CPython + unicorn + qemuser, built once and
# cached in /var/cache/qemuser): built now so that the first `qemuser-binfmt install` or test
# does not pay for it. Needs root (the cache is system-wide).
if [ "$(id -u)" -eq 0 ]; then .venv/bin/qemuser-binfmt build >/dev/null; fi
