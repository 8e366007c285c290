"""Process information, limits, clocks, scheduling, prctl and polling, checked against Linux.

Each run must print what the same source prints built for the host and exit as it does; but
for uname's machine, which names the guest's architecture (the limits, ids, clocks and memory
the fixtures print are the host's, which are the guest's).
"""

from __future__ import annotations

import platform

import pytest

from tests.conftest import run_like_native

BUILDS = [(arch, flavour) for arch in ("aarch64", "riscv64") for flavour in ("static", "dynamic")]


def _machine_line(arch: str) -> bytes:
    return f"uname=ok sysname=Linux machine={arch}\n".encode()


@pytest.mark.parametrize(("arch", "flavour"), BUILDS)
def test_process_information_limits_clocks_and_prctl(arch: str, flavour: str) -> None:
    result = run_like_native(
        arch,
        "sys_info",
        flavour,
        status=0,
        differences=((_machine_line(platform.machine()), _machine_line(arch)),),
    )
    assert result.stderr == b""


@pytest.mark.parametrize(("arch", "flavour"), BUILDS)
def test_poll_select_timeouts_and_signal_masks(arch: str, flavour: str) -> None:
    result = run_like_native(arch, "sys_poll", flavour, status=0)
    assert result.stderr == b""
