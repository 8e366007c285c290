"""AArch64 as data."""

from __future__ import annotations

from typing import TYPE_CHECKING

from unicorn import UC_ARCH_ARM64, UC_MODE_ARM, Uc
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
        # what user mode gives of the core's features: PAC (qemuser.user.pauth), SVE at the
        # core's one vector length (SVE_VECTOR_BYTES); BTI is claimed by the core's ID
        # registers but cannot be enforced, MTE and SME are not in it (qemuser.user.linux)
        CpuModel(
            "max",
            a.UC_CPU_ARM64_MAX,
            "ARMv8.x as unicorn implements it (QEMU 5's max), with PAC and SVE",
            features=(
                ("pauth", "on: QARMA, keys random at each exec (no FPAC)"),
                ("sve", "on, one vector length: 128 bits (sve-max-vq=1); no SVE2"),
                ("bti", "not supported: no guarded pages without guest page tables"),
                ("mte", "not supported: not in unicorn's core"),
                ("sme", "not supported: not in unicorn's core"),
            ),
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


# ---- SVE ------------------------------------------------------------------------------------
# unicorn 2.1.4's "max" core implements SVE (ID_AA64PFR0_EL1.SVE = 1, ZFR0 = 0: no SVE2) at
# one vector length: `cntb` gives 16 whatever ZCR_EL1.LEN says (writes to it are ignored), so
# each Z register is its V register. Measured, and checked by tests/guest/test_sve.py.
SVE_VECTOR_BYTES = 16
SVE_PREDICATE_BYTES = SVE_VECTOR_BYTES // 8
_CPACR_EL1 = (3, 0, 1, 0, 2)
_CPACR_ZEN_EL1 = 1 << 16  # ZEN bit 0: SVE is not trapped at EL1 (set when the core has SVE)
_CPACR_ZEN_EL0 = 1 << 17  # ZEN bit 1: nor at EL0
# SVE_MAYBE_ON[0]: EL0's SVE enable may be set in this process's engine now (a list: the run
# loop tests it at every system call without a call). Set when SVE is enabled, and again when
# a thread's saved state comes back into the engine once SVE was ever used (SVE_USED[0]: that
# state may carry the enable); cleared when it is turned off. So the discard at a system call
# costs nothing for a task that ran no SVE since its last call (measured: a CPACR read and
# write at every call made a getppid round trip 4.6x dearer).
SVE_MAYBE_ON = [False]
SVE_USED = [False]


def sve_state_restored() -> None:
    """A saved CPU state (another thread's) was put back into the engine."""
    if SVE_USED[0]:
        SVE_MAYBE_ON[0] = True


def sve_supported(uc: Uc) -> bool:
    """Was the engine set up with SVE (CPACR_EL1.ZEN allows it at EL1 at least)?"""
    return bool(uc.cpr_read(*_CPACR_EL1) & _CPACR_ZEN_EL1)  # type: ignore[attr-defined]


def sve_enabled(uc: Uc) -> bool:
    """Does the guest at EL0 run SVE instructions now (CPACR_EL1.ZEN lets it)?"""
    return bool(uc.cpr_read(*_CPACR_EL1) & _CPACR_ZEN_EL0)  # type: ignore[attr-defined]


def set_sve_enabled(uc: Uc, on: bool) -> None:
    """Let EL0 run SVE (on), or make its next SVE instruction trap (off)."""
    cpacr = uc.cpr_read(*_CPACR_EL1)  # type: ignore[attr-defined]
    cpacr = cpacr | _CPACR_ZEN_EL0 if on else cpacr & ~_CPACR_ZEN_EL0
    uc.cpr_write(*_CPACR_EL1, cpacr)  # type: ignore[attr-defined]
    SVE_MAYBE_ON[0] = on
    if on:
        SVE_USED[0] = True


_predicates: dict[int, SvePredicates] = {}  # per engine handle, made at its first use


def sve_predicates(uc: Uc) -> SvePredicates:
    """The P0-P15/FFR accessor of engine `uc` (one context buffer per engine)."""
    handle = uc._uch.value  # type: ignore[attr-defined]
    found = _predicates.get(handle)
    if found is None:
        found = _predicates[handle] = SvePredicates(uc)
    return found


class SvePredicates:
    """P0-P15 and FFR, which unicorn's API does not expose: read and written in a saved CPU
    context (a copy of QEMU's CPUARMState), through one context buffer allocated once and C
    calls only (the binding's context_save/restore cost ~75/145 µs a call; these a few µs).
    In CPUARMState, `vfp.zregs[32]` (256 bytes each, ARM_MAX_VQ 16) are followed by
    `vfp.pregs[17]` (32 bytes each, FFR last). Where Z0 lies in the buffer is found once, by
    writing a marker to V0 (Z0's low half) and looking for it: the layout of the unicorn build
    is measured, not assumed."""

    ZREG_STRIDE = 256
    PREG_STRIDE = 32
    COUNT = 17  # P0-P15, FFR

    def __init__(self, uc: Uc) -> None:
        import ctypes
        import os

        from unicorn.unicorn_py3.unicorn import uclib

        self._lib = uclib
        self._handle = uc._uch  # the engine handle the binding itself passes to C
        self._context = ctypes.c_void_p()
        if uclib.uc_context_alloc(self._handle, ctypes.byref(self._context)):
            raise RuntimeError("unicorn could not allocate a CPU context")
        saved = uc.reg_read(a.UC_ARM64_REG_V0)
        marker = int.from_bytes(os.urandom(16), "little") | 1
        uc.reg_write(a.UC_ARM64_REG_V0, marker)
        self._save()
        uc.reg_write(a.UC_ARM64_REG_V0, saved)
        size = uclib.uc_context_size(self._handle)  # the whole buffer, its header included
        z0 = ctypes.string_at(self._context.value, size).find(marker.to_bytes(16, "little"))
        if z0 < 0:
            raise RuntimeError("SVE registers not found in unicorn's CPU context")
        self._address = self._context.value + z0 + 32 * self.ZREG_STRIDE
        self._span = self.COUNT * self.PREG_STRIDE

    def _save(self) -> None:
        if self._lib.uc_context_save(self._handle, self._context):
            raise RuntimeError("unicorn could not save the CPU context")

    def read(self) -> list[bytes]:
        """P0-P15 then FFR, SVE_PREDICATE_BYTES each (one bit per byte of a Z register)."""
        import ctypes

        self._save()
        data = ctypes.string_at(self._address, self._span)
        return [data[i * self.PREG_STRIDE :][:SVE_PREDICATE_BYTES] for i in range(self.COUNT)]

    def write(self, values: list[bytes]) -> None:
        """Set P0-P15 then FFR, the rest of the CPU as it is."""
        import ctypes

        self._save()
        for i, value in enumerate(values[: self.COUNT]):
            data = value[:SVE_PREDICATE_BYTES].ljust(SVE_PREDICATE_BYTES, b"\0")
            ctypes.memmove(self._address + i * self.PREG_STRIDE, data, SVE_PREDICATE_BYTES)
        if self._lib.uc_context_restore(self._handle, self._context):
            raise RuntimeError("unicorn could not restore the CPU context")


# ---- pointer authentication keys ------------------------------------------------------------
# APIAKeyLo_EL1 ... APGAKeyHi_EL1 as (op0, op1, CRn, CRm, op2): CRn 2, CRm 1 (APIA, APIB),
# 2 (APDA, APDB), 3 (APGA), Lo then Hi
_PAUTH_KEYS = tuple(
    (3, 0, 2, crm, op2) for crm, count in ((1, 4), (2, 4), (3, 2)) for op2 in range(count)
)
_ID_AA64ISAR1_EL1 = (3, 0, 0, 6, 1)
PAC_ADDRESS_KEYS, PAC_GENERIC_KEY = 0xF, 0x10  # APIA 1, APIB 2, APDA 4, APDB 8; APGA 16


def set_random_keys(uc: Uc, keys: int = 0x1F) -> None:
    """New random keys; `keys` is PR_PAC_RESET_KEYS's mask (APIA 1, APIB 2, APDA 4, APDB 8,
    APGA 16)."""
    import os

    for index, register in enumerate(_PAUTH_KEYS):
        if keys >> (index // 2) & 1:
            uc.cpr_write(*register, int.from_bytes(os.urandom(8), "little"))  # type: ignore[attr-defined]


def address_auth(isar1: int) -> bool:
    """ID_AA64ISAR1_EL1 APA (bits 7:4) or API (11:8): HWCAP_PACA."""
    return bool((isar1 >> 4) & 0xFF)


def generic_auth(isar1: int) -> bool:
    """ID_AA64ISAR1_EL1 GPA (bits 27:24) or GPI (31:28): HWCAP_PACG."""
    return bool((isar1 >> 24) & 0xFF)


def pauth_present(uc: Uc) -> tuple[bool, bool]:
    """(address authentication, generic authentication) in the core."""
    isar1 = uc.cpr_read(*_ID_AA64ISAR1_EL1)  # type: ignore[attr-defined]
    return address_auth(isar1), generic_auth(isar1)
