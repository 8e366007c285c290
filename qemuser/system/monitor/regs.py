"""`info registers` in QEMU's layouts (target/arm/cpu.c aarch64_cpu_dump_state, target/riscv/
cpu.c riscv_cpu_dump_state), read from a unicorn engine."""

from __future__ import annotations

from unicorn import Uc
from unicorn import arm64_const as a64
from unicorn import riscv_const as rv

_RISCV_NAMES = (
    "zero ra sp gp tp t0 t1 t2 s0 s1 a0 a1 a2 a3 a4 a5 a6 a7 s2 s3 s4 s5 s6 s7 s8 s9 s10 s11 "
    "t3 t4 t5 t6"
).split()
_RISCV_FNAMES = (
    "ft0 ft1 ft2 ft3 ft4 ft5 ft6 ft7 fs0 fs1 fa0 fa1 fa2 fa3 fa4 fa5 fa6 fa7 fs2 fs3 fs4 fs5 "
    "fs6 fs7 fs8 fs9 fs10 fs11 ft8 ft9 ft10 ft11"
).split()


def register_dump(uc: Uc, arch: str) -> str:
    return _aarch64(uc) if arch == "aarch64" else _riscv64(uc)


def _aarch64(uc: Uc) -> str:
    out = [f" PC={uc.reg_read(a64.UC_ARM64_REG_PC):016x} "]
    for i in range(31):
        value = uc.reg_read(
            a64.UC_ARM64_REG_X0 + i
            if i < 29
            else (a64.UC_ARM64_REG_X29, a64.UC_ARM64_REG_X30)[i - 29]
        )
        out.append(f"X{i:02d}={value:016x}" + (" " if (i + 2) % 3 else "\n"))
    out.append(f" SP={uc.reg_read(a64.UC_ARM64_REG_SP):016x}\n")
    psr = uc.reg_read(a64.UC_ARM64_REG_PSTATE)
    flags = "".join(
        c if psr & bit else "-" for c, bit in zip("NZCV", (1 << 31, 1 << 30, 1 << 29, 1 << 28))
    )
    el = (psr >> 2) & 3
    out.append(f"PSTATE={psr:08x} {flags} EL{el}{'h' if psr & 1 else 't'}")
    fpcr = uc.reg_read(a64.UC_ARM64_REG_FPCR)
    fpsr = uc.reg_read(a64.UC_ARM64_REG_FPSR)
    out.append(f"     FPCR={fpcr:08x} FPSR={fpsr:08x}\n")
    for i in range(0, 32, 2):
        pair = []
        for n in (i, i + 1):
            q = uc.reg_read(a64.UC_ARM64_REG_Q0 + n)
            pair.append(f"Q{n:02d}={q >> 64:016x}:{q & (1 << 64) - 1:016x}")
        out.append(" ".join(pair) + "\n")
    return "".join(out)


def _riscv64(uc: Uc) -> str:
    out = [f" {'pc':<8} {uc.reg_read(rv.UC_RISCV_REG_PC):016x}\n"]
    for name, reg in (
        ("mhartid", rv.UC_RISCV_REG_MHARTID),
        ("mstatus", rv.UC_RISCV_REG_MSTATUS),
        ("mip", rv.UC_RISCV_REG_MIP),
        ("mie", rv.UC_RISCV_REG_MIE),
        ("mideleg", rv.UC_RISCV_REG_MIDELEG),
        ("medeleg", rv.UC_RISCV_REG_MEDELEG),
        ("mtvec", rv.UC_RISCV_REG_MTVEC),
        ("stvec", rv.UC_RISCV_REG_STVEC),
        ("mepc", rv.UC_RISCV_REG_MEPC),
        ("sepc", rv.UC_RISCV_REG_SEPC),
        ("mcause", rv.UC_RISCV_REG_MCAUSE),
        ("scause", rv.UC_RISCV_REG_SCAUSE),
        ("mtval", rv.UC_RISCV_REG_MTVAL),
        ("stval", rv.UC_RISCV_REG_STVAL),
        ("mscratch", rv.UC_RISCV_REG_MSCRATCH),
        ("sscratch", rv.UC_RISCV_REG_SSCRATCH),
        ("satp", rv.UC_RISCV_REG_SATP),
    ):
        out.append(f" {name:<8} {uc.reg_read(reg):016x}\n")
    for i, name in enumerate(_RISCV_NAMES):
        out.append(f" {f'x{i}/{name}':<8} {uc.reg_read(rv.UC_RISCV_REG_X0 + i):016x}")
        if i & 3 == 3:
            out.append("\n")
    for i, name in enumerate(_RISCV_FNAMES):
        out.append(f" {f'f{i}/{name}':<8} {uc.reg_read(rv.UC_RISCV_REG_F0 + i):016x}")
        if i & 3 == 3:
            out.append("\n")
    return "".join(out)
