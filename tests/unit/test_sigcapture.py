"""qemuser/host/sigcapture.py, in a child Python: the trampoline records the siginfo of a
signal another process sends (its sender, code and value, in order, one record per real-time
signal), and its guarded entry still lets the emulator's own fault kill it."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent

CHILD = r"""
import ctypes, os, signal, struct, sys
from qemuser.host import sigcapture
seen = []
def handler(signo, frame):
    for record in sigcapture.take(signo):
        signo_, _, code = struct.unpack_from("<iii", record)
        pid, uid, value = struct.unpack_from("<iii", record, 16)
        seen.append((signo_, code, pid == os.getpid(), value))
rt = signal.SIGRTMIN + 3
sigcapture.handle(rt, handler)
sigcapture.handle(signal.SIGSEGV, handler, guarded=True)
signal.pthread_sigmask(signal.SIG_BLOCK, {rt})
for value in (11, 22):  # two queued before the handler runs: two records
    info = bytearray(128)
    struct.pack_into("<iii", info, 0, rt, 0, -1)  # SI_QUEUE
    struct.pack_into("<iii", info, 16, os.getpid(), os.getuid(), value)
    ctypes.CDLL(None).syscall(129, os.getpid(), rt, ctypes.create_string_buffer(bytes(info), 128))
signal.pthread_sigmask(signal.SIG_UNBLOCK, {rt})
os.kill(os.getpid(), signal.SIGSEGV)  # sent: recorded, handled
print(seen, sigcapture.captured(rt), flush=True)
ctypes.string_at(1)  # the emulator's own fault: fatal, as without the trampoline
print("survived")
"""


def test_records_and_the_guarded_fault() -> None:
    run = subprocess.run([sys.executable, "-c", CHILD], cwd=ROOT, capture_output=True, timeout=60)
    rt = signal.SIGRTMIN + 3
    assert run.stdout.decode() == (
        f"[({rt}, -1, True, 11), ({rt}, -1, True, 22), (11, 0, True, 0)] True\n"
    )
    assert run.returncode == -signal.SIGSEGV
