"""qemuser-binfmt without the kernel: handler strings, flags, parsing, exports."""

from __future__ import annotations

import subprocess

import pytest

from qemuser.binfmt.handler import (
    ET_DYN,
    ET_EXEC,
    FlagsError,
    Handler,
    choose_flags,
    claims,
    debian_import,
    elf_magic,
    handler_for,
    parse_entry,
    sample_header,
)
from qemuser.binfmt.interpreter import parse_kernel_call, parse_launcher_args
from qemuser.cpu import CPUS
from tests.conftest import VENV_BIN

AARCH64 = CPUS["aarch64"]
RISCV64 = CPUS["riscv64"]

# What Debian's qemu-user-binfmt registers for aarch64 (same magic and mask as ours).
DEBIAN_QEMU_AARCH64 = """enabled
interpreter /usr/libexec/qemu-binfmt/aarch64-binfmt-P
flags: POCF
offset 0
magic 7f454c460201010000000000000000000200b700
mask ffffffffffffff00fffffffffffffffffeffffff
"""


def elf_header(machine: int, e_type: int, osabi: int = 0, klass: int = 2, data: int = 1) -> bytes:
    ident = b"\x7fELF" + bytes([klass, data, 1, osabi]) + bytes(8)
    return ident + e_type.to_bytes(2, "little") + machine.to_bytes(2, "little")


@pytest.mark.parametrize("spec", [AARCH64, RISCV64], ids=lambda s: s.name)
def test_magic_matches_exec_and_dyn_any_osabi(spec):
    handler = handler_for(spec, "/x", "")
    for e_type in (ET_EXEC, ET_DYN):
        for osabi in (0, 3, 97):
            assert handler.matches(elf_header(spec.elf_machine, e_type, osabi))


@pytest.mark.parametrize("spec", [AARCH64, RISCV64], ids=lambda s: s.name)
def test_magic_rejects_others(spec):
    handler = handler_for(spec, "/x", "")
    assert not handler.matches(elf_header(62, ET_EXEC))  # x86_64
    assert not handler.matches(elf_header(spec.elf_machine, 1))  # ET_REL
    assert not handler.matches(elf_header(spec.elf_machine, 4))  # ET_CORE
    assert not handler.matches(elf_header(spec.elf_machine, ET_EXEC, klass=1))  # ELFCLASS32
    assert not handler.matches(elf_header(spec.elf_machine, ET_EXEC, data=2))  # big-endian
    assert not handler.matches(b"#!/bin/sh\n")


def test_magic_is_qemus():
    magic, mask = elf_magic(AARCH64)
    assert magic.hex() == "7f454c460201010000000000000000000200b700"
    assert mask.hex() == "ffffffffffffff00fffffffffffffffffeffffff"


def test_register_line_is_escaped():
    line = handler_for(AARCH64, "/usr/local/libexec/qemuser/qemuser-binfmt-aarch64", "PF")
    text = line.register_line()
    assert text.startswith(":qemuser-aarch64:M::\\x7f\\x45\\x4c\\x46\\x02")
    assert text.endswith(":/usr/local/libexec/qemuser/qemuser-binfmt-aarch64:PF")
    assert text.count(":") == 7


@pytest.mark.parametrize(
    ("letters", "options", "flags"),
    [
        (None, {}, "POF"),  # qemu-user-static's
        (None, {"preserve_argv0": False}, "OF"),
        (None, {"open_binary": False, "fix_binary": False}, "P"),
        (None, {"credential": True}, "POCF"),
        ("", {}, ""),
        ("", {"credential": True}, "OC"),  # C implies O, as in the kernel
        ("C", {}, "OC"),
        ("FP", {}, "PF"),  # the kernel's order
        ("PPF", {"fix_binary": False}, "P"),
        ("POCF", {"open_binary": None, "credential": False}, "POF"),
    ],
)
def test_flags(letters, options, flags):
    assert choose_flags(letters, **options) == flags


@pytest.mark.parametrize(
    ("letters", "options", "message"),
    [
        ("PX", {}, "unknown binfmt_misc flag 'X' in 'PX' (the kernel's letters are P, O, C, F)"),
        ("pof", {}, "unknown binfmt_misc flag 'f', 'o', 'p' in 'pof'"),
        ("C", {"open_binary": False}, "the credential flag (C) needs the open-binary flag (O)"),
    ],
)
def test_flags_refused(letters, options, message):
    with pytest.raises(FlagsError) as info:
        choose_flags(letters, **options)
    assert str(info.value).startswith(message)


