"""Pointer authentication on aarch64's max model: advertised (HWCAP_PACA/PACG) because it
works: PACIA signs, AUTIA checks, XPACI strips, PACGA, keys random at each exec and kept by a
forked child, new ones from prctl(PR_PAC_RESET_KEYS) (EINVAL before). The lines are those
qemu-aarch64 (Debian's 7.2, -cpu max) prints."""

from __future__ import annotations

import pytest

from tests.conftest import fixture_path, run_guest

EXPECTED = [
    b"paca 1 pacg 1",
    b"pacia changes the pointer: 1",
    b"same bits below the tag: 1",
    b"autia gives it back: 1",
    b"autia, other modifier: 1",
    b"autia, corrupted: 1",
    b"xpaci strips: 1",
    b"pacga: low half zero 1, high half set 1",
    b"a forked child has the same keys: 1",
    b"reset APIA: 0, new signature 1, old one fails 1, pacga kept 1",  # PR_PAC_RESET_KEYS
    b"reset EINVAL: mask 1, arg3 1",
]


@pytest.mark.parametrize("flavour", ["static", "dynamic", "static-pie"])
def test_pointer_authentication_works(flavour: str) -> None:
    result = run_guest("aarch64", fixture_path("aarch64", "pauth", flavour))
    assert result.stdout.splitlines() == EXPECTED
    assert (result.returncode, result.stderr) == (0, b"")


def test_keys_are_new_at_every_exec() -> None:
    program = fixture_path("aarch64", "pauth", "dynamic")
    signed = {run_guest("aarch64", program, "show").stdout for _ in range(3)}
    assert len(signed) == 3, signed


def test_a_core_without_pauth_advertises_none() -> None:
    result = run_guest(
        "aarch64", fixture_path("aarch64", "pauth", "static"), options=("-cpu", "cortex-a72")
    )
    assert (result.returncode, result.stdout) == (0, b"paca 0 pacg 0\n")
