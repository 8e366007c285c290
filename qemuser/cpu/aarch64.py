"""AArch64 as data."""

from __future__ import annotations

from typing import TYPE_CHECKING

from unicorn import UC_ARCH_ARM64, UC_MODE_ARM
from unicorn import arm64_const as a

from qemuser.cpu.spec import CpuModel, CpuSpec, SyscallConv

if TYPE_CHECKING:
    from qemuser.cpu.debug import DebugView

EM_AARCH64 = 183
# capstone's constants as numbers: importing capstone costs ~40 ms of every start, and only
# -d in_asm needs it (tests/unit/test_cpu_specs.py checks them against capstone).
CS_ARCH_ARM64 = 1
CS_MODE_ARM = 0

_X = tuple(getattr(a, f"UC_ARM64_REG_X{i}") for i in range(29))


def _debug_view() -> DebugView:
    """The registers as GDB sees them, built when a debugger attaches (not at every start)."""
    from qemuser.cpu.debug import DebugFeature, DebugRegister, DebugView

    # A V register seen as each lane shape (GDB's aarch64 tdesc offers the same views).
    vector_types = "\n".join(
        (
            '<vector id="v2d" type="ieee_double" count="2"/>',
            '<vector id="v2u" type="uint64" count="2"/>',
            '<vector id="v4f" type="ieee_single" count="4"/>',
            '<vector id="v4u" type="uint32" count="4"/>',
            '<vector id="v8u" type="uint16" count="8"/>',
            '<vector id="v16u" type="uint8" count="16"/>',
            '<union id="aarch64v">',
            '<field name="d" type="v2d"/>',
            '<field name="ud" type="v2u"/>',
            '<field name="s" type="v4f"/>',
            '<field name="us" type="v4u"/>',
            '<field name="h" type="v8u"/>',
            '<field name="b" type="v16u"/>',
            '<field name="q" type="uint128"/>',
            "</union>",
        )
    )

    x_regs = tuple(range(a.UC_ARM64_REG_X0, a.UC_ARM64_REG_X28 + 1)) + (
        a.UC_ARM64_REG_X29,
        a.UC_ARM64_REG_X30,
    )
    return DebugView(
        architecture="aarch64",
        features=(
            DebugFeature(
                "org.gnu.gdb.aarch64.core",
                tuple(DebugRegister(f"x{i}", 64, reg, "int") for i, reg in enumerate(x_regs))
                + (
                    DebugRegister("sp", 64, a.UC_ARM64_REG_SP, "data_ptr"),
                    DebugRegister("pc", 64, a.UC_ARM64_REG_PC, "code_ptr"),
                    # user mode runs at EL0 with nothing masked: only the condition flags are live
                    DebugRegister("cpsr", 32, a.UC_ARM64_REG_NZCV, "int", write_mask=0xF000_0000),
                ),
            ),
            DebugFeature(
                "org.gnu.gdb.aarch64.fpu",
                tuple(
                    DebugRegister(f"v{i}", 128, a.UC_ARM64_REG_V0 + i, "aarch64v", "vector")
                    for i in range(32)
                )
                + (
                    DebugRegister("fpsr", 32, a.UC_ARM64_REG_FPSR, "int", "float"),
                    DebugRegister("fpcr", 32, a.UC_ARM64_REG_FPCR, "int", "float"),
                ),
                vector_types,
            ),
        ),
    )


AARCH64 = CpuSpec(
    name="aarch64",
    elf_machine=EM_AARCH64,
    uc_arch=UC_ARCH_ARM64,
    uc_mode=UC_MODE_ARM,
    # "max" is the model Debian's glibc needs: the A72 lacks LSE atomics, which glibc and
    # libgcc's outline atomics pick when the kernel's hwcaps say so (tests/guest check it).
    models=(
        # the core has SVE (VL 128, once CPACR_EL1.ZEN and CPTR_EL3.EZ are set), BTI and MTE
        # bits too, but the Linux side (SVE signal records and prctl, guarded pages, tags) is
        # not there, so they are not advertised; PAC is (qemuser.user.pauth)
        CpuModel(
            "max",
            a.UC_CPU_ARM64_MAX,
            "ARMv8.x as unicorn implements it, with PAC; without SVE, SME, BTI, MTE",
        ),
        CpuModel("cortex-a72", a.UC_CPU_ARM64_A72, "ARM Cortex-A72 (ARMv8.0)"),
        CpuModel("cortex-a57", a.UC_CPU_ARM64_A57, "ARM Cortex-A57 (ARMv8.0)"),
        CpuModel("cortex-a53", a.UC_CPU_ARM64_A53, "ARM Cortex-A53 (ARMv8.0)"),
    ),
    pc=a.UC_ARM64_REG_PC,
    sp=a.UC_ARM64_REG_SP,
    tls=a.UC_ARM64_REG_TPIDR_EL0,
    link=a.UC_ARM64_REG_X30,
    syscall=SyscallConv(
        trap_intno=2,
        number=a.UC_ARM64_REG_X8,
        args=_X[:6],
        ret=a.UC_ARM64_REG_X0,
    ),
    gprs=tuple((f"x{i}", reg) for i, reg in enumerate(_X))
    + (("x29", a.UC_ARM64_REG_X29), ("x30", a.UC_ARM64_REG_X30), ("sp", a.UC_ARM64_REG_SP)),
    debug_view=_debug_view,
    capstone=(CS_ARCH_ARM64, CS_MODE_ARM),  # capstone's numbers, checked by a unit test
    page_size_settable=True,
)
