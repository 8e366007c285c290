"""savevm / loadvm / delvm / info snapshots / -loadvm: a whole machine (vCPUs, devices, RAM) kept
as an internal snapshot of a qcow2 disk, its vmstate where QEMU keeps it (the vmstate area
beyond the disk), listed by QEMU's own `qemu-img snapshot -l` and passing `qemu-img check`.

The guest (fixtures/system/counter-*.S) prints "count=N;" forever, the counter in RAM: a
machine loaded from a snapshot must go on from where the saved one stopped, not from 1.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from qemuser.system.block.qcow2 import Qcow2Image
from tests.system.conftest import BIN, fixture, run_system

QEMU_IMG = shutil.which("qemu-img")
needs_qemu_img = pytest.mark.skipif(QEMU_IMG is None, reason="qemu-img not installed")
COUNT = re.compile(rb"count=(\d+);")
HEADER = "ID        TAG               VM SIZE                DATE     VM CLOCK     ICOUNT"
# a row of `info snapshots` (QEMU's "%-9s %-16s %8s%20s%13s%11s"), the tag and its spaces in %s
ROW = r"--        %s[ \d.]{4} [KM]iB \d{4}-\d\d-\d\d \d\d:\d\d:\d\d \d\d:\d\d:\d\d\.\d{3} {11}"


def qemu_img(*args: str) -> subprocess.CompletedProcess[str]:
    assert QEMU_IMG is not None
    return subprocess.run([QEMU_IMG, *args], capture_output=True, text=True, timeout=60)


def new_disk(tmp_path: Path, name: str = "disk.qcow2") -> Path:
    disk = tmp_path / name
    assert qemu_img("create", "-q", "-f", "qcow2", str(disk), "1M").returncode == 0
    return disk


class Hmp:
    """An HMP session over -monitor unix:PATH,server=on,wait=off."""

    def __init__(self, path: Path) -> None:
        for _ in range(1200):  # the machine creates the socket as it starts (slow when loaded)
            if path.exists():
                break
            time.sleep(0.05)
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.settimeout(60)
        self.sock.connect(str(path))
        self.buf = b""
        self._until_prompt()  # the greeting

    def _until_prompt(self) -> str:
        while b"(qemu) " not in self.buf:
            data = self.sock.recv(65536)
            if not data:
                break
            self.buf += data
        text, _, self.buf = self.buf.partition(b"(qemu) ")
        return text.decode()

    def cmd(self, line: str) -> str:
        """What the monitor printed for `line` (its echo removed), with \\n line ends."""
        self.sock.sendall(line.encode() + b"\n")
        out = self._until_prompt().replace("\r\n", "\n")
        return out.removeprefix(line + "\n") if out.startswith(line) else out

    def quit(self) -> None:
        self.sock.sendall(b"quit\n")
        self.sock.close()


def machine_args(arch: str, disk: Path | None, serial: Path, mon: Path) -> list[str]:
    args = ["-M", "virt", "-display", "none", "-serial", f"file:{serial}"]
    args += ["-monitor", f"unix:{mon},server=on,wait=off"]
    if arch == "riscv64":
        args += ["-bios", "none"]
    if disk is not None:
        args += ["-drive", f"file={disk},if=none,id=d0,format=qcow2"]
        args += ["-device", "virtio-blk-device,drive=d0"]
    return [*args, "-kernel", str(fixture(f"counter-{arch}.elf"))]


def start(arch: str, args: list[str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [str(BIN / f"qemuser-system-{arch}"), *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def wait_for_count(serial: Path, least: int, start: int = 0) -> None:
    """Until the serial file holds `least` counts from byte `start` on."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        found = COUNT.findall(serial.read_bytes()[start:]) if serial.exists() else []
        if len(found) >= least:
            return
        time.sleep(0.05)
    raise AssertionError(f"the guest printed {len(found)} counts, not {least}")


def counts(data: bytes) -> list[int]:
    return [int(n) for n in COUNT.findall(data)]


