"""SIGBUS as Linux delivers it: BUS_ADRERR with si_addr for a file mapping's pages past
end-of-file (shared and private; the emulator must not die of the host's SIGBUS, nor read
zeros), EFAULT when a system call is handed them, the page back once the file grows; and
BUS_ADRALN for misaligned exclusive loads (ldxr, lr.w/lr.d) and, on aarch64, a branch to a
misaligned pc (not SIGILL)."""

from __future__ import annotations

import pytest

from tests.conftest import ARCHES, all_builds, fixture_path, run_guest, run_like_native


@pytest.mark.parametrize(("arch", "flavour"), all_builds("sig_bus"))
def test_file_mapping_past_end_of_file_is_sigbus(arch: str, flavour: str) -> None:
    result = run_like_native(arch, "sig_bus", flavour, status=0)
    assert b"shared next page: +4120: signal 7 code 2 addr +4120\n" in result.stdout
    assert b"private next page: +4112: signal 7 code 2 addr +4112\n" in result.stdout
    assert result.stderr == b""


ALIGNMENT = [
    b"SIGBUS=7 BUS_ADRALN=1",
    b"aligned exclusive load: signal 0 code 0 addr exact",
    b"misaligned exclusive word load: signal 7 code 1 addr exact",
    b"misaligned exclusive doubleword load: signal 7 code 1 addr exact",
]


@pytest.mark.parametrize("arch", ARCHES)
def test_misaligned_exclusive_load_and_pc_are_sigbus_adraln(arch: str) -> None:
    # as Linux and qemu-user (qemu-aarch64 / qemu-riscv64 print these very lines)
    result = run_guest(arch, fixture_path(arch, "sig_align"))
    expected = ALIGNMENT.copy()
    if arch == "aarch64":
        expected.append(b"branch to a misaligned pc: signal 7 code 1 addr exact")
    assert result.stdout.splitlines() == [*expected, b"done"]
    assert (result.returncode, result.stderr) == (0, b"")
