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

from qemuser.cpu.aarch64 import (
    SVE_PREDICATE_BYTES,
    SVE_VECTOR_BYTES,
    SvePredicates,
    set_sve_enabled,
    sve_enabled,
    sve_predicates,
    sve_supported,
)
from qemuser.syscalls.abi.layout import Layout
from qemuser.syscalls.abi.sigaction import STACK_T, StackT
from qemuser.syscalls.abi.ucontext import (
    A64_CTX,
    A64_FRAME_RECORD,
    A64_RT_SIGFRAME,
    A64_SIGCONTEXT,
    A64_UCONTEXT,
    ESR_CONTEXT,
    ESR_MAGIC,
    FPSIMD_CONTEXT,
    FPSIMD_MAGIC,
    RV_D_EXT_STATE,
    RV_RT_SIGFRAME,
    RV_SIGCONTEXT,
    RV_UCONTEXT,
    SVE_CONTEXT,
    SVE_MAGIC,
    SVE_VQ_BYTES,
    A64Sigcontext,
    EsrContext,
    FpsimdContext,
    FrameRecord,
    RtSigframe,
    RvDExtState,
    RvSigcontext,
    SveContext,
    Ucontext,
    sve_sig_context_size,
    sve_sig_preg_offset,
)

_A64_X = tuple(getattr(a, f"UC_ARM64_REG_X{i}") for i in range(29)) + (
    a.UC_ARM64_REG_X29,
    a.UC_ARM64_REG_X30,
)
_A64_V = tuple(getattr(a, f"UC_ARM64_REG_V{i}") for i in range(32))
_RV_X = tuple(getattr(r, f"UC_RISCV_REG_X{i}") for i in range(32))
_RV_F = tuple(getattr(r, f"UC_RISCV_REG_F{i}") for i in range(32))
_NZCV_BITS = 0xF000_0000  # the pstate bits a handler may see and change


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


def _frame(
    frame: Layout[RtSigframe],
    uc: Layout[Ucontext],
    siginfo: bytes,
    mask: int,
    stack: StackT,
    context: bytes,
) -> bytes:
    """An rt_sigframe: the siginfo, then a ucontext with no flags and no link."""
    ucontext = uc.pack(Ucontext(0, 0, STACK_T.pack(stack), mask, context))
    return frame.pack(RtSigframe(siginfo, ucontext))


def _sve_record(uc: Uc, vregs: bytes) -> bytes:
    """The sve_context record (arch/arm64/kernel/signal.c, preserve_sve_context). A task with
    SVE state (it ran SVE since its last system call: TIF_SVE, here EL0's SVE enable) gets the
    header, Z0-Z31 (each its V register: the vector length is one quadword), P0-P15 and FFR,
    head.size being SVE_SIG_CONTEXT_SIZE rounded up to 16; any other task the header alone."""
    if not sve_enabled(uc):
        return SVE_CONTEXT.pack(SveContext(SVE_MAGIC, SVE_CONTEXT.size, SVE_VECTOR_BYTES, 0))
    vq = SVE_VECTOR_BYTES // SVE_VQ_BYTES
    size = (sve_sig_context_size(vq) + 15) & ~15
    header = SVE_CONTEXT.pack(SveContext(SVE_MAGIC, size, SVE_VECTOR_BYTES, flags=0))
    body = header + vregs + b"".join(sve_predicates(uc).read())
    return body.ljust(size, b"\0")


def _restore_sve(uc: Uc, reserved: bytes, pos: int) -> None:
    """Take P0-P15 and FFR back from an sve_context record at `pos` (restore_sve_fpsimd_
    context). Its Z registers are not taken: the kernel loads the V half of each Z from the
    fpsimd record after them, and here V is the whole Z."""
    record = SVE_CONTEXT.unpack(reserved, pos)
    vq = SVE_VECTOR_BYTES // SVE_VQ_BYTES
    if record.vl != SVE_VECTOR_BYTES:
        return  # not this task's length: the kernel refuses the frame; nothing is loaded
    if record.size == SVE_CONTEXT.size:  # the header alone: the task has no SVE state
        set_sve_enabled(uc, False)
        return
    if record.size < sve_sig_context_size(vq):
        return
    start = pos + sve_sig_preg_offset(vq, 0)
    values = [
        reserved[start + i * SVE_PREDICATE_BYTES :][:SVE_PREDICATE_BYTES]
        for i in range(SvePredicates.COUNT)
    ]
    sve_predicates(uc).write(values)
    set_sve_enabled(uc, True)  # TIF_SVE: the task has SVE state again