@needs_qemu_img
@pytest.mark.parametrize(
    ("arch", "smp"),
    [("aarch64", []), ("riscv64", []), ("aarch64", ["-smp", "2"])],  # 2 vCPUs, 1 running
)
def test_savevm_then_loadvm_goes_on_counting(tmp_path: Path, arch: str, smp: list[str]) -> None:
    disk = new_disk(tmp_path)
    serial1, serial2, mon = tmp_path / "serial1", tmp_path / "serial2", tmp_path / "mon.sock"
    proc = start(arch, [*machine_args(arch, disk, serial1, mon), *smp])
    try:
        wait_for_count(serial1, 20)
        hmp = Hmp(mon)
        assert hmp.cmd("info snapshots") == "There is no snapshot available.\n"
        assert hmp.cmd("stop") == ""  # the count at the snapshot is the last one printed
        assert hmp.cmd("savevm s1") == ""
        listing = hmp.cmd("info snapshots").splitlines()
        assert listing[:2] == ["List of snapshots present on all disks:", HEADER]
        assert len(listing) == 3 and re.fullmatch(ROW % "s1 {15}", listing[2]), listing
        assert hmp.cmd("loadvm nope") == (
            "Error: Snapshot 'nope' does not exist in one or more devices\n"
        )
        hmp.quit()
        assert proc.wait(60) == 0
    finally:
        proc.kill()
        proc.wait()
    saved = serial1.read_bytes()
    before = counts(saved)
    assert before == list(range(1, len(before) + 1)) and len(before) >= 20

    # QEMU's own tools see the snapshot, its vmstate and its clock
    listed = qemu_img("snapshot", "-l", str(disk))
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert lines[:2] == ["Snapshot list:", HEADER]
    row = lines[2].split()
    assert row[:2] == ["1", "s1"] and len(lines) == 3
    assert row[2] != "0" and row[3] in ("KiB", "MiB"), row  # a non-zero VM SIZE
    assert re.fullmatch(r"\d\d:\d\d:\d\d\.\d\d\d", row[6]) and row[6] != "00:00:00.000"
    assert len(row) == 7  # no ICOUNT: QEMU records none without -icount
    check = qemu_img("check", str(disk))
    assert check.returncode == 0 and "No errors were found on the image." in check.stdout
    with Qcow2Image(str(disk)) as image:
        sn = image.find_snapshot("s1")
        assert sn is not None and sn.vm_state_size > 0
        assert image.read_snapshot_vmstate(sn)[:16] == b"QEMUSER-VMSTATE\0"

    # -loadvm: the counter goes on from the saved value, with nothing lost or repeated
    proc = start(arch, [*machine_args(arch, disk, serial2, mon), *smp, "-loadvm", "s1"])
    try:
        wait_for_count(serial2, 5)
    finally:
        proc.kill()
        proc.wait()
    after = counts(serial2.read_bytes())
    assert after[0] in (before[-1] + 1, before[-1] + 2)
    whole = counts(saved + serial2.read_bytes())  # a line cut by the snapshot is joined again
    assert whole == list(range(1, len(whole) + 1))


@needs_qemu_img
def test_loadvm_delvm_and_replacing_a_snapshot(tmp_path: Path) -> None:
    disk = new_disk(tmp_path)
    serial, mon = tmp_path / "serial", tmp_path / "mon.sock"
    proc = start("aarch64", machine_args("aarch64", disk, serial, mon))
    try:
        wait_for_count(serial, 5)
        hmp = Hmp(mon)
        assert hmp.cmd("stop") == ""
        assert hmp.cmd("savevm s1") == ""
        at_save = counts(serial.read_bytes())[-1]
        assert hmp.cmd("cont") == ""
        wait_for_count(serial, at_save + 20)
        # loadvm while running: the guest is back at the saved count and goes on from there
        # (everything it printed since `mark` and before the loadvm was above at_save + 19)
        mark = len(serial.read_bytes())
        assert hmp.cmd("loadvm s1") == ""
        wait_for_count(serial, 30, mark)
        later = counts(serial.read_bytes()[mark:])
        back = [i for i, n in enumerate(later) if n in (at_save + 1, at_save + 2)]
        assert back, (at_save, later)
        again = later[back[0] :]
        assert again == list(range(again[0], again[0] + len(again))) and len(again) >= 5
        assert hmp.cmd("savevm") == ""  # a name made up as QEMU makes it
        assert hmp.cmd("savevm s1") == ""  # replaces s1 (now listed last)
        rows = hmp.cmd("info snapshots").splitlines()[2:]
        names = [row.split()[1] for row in rows]
        assert len(names) == 2 and re.fullmatch(r"vm-\d{14}", names[0]) and names[1] == "s1"
        assert re.fullmatch(ROW % r"vm-\d{14} ", rows[0])  # QEMU's row format, long tag
        assert re.fullmatch(ROW % "s1 {15}", rows[1])
        assert hmp.cmd("delvm s1") == ""
        assert hmp.cmd("delvm nope") == ""  # QEMU says nothing either
        assert hmp.cmd("loadvm") == (
            'loadvm: string expected\nTry "help loadvm" for more information\n'
        )
        left = [line.split()[1] for line in hmp.cmd("info snapshots").splitlines()[2:]]
        assert left == names[:1]
        hmp.quit()
        assert proc.wait(60) == 0
    finally:
        proc.kill()
        proc.wait()
    check = qemu_img("check", str(disk))
    assert check.returncode == 0 and "No errors were found on the image." in check.stdout, check


