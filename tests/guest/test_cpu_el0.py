"""aarch64 guests run at EL0, and MRS of ID registers gives Linux's sanitised values (issue 11,
defect 9; arch/arm64/kernel/cpufeature.c, Documentation/arch/arm64/cpu-feature-registers.rst).

Before, the guest ran at unicorn's EL1: every MRS read the raw register (ID_AA64PFR1 showed
BT=1 with no BTI, PFR0 showed EL2/EL3 and AArch32), and CurrentEL read 4 instead of SIGILL.
The values below are those rules applied to unicorn 2.1.4's registers, field by field; qemu-
aarch64 gives the same way of sanitising (its own, richer max core aside) except the two noted.
"""

import pytest

from tests.conftest import fixture_path, run_guest

# unicorn's max core raw -> what Linux shows:
# - PFR0 0x1_0011_2222: SVE, AdvSIMD, FP visible; EL0/EL1 hidden as "AArch64 only" (1), EL2/EL3 0
# - PFR1 0x1: BT hidden (no guarded pages without guest page tables: no BTI is advertised)
# - ISAR1: SPECRES hidden; MMFR0: all hidden, the TGRAN* fields at their safe values (qemu-user
#   7.2 leaves TGRAN*_2 at 0; Linux's table says 1)
# - ID_ISAR0 (CRm 2, AArch32): 0, as on a CPU without AArch32 EL0 (qemu-user 7.2: SIGILL)
MAX_LINES = (
    "MIDR_EL1           0x00000000000f0510\n"
    "MPIDR_EL1          0x0000000080000000\n"
    "REVIDR_EL1         000000000000000000\n"
    "ID_AA64PFR0_EL1    0x0000000100110011\n"
    "ID_AA64PFR1_EL1    000000000000000000\n"
    "ID_AA64ZFR0_EL1    000000000000000000\n"
    "ID_AA64SMFR0_EL1   000000000000000000\n"
    "ID_AA64DFR0_EL1    0x0000000000000006\n"
    "ID_AA64AFR0_EL1    000000000000000000\n"
    "ID_AA64ISAR0_EL1   0x1021111110212120\n"
    "ID_AA64ISAR1_EL1   0x0000001101211012\n"
    "ID_AA64ISAR2_EL1   000000000000000000\n"
    "ID_AA64MMFR0_EL1   0x00000111ff000000\n"
    "ID_AA64MMFR1_EL1   000000000000000000\n"
    "ID_AA64MMFR2_EL1   000000000000000000\n"
    "ID_ISAR0_EL1       000000000000000000\n"
)
# outside the space Linux emulates, and registers EL0 may not read: SIGILL
SIGILL_LINES = (
    "ID_PFR0_EL1        SIGILL\n"
    "S3_0_C0_C0_1       SIGILL\n"
    "CCSIDR_EL1         SIGILL\n"
    "CurrentEL          SIGILL\n"
)
MAX_CHECKS = (
    "sve field 1 hwcap 1\nbt field 0 hwcap2 0\nmte field 0 hwcap2 0\npac fields 1 hwcap 1\n"
)

A53_LINES = (
    "MIDR_EL1           0x00000000410fd034\n"
    "MPIDR_EL1          0x0000000080000000\n"
    "REVIDR_EL1         000000000000000000\n"
    "ID_AA64PFR0_EL1    0x0000000000000011\n"
    "ID_AA64PFR1_EL1    000000000000000000\n"
    "ID_AA64ZFR0_EL1    000000000000000000\n"
    "ID_AA64SMFR0_EL1   000000000000000000\n"
    "ID_AA64DFR0_EL1    0x0000000000000006\n"
    "ID_AA64AFR0_EL1    000000000000000000\n"
    "ID_AA64ISAR0_EL1   0x0000000000011120\n"
    "ID_AA64ISAR1_EL1   000000000000000000\n"
    "ID_AA64ISAR2_EL1   000000000000000000\n"
    "ID_AA64MMFR0_EL1   0x00000111ff000000\n"
    "ID_AA64MMFR1_EL1   000000000000000000\n"
    "ID_AA64MMFR2_EL1   000000000000000000\n"
    "ID_ISAR0_EL1       000000000000000000\n"
)
A53_CHECKS = (
    "sve field 0 hwcap 0\nbt field 0 hwcap2 0\nmte field 0 hwcap2 0\npac fields 0 hwcap 0\n"
)


@pytest.mark.parametrize("flavour", ["static", "dynamic", "static-pie"])
def test_id_registers_read_as_linux_sanitises_them(flavour: str) -> None:
    result = run_guest("aarch64", fixture_path("aarch64", "cpu_idregs", flavour))
    assert result.stdout.decode() == MAX_LINES + SIGILL_LINES + MAX_CHECKS
    assert (result.stderr, result.returncode) == (b"", 0)


def test_a_core_without_the_features_shows_none() -> None:
    program = fixture_path("aarch64", "cpu_idregs", "dynamic")
    result = run_guest("aarch64", program, options=("-cpu", "cortex-a53"))
    assert result.stdout.decode() == A53_LINES + SIGILL_LINES + A53_CHECKS
    assert (result.stderr, result.returncode) == (b"", 0)


def test_an_hwcap_is_there_iff_its_id_field_is() -> None:
    """The hwcaps come from the same sanitised registers: nothing hidden is advertised."""
    from qemuser.cpu import CPUS
    from qemuser.user.linux import AARCH64_HIDDEN_FIELDS, aarch64_hwcaps
    from qemuser.user.sysregs import ID_AA64PFR1_EL1, sanitise

    uc = CPUS["aarch64"].new_engine()
    raw = uc.cpr_read(*ID_AA64PFR1_EL1)
    assert raw & 0xF == 1  # the core claims BTI...
    assert sanitise(ID_AA64PFR1_EL1, raw, AARCH64_HIDDEN_FIELDS) & 0xF == 0  # ...Linux hides it
    _hwcap, hwcap2 = aarch64_hwcaps(uc)
    assert not hwcap2 & (1 << 17 | 1 << 18)  # HWCAP2_BTI, HWCAP2_MTE


def test_cpu_help_says_what_max_does_not_support() -> None:
    import subprocess

    from tests.conftest import qemuser

    result = subprocess.run([qemuser("aarch64"), "-cpu", "help"], capture_output=True, check=True)
    lines = result.stdout.decode().splitlines()
    start = lines.index("Features of max:")
    assert lines[start + 1 : start + 6] == [
        "  pauth      on: QARMA, keys random at each exec (no FPAC)",
        "  sve        on, one vector length: 128 bits (sve-max-vq=1); no SVE2",
        "  bti        not supported: no guarded pages without guest page tables",
        "  mte        not supported: not in unicorn's core",
        "  sme        not supported: not in unicorn's core",
    ]
