"""qemu-user's argument parsing (qemuser/user/options.py), without running a guest."""

from __future__ import annotations

import pytest

from qemuser.user.config import DEFAULT_STACK_SIZE
from qemuser.user.options import (
    MIN_STACK_SIZE,
    Done,
    Settings,
    UsageError,
    build_config,
    guest_environment,
    parse_args,
    parse_size,
)


def parse(*args: str, **environ: str):
    return parse_args("aarch64", list(args), environ)


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("1M", 1 << 20),
        ("512k", 512 << 10),
        ("512K", 512 << 10),
        ("1G", 1 << 30),
        ("0x200000", 0x200000),
        ("1", MIN_STACK_SIZE),
        ("4G", 4 << 30),
        ("1T", 1 << 40),  # qemu-user takes T too (issue 11, defect 12)
        ("5G", 5 << 30),
    ],
)
def test_sizes(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "0", "-1", "1X", "M", "1.5M", "0x1000000000000000000"])
def test_bad_sizes(text: str) -> None:
    with pytest.raises(UsageError):
        parse_size(text)


def test_options_stop_at_the_program() -> None:
    settings, program, guest_args = parse("-strace", "prog", "-s", "1M", "--", "-strace")
    assert settings.strace
    assert settings.stack_size == DEFAULT_STACK_SIZE
    assert (program, guest_args) == ("prog", ["-s", "1M", "--", "-strace"])


def test_double_dash_ends_options_and_long_forms_work() -> None:
    settings, program, _ = parse("--strace", "--", "-prog")
    assert settings.strace and program == "-prog"


def test_every_option() -> None:
    settings, program, args = parse(
        "-L",
        "/root",
        "-s",
        "1M",
        "-cpu",
        "cortex-a53",
        "-E",
        "A=1,B=2",
        "-U",
        "C",
        "-0",
        "name",
        "-d",
        "in_asm,page",
        "-D",
        "/tmp/log",
        "prog",
        "x",
    )
    assert settings == Settings(
        arch="aarch64",
        sysroot="/root",
        env_edits=[("A", "1"), ("B", "2"), ("C", None)],
        argv0="name",
        cpu="cortex-a53",
        stack_size=1 << 20,
        strace=False,
        log_items=frozenset({"in_asm", "page"}),
        log_file="/tmp/log",
    )
    config = build_config(settings, program, args)
    assert config.argv == [b"name", b"x"]
    assert (config.sysroot, config.cpu_model, config.stack_size) == ("/root", "cortex-a53", 1 << 20)
    assert config.log_items == {"in_asm", "page"} and config.log_file == "/tmp/log"


def test_environment_variables_and_precedence() -> None:
    settings, _, _ = parse(
        "-s",
        "2M",
        "prog",
        QEMU_LD_PREFIX="/r",
        QEMU_STACK_SIZE="1M",
        QEMU_CPU="cortex-a57",
        QEMU_SET_ENV="A=1",
        QEMU_UNSET_ENV="B",
        QEMU_ARGV0="z",
        QEMU_LOG="unimp",
        QEMU_LOG_FILENAME="/l",
        QEMU_STRACE="",
    )
    assert settings.stack_size == 2 << 20  # the flag wins
    assert (settings.sysroot, settings.cpu, settings.argv0) == ("/r", "cortex-a57", "z")
    assert settings.env_edits == [("A", "1"), ("B", None)]
    assert settings.log_items == {"unimp"} and settings.log_file == "/l"
    assert settings.strace  # QEMU_STRACE only needs to exist, as in qemu


def test_d_strace_is_strace() -> None:
    assert parse("-d", "strace", "prog")[0].strace


@pytest.mark.parametrize(
    ("args", "environ", "starts"),
    [
        (("-h",), {}, "usage: qemuser-aarch64"),
        (("-help",), {}, "usage: qemuser-aarch64"),
        (("-version",), {}, "qemuser-aarch64 version"),
        ((), {"QEMU_VERSION": ""}, "qemuser-aarch64 version"),
        (("-cpu", "help"), {}, "Available CPUs (aarch64):"),
        ((), {"QEMU_CPU": "help"}, "Available CPUs (aarch64):"),
        (("-d", "help"), {}, "Log items"),
    ],
)
def test_options_that_only_print(args, environ, starts) -> None:
    with pytest.raises(Done) as done:
        parse(*args, **environ)
    assert done.value.text.startswith(starts)


def test_guest_environment_edits_apply_in_order() -> None:
    settings, _, _ = parse("-E", "B=9,D=4", "-U", "A,E", "-E", "D=5,E=x=y", "-U", "C", "prog")
    host = {b"A": b"1", b"B": b"2", b"C": b"3", b"E": b"4"}
    assert guest_environment(settings, host) == [b"B=9", b"D=5", b"E=x=y"]
