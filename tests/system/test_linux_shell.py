"""Debian's arm64 kernel with a busybox initramfs: a shell driven over the serial console.

The emulator runs with -nographic and a pipe on stdin: typed bytes reach the PL011's receive
FIFO and interrupt, the guest's tty echoes them, and the shell's output comes back on stdout.
"""

from __future__ import annotations

import re
import subprocess
import threading
import time

import pytest

from tests.system.conftest import BIN
from tests.system.debian import arm64_kernel
from tests.system.initramfs import busybox_initramfs

PROMPT = "shell$ "
INIT = f"""#!/bin/sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
echo "qemuser initramfs: up"
export PS1='{PROMPT}'
exec setsid cttyhack sh
"""
# A guard against a hung guest, not a speed requirement (speed lives in benchmarks/).
HANG_GUARD_S = 300
# ash asks the terminal where the cursor is (ESC [6n) before each prompt; nobody answers.
_CURSOR_QUERY = re.compile(r"\x1b\[6n")


class SerialConsole:
    """The emulator's stdin/stdout as a terminal a test types into."""

    def __init__(self, command: list[str]) -> None:
        self.process = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        self.output = bytearray()
        self.position = 0  # how far expect() has consumed the output
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        while chunk := self.process.stdout.read1(4096):
            with self._lock:
                self.output += chunk

    def text(self, start: int = 0, end: int | None = None) -> str:
        with self._lock:
            raw = bytes(self.output[start:end])
        return _CURSOR_QUERY.sub("", raw.decode(errors="replace")).replace("\r", "")

    def expect(self, marker: str) -> str:
        """Wait for `marker`; returns the output from the last match up to it."""
        deadline = time.monotonic() + HANG_GUARD_S
        needle = marker.encode()
        while time.monotonic() < deadline:
            with self._lock:
                found = self.output.find(needle, self.position)
            if found >= 0:
                before = self.text(self.position, found)
                self.position = found + len(needle)
                return before
            if self.process.poll() is not None:
                break
            time.sleep(0.02)
        self.process.kill()
        pytest.fail(f"no {marker!r} on the console; it showed:\n{self.text()[-3000:]}")

    def run(self, command: str) -> list[str]:
        """Type a command line; returns the lines it printed (its echo removed)."""
        assert self.process.stdin is not None
        self.process.stdin.write(command.encode() + b"\n")
        self.process.stdin.flush()
        lines = self.expect(PROMPT).split("\n")
        assert lines[0] == command  # the guest tty's echo of what was typed
        assert lines[-1] == ""
        return lines[1:-1]


@pytest.mark.slow
def test_busybox_shell_over_serial_console() -> None:
    kernel = arm64_kernel()
    initrd = busybox_initramfs("test-shell", INIT)
    console = SerialConsole(
        [
            str(BIN / "qemuser-system-aarch64"),
            *("-M", "virt", "-cpu", "cortex-a72", "-m", "512", "-nographic"),
            *("-kernel", str(kernel), "-initrd", str(initrd)),
            *("-append", "console=ttyAMA0 quiet"),
        ]
    )
    boot = console.expect(PROMPT).split("\n")
    assert "qemuser initramfs: up" in boot
    assert console.run("echo hello from the guest") == ["hello from the guest"]
    assert console.run("uname -m") == ["aarch64"]
    assert console.run("grep -E '^(processor|CPU implementer|CPU part)' /proc/cpuinfo") == [
        "processor\t: 0",
        "CPU implementer\t: 0x41",
        "CPU part\t: 0xd08",  # Cortex-A72
    ]
    # The guest's own clock says how long `sleep 1` took (its counter follows host time).
    before, after = console.run("cat /proc/uptime; sleep 1; cat /proc/uptime")
    slept = float(after.split()[0]) - float(before.split()[0])
    assert 0.95 <= slept < 1.5, (before, after)
    assert console.process.stdin is not None
    console.process.stdin.write(b"poweroff -f\n")
    console.process.stdin.flush()
    status = console.process.wait(timeout=HANG_GUARD_S)
    console._reader.join(timeout=10)
    tail = console.text(console.position).split("\n")
    assert tail[0] == "poweroff -f"
    assert re.fullmatch(r"\[ *\d+\.\d+\] reboot: Power down", tail[-2]), tail
    assert status == 0
    assert console.process.stderr is not None
    assert console.process.stderr.read() == b""
