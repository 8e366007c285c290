"""Signal frames, built exactly as each architecture's kernel builds them.

aarch64: struct rt_sigframe {siginfo; ucontext} from arch/arm64/kernel/signal.c, with the
ucontext of arch/arm64/include/uapi/asm/ucontext.h, the sigcontext and fpsimd_context records
of arch/arm64/include/uapi/asm/sigcontext.h, and a frame record {fp, lr} above the frame.
riscv64: struct rt_sigframe {siginfo; ucontext} from arch/riscv/kernel/signal.c, with the
ucontext of arch/riscv/include/uapi/asm/ucontext.h and sigcontext (user_regs_struct plus the
__riscv_fp_state union) of arch/riscv/include/uapi/asm/sigcontext.h.

Handlers can read and change the interrupted context: rt_sigreturn reads it back from guest
memory.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Protocol

from unicorn import Uc
from unicorn import arm64_const as a
from unicorn import riscv_const as r

SIGINFO_SIZE = 128
# struct ucontext's head is the same on both: uc_flags, uc_link, uc_stack (stack_t: ss_sp,
# ss_flags, pad, ss_size), uc_sigmask, then padding to 1024 bits of sigset: mcontext at 176.
UC_STACK = 16
UC_SIGMASK = 40
UC_MCONTEXT = 176

# ---- aarch64 ---------------------------------------------------------------------------------
A64_SC_FAULT_ADDRESS = 0
A64_SC_REGS = 8
A64_SC_SP = 256
A64_SC_PC = 264
A64_SC_PSTATE = 272
A64_SC_RESERVED = 288
A64_SC_RESERVED_SIZE = 4096
A64_SIGCONTEXT_SIZE = A64_SC_RESERVED + A64_SC_RESERVED_SIZE
A64_UCONTEXT_SIZE = UC_MCONTEXT + A64_SIGCONTEXT_SIZE
A64_RT_SIGFRAME_SIZE = SIGINFO_SIZE + A64_UCONTEXT_SIZE
FPSIMD_MAGIC = 0x46508001
FPSIMD_CONTEXT_SIZE = 528  # head(8) + fpsr(4) + fpcr(4) + vregs[32] (16 each)
ESR_MAGIC = 0x45535201
ESR_CONTEXT_SIZE = 16

_A64_X = tuple(getattr(a, f"UC_ARM64_REG_X{i}") for i in range(29)) + (
    a.UC_ARM64_REG_X29,
    a.UC_ARM64_REG_X30,
)
_A64_V = tuple(getattr(a, f"UC_ARM64_REG_V{i}") for i in range(32))

# ---- riscv64 ---------------------------------------------------------------------------------
RV_SC_REGS = 0  # user_regs_struct: pc, ra, sp, gp, tp, t0..t6, s0..s11, a0..a7 (x order)
RV_SC_FPREGS = 256  # union __riscv_fp_state (q_ext is the largest: 528 bytes)
RV_FP_STATE_SIZE = 528
RV_SIGCONTEXT_SIZE = RV_SC_FPREGS + RV_FP_STATE_SIZE
RV_UCONTEXT_SIZE = UC_MCONTEXT + RV_SIGCONTEXT_SIZE
RV_RT_SIGFRAME_SIZE = SIGINFO_SIZE + RV_UCONTEXT_SIZE
_RV_X = tuple(getattr(r, f"UC_RISCV_REG_X{i}") for i in range(32))
_RV_F = tuple(getattr(r, f"UC_RISCV_REG_F{i}") for i in range(32))


class GuestMemory(Protocol):
    def write_init(self, address: int, data: bytes) -> None: ...
    def read(self, address: int, size: int, check: bool = True) -> bytes: ...


# eq=False and not frozen: nothing compares or assigns to it once built, and every start would
# compile the generated __eq__, __hash__, __setattr__ and __delattr__.
@dataclass(eq=False)
class FrameSetup:
    """Where the frame went and what the handler starts with."""

    frame: int
    info: int
    ucontext: int


def pack_siginfo(signo: int, code: int, fields: bytes = b"", errno_value: int = 0) -> bytes:
    """siginfo_t (include/uapi/asm-generic/siginfo.h): signo, errno, code, then the union at 16."""
    head = struct.pack("<iiii", signo, errno_value, code, 0) + fields
    return head + bytes(SIGINFO_SIZE - len(head))


def pack_stack_t(ss_sp: int, ss_flags: int, ss_size: int) -> bytes:
    """stack_t (include/uapi/asm-generic/signal.h): void *ss_sp; int ss_flags; size_t ss_size."""
    return struct.pack("<QiiQ", ss_sp, ss_flags, 0, ss_size)


def _ucontext_head(mask: int, stack: bytes) -> bytes:
    head = struct.pack("<QQ", 0, 0) + stack + struct.pack("<Q", mask)
    return head + bytes(UC_MCONTEXT - len(head))


class Aarch64Frames:
    size = A64_RT_SIGFRAME_SIZE

    @staticmethod
    def push(
        uc: Uc,
        mem: GuestMemory,
        sp: int,
        handler: int,
        return_address: int,
        signo: int,
        siginfo: bytes,
        mask: int,
        stack: bytes,
        fault_address: int = 0,
    ) -> FrameSetup:
        regs = uc.reg_read_batch(
            _A64_X
            + (
                a.UC_ARM64_REG_SP,
                a.UC_ARM64_REG_PC,
                a.UC_ARM64_REG_NZCV,
                a.UC_ARM64_REG_FPSR,
                a.UC_ARM64_REG_FPCR,
            )
        )
        xs = regs[:31]
        old_sp, pc, nzcv, fpsr, fpcr = regs[31:]
        vregs = [uc.reg_read(v) for v in _A64_V]
        # frame record {fp, lr} first (highest), then the 16-aligned rt_sigframe below it
        record = (sp - 16) & ~15
        frame = (record - A64_RT_SIGFRAME_SIZE) & ~15
        reserved = struct.pack("<IIII", FPSIMD_MAGIC, FPSIMD_CONTEXT_SIZE, fpsr, fpcr)
        reserved += b"".join(v.to_bytes(16, "little") for v in vregs)
        if fault_address:
            reserved += struct.pack("<IIQ", ESR_MAGIC, ESR_CONTEXT_SIZE, 0)
        reserved += bytes(A64_SC_RESERVED_SIZE - len(reserved))  # ends with the null record
        sigcontext = struct.pack("<Q31QQQQ", fault_address, *xs, old_sp, pc, nzcv & 0xF000_0000)
        sigcontext += bytes(A64_SC_RESERVED - len(sigcontext)) + reserved
        data = siginfo + _ucontext_head(mask, stack) + sigcontext
        mem.write_init(frame, data)
        mem.write_init(record, struct.pack("<QQ", xs[29], xs[30]))
        info = frame
        ucontext = frame + SIGINFO_SIZE
        uc.reg_write_batch(
            [
                (a.UC_ARM64_REG_X0, signo),
                (a.UC_ARM64_REG_X1, info),
                (a.UC_ARM64_REG_X2, ucontext),
                (a.UC_ARM64_REG_X29, record),
                (a.UC_ARM64_REG_X30, return_address),
                (a.UC_ARM64_REG_SP, frame),
                (a.UC_ARM64_REG_PC, handler),
            ]
        )
        return FrameSetup(frame, info, ucontext)

    @staticmethod
    def pop(uc: Uc, mem: GuestMemory, sp: int) -> tuple[int, bytes]:
        """Restore the context saved at the frame at `sp`; returns (mask, stack_t bytes)."""
        ucontext = sp + SIGINFO_SIZE
        data = mem.read(ucontext, A64_UCONTEXT_SIZE)
        mask = struct.unpack_from("<Q", data, UC_SIGMASK)[0]
        stack = data[UC_STACK : UC_STACK + 24]
        mc = UC_MCONTEXT
        xs = struct.unpack_from("<31Q", data, mc + A64_SC_REGS)
        new_sp, pc, pstate = struct.unpack_from("<QQQ", data, mc + A64_SC_SP)
        values = list(zip(_A64_X, xs)) + [
            (a.UC_ARM64_REG_SP, new_sp),
            (a.UC_ARM64_REG_PC, pc),
            (a.UC_ARM64_REG_NZCV, pstate & 0xF000_0000),
        ]
        # walk the records in __reserved for the FP/SIMD state
        pos = mc + A64_SC_RESERVED
        end = pos + A64_SC_RESERVED_SIZE
        while pos + 8 <= end:
            magic, size = struct.unpack_from("<II", data, pos)
            if magic == 0 or size < 8:
                break
            if magic == FPSIMD_MAGIC:
                fpsr, fpcr = struct.unpack_from("<II", data, pos + 8)
                values += [(a.UC_ARM64_REG_FPSR, fpsr), (a.UC_ARM64_REG_FPCR, fpcr)]
                for i, v in enumerate(_A64_V):
                    start = pos + 16 + 16 * i
                    uc.reg_write(v, int.from_bytes(data[start : start + 16], "little"))
            pos += size
        uc.reg_write_batch(values)
        return mask, stack


class Riscv64Frames:
    size = RV_RT_SIGFRAME_SIZE

    @staticmethod
    def push(
        uc: Uc,
        mem: GuestMemory,
        sp: int,
        handler: int,
        return_address: int,
        signo: int,
        siginfo: bytes,
        mask: int,
        stack: bytes,
        fault_address: int = 0,
    ) -> FrameSetup:
        values = uc.reg_read_batch(_RV_X[1:] + (r.UC_RISCV_REG_PC, r.UC_RISCV_REG_FCSR))
        xs = values[:31]
        pc, fcsr = values[31:]
        fs = [uc.reg_read(f) for f in _RV_F]
        frame = (sp - RV_RT_SIGFRAME_SIZE) & ~15
        # user_regs_struct: regs[0] is the pc, then x1..x31
        sigcontext = struct.pack("<32Q", pc, *xs)
        # the d_ext view of the fp union: f[32] then fcsr; the rest of the q_ext size is zero
        fp_state = struct.pack("<32QI", *fs, fcsr)
        sigcontext += fp_state + bytes(RV_FP_STATE_SIZE - len(fp_state))
        mem.write_init(frame, siginfo + _ucontext_head(mask, stack) + sigcontext)
        info = frame
        ucontext = frame + SIGINFO_SIZE
        uc.reg_write_batch(
            [
                (r.UC_RISCV_REG_A0, signo),
                (r.UC_RISCV_REG_A1, info),
                (r.UC_RISCV_REG_A2, ucontext),
                (r.UC_RISCV_REG_RA, return_address),
                (r.UC_RISCV_REG_SP, frame),
                (r.UC_RISCV_REG_PC, handler),
            ]
        )
        return FrameSetup(frame, info, ucontext)

    @staticmethod
    def pop(uc: Uc, mem: GuestMemory, sp: int) -> tuple[int, bytes]:
        ucontext = sp + SIGINFO_SIZE
        data = mem.read(ucontext, RV_UCONTEXT_SIZE)
        mask = struct.unpack_from("<Q", data, UC_SIGMASK)[0]
        stack = data[UC_STACK : UC_STACK + 24]
        regs = struct.unpack_from("<32Q", data, UC_MCONTEXT)
        fp = struct.unpack_from("<32QI", data, UC_MCONTEXT + RV_SC_FPREGS)
        values = [(r.UC_RISCV_REG_PC, regs[0])] + list(zip(_RV_X[1:], regs[1:]))
        values += list(zip(_RV_F, fp[:32])) + [(r.UC_RISCV_REG_FCSR, fp[32])]
        uc.reg_write_batch(values)
        return mask, stack


FRAMES: dict[str, type[Aarch64Frames] | type[Riscv64Frames]] = {
    "aarch64": Aarch64Frames,
    "riscv64": Riscv64Frames,
}

# The code a handler returns to when the program gave no SA_RESTORER (riscv64 never does;
# the kernel's vDSO holds this): rt_sigreturn (139).
SIGRETURN_TRAMPOLINE = {
    "aarch64": struct.pack("<II", 0xD2801168, 0xD4000001),  # mov x8, #139; svc #0
    "riscv64": struct.pack("<II", 0x08B00893, 0x00000073),  # li a7, 139; ecall
}
