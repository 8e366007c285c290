"""Linux with -smp 4 on both virt boards: the kernel brings up four CPUs (PSCI on aarch64, SBI
HSM on riscv64), userland counts four, and a job pinned to each CPU with taskset runs there
(/proc/self/stat's processor field, read by a child that inherits the pinning), with busy time
on every CPU in /proc/stat."""

from __future__ import annotations

import re
import stat
from pathlib import Path

import pytest

from tests.real.trixie import FetchError, ensure_kernel, ensure_userland
from tests.system.conftest import run_system
from tests.system.debian import arm64_kernel
from tests.system.initramfs import Entry, busybox_initramfs, newc

# Each pinned job spins, then reports the CPU its child ran on; /proc/stat's per-CPU lines
# follow. Field 39 of /proc/PID/stat is the CPU the task last ran on. (/dev/null must exist:
# the shell gives background jobs it as stdin.)
JOBS = """
mount -t devtmpfs devtmpfs /dev
echo "cpus: $(grep -c '^processor' /proc/cpuinfo) nproc: $(nproc)"
for n in 0 1 2 3; do
    taskset -c $n sh -c 'i=0; while [ $i -lt 3000 ]; do i=$((i+1)); done
        echo "job $0 ran on $(cut -d " " -f 39 /proc/self/stat)"' $n > /job$n &
done
wait
cat /job0 /job1 /job2 /job3
grep '^cpu[0-9]' /proc/stat
"""
HANG_GUARD_S = 900  # a hung guest fails instead of hanging the suite, not a speed target


def _check(stdout: str) -> None:
    lines = stdout.replace("\r", "").split("\n")
    assert "cpus: 4 nproc: 4" in lines, stdout[-3000:]
    for n in range(4):
        assert f"job {n} ran on {n}" in lines, stdout[-3000:]
    busy = {}
    for line in lines:
        match = re.fullmatch(r"cpu(\d) (\d+) (\d+) (\d+) .*", line)
        if match:
            busy[int(match[1])] = sum(int(match[i]) for i in (2, 3, 4))  # user, nice, system
    assert sorted(busy) == [0, 1, 2, 3], stdout[-3000:]
    assert all(ticks > 0 for ticks in busy.values()), busy


@pytest.mark.slow
def test_arm64_linux_smp4_runs_a_job_on_every_cpu() -> None:
    init = f"""#!/bin/sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
{JOBS}
poweroff -f
"""
    initrd = busybox_initramfs("test-smp", init)
    result = run_system(
        "aarch64",
        *("-M", "virt", "-cpu", "cortex-a72", "-m", "512", "-nographic", "-smp", "4"),
        *("-kernel", str(arm64_kernel()), "-initrd", str(initrd)),
        *("-append", "console=ttyAMA0"),
        timeout=HANG_GUARD_S,
    )
    assert result.returncode == 0, result.stderr
    assert "smp: Brought up 1 node, 4 CPUs" in result.stdout
    for n in (1, 2, 3):
        assert f"CPU{n}: Booted secondary processor 0x000000000{n} [0x410fd083]" in result.stdout
    _check(result.stdout)
    assert result.stderr == ""


@pytest.mark.slow
def test_riscv64_linux_smp4_runs_a_job_on_every_hart(tmp_path: Path) -> None:
    try:
        kernel, _ = ensure_kernel()
        userland = ensure_userland()
    except FetchError as exc:
        pytest.skip(f"Debian trixie riscv64 packages not reachable: {exc}")
    init = f"""#!/bin/busybox sh
/bin/busybox --install -s /bin
mkdir -p /proc
mount -t proc proc /proc
{JOBS}
poweroff -f
"""
    directory, executable = stat.S_IFDIR | 0o755, stat.S_IFREG | 0o755
    entries = [
        Entry("bin", directory),
        Entry("bin/busybox", executable, (userland / "usr" / "bin" / "busybox").read_bytes()),
        Entry("dev", directory),
        Entry("dev/console", stat.S_IFCHR | 0o600, rdev=(5, 1)),
        Entry("init", executable, init.encode()),
    ]
    initrd = tmp_path / "initrd.cpio"
    initrd.write_bytes(newc(entries))
    result = run_system(
        "riscv64",
        *("-M", "virt", "-m", "512", "-nographic", "-no-reboot", "-smp", "4"),
        *("-kernel", str(kernel), "-initrd", str(initrd)),
        *("-append", "console=ttyS0 panic=-1"),
        timeout=HANG_GUARD_S,
    )
    assert result.returncode == 0, result.stderr
    assert "smp: Brought up 1 node, 4 CPUs" in result.stdout
    _check(result.stdout)
    assert result.stderr == ""
