"""Drive a guest's serial console through the emulator's stdin and stdout, as a user would."""

from __future__ import annotations

import subprocess
import threading
from pathlib import Path

from tests.system.conftest import BIN


class ConsoleSession:
    """qemuser-system-ARCH with stdin and stdout on pipes; `expect` waits for console text.

    The timeouts only keep a hung guest from hanging the test run; nothing asserts on time.
    """

    def __init__(self, arch: str, *args: str) -> None:
        self.proc = subprocess.Popen(
            [str(BIN / f"qemuser-system-{arch}"), *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self.output = bytearray()
        self._seen = 0  # `expect` searches after what it already matched
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        while chunk := self.proc.stdout.read1(4096):
            with self._changed:
                self.output.extend(chunk)
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def expect(self, text: str, timeout: float = 120) -> None:
        """Wait until `text` appears in the console output after the previous match."""
        wanted = text.encode()
        with self._changed:
            found = self._changed.wait_for(
                lambda: self.output.find(wanted, self._seen) >= 0 or not self._reader.is_alive(),
                timeout,
            )
            at = self.output.find(wanted, self._seen)
            if not found or at < 0:
                self.close()
                raise AssertionError(f"{text!r} never appeared; console:\n{self.text()}")
            self._seen = at + len(wanted)

    def type(self, text: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(text.encode())
        self.proc.stdin.flush()

    def wait(self, timeout: float = 60) -> int:
        status = self.proc.wait(timeout)
        self._reader.join(timeout)
        return status

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def text(self) -> str:
        return self.output.decode(errors="replace")

    def lines(self) -> list[str]:
        """Console lines; U-Boot and OpenSBI end theirs with CR LF."""
        return self.text().replace("\r\n", "\n").split("\n")

    def stderr(self) -> str:
        assert self.proc.stderr is not None
        return self.proc.stderr.read().decode(errors="replace")


def embedded_string(path: Path, prefix: bytes) -> str:
    """The NUL-terminated string starting with `prefix` inside a binary (a version banner),
    without the newline some of them end with."""
    data = path.read_bytes()
    start = data.index(prefix)
    return data[start : data.index(b"\0", start)].decode().removesuffix("\n")
