"""AArch64 as data."""

from unicorn import UC_ARCH_ARM64, UC_MODE_ARM
from unicorn import arm64_const as a

from qemuser.cpu import CpuModel, CpuSpec, SyscallConv

EM_AARCH64 = 183
# capstone's constants as numbers: importing capstone costs ~40 ms of every start, and only
# -d in_asm needs it (tests/unit/test_cpu_specs.py checks them against capstone).
CS_ARCH_ARM64 = 1
CS_MODE_ARM = 0

_X = tuple(getattr(a, f"UC_ARM64_REG_X{i}") for i in range(29))

AARCH64 = CpuSpec(
    name="aarch64",
    elf_machine=EM_AARCH64,
    uc_arch=UC_ARCH_ARM64,
    uc_mode=UC_MODE_ARM,
    # "max" is the model Debian's glibc needs: the A72 lacks LSE atomics, which glibc and
    # libgcc's outline atomics pick when the kernel's hwcaps say so (tests/guest check it).
    models=(
        CpuModel("max", a.UC_CPU_ARM64_MAX, "all features unicorn implements (ARMv8.x)"),
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
    capstone=(CS_ARCH_ARM64, CS_MODE_ARM),  # capstone's numbers, checked by a unit test
    page_size_settable=True,
)