class Aarch64Frames:
    size = A64_RT_SIGFRAME.size

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
        stack: StackT,
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
        vregs = b"".join(uc.reg_read(v).to_bytes(16, "little") for v in _A64_V)
        # frame record {fp, lr} first (highest), then the 16-aligned rt_sigframe below it
        record = (sp - A64_FRAME_RECORD.size) & ~15
        frame = (record - A64_RT_SIGFRAME.size) & ~15
        records = FPSIMD_CONTEXT.pack(
            FpsimdContext(FPSIMD_MAGIC, FPSIMD_CONTEXT.size, fpsr, fpcr, vregs)
        )
        if fault_address:
            records += ESR_CONTEXT.pack(EsrContext(ESR_MAGIC, ESR_CONTEXT.size, esr=0))
        if sve_supported(uc):  # after esr, as setup_sigframe_layout allocates them
            records += _sve_record(uc, vregs)
        # the rest of __reserved is zero, which is also the null record that ends the list
        sigcontext = A64_SIGCONTEXT.pack(
            A64Sigcontext(fault_address, xs, old_sp, pc, nzcv & _NZCV_BITS, records)
        )
        mem.write_init(
            frame, _frame(A64_RT_SIGFRAME, A64_UCONTEXT, siginfo, mask, stack, sigcontext)
        )
        mem.write_init(record, A64_FRAME_RECORD.pack(FrameRecord(fp=xs[29], lr=xs[30])))
        info = frame + A64_RT_SIGFRAME.offsets["info"]
        ucontext = frame + A64_RT_SIGFRAME.offsets["uc"]
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
    def pop(uc: Uc, mem: GuestMemory, sp: int) -> tuple[int, StackT]:
        """Restore the context saved at the frame at `sp`; returns (mask, its stack_t)."""
        saved = A64_UCONTEXT.unpack(mem.read(sp + A64_RT_SIGFRAME.offsets["uc"], A64_UCONTEXT.size))
        context = A64_SIGCONTEXT.unpack(saved.uc_mcontext)
        values = list(zip(_A64_X, context.regs)) + [
            (a.UC_ARM64_REG_SP, context.sp),
            (a.UC_ARM64_REG_PC, context.pc),
            (a.UC_ARM64_REG_NZCV, context.pstate & _NZCV_BITS),
        ]
        # walk the records in __reserved for the FP/SIMD state. The SVE predicates go in first:
        # they are written through a whole-context restore, which the registers below follow.
        reserved = context.reserved
        pos = 0
        while pos + A64_CTX.size <= len(reserved):
            ctx = A64_CTX.unpack(reserved, pos)
            if ctx.magic == 0 or ctx.size < A64_CTX.size:
                break
            if ctx.magic == SVE_MAGIC and pos + ctx.size <= len(reserved) and sve_supported(uc):
                _restore_sve(uc, reserved, pos)
            pos += ctx.size
        pos = 0
        while pos + A64_CTX.size <= len(reserved):
            ctx = A64_CTX.unpack(reserved, pos)
            if ctx.magic == 0 or ctx.size < A64_CTX.size:
                break
            if ctx.magic == FPSIMD_MAGIC and pos + FPSIMD_CONTEXT.size <= len(reserved):
                fp = FPSIMD_CONTEXT.unpack(reserved, pos)
                values += [(a.UC_ARM64_REG_FPSR, fp.fpsr), (a.UC_ARM64_REG_FPCR, fp.fpcr)]
                for i, v in enumerate(_A64_V):
                    uc.reg_write(v, int.from_bytes(fp.vregs[16 * i : 16 * i + 16], "little"))
            pos += ctx.size
        uc.reg_write_batch(values)
        return saved.uc_sigmask, STACK_T.unpack(saved.uc_stack)


class Riscv64Frames:
    size = RV_RT_SIGFRAME.size

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
        stack: StackT,
        fault_address: int = 0,
    ) -> FrameSetup:
        values = uc.reg_read_batch(_RV_X[1:] + (r.UC_RISCV_REG_PC, r.UC_RISCV_REG_FCSR))
        xs = values[:31]
        pc, fcsr = values[31:]
        fs = tuple(uc.reg_read(f) for f in _RV_F)
        frame = (sp - RV_RT_SIGFRAME.size) & ~15
        # the d_ext view of the fp union; the rest of the q_ext size is zero
        fp_state = RV_D_EXT_STATE.pack(RvDExtState(fs, fcsr))
        # user_regs_struct: regs[0] is the pc, then x1..x31
        sigcontext = RV_SIGCONTEXT.pack(RvSigcontext((pc, *xs), fp_state))
        mem.write_init(frame, _frame(RV_RT_SIGFRAME, RV_UCONTEXT, siginfo, mask, stack, sigcontext))
        info = frame + RV_RT_SIGFRAME.offsets["info"]
        ucontext = frame + RV_RT_SIGFRAME.offsets["uc"]
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
    def pop(uc: Uc, mem: GuestMemory, sp: int) -> tuple[int, StackT]:
        saved = RV_UCONTEXT.unpack(mem.read(sp + RV_RT_SIGFRAME.offsets["uc"], RV_UCONTEXT.size))
        context = RV_SIGCONTEXT.unpack(saved.uc_mcontext)
        fp = RV_D_EXT_STATE.unpack(context.sc_fpregs)
        regs = context.sc_regs
        values = [(r.UC_RISCV_REG_PC, regs[0])] + list(zip(_RV_X[1:], regs[1:]))
        values += list(zip(_RV_F, fp.f)) + [(r.UC_RISCV_REG_FCSR, fp.fcsr)]
        uc.reg_write_batch(values)
        return saved.uc_sigmask, STACK_T.unpack(saved.uc_stack)


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
