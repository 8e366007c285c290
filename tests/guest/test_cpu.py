"""The emulated CPUs: hwcaps true to the model's ID registers, and each advertised feature
working (tests/fixtures/cpu_features.c checks instructions against plain-C results).

COMMON_OUTPUT (FP, rounding modes, exception flags, atomics) is what the same source prints
compiled natively on Linux. The aarch64 hwcap lines are what qemu-aarch64 reports for the same
model, less sve, paca and pacg, which qemuser does not advertise (no SVE signal contexts, no
pointer-authentication keys).
"""

import pytest

from tests.conftest import all_builds, fixture_path, run_guest

COMMON_OUTPUT = (
    "fp: sqrt2=1.4142135623730951 fma=6.0999999999999996 div=0.33333333333333331\n"
    "fp: float 0.333333343, denormal 5.0000000000002318e-311, -0 sign 1, nan 1, inf 1\n"
    "fp: conversions -2 1000000000000000000 250 -9007199254740992\n"
    "round nearest: 0.33333333333333331 -0.33333333333333331 rint(2.5)=2 lrint(-2.5)=-2\n"
    "round upward: 0.33333333333333338 -0.33333333333333331 rint(2.5)=3 lrint(-2.5)=-2\n"
    "round downward: 0.33333333333333331 -0.33333333333333338 rint(2.5)=2 lrint(-2.5)=-3\n"
    "round towardzero: 0.33333333333333331 -0.33333333333333331 rint(2.5)=2 lrint(-2.5)=-2\n"
    "fp flags: divbyzero 1 overflow 1 invalid 1 inexact 1 cleared 1\n"
    "atomics: 250->4 65530->65531 0xfffffff0->0xffffffff 0xfffffffffffffff0->0x123456789abcdef\n"
    "cas: wrong-expected 0 (saw 0x123456789abcdef), right 1 -> 5, 32-bit 1 -> 7\n"
    "and/xor: 3 252\n"
)

AARCH64_MAX = (
    "hwcap: fp asimd aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm jscvt fcma "
    "lrcpc dcpop sha3 sm3 sm4 asimddp sha512 asimdfhm ilrcpc flagm sb\n"
    "crc32: match crc32c: match\n"
    "aes round: match\n"
    "pmull: match\n"
    "lse inline: 40 1 100 7\n"
    "neon: 3.25 6.0625 10 1.01562 tbl 105 0 sum 840\n"
    "dczid: zva allowed 1, zeroed 1, neighbours kept 1\n"
    "memset zero: 1\n"
    "midr readable: yes\n"
)

# An ARMv8.0 core: no LSE atomics, so libgcc's outline atomics take their LL/SC path.
AARCH64_CORTEX_A53 = (
    "hwcap: fp asimd aes pmull sha1 sha2 crc32 cpuid\n"
    "crc32: match crc32c: match\n"
    "aes round: match\n"
    "pmull: match\n"
    "lse inline: absent\n"
    "neon: 3.25 6.0625 10 1.01562 tbl 105 0 sum 840\n"
    "dczid: zva allowed 1, zeroed 1, neighbours kept 1\n"
    "memset zero: 1\n"
    "midr readable: yes\n"
)

RISCV64_RV64GC = "hwcap: a c d f i m\ncompressed: 32\nstraddling instruction: 42\n"

MODEL_LINES = {
    ("aarch64", None): AARCH64_MAX,
    ("aarch64", "cortex-a53"): AARCH64_CORTEX_A53,
    ("riscv64", None): RISCV64_RV64GC,
    ("riscv64", "sifive-u54"): RISCV64_RV64GC,
}
# a 16-byte compare-and-swap (CASP with LSE, else an LDAXP/STLXP loop) exists on aarch64 only
AARCH64_CAS128 = "cas 128-bit: 1 high 0xdeadbeef low 42\n"


def expected_output(arch: str, model: str | None) -> str:
    tail = AARCH64_CAS128 if arch == "aarch64" else ""
    return MODEL_LINES[(arch, model)] + COMMON_OUTPUT + tail


@pytest.mark.parametrize(("arch", "flavour"), all_builds("cpu_features"))
def test_default_model_features_work(arch: str, flavour: str) -> None:
    result = run_guest(arch, fixture_path(arch, "cpu_features", flavour))
    assert result.stdout.decode() == expected_output(arch, None)
    assert result.stderr == b""
    assert result.returncode == 0


@pytest.mark.parametrize(("arch", "model"), [("aarch64", "cortex-a53"), ("riscv64", "sifive-u54")])
def test_other_model_reports_its_own_features(arch: str, model: str) -> None:
    result = run_guest(arch, fixture_path(arch, "cpu_features", "dynamic"), options=("-cpu", model))
    assert result.stdout.decode() == expected_output(arch, model)
    assert result.returncode == 0


def test_cortex_a53_and_max_differ_as_their_id_registers_say() -> None:
    max_caps = set(AARCH64_MAX.splitlines()[0].split()[1:])
    a53_caps = set(AARCH64_CORTEX_A53.splitlines()[0].split()[1:])
    assert a53_caps < max_caps
    assert {"atomics", "asimdrdm", "lrcpc", "asimddp"} <= max_caps - a53_caps


def test_riscv_rdtime_trap_is_emulated_as_linux_allows() -> None:
    """unicorn traps `rdtime`; the trap handler's helper gives the time as Linux would."""
    from unicorn import UC_HOOK_INTR
    from unicorn.riscv_const import UC_RISCV_REG_A0, UC_RISCV_REG_A1, UC_RISCV_REG_PC

    from qemuser.cpu import CPUS
    from qemuser.syscalls.linux import emulate_riscv_time_read

    uc = CPUS["riscv64"].new_engine()
    uc.mem_map(0x10000, 0x1000)
    rdtime_a0, addi_a1_a0_1 = 0xC0102573, 0x00150593
    csrrs_a2_time_a1 = 0xC015A673  # sets bits of `time`: illegal on Linux too
    code = b"".join(i.to_bytes(4, "little") for i in (rdtime_a0, addi_a1_a0_1, csrrs_a2_time_a1))
    uc.mem_write(0x10000, code)
    traps = []

    def on_trap(uc, intno: int, _data: object) -> None:
        pc = uc.reg_read(UC_RISCV_REG_PC)  # already past the instruction
        handled = emulate_riscv_time_read(uc, pc - 4)
        traps.append((intno, pc - 4, handled))
        if not handled:
            uc.emu_stop()

    uc.hook_add(UC_HOOK_INTR, on_trap)
    uc.emu_start(0x10000, 0x1000C)
    a0 = uc.reg_read(UC_RISCV_REG_A0)
    assert a0 > 0 and uc.reg_read(UC_RISCV_REG_A1) == a0 + 1
    assert traps == [(2, 0x10000, True), (2, 0x10008, False)]
