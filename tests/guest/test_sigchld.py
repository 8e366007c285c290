"""SIGCHLD's siginfo, exact: si_code CLD_EXITED / CLD_KILLED / CLD_DUMPED / CLD_STOPPED /
CLD_CONTINUED, si_pid, si_uid and si_status, for a guest child (a fork) and a host child (the
guest runs /bin/sh), and SA_NOCLDSTOP's silence; each compared with the native run."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import all_builds, run_like_native

ABORT = b"qemuser: uncaught target signal 6 (Aborted) - core dumped\n"


@pytest.mark.parametrize(("arch", "flavour"), all_builds("sig_chld"))
def test_sigchld_siginfo_for_guest_and_host_children(arch: str, flavour: str) -> None:
    result = run_like_native(arch, "sig_chld", flavour, status=0, timeout=60)
    lines = result.stdout.splitlines()
    assert lines[0] == b"fork, exit 3: signo 17 CLD_EXITED status 3 pid child uid ours"
    assert b"sh, SIGCONT: signo 17 CLD_CONTINUED status 18 pid child uid ours" in lines
    assert lines[-1] == b"events 12"
    # the child that aborts is a guest too: qemu-user's message (it says "core dumped"
    # whatever RLIMIT_CORE says)
    assert result.stderr == ABORT


@pytest.mark.parametrize("arch", ["aarch64", "riscv64"])
def test_sigchld_says_cld_dumped_when_a_core_is_written(arch: str, tmp_path: Path) -> None:
    # the children allow core dumps; the kernel's core_pattern decides whether one is written
    # (in the working folder, whose files this test does not look at): native or emulated,
    # the same answer, since the guest child dumps the emulator's core as qemu-user does
    result = run_like_native(arch, "sig_chld", "static", "dump", status=0, workdir=tmp_path)
    assert len(result.stdout.splitlines()) == 2
