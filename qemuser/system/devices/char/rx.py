"""What the serial devices share: typed bytes waiting for the guest, and the interface the
machine's console input uses (`SerialPort`)."""

from __future__ import annotations

from collections import deque
from typing import Protocol


class SerialInput:
    """Bytes typed on the console, waiting for the guest to read them."""

    def __init__(self) -> None:
        self.queue: deque[int] = deque()

    def feed(self, data: bytes) -> None:
        self.queue.extend(data)


class SerialPort(Protocol):
    """A board's console device: typed bytes go in (raising its own interrupt), and firmware
    that polls the console (the built-in SBI's getchar) takes them one at a time."""

    def feed_input(self, data: bytes) -> None: ...

    def take_input(self) -> int | None: ...
