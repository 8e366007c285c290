"""The virt board's CFI flash as QEMU's pflash_cfi01 (width=4, device-width=2): two x16 chips
side by side, every reply repeated in both 16-bit lanes; writes persist into the image."""

from __future__ import annotations

from pathlib import Path

from qemuser.system.devices.base import NullHost
from qemuser.system.devices.flash.cfi import SR_ERASE_ERROR, SR_PROGRAM_ERROR, CfiFlash
from qemuser.system.drive import BlockBackend

MiB = 1 << 20
BLOCK = 0x4_0000


def dual(command: int) -> int:
    """A command as EDK2's NorFlashDxe sends it: in both chips' lanes."""
    return command | command << 16


def flash_on(path: Path | None = None, read_only: bool = False) -> CfiFlash:
    flash = CfiFlash(base=0x0400_0000, size=64 * MiB)
    flash.attach(NullHost())
    if path is not None:
        flash.load_backend(BlockBackend(str(path), read_only=read_only))
    return flash


def test_status_is_ready_in_both_lanes_as_edk2_polls_it() -> None:
    flash = flash_on()
    flash.write(0x100, 4, dual(CfiFlash.READ_STATUS))
    assert flash.read(0x100, 4) == 0x0080_0080  # the loop at EDK2's NorFlashDxe ends
    assert flash.read(0x100, 2) == 0x0080
    assert flash.read(0x100, 8) == 0x0080_0080_0080_0080
    flash.write(0, 4, dual(CfiFlash.READ_ARRAY))
    assert flash.read(0x100, 4) == 0  # an empty bank reads zeros, as QEMU's


def test_cfi_query_counts_bus_words_and_repeats_per_chip() -> None:
    flash = flash_on()
    flash.write(0x55 * 4, 4, dual(CfiFlash.QUERY))
    assert [flash.read(4 * i, 4) for i in (0x10, 0x11, 0x12)] == [0x0051_0051, 0x0052_0052,
                                                                  0x0059_0059]  # fmt: skip
    assert flash.read(4 * 0x27, 4) & 0xFFFF == 25  # each chip: 2^25 bytes
    region = [flash.read(4 * i, 4) & 0xFF for i in range(0x2D, 0x31)]
    assert region == [0xFF, 0, 0, 2]  # 256 blocks of 128 KiB per chip
    flash.write(0, 4, dual(CfiFlash.READ_ID))  # ignored: only read-array leaves query mode
    assert flash.read(4 * 0x10, 4) == 0x0051_0051
    flash.write(0, 4, dual(CfiFlash.READ_ARRAY))
    flash.write(0, 4, dual(CfiFlash.READ_ID))
    assert (flash.read(0, 4), flash.read(4, 4)) == (0x0089_0089, 0x0018_0018)


def test_program_erase_and_buffered_write_persist_into_the_image(tmp_path: Path) -> None:
    image = tmp_path / "vars.fd"
    image.write_bytes(bytes(64 * MiB))
    flash = flash_on(image)
    flash.write(BLOCK, 4, dual(CfiFlash.ERASE))
    flash.write(BLOCK, 4, dual(CfiFlash.CONFIRM))
    assert flash.read(BLOCK, 4) == 0x0080_0080  # status until read-array
    flash.write(0, 4, dual(CfiFlash.READ_ARRAY))
    assert flash.read(BLOCK + 0x10, 4) == 0xFFFF_FFFF
    flash.write(BLOCK + 0x10, 4, dual(CfiFlash.PROGRAM))
    flash.write(BLOCK + 0x10, 4, 0x1234_5678)
    flash.write(BLOCK, 4, dual(CfiFlash.BUFFERED_PROGRAM))
    flash.write(BLOCK + 0x20, 4, dual(1))  # two words per chip follow
    flash.write(BLOCK + 0x20, 4, 0xAAAA_5555)
    flash.write(BLOCK + 0x24, 4, 0x0102_0304)
    flash.write(BLOCK + 0x20, 4, dual(CfiFlash.CONFIRM))
    flash.write(0, 4, dual(CfiFlash.READ_ARRAY))
    assert flash.read(BLOCK + 0x10, 4) == 0x1234_5678
    assert flash.read(BLOCK + 0x20, 8) == 0x0102_0304_AAAA_5555
    data = image.read_bytes()
    assert data[BLOCK : BLOCK + 0x10] == b"\xff" * 0x10
    assert data[BLOCK + 0x10 : BLOCK + 0x14] == bytes.fromhex("78563412")
    assert data[BLOCK + 0x20 : BLOCK + 0x28] == bytes.fromhex("5555aaaa04030201")
    assert flash_on(image).read(BLOCK + 0x10, 4) == 0x1234_5678  # read back at the next start


def test_a_read_only_image_reports_errors_and_stays_unchanged(tmp_path: Path) -> None:
    image = tmp_path / "code.fd"
    image.write_bytes(b"\x11" * (64 * MiB))
    flash = flash_on(image, read_only=True)
    flash.write(0, 4, dual(CfiFlash.ERASE))
    flash.write(0, 4, dual(CfiFlash.CONFIRM))
    assert flash.read(0, 4) & SR_ERASE_ERROR
    flash.write(0, 4, dual(CfiFlash.CLEAR_STATUS))
    flash.write(8, 4, dual(CfiFlash.PROGRAM))
    flash.write(8, 4, 0)
    assert flash.read(8, 4) & SR_PROGRAM_ERROR
    flash.write(0, 4, dual(CfiFlash.READ_ARRAY))
    assert flash.read(0, 4) == 0x1111_1111
    assert image.read_bytes()[:16] == b"\x11" * 16


def test_an_unknown_sequence_returns_to_read_array() -> None:
    flash = flash_on()
    flash.load_bytes(b"\x42" * 8)
    flash.write(0, 4, dual(CfiFlash.ERASE))
    flash.write(0, 4, dual(0x77))  # not a confirm
    assert flash.read(0, 4) == 0xFFFF_FFFF  # QEMU erases at the setup cycle already


def test_ctrl_a_s_commits_snapshot_writes_into_the_image(tmp_path: Path) -> None:
    import os

    from qemuser.system.console import ConsoleInput

    image = tmp_path / "disk.raw"
    image.write_bytes(bytes(4096))
    backend = BlockBackend(str(image), snapshot=True)
    backend.write(1000, b"marker")
    assert image.read_bytes()[1000:1006] == bytes(6)  # -snapshot: only the overlay has it
    read_end, write_end = os.pipe()
    console = ConsoleInput(read_end, mux=True, reply=lambda _data: None, commit=backend.commit)
    os.write(write_end, b"ab\x01sc")
    assert console.read() == b"abc"
    assert image.read_bytes()[1000:1006] == b"marker"
    assert backend.read(1000, 6) == b"marker"
    os.close(read_end)
    os.close(write_end)
