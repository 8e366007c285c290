"""qemuser-binfmt without the kernel: handler strings, flags, parsing, exports."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from qemuser.binfmt.handler import (
    ET_DYN,
    ET_EXEC,
    Handler,
    claims,
    debian_import,
    elf_magic,
    flags_for,
    handler_for,
    parse_entry,
    sample_header,
)
from qemuser.binfmt.interpreter import parse_kernel_call, parse_launcher_args
from qemuser.cli.binfmt import cli
from qemuser.cpu import CPUS

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
    ("options", "flags"),
    [
        ({}, ""),
        ({"preserve_argv0": True}, "P"),
        ({"credential": True}, "OC"),
        ({"open_binary": True}, "O"),
        ({"persistent": True}, "F"),
        ({"preserve_argv0": True, "credential": True, "persistent": True}, "POCF"),
    ],
)
def test_flags(options, flags):
    kwargs = {"preserve_argv0": False, "credential": False, "persistent": False} | options
    assert flags_for(**kwargs) == flags


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


def test_export_systemd():
    result = CliRunner().invoke(cli, ["export", "--arch", "riscv64", "--persistent"])
    assert result.exit_code == 0
    assert result.output.startswith(":qemuser-riscv64:M::\\x7f\\x45\\x4c\\x46")
    assert result.output.rstrip().endswith("/qemuser-binfmt-riscv64:F")


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