@needs_qemu_img
def test_snapshots_need_a_qcow2_disk(tmp_path: Path) -> None:
    serial, mon = tmp_path / "serial", tmp_path / "mon.sock"
    raw = tmp_path / "disk.raw"
    raw.write_bytes(bytes(1 << 20))
    for extra, savevm in (
        ([], "Error: no block device can store vmstate for snapshot\n"),
        (
            ["-drive", f"file={raw},if=none,id=d0,format=raw", "-device",
             "virtio-blk-device,drive=d0"],
            "Error: Device 'd0' is writable but does not support snapshots\n",
        ),
    ):  # fmt: skip
        mon.unlink(missing_ok=True)
        proc = start("aarch64", [*machine_args("aarch64", None, serial, mon), *extra])
        try:
            hmp = Hmp(mon)
            assert hmp.cmd("savevm s1") == savevm
            assert hmp.cmd("loadvm s1") == savevm
            if not extra:
                assert hmp.cmd("info snapshots") == (
                    "no block device can store vmstate for snapshot\n"
                )
            hmp.quit()
            assert proc.wait(60) == 0
        finally:
            proc.kill()
            proc.wait()
    result = run_system("aarch64", "-M", "virt", "-display", "none", "-loadvm", "s1",
                        "-kernel", str(fixture("counter-aarch64.elf")))  # fmt: skip
    assert result.returncode == 1
    assert result.stderr == (
        "qemuser-system-aarch64: no block device can store vmstate for snapshot\n"
    )


@needs_qemu_img
def test_loadvm_refuses_what_it_cannot_load(tmp_path: Path) -> None:
    disk = new_disk(tmp_path)
    drive = ["-drive", f"file={disk},if=none,id=d0,format=qcow2",
             "-device", "virtio-blk-device,drive=d0"]  # fmt: skip
    kernel = ["-kernel", str(fixture("counter-aarch64.elf"))]
    base = ["-M", "virt", "-display", "none", *drive, *kernel]
    missing = run_system("aarch64", *base, "-loadvm", "nope")
    assert missing.returncode == 1
    assert missing.stderr == (
        "qemuser-system-aarch64: Snapshot 'nope' does not exist in one or more devices\n"
    )
    assert qemu_img("snapshot", "-c", "disk-only", str(disk)).returncode == 0
    disk_only = run_system("aarch64", *base, "-loadvm", "disk-only")
    assert disk_only.returncode == 1
    assert disk_only.stderr == (
        "qemuser-system-aarch64: This is a disk-only snapshot. Revert to it  offline using "
        "qemu-img\n"
    )
    # a snapshot of 128 MiB of RAM does not load into a machine of 256 MiB
    serial, mon = tmp_path / "serial", tmp_path / "mon.sock"
    proc = start("aarch64", machine_args("aarch64", disk, serial, mon))
    try:
        hmp = Hmp(mon)
        assert hmp.cmd("savevm s1") == ""
        hmp.quit()
        assert proc.wait(60) == 0
    finally:
        proc.kill()
        proc.wait()
    bigger = run_system("aarch64", *base, "-m", "256M", "-loadvm", "s1")
    assert bigger.returncode == 1
    assert bigger.stderr == (
        "qemuser-system-aarch64: Length mismatch: mach-virt.ram: 0x8000000 in != 0x10000000: "
        "Invalid argument\n"
    )
    other_cpu = run_system("aarch64", *base, "-cpu", "cortex-a53", "-loadvm", "s1")
    assert other_cpu.returncode == 1 and "CPU model received is" in other_cpu.stderr
    check = qemu_img("check", str(disk))
    assert check.returncode == 0 and "No errors were found on the image." in check.stdout


QEMU_SYSTEM = shutil.which("qemu-system-aarch64")


