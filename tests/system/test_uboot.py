"""Debian's U-Boot (u-boot-qemu) on both virt boards: to the prompt, commands typed on the
serial console, and `poweroff` ending the emulator."""

from __future__ import annotations

from pathlib import Path

from tests.system.debian import u_boot
from tests.system.interactive import ConsoleSession, embedded_string


def version_lines(image: Path, arch: str) -> list[str]:
    """What U-Boot's `version` prints: its banner, a blank line, the compiler and linker that
    built it (all embedded in the image itself)."""
    return [
        embedded_string(image, b"U-Boot 20"),
        "",
        embedded_string(image, f"{arch}-linux-gnu-gcc (".encode()),
        embedded_string(image, b"GNU ld ("),
    ]


def talk_to_u_boot(session: ConsoleSession, expected_version: list[str]) -> list[str]:
    """Stop autoboot, run `version` and `echo`, power off; check each answer exactly.
    Returns the console lines."""
    session.expect("Hit any key to stop autoboot:")
    session.type(" ")
    session.expect("=> ")
    session.type("version\r")
    session.expect("GNU ld")
    session.expect("=> ")
    session.type("echo hi\r")
    session.expect("=> ")
    session.type("poweroff\r")
    assert session.wait() == 0
    lines = session.lines()
    at = lines.index("=> version")
    assert lines[at + 1 : at + 5] == expected_version
    assert lines[at + 5 :] == ["=> echo hi", "hi", "=> poweroff", "poweroff ...", ""]
    assert session.stderr() == ""
    return lines


def test_aarch64_u_boot_from_flash_prompt_commands_poweroff() -> None:
    image = u_boot("qemu_arm64")
    expected_version = version_lines(image, "aarch64")
    session = ConsoleSession("aarch64", "-M", "virt", "-nographic", "-bios", str(image))
    try:
        lines = talk_to_u_boot(session, expected_version)
    finally:
        session.close()
    assert lines[2] == expected_version[0]
    # The DTB at the start of RAM; the CFI bank (QEMU's 2 x16 chips, 32 MiB as QEMU's flinfo
    # shows each bank) holds the environment. Bank 0 is plain memory, not in the tree.
    assert lines[4] == "DRAM:  128 MiB"
    assert lines[5].startswith("Core:  ")  # counts what the tree declares
    assert lines[6:8] == [
        "Flash: 32 MiB",
        "Loading Environment from Flash... *** Warning - bad CRC, using default environment",
    ]
    assert ["In:    pl011@9000000", "Out:   pl011@9000000", "Err:   pl011@9000000"] == lines[9:12]


def test_riscv64_u_boot_smode_with_default_firmware_prompt_commands_poweroff() -> None:
    image = u_boot("qemu-riscv64_smode")
    expected_version = version_lines(image, "riscv64")
    # No -bios: the default firmware's SBI runs U-Boot in S mode at 0x80200000.
    session = ConsoleSession("riscv64", "-M", "virt", "-nographic", "-kernel", str(image))
    try:
        lines = talk_to_u_boot(session, expected_version)
    finally:
        session.close()
    assert lines[2] == expected_version[0]
    assert lines[4:7] == ["CPU:   rv64imafdc", "Model: riscv-virtio,qemu", "DRAM:  128 MiB"]
    assert ["In:    serial@10000000", "Out:   serial@10000000", "Err:   serial@10000000"] == (
        lines[9:12]
    )