def test_parse_entry_and_conflict():
    debian = parse_entry("qemu-aarch64", DEBIAN_QEMU_AARCH64)
    assert debian.flags == "POCF" and debian.enabled
    assert debian.interpreter == "/usr/libexec/qemu-binfmt/aarch64-binfmt-P"
    assert claims(debian, AARCH64) and not claims(debian, RISCV64)
    assert debian.matches(sample_header(AARCH64, ET_DYN))
    # the kernel's view round-trips into a registration that gives the same view back
    assert debian.register_line() == handler_for(
        AARCH64, debian.interpreter, "POCF"
    ).register_line().replace("qemuser-aarch64", "qemu-aarch64")


def test_parse_extension_entry():
    entry = parse_entry("jar", "disabled\ninterpreter /usr/bin/jexec\nflags: \nextension .jar\n")
    assert entry == Handler("jar", "/usr/bin/jexec", "", 0, b"jar", None, "E", False)
    assert entry.register_line() == ":jar:E::jar::/usr/bin/jexec:"
    assert not claims(entry, AARCH64)


def test_debian_import():
    text = debian_import(handler_for(AARCH64, "/i", "PC"))
    assert text.splitlines() == [
        "package qemuser",
        "interpreter /i",
        "magic " + "".join(f"\\x{b:02x}" for b in elf_magic(AARCH64)[0]),
        "mask " + "".join(f"\\x{b:02x}" for b in elf_magic(AARCH64)[1]),
        "preserve yes",
        "credentials yes",
    ]


def export(*args: str) -> tuple[int, str, str]:
    """qemuser-binfmt export as a user runs it (its errors are printed by its main)."""
    command = [str(VENV_BIN / "qemuser-binfmt"), "export", *args]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    return result.returncode, result.stdout, result.stderr


def test_export_systemd_defaults_are_qemu_user_statics():
    code, out, _ = export("--arch", "riscv64")
    assert code == 0
    assert out.startswith(":qemuser-riscv64:M::\\x7f\\x45\\x4c\\x46")
    assert out.endswith("/usr/local/libexec/qemuser/qemuser-binfmt-riscv64:POF\n")


@pytest.mark.parametrize(
    ("args", "flags"),
    [
        (["--no-fix-binary"], "PO"),
        (["--no-open-binary", "--no-preserve-argv0"], "F"),
        (["--credential"], "POCF"),
        (["--flags", "F", "--preserve-argv0"], "PF"),
        (["--flags", ""], ""),
        (["--flags", "", "--persistent"], "F"),  # the old name of --fix-binary
    ],
)
def test_export_flag_options(args, flags):
    code, out, _ = export("--arch", "aarch64", *args)
    assert code == 0
    assert out.endswith(f"qemuser-binfmt-aarch64:{flags}\n")


def test_export_refuses_unknown_flags():
    code, out, err = export("--arch", "aarch64", "--flags", "POZ")
    assert (code, out) == (1, "")
    assert err == (
        "qemuser-binfmt: unknown binfmt_misc flag 'Z' in 'POZ'"
        " (the kernel's letters are P, O, C, F)\n"
    )


def test_export_debian():
    code, out, _ = export("--arch", "aarch64", "--format", "debian", "--credential")
    assert code == 0
    assert out.splitlines()[-3:] == ["preserve yes", "credentials yes", "fix_binary yes"]
    # update-binfmts has no setting for O alone: refused, not dropped
    code, out, err = export("--arch", "aarch64", "--format", "debian")
    assert (code, out) == (1, "")
    assert err.startswith("qemuser-binfmt: update-binfmts cannot register the open-binary flag")


@pytest.mark.parametrize(
    ("args", "at_flags", "argv"),
    [
        ([b"/t/hello", b"a", b"b"], 0, [b"/t/hello", b"a", b"b"]),
        ([b"/t/hello", b"hi", b"a"], 1, [b"hi", b"a"]),
        ([b"./hello"], 0, [b"./hello"]),
    ],
)
def test_kernel_call(args, at_flags, argv):
    call = parse_kernel_call(args, at_flags, None)
    assert call.filename == args[0]
    assert call.argv == argv
    assert call.preserve_argv0 == bool(at_flags)


def test_launcher_args():
    parsed = parse_launcher_args(
        [b"--at-flags", b"1", b"--execfd", b"3", b"--root-fd", b"-1", b"--cwd-fd", b"-1"]
        + [b"--", b"/t/x", b"x", b"--at-flags"]
    )
    assert (parsed.at_flags, parsed.exec_fd, parsed.root_fd, parsed.cwd_fd) == (1, 3, None, None)
    assert parsed.rest == [b"/t/x", b"x", b"--at-flags"]
    with pytest.raises(ValueError):
        parse_launcher_args([b"--bogus", b"1", b"--"])


def test_no_binfmt_misc(tmp_path):
    from qemuser.binfmt.system import BinfmtError, ensure_mounted

    with pytest.raises(BinfmtError, match="does not exist"):
        ensure_mounted(tmp_path / "missing")
