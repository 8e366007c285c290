"""The emulated CPUs: hwcaps true to the model's ID registers, and each advertised feature
working (tests/fixtures/cpu_features.c checks instructions against plain-C results).

The lines about FP, rounding modes, exception flags and atomics must be those the same source
prints built for the host (where it prints only those). The lines about the architecture's own
features are written here: the aarch64 hwcap lines are what qemu-aarch64 reports for the same
model (unicorn's core, QEMU 5's max: SVE at one vector length, tests/guest/test_sve.py; no
SVE2, BTI or MTE); pointer authentication works (tests/guest/test_pauth.py).
"""

import pytest

from tests.conftest import NATIVE, all_builds, fixture_path, run_guest, run_native

AARCH64_MAX = (
    "hwcap: fp asimd aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm jscvt fcma "
    "lrcpc dcpop sha3 sm3 sm4 asimddp sha512 sve asimdfhm ilrcpc flagm sb paca pacg\n"
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


def native_output(flavour: str) -> str:
    """What the same source prints built for the host: the architecture-independent lines."""
    native = run_native(fixture_path(NATIVE, "cpu_features", flavour))
    assert native.returncode == 0, native.stderr.decode(errors="replace")
    assert native.stdout.startswith(b"fp: ")  # none of the guests' own lines
    return native.stdout.decode()


def expected_output(arch: str, model: str | None, flavour: str) -> str:
    tail = AARCH64_CAS128 if arch == "aarch64" else ""
    return MODEL_LINES[(arch, model)] + native_output(flavour) + tail


@pytest.mark.parametrize(("arch", "flavour"), all_builds("cpu_features"))
def test_default_model_features_work(arch: str, flavour: str) -> None:
    result = run_guest(arch, fixture_path(arch, "cpu_features", flavour))
    assert result.stdout.decode() == expected_output(arch, None, flavour)
    assert result.stderr == b""
    assert result.returncode == 0


@pytest.mark.parametrize(("arch", "model"), [("aarch64", "cortex-a53"), ("riscv64", "sifive-u54")])
def test_other_model_reports_its_own_features(arch: str, model: str) -> None:
    result = run_guest(arch, fixture_path(arch, "cpu_features", "dynamic"), options=("-cpu", model))
    assert result.stdout.decode() == expected_output(arch, model, "dynamic")
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
    from qemuser.user.linux import emulate_riscv_time_read

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