@needs_qemu_img
@pytest.mark.skipif(QEMU_SYSTEM is None, reason="qemu-system-aarch64 not installed")
def test_a_qemu_vmstate_is_refused_cleanly(tmp_path: Path) -> None:
    disk = new_disk(tmp_path)
    assert QEMU_SYSTEM is not None
    made = subprocess.run(
        [QEMU_SYSTEM, "-M", "virt", "-nic", "none", "-display", "none", "-serial", "null",
         "-monitor", "stdio", "-drive", f"file={disk},if=none,id=d0,format=qcow2",
         "-device", "virtio-blk-device,drive=d0"],
        input="savevm fromqemu\nquit\n", capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    result = run_system("aarch64", "-M", "virt", "-display", "none", "-drive",
                        f"file={disk},if=none,id=d0,format=qcow2", "-device",
                        "virtio-blk-device,drive=d0", "-loadvm", "fromqemu",
                        "-kernel", str(fixture("counter-aarch64.elf")))  # fmt: skip
    assert result.returncode == 1
    assert result.stderr == (
        "qemuser-system-aarch64: the vmstate was written by QEMU, which qemuser cannot load\n"
    )
    check = qemu_img("check", str(disk))
    assert check.returncode == 0 and "No errors were found on the image." in check.stdout


@needs_qemu_img
def test_qcow2_vmstate_area(tmp_path: Path) -> None:
    """The block layer's part: vmstate written beyond the disk, owned by the snapshot alone
    once taken, read back through the snapshot's table or after applying it."""
    disk = new_disk(tmp_path)
    state = os.urandom(200_000) + bytes(100_000)
    with Qcow2Image(str(disk), read_only=False) as image:
        image.write(0, b"A" * 4096)
        assert image.vm_state_offset == 1 << 29  # the first L1 entry beyond 1 MiB (64 KiB clusters)
        image.write_vmstate(state)
        sn = image.snapshot_create("s1", 3_723_456_000_000, len(state), icount=None)
        assert image.read_vmstate(16) == bytes(16)  # the active map dropped it
        image.write(0, b"B" * 4096)
        assert image.read_snapshot_vmstate(sn) == state
        assert image.read(0, 1) == b"B"
    listed = qemu_img("snapshot", "-l", str(disk)).stdout.splitlines()
    assert listed[2].split()[:4] == ["1", "s1", "293", "KiB"]
    assert listed[2].split()[6] == "01:02:03.456"
    assert qemu_img("check", str(disk)).returncode == 0
    with Qcow2Image(str(disk), read_only=False) as image:
        image.snapshot_apply("s1")
        assert image.read(0, 1) == b"A"
        assert image.read_vmstate(len(state)) == state
        image.snapshot_delete("s1")
    check = qemu_img("check", str(disk))
    assert check.returncode == 0 and "No errors were found on the image." in check.stdout
    # QEMU reads the vmstate we wrote where it reads its own: a 293 KiB state
    assert "s1" not in qemu_img("snapshot", "-l", str(disk)).stdout


@needs_qemu_img
def test_savevm_over_qmp_human_monitor_command(tmp_path: Path) -> None:
    """QMP reaches the same commands through human-monitor-command (the qemu.qmp client)."""
    qmp = pytest.importorskip("qemu.qmp")
    import asyncio

    disk = new_disk(tmp_path)
    serial, mon, sock = tmp_path / "serial", tmp_path / "mon.sock", tmp_path / "qmp.sock"
    args = [*machine_args("aarch64", disk, serial, mon), "-qmp", f"unix:{sock},server=on,wait=off"]
    proc = start("aarch64", args)

    async def drive() -> list[str]:
        client = qmp.QMPClient("test")
        for _ in range(400):
            if sock.exists():
                break
            await asyncio.sleep(0.05)
        await client.connect(str(sock))
        out = []
        for line in ("savevm viaqmp", "info snapshots", "loadvm viaqmp", "loadvm nope"):
            out.append(await client.execute("human-monitor-command", {"command-line": line}))
        status = await client.execute("query-status")
        out.append(str(status["status"]))  # type: ignore[index]
        await client.execute("quit")
        await client.disconnect()
        return out

    try:
        wait_for_count(serial, 3)
        saved, listing, loaded, missing, status = asyncio.run(drive())
        assert proc.wait(60) == 0
    finally:
        proc.kill()
        proc.wait()
    assert saved == loaded == ""
    assert re.fullmatch(ROW % "viaqmp {11}", listing.splitlines()[2]), listing
    assert missing == "Error: Snapshot 'nope' does not exist in one or more devices\r\n"
    assert status == "running"  # savevm and loadvm resume a running machine
