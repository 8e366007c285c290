"""struct ucontext and the machine context inside it, per architecture, and the sizes of the
rt_sigframe the kernel pushes for a handler.

Both: struct ucontext (arch/arm64/include/uapi/asm/ucontext.h, arch/riscv/include/uapi/asm/
ucontext.h): uc_flags, uc_link, uc_stack (stack_t), uc_sigmask, padding up to glibc's 1024-bit
sigset, then uc_mcontext (a struct sigcontext) at offset 176.

aarch64 (arch/arm64/include/uapi/asm/sigcontext.h): struct sigcontext is fault_address,
regs[31], sp, pc, pstate, then `__reserved[4096]` aligned to 16, a list of records each headed
by struct _aarch64_ctx {magic, size}: fpsimd_context (FPSIMD_MAGIC), esr_context (ESR_MAGIC),
sve_context (SVE_MAGIC, with the SVE_SIG_* register offsets), extra_context (EXTRA_MAGIC), ...,
ended by a null header.

riscv64 (arch/riscv/include/uapi/asm/sigcontext.h and ptrace.h): struct sigcontext is
user_regs_struct (pc, then x1..x31) and union __riscv_fp_state (f_ext, d_ext, q_ext; q_ext, with
64 doublewords aligned to 16, is the largest: 528 bytes).

struct rt_sigframe is the kernel's own (arch/arm64/kernel/signal.c, arch/riscv/kernel/signal.c):
{siginfo_t info; struct ucontext uc} on both.
"""

from __future__ import annotations

from typing import NamedTuple

from qemuser.syscalls.abi.layout import Layout
from qemuser.syscalls.abi.sigaction import STACK_T
from qemuser.syscalls.abi.siginfo import SIGINFO_SIZE


class Ucontext(NamedTuple):
    uc_flags: int
    uc_link: int
    uc_stack: bytes  # a stack_t: decode it with STACK_T
    uc_sigmask: int
    uc_mcontext: bytes  # the arch's struct sigcontext


def _ucontext_fields(sigcontext: Layout) -> list[tuple[str, str]]:  # type: ignore[type-arg]
    return [
        ("uc_flags", "Q"),
        ("uc_link", "Q"),
        ("uc_stack", f"{STACK_T.size}s"),
        ("uc_sigmask", "Q"),
        ("__unused", "120x"),  # 1024 / 8 - sizeof(sigset_t)
        ("__align", "8x"),  # struct sigcontext is aligned to 16 on both
        ("uc_mcontext", f"{sigcontext.size}s"),
    ]


class RtSigframe(NamedTuple):
    info: bytes  # siginfo_t
    uc: bytes  # struct ucontext


def _rt_sigframe(ucontext: Layout) -> Layout[RtSigframe]:  # type: ignore[type-arg]
    return Layout(
        "rt_sigframe", RtSigframe, [("info", f"{SIGINFO_SIZE}s"), ("uc", f"{ucontext.size}s")]
    )


# ---- aarch64 ---------------------------------------------------------------------------------
class A64Sigcontext(NamedTuple):
    fault_address: int
    regs: tuple[int, ...]  # x0..x30
    sp: int
    pc: int
    pstate: int
    reserved: bytes  # the record list


A64_RESERVED_SIZE = 4096
A64_SIGCONTEXT = Layout(
    "sigcontext",
    A64Sigcontext,
    [
        ("fault_address", "Q"),
        ("regs", "31Q"),
        ("sp", "Q"),
        ("pc", "Q"),
        ("pstate", "Q"),
        ("__align", "8x"),  # __reserved is __attribute__((aligned(16)))
        ("reserved", f"{A64_RESERVED_SIZE}s"),
    ],
)


class A64CtxHead(NamedTuple):
    magic: int
    size: int


A64_CTX = Layout("_aarch64_ctx", A64CtxHead, [("magic", "I"), ("size", "I")])


class FpsimdContext(NamedTuple):
    magic: int
    size: int
    fpsr: int
    fpcr: int
    vregs: bytes  # __uint128_t vregs[32], 16 little-endian bytes each


FPSIMD_MAGIC = 0x46508001
FPSIMD_CONTEXT = Layout(
    "fpsimd_context",
    FpsimdContext,
    [("magic", "I"), ("size", "I"), ("fpsr", "I"), ("fpcr", "I"), ("vregs", "512s")],
)


