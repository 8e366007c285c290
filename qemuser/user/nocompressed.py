"""`-cpu rv64,c=off`: a riscv64 hart without the C extension, which unicorn's core cannot be
(it ignores writes to misa and always decodes compressed instructions).

The runtime enforces it instead: a hook before every instruction (slow: a Python call each,
the price of the option only) stops the guest at a 2-byte instruction, the illegal instruction
it is on such a hart (SIGILL, ILL_ILLOPC, si_addr its address), and at a pc that is not a
multiple of 4, which such a hart never reaches: the jump there raises "instruction address
misaligned" and Linux sends SIGBUS, BUS_ADRALN, with the pc and si_addr at the jump
(arch/riscv/kernel/traps.c, do_trap_insn_misaligned). The one difference left: a jump that
links (jal/jalr) has already written its link register.

unicorn's per-access exit checks must stay on for the stop to land before the instruction
(with them off it lands at the end of the block: measured), so a process with c=off keeps
them.
"""

from __future__ import annotations

import signal
from typing import Protocol

from unicorn import UC_HOOK_CODE, Uc

from qemuser.cpu import CpuSpec
from qemuser.user.linux import BUS_ADRALN, ILL_ILLOPC
from qemuser.user.runtime import FatalSignal


class _Running(Protocol):
    """What the hook needs of the process (qemuser.user.process.Process)."""

    spec: CpuSpec
    uc: Uc
    pending_fatal: FatalSignal | None


def enforce_no_compressed(proc: _Running) -> None:
    last = [0]  # the last 4-byte instruction: the jump, when the next pc is misaligned

    def before_instruction(uc: Uc, address: int, size: int, _data: object) -> None:
        if size == 4 and not address & 3:
            last[0] = address
            return
        if address & 3:
            fatal = FatalSignal(signal.SIGBUS, BUS_ADRALN, last[0])
            uc.reg_write(proc.spec.pc, last[0])
        else:
            fatal = FatalSignal(signal.SIGILL, ILL_ILLOPC, address)
            uc.reg_write(proc.spec.pc, address)
        proc.pending_fatal = fatal
        uc.emu_stop()

    proc.uc.hook_add(UC_HOOK_CODE, before_instruction)
