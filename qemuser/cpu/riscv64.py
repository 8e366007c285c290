"""RISC-V 64 as data."""

from __future__ import annotations

from typing import TYPE_CHECKING

from unicorn import UC_ARCH_RISCV, UC_MODE_RISCV64
from unicorn import riscv_const as r

from qemuser.cpu.spec import CpuModel, CpuSpec, SyscallConv

if TYPE_CHECKING:
    from qemuser.cpu.debug import DebugView

EM_RISCV = 243
# capstone's constants as numbers (see aarch64.py)
CS_ARCH_RISCV = 15
CS_MODE_RISCV64 = 2
CS_MODE_RISCVC = 4

_ABI_NAMES = (
    "zero ra sp gp tp t0 t1 t2 s0 s1 a0 a1 a2 a3 a4 a5 a6 a7 "
    "s2 s3 s4 s5 s6 s7 s8 s9 s10 s11 t3 t4 t5 t6"
).split()
_X = tuple(getattr(r, f"UC_RISCV_REG_X{i}") for i in range(32))

# mstatus.FS = Dirty: the core resets with the FPU off, and every FP instruction would trap.
MSTATUS_FS_DIRTY = 3 << 13


def _debug_view() -> DebugView:
    """The registers as GDB sees them, built when a debugger attaches (not at every start)."""
    from qemuser.cpu.debug import DebugFeature, DebugRegister, DebugView

    # GDB's names: s0 is fp, as in its riscv target description
    x_names = (
        "zero ra sp gp tp t0 t1 t2 fp s1 a0 a1 a2 a3 a4 a5 a6 a7 "
        "s2 s3 s4 s5 s6 s7 s8 s9 s10 s11 t3 t4 t5 t6"
    ).split()
    f_names = (
        "ft0 ft1 ft2 ft3 ft4 ft5 ft6 ft7 fs0 fs1 fa0 fa1 fa2 fa3 fa4 fa5 fa6 fa7 "
        "fs2 fs3 fs4 fs5 fs6 fs7 fs8 fs9 fs10 fs11 ft8 ft9 ft10 ft11"
    ).split()
    x_types = {"sp": "data_ptr", "ra": "code_ptr", "fp": "data_ptr", "gp": "data_ptr"}
    return DebugView(
        architecture="riscv:rv64",
        features=(
            DebugFeature(
                "org.gnu.gdb.riscv.cpu",
                tuple(
                    DebugRegister(name, 64, r.UC_RISCV_REG_X0 + i, x_types.get(name, "int"))
                    for i, name in enumerate(x_names)
                )
                + (DebugRegister("pc", 64, r.UC_RISCV_REG_PC, "code_ptr"),),
            ),
            DebugFeature(
                "org.gnu.gdb.riscv.fpu",
                tuple(
                    DebugRegister(name, 64, r.UC_RISCV_REG_F0 + i, "ieee_double", "float")
                    for i, name in enumerate(f_names)
                )
                + (
                    DebugRegister("fflags", 32, r.UC_RISCV_REG_FFLAGS, "int", "float"),
                    DebugRegister("frm", 32, r.UC_RISCV_REG_FRM, "int", "float"),
                    DebugRegister("fcsr", 32, r.UC_RISCV_REG_FCSR, "int", "float"),
                ),
            ),
        ),
    )


RISCV64 = CpuSpec(
    name="riscv64",
    elf_machine=EM_RISCV,
    uc_arch=UC_ARCH_RISCV,
    uc_mode=UC_MODE_RISCV64,
    models=(
        # BASE64, not ANY: ANY's misa lacks S (supervisor mode), which system guests need.
        CpuModel(
            "rv64", r.UC_CPU_RISCV64_BASE64, "RV64GC (IMAFDC, Zicsr, Zifencei), S and U modes"
        ),
        CpuModel("sifive-u54", r.UC_CPU_RISCV64_SIFIVE_U54, "SiFive U54 (RV64GC)"),
    ),
    pc=r.UC_RISCV_REG_PC,
    sp=r.UC_RISCV_REG_SP,
    tls=r.UC_RISCV_REG_TP,
    link=r.UC_RISCV_REG_RA,
    syscall=SyscallConv(
        trap_intno=8,
        number=r.UC_RISCV_REG_A7,
        args=(
            r.UC_RISCV_REG_A0,
            r.UC_RISCV_REG_A1,
            r.UC_RISCV_REG_A2,
            r.UC_RISCV_REG_A3,
            r.UC_RISCV_REG_A4,
            r.UC_RISCV_REG_A5,
        ),
        ret=r.UC_RISCV_REG_A0,
    ),
    gprs=tuple(zip(_ABI_NAMES, _X)),
    debug_view=_debug_view,
    capstone=(CS_ARCH_RISCV, CS_MODE_RISCV64 | CS_MODE_RISCVC),
    extra_init=((r.UC_RISCV_REG_MSTATUS, MSTATUS_FS_DIRTY),),
)