class EsrContext(NamedTuple):
    magic: int
    size: int
    esr: int


ESR_MAGIC = 0x45535201
ESR_CONTEXT = Layout("esr_context", EsrContext, [("magic", "I"), ("size", "I"), ("esr", "Q")])


class ExtraContext(NamedTuple):
    magic: int
    size: int
    datap: int
    data_size: int


EXTRA_MAGIC = 0x45585401
EXTRA_CONTEXT = Layout(
    "extra_context",
    ExtraContext,
    [("magic", "I"), ("size", "I"), ("datap", "Q"), ("data_size", "I"), ("__reserved", "12x")],
)


class SveContext(NamedTuple):
    magic: int
    size: int
    vl: int  # the vector length in bytes
    flags: int  # SVE_SIG_FLAG_SM: streaming mode (SME), never set here


SVE_MAGIC = 0x53564501
SVE_SIG_FLAG_SM = 1
# struct sve_context: the header of the SVE record; the registers follow it (when the task has
# SVE state) at the offsets below.
SVE_CONTEXT = Layout(
    "sve_context",
    SveContext,
    [("magic", "I"), ("size", "I"), ("vl", "H"), ("flags", "H"), ("__reserved", "4x")],
)
SVE_VQ_BYTES = 16  # one quadword: vector lengths are counted in these ("vq")


def sve_sig_regs_offset() -> int:
    """SVE_SIG_REGS_OFFSET: the registers start at the next quadword after the header."""
    return (SVE_CONTEXT.size + SVE_VQ_BYTES - 1) // SVE_VQ_BYTES * SVE_VQ_BYTES


def sve_sig_zreg_offset(vq: int, n: int) -> int:
    """SVE_SIG_ZREG_OFFSET(vq, n): Z0-Z31, vq * 16 bytes each."""
    return sve_sig_regs_offset() + vq * SVE_VQ_BYTES * n


def sve_sig_preg_offset(vq: int, n: int) -> int:
    """SVE_SIG_PREG_OFFSET(vq, n): P0-P15 after the Z registers, vq * 2 bytes each."""
    return sve_sig_zreg_offset(vq, 32) + vq * (SVE_VQ_BYTES // 8) * n


def sve_sig_ffr_offset(vq: int) -> int:
    """SVE_SIG_FFR_OFFSET(vq): FFR, the size of a P register, after P15."""
    return sve_sig_preg_offset(vq, 16)


def sve_sig_context_size(vq: int) -> int:
    """SVE_SIG_CONTEXT_SIZE(vq): header and registers (the record's head.size is this
    rounded up to 16)."""
    return sve_sig_ffr_offset(vq) + vq * (SVE_VQ_BYTES // 8)


A64_UCONTEXT = Layout("ucontext", Ucontext, _ucontext_fields(A64_SIGCONTEXT))
A64_RT_SIGFRAME = _rt_sigframe(A64_UCONTEXT)


class FrameRecord(NamedTuple):
    fp: int
    lr: int


# the AAPCS64 frame record {x29, x30} the kernel puts above an aarch64 rt_sigframe, so that
# unwinders walk from the handler into the interrupted code (arch/arm64/kernel/signal.c)
A64_FRAME_RECORD = Layout("frame_record", FrameRecord, [("fp", "Q"), ("lr", "Q")])


# ---- riscv64 ---------------------------------------------------------------------------------
class RvSigcontext(NamedTuple):
    sc_regs: tuple[int, ...]  # user_regs_struct: pc, then x1..x31
    sc_fpregs: bytes  # union __riscv_fp_state


class RvDExtState(NamedTuple):
    f: tuple[int, ...]  # f0..f31, as 64-bit patterns
    fcsr: int


RV_D_EXT_STATE = Layout("__riscv_d_ext_state", RvDExtState, [("f", "32Q"), ("fcsr", "I")], size=264)
RV_FP_STATE_SIZE = 528  # sizeof(union __riscv_fp_state): the q_ext member
RV_SIGCONTEXT = Layout(
    "sigcontext",
    RvSigcontext,
    [("sc_regs", "32Q"), ("sc_fpregs", f"{RV_FP_STATE_SIZE}s")],
)
RV_UCONTEXT = Layout("ucontext", Ucontext, _ucontext_fields(RV_SIGCONTEXT))
RV_RT_SIGFRAME = _rt_sigframe(RV_UCONTEXT)
