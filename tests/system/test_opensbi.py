"""Debian's OpenSBI (fw_jump) in M mode on the riscv64 virt board, handing over to Debian's
S-mode U-Boot: OpenSBI's banner and platform report, then U-Boot's prompt and poweroff
(U-Boot asks OpenSBI, which writes the SiFive test device)."""

from __future__ import annotations

import re

from tests.system.debian import opensbi, u_boot
from tests.system.interactive import ConsoleSession
from tests.system.test_uboot import talk_to_u_boot, version_lines


def test_opensbi_fw_jump_then_u_boot_prompt_and_poweroff() -> None:
    firmware = opensbi("fw_jump.elf")
    image = u_boot("qemu-riscv64_smode")
    expected_version = version_lines(image, "riscv64")
    session = ConsoleSession(
        "riscv64", "-M", "virt", "-nographic", "-bios", str(firmware), "-kernel", str(image)
    )
    try:
        lines = talk_to_u_boot(session, expected_version)
    finally:
        session.close()
    assert lines[0] == ""
    assert re.fullmatch(r"OpenSBI v\d+\.\d+", lines[1])
    report = {
        key.strip(): value.strip()
        for key, _, value in (line.partition(":") for line in lines)
        if key.startswith(("Platform", "Domain0", "Boot HART", "Firmware")) and value
    }
    # What OpenSBI read from our device tree and probed from the hart.
    assert report["Platform Name"] == "riscv-virtio,qemu"
    assert report["Platform HART Count"] == "1"
    assert report["Platform IPI Device"] == "aclint-mswi"
    assert report["Platform Timer Device"] == "aclint-mtimer @ 10000000Hz"
    assert report["Platform Console Device"] == "uart8250"
    assert report["Platform Reboot Device"] == "sifive_test"
    assert report["Platform Shutdown Device"] == "sifive_test"
    assert report["Firmware Base"] == "0x80000000"
    assert report["Domain0 Next Address"] == "0x0000000080200000"
    assert report["Domain0 Next Mode"] == "S-mode"
    assert report["Boot HART Base ISA"] == "rv64imafdc"
    assert report["Boot HART ISA Extensions"] == "time"  # rdtime, as QEMU's hart has it
    assert report["Boot HART PMP Count"] == "16"
    assert report["Boot HART MIDELEG"] == "0x0000000000000222"
    assert expected_version[0] in lines
    assert "Model: riscv-virtio,qemu" in lines
