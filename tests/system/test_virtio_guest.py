"""virtio-mmio end to end: our bare-metal driver (tests/fixtures/system/virtio-blk.c) finds the
block device among the board's slots, reads and writes a disk image this test creates; and the
-drive / -blockdev / -device command line with QEMU's errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.system.conftest import fixture, run_system
from tests.system.debian import u_boot
from tests.system.interactive import ConsoleSession

SLOTS = {"aarch64": (32, "0x0a000000"), "riscv64": (8, "0x10001000")}
SECTOR = 512


def make_disk(path: Path, sectors: int = 16) -> bytes:
    image = bytearray(sectors * SECTOR)
    image[0:23] = b"sector zero says hello\n"
    image[SECTOR : SECTOR + 20] = b"original sector one\n"
    for n in range(2, sectors):
        image[n * SECTOR : (n + 1) * SECTOR] = bytes([n]) * SECTOR
    path.write_bytes(bytes(image))
    return bytes(image)


def expected_lines(arch: str, read_only: bool, serial: str) -> list[str]:
    count, base = SLOTS[arch]
    irq = 48 + count - 2 if arch == "aarch64" else 1 + count - 2
    write_status = 1 if read_only else 0
    readback = "original sector one" if read_only else f"written by the {arch} guest"
    return [
        f"virtio: probing {count} slots at {base}",
        # The first -device takes the highest slot: rng, then blk below it.
        f"slot {count - 2}: device 2 version 2 vendor 0x554d4551",
        f"slot {count - 1}: device 4 version 2 vendor 0x554d4551",
        f"empty slots: {count - 2}",
        f"blk: queue max 1024, read-only {int(read_only)}",
        "blk: capacity 16 sectors",
        "blk: read sector 0 status 0 used len 513: sector zero says hello",
        # The slot's line is pending at the board's interrupt controller (GIC, PLIC) until
        # the driver acknowledges it (checked on the GIC only: see the fixture).
        "blk: interrupt status 1 line 1, after ack 0" + (" line 0" if arch == "aarch64" else ""),
        f"blk: write sector 1 status {write_status}",
        f"blk: read back sector 1 status 0: {readback}",
        "blk: flush status 0",
        "blk: read past end status 1",
        f"blk: id status 0: {serial}",
        # Interrupt-driven: the guest's own handler (vector table / mtvec) claims the line at
        # the GIC (id 48 + slot) or the PLIC (source 1 + slot).
        f"blk: irq {irq} (expected {irq}) interrupt status 1, status 0: sector zero says hello",
    ]


@pytest.mark.parametrize("arch", ["aarch64", "riscv64"])
def test_guest_reads_and_writes_a_drive(arch: str, tmp_path: Path) -> None:
    elf = fixture(f"virtio-blk-{arch}.elf")
    disk = tmp_path / "disk.img"
    before = make_disk(disk)
    result = run_system(
        arch,
        *("-M", "virt", "-nographic", "-bios", "none", "-kernel", str(elf)),
        *("-global", "virtio-mmio.force-legacy=false"),  # as QEMU needs it for version 2
        *("-device", "virtio-rng-device"),
        *("-drive", f"file={disk},format=raw,if=none,id=d0"),
        *("-device", "virtio-blk-device,drive=d0,serial=QS-0001"),
    )
    assert result.stdout.splitlines() == expected_lines(arch, read_only=False, serial="QS-0001")
    assert (result.returncode, result.stderr) == (0, "")
    after = disk.read_bytes()
    written = f"written by the {arch} guest\n".encode()
    assert after[SECTOR : 2 * SECTOR] == written.ljust(SECTOR, b".")
    assert after[:SECTOR] == before[:SECTOR] and after[2 * SECTOR :] == before[2 * SECTOR :]


def test_blockdev_read_only_refuses_the_write(tmp_path: Path) -> None:
    elf = fixture("virtio-blk-aarch64.elf")
    disk = tmp_path / "disk.img"
    before = make_disk(disk)
    result = run_system(
        "aarch64",
        *("-M", "virt", "-nographic", "-kernel", str(elf), "-device", "virtio-rng-device"),
        *("-blockdev", f"driver=file,filename={disk},node-name=f0,read-only=on"),
        *("-blockdev", "driver=raw,file=f0,node-name=r0,read-only=on"),
        *("-device", "virtio-blk-device,drive=r0"),
    )
    assert result.stdout.splitlines() == expected_lines("aarch64", read_only=True, serial="")
    assert result.returncode == 0
    assert disk.read_bytes() == before


def test_drive_format_probe_warning(tmp_path: Path) -> None:
    # A -drive without format= is probed (raw here), with QEMU's warning. (if=virtio, the
    # default interface, is a virtio-blk-pci on the virt boards, as QEMU's: this bare-metal
    # guest drives virtio-mmio, so the drive goes to a virtio-blk-device.)
    elf = fixture("virtio-blk-riscv64.elf")
    disk = tmp_path / "disk.img"
    make_disk(disk)
    result = run_system(
        "riscv64",
        *("-M", "virt", "-nographic", "-bios", "none", "-kernel", str(elf)),
        *("-drive", f"file={disk},if=none,id=d0", "-device", "virtio-rng-device"),
        *("-device", "virtio-blk-device,drive=d0"),
    )
    assert result.stdout.splitlines() == expected_lines("riscv64", read_only=False, serial="")
    assert result.stderr.splitlines()[0] == (
        f"WARNING: Image format was not specified for '{disk}' and probing guessed raw."
    )
    assert result.returncode == 0


def test_device_help_lists_virtio_models() -> None:
    result = run_system("aarch64", "-device", "help")
    assert result.returncode == 0
    for line in (
        'name "virtio-blk-device", bus virtio-bus, desc "Virtio block device"',
        'name "virtio-rng-device", bus virtio-bus, desc "Virtio random number generator"',
        'name "virtconsole", bus virtio-serial-bus, desc "Virtio console port (hvc0), on the '
        'serial backend"',
    ):
        assert line in result.stdout.splitlines()
    props = run_system("riscv64", "-device", "virtio-blk-device,help")
    assert props.returncode == 0
    assert props.stdout.splitlines()[:2] == [
        "virtio-blk-device options:",
        "  drive=<str>            - Node name or ID of a block device to use as a backend",
    ]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["-drive", "file=/nonexistent.img,format=raw"],
            "-drive file=/nonexistent.img,format=raw: Could not open '/nonexistent.img': "
            "No such file or directory",
        ),
        (
            ["-drive", "file=DISK,format=qcow9"],
            "-drive file=DISK,format=qcow9: Unknown driver 'qcow9'",
        ),
        (
            ["-drive", "file=DISK,format=raw,if=ide"],
            "-drive file=DISK,format=raw,if=ide: machine type does not support if=ide,bus=0,unit=0",
        ),
        (["-drive", "if=virtio"], "-drive if=virtio: Device needs media, but drive is empty"),
        (
            ["-drive", "file=DISK,format=raw,foo=1"],
            "-drive file=DISK,format=raw,foo=1: Block format 'raw' does not support the option "
            "'foo'",
        ),
        (["-device", "virtio-blk-device"], "-device virtio-blk-device: drive property not set"),
        (
            ["-device", "virtio-blk-device,drive=x"],
            "-device virtio-blk-device,drive=x: Property 'virtio-blk-device.drive' can't find "
            "value 'x'",
        ),
        (
            [
                "-drive",
                "file=DISK,format=raw,if=none,id=a",
                "-device",
                "virtio-blk-device,drive=a",
                "-device",
                "virtio-blk-device,drive=a",
            ],
            "-device virtio-blk-device,drive=a: Drive 'a' is already in use by another device",
        ),
        (
            ["-device", "virtio-rng-device,foo=1"],
            "-device virtio-rng-device,foo=1: Property 'virtio-rng-device.foo' not found",
        ),
        (
            ["-device", "virtconsole"],
            "-device virtconsole: No 'virtio-serial-bus' bus found for device 'virtconsole'",
        ),
        (
            ["-blockdev", "driver=foo"],
            "-blockdev driver=foo: Parameter 'driver' does not accept value 'foo'",
        ),
        (
            ["-blockdev", "driver=file,filename=DISK"],
            "-blockdev driver=file,filename=DISK: 'node-name' must be specified for the root node",
        ),
        (
            ["-blockdev", "driver=raw,node-name=x,file=nope"],
            "-blockdev driver=raw,node-name=x,file=nope: Cannot find device='nope' nor "
            "node-name='nope'",
        ),
        (
            ["-global", "virtio-mmio.force-legacy=on"],
            "-global virtio-mmio.force-legacy=on: legacy virtio-mmio (version 1) is not supported",
        ),
        (
            ["-device", "virtio-rng-device"] * 9,
            "-device virtio-rng-device: No 'virtio-mmio-bus' bus found for device "
            "'virtio-rng-device'",
        ),
    ],
)
def test_errors_are_one_line_like_qemu(args: list[str], message: str, tmp_path: Path) -> None:
    disk = tmp_path / "disk.img"
    make_disk(disk)
    args = [a.replace("DISK", str(disk)) for a in args]
    message = message.replace("DISK", str(disk))
    elf = fixture("hello-riscv64.elf")
    result = run_system("riscv64", "-M", "virt", "-bios", "none", "-kernel", str(elf), *args)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [f"qemuser-system-riscv64: {message}"]
    assert result.stdout == ""


@pytest.mark.parametrize(
    ("arch", "board", "boot"),
    [("aarch64", "qemu_arm64", "-bios"), ("riscv64", "qemu-riscv64_smode", "-kernel")],
)
def test_debian_u_boot_finds_the_virtio_disk(
    arch: str, board: str, boot: str, tmp_path: Path
) -> None:
    # U-Boot's own virtio-mmio and virtio-blk drivers: its autoboot scans the virtio bus and
    # reports the disk. Nothing is typed: autoboot runs to the prompt, then the test ends it.
    disk = tmp_path / "disk.img"
    disk.write_bytes(bytes(4 << 20))
    session = ConsoleSession(
        arch,
        *("-M", "virt", "-nographic", boot, str(u_boot(board))),
        *("-drive", f"file={disk},format=raw,if=none,id=d0"),
        *("-device", "virtio-blk-device,drive=d0"),
    )
    try:
        session.expect("Couldn't find partition virtio 0:1")
    finally:
        session.close()
    lines = session.lines()
    at = lines.index("Device 0: QEMU VirtIO Block Device")
    assert lines[at + 1 : at + 5] == [
        "            Type: Hard Disk",
        "            Capacity: 4.0 MB = 0.0 GB (8192 x 512)",
        "... is now current device",
        "** No partition table - virtio 0 **",
    ]


def test_snapshot_writes_stay_in_memory(tmp_path: Path) -> None:
    # -snapshot: the guest sees its own write (read back), the image file is not changed.
    elf = fixture("virtio-blk-aarch64.elf")
    disk = tmp_path / "disk.img"
    before = make_disk(disk)
    result = run_system(
        "aarch64",
        *("-M", "virt", "-nographic", "-snapshot", "-kernel", str(elf)),
        *("-device", "virtio-rng-device"),
        *("-drive", f"file={disk},format=raw,if=none,id=d0"),
        *("-device", "virtio-blk-device,drive=d0"),
    )
    assert result.stdout.splitlines() == expected_lines("aarch64", read_only=False, serial="")
    assert result.returncode == 0
    assert disk.read_bytes() == before


@pytest.mark.parametrize("arch", ["aarch64", "riscv64"])
def test_guest_writes_land_in_a_qcow2_overlay_made_by_qemu_img(arch: str, tmp_path: Path) -> None:
    # The base is raw, the overlay a qcow2 QEMU's qemu-img made on top of it: the guest reads
    # through the chain, its write lands in the overlay and the base keeps every byte.
    import hashlib
    import shutil
    import subprocess

    if shutil.which("qemu-img") is None:
        pytest.skip("Debian's qemu-utils (qemu-img) is not installed")
    elf = fixture(f"virtio-blk-{arch}.elf")
    base = tmp_path / "base.raw"
    before = make_disk(base)
    overlay = tmp_path / "overlay.qcow2"
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(base), "-F", "raw", str(overlay)],
        check=True,
    )
    result = run_system(
        arch,
        *("-M", "virt", "-nographic", "-bios", "none", "-kernel", str(elf)),
        *("-device", "virtio-rng-device"),
        *("-drive", f"file={overlay},if=none,id=d0"),  # probed: qcow2
        *("-device", "virtio-blk-device,drive=d0,serial=QS-0001"),
    )
    assert result.stdout.splitlines() == expected_lines(arch, read_only=False, serial="QS-0001")
    assert (result.returncode, result.stderr) == (0, "")
    assert hashlib.sha256(base.read_bytes()).digest() == hashlib.sha256(before).digest()
    # what the chain holds now, as QEMU's own qemu-img reads it
    flat = tmp_path / "flat.raw"
    subprocess.run(["qemu-img", "convert", "-O", "raw", str(overlay), str(flat)], check=True)
    after = flat.read_bytes()
    written = f"written by the {arch} guest\n".encode()
    assert after[SECTOR : 2 * SECTOR] == written.ljust(SECTOR, b".")
    assert after[:SECTOR] == before[:SECTOR] and after[2 * SECTOR :] == before[2 * SECTOR :]
    check = subprocess.run(["qemu-img", "check", "-q", str(overlay)], capture_output=True)
    assert check.returncode == 0, check.stderr
    mapped = subprocess.run(
        ["qemu-img", "map", "--output=json", str(overlay)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert '"depth": 0' in mapped.stdout  # some data of the overlay's own: the guest's write
