"""SVE on aarch64 `-cpu max` (issue 11, defect 9): what unicorn's core runs, Linux's view of it.

unicorn 2.1.4's max core runs SVE at one vector length, 16 bytes (measured: `cntb` is 16
whatever ZCR_EL1.LEN says). qemuser advertises HWCAP_SVE, answers PR_SVE_GET_VL/SET_VL as a
kernel on a CPU with that one length does, and puts the sve_context record (Z, P, FFR) in
signal frames, restoring P/FFR from it at sigreturn; as Linux, it enables SVE at a task's
first SVE instruction and zeroes P/FFR at system calls. The expected lines are what
qemu-aarch64 -cpu max,sve-max-vq=1 prints for the same program, except where qemu-user and
Linux differ (said at each). Before: SIGILL at the first SVE instruction (no hwcap, no SVE
enable).
"""

import pytest

from tests.conftest import fixture_path, run_guest

SET_VL_LINES = (
    # a valid length is rounded to the one the CPU has
    "PR_SVE_SET_VL 0x10: 0x10\n"
    "PR_SVE_SET_VL 0x20: 0x10\n"
    "PR_SVE_SET_VL 0x100: 0x10\n"
    "PR_SVE_SET_VL 0x800: 0x10\n"
    "PR_SVE_SET_VL 0x2000: 0x10\n"
    # Linux takes PR_SVE_VL_INHERIT (and reports it back) and PR_SVE_SET_VL_ONEXEC
    # (arch/arm64/kernel/fpsimd.c, vec_set_vector_length); qemu-user 7.2 refuses both
    "PR_SVE_SET_VL 0x20010: 0x20010\n"
    "PR_SVE_SET_VL 0x40040: 0x10\n"
    # Linux: EINVAL for a length that is no multiple of 16 or out of 16..8192 (sve_vl_valid),
    # 0 included (qemu-user 7.2 rounds 0 up to 16), and for unknown flags
    "PR_SVE_SET_VL 0: 0xffffffff\n"
    "PR_SVE_SET_VL 0x8: 0xffffffff\n"
    "PR_SVE_SET_VL 0x18: 0xffffffff\n"
    "PR_SVE_SET_VL 0x2010: 0xffffffff\n"
    "PR_SVE_SET_VL 0x100010: 0xffffffff\n"
)

MAX_OUTPUT = (
    # before the task's first SVE instruction its record has no registers (SVE_SIG_CONTEXT_SIZE
    # of vq 0); qemu-user 7.2 always writes them all (576)
    "before SVE: record size 16 vl 16\n"
    "sve: cntb 16 cntd 2 rdvl 16\n"
    "PR_SVE_GET_VL: 16\n" + SET_VL_LINES + "PR_SVE_GET_VL: 0x10\n"
    "loops: mul 1 sum 148 (148)\n"
    "fmla dot: -3\n"
    # "All of P0..P15 and FFR become zero on return from a syscall" (Documentation/arch/arm64/
    # sve.rst); qemu-user 7.2 leaves them (16 after, 16)
    "syscall: p3 active 16 before, 0 after; ffr 0 after\n"
    # the record is SVE_SIG_CONTEXT_SIZE(1) = 562 rounded to 576; P1 = ptrue .h, FFR all
    # true, Z3 its V value; the P2 the handler wrote there (two lanes) is live afterwards
    "signal: vl 16 size 576 flags 0 p1 0x5555 ffr 0xffff z3 1 p2 after 2\n"
)


@pytest.mark.parametrize("flavour", ["static", "dynamic", "static-pie"])
def test_sve_runs_and_linux_reports_it(flavour: str) -> None:
    result = run_guest("aarch64", fixture_path("aarch64", "sve", flavour))
    assert result.stdout.decode() == MAX_OUTPUT
    assert (result.stderr, result.returncode) == (b"", 0)


@pytest.mark.parametrize("model", ["cortex-a72", "cortex-a53"])
def test_cores_without_sve_advertise_none(model: str) -> None:
    result = run_guest(
        "aarch64", fixture_path("aarch64", "sve", "dynamic"), options=("-cpu", model)
    )
    assert result.stdout == b"sve: absent, PR_SVE_GET_VL -1\n"
    assert (result.stderr, result.returncode) == (b"", 0)


def test_sve_record_layout_matches_the_kernel_macros() -> None:
    """SVE_SIG_* of arch/arm64/include/uapi/asm/sigcontext.h, as the cross compiler computes
    them with Debian's headers (vq 1, 3, 4)."""
    from qemuser.syscalls.abi import ucontext as u

    assert (u.SVE_CONTEXT.size, u.SVE_CONTEXT.offsets["vl"], u.SVE_CONTEXT.offsets["flags"]) == (
        16,
        8,
        10,
    )
    assert u.SVE_MAGIC == 0x53564501
    assert (u.sve_sig_regs_offset(), u.sve_sig_preg_offset(1, 0)) == (16, 528)
    assert (u.sve_sig_ffr_offset(1), u.sve_sig_context_size(1)) == (560, 562)
    assert u.sve_sig_zreg_offset(3, 5) == 256
    assert (u.sve_sig_preg_offset(4, 3), u.sve_sig_ffr_offset(4)) == (2088, 2192)
    assert u.sve_sig_context_size(4) == 2200
