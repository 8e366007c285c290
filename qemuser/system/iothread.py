"""Work that host threads (network backends, socket chardevs) hand to the machine's thread.

Device state and guest memory belong to the thread that runs the vCPUs: a backend thread never
touches them. It posts a callback here instead; the run loop calls `run_pending()` between
slices, and an idle vCPU's wait wakes up when something is posted (`wake_fd`).
"""

from __future__ import annotations

import os
import select
import threading
from collections import deque
from collections.abc import Callable


class IoEvents:
    def __init__(self) -> None:
        self._pending: deque[Callable[[], None]] = deque()
        self._lock = threading.Lock()
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)

    @property
    def wake_fd(self) -> int:
        return self._wake_r

    def post(self, callback: Callable[[], None]) -> None:
        """From any thread: run `callback` on the machine's thread soon."""
        with self._lock:
            self._pending.append(callback)
        try:
            os.write(self._wake_w, b"\0")
        except BlockingIOError:
            pass  # the pipe is full: a wake-up is pending anyway

    def run_pending(self) -> None:
        """On the machine's thread: everything posted so far."""
        if not self._pending:
            return
        try:
            while os.read(self._wake_r, 4096):
                pass
        except BlockingIOError:
            pass
        while True:
            with self._lock:
                if not self._pending:
                    return
                callback = self._pending.popleft()
            callback()

    def wait(self, timeout_s: float, fds: list[int]) -> None:
        """Sleep up to `timeout_s`, waking early on `fds` or on something posted."""
        if self._pending:
            return
        select.select([self._wake_r, *fds], [], [], max(0.0, timeout_s))
