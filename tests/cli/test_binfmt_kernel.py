"""qemuser-binfmt against the real kernel: foreign binaries run by name.

Needs root and binfmt_misc (mounted here when it is not). Every test restores
/proc/sys/fs/binfmt_misc exactly as it found it, also when it fails midway.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from qemuser.binfmt.handler import Handler, handler_for, parse_entry
from qemuser.binfmt.system import BINFMT_DIR, SPECIAL, BinfmtError, ensure_mounted, register
from qemuser.cpu import CPUS
from tests.conftest import VENV_BIN, fixture_path

BINFMT = str(VENV_BIN / "qemuser-binfmt")


def snapshot() -> dict[str, str]:
    return {p.name: p.read_text() for p in BINFMT_DIR.iterdir() if p.name not in SPECIAL} | {
        "status": (BINFMT_DIR / "status").read_text()
    }


def restore(before: dict[str, str]) -> None:
    for path in BINFMT_DIR.iterdir():
        if path.name not in SPECIAL and before.get(path.name) != path.read_text():
            path.write_text("-1")
    for name, text in before.items():
        if name != "status" and not (BINFMT_DIR / name).exists():
            register(parse_entry(name, text))
    (BINFMT_DIR / "status").write_text("1" if before["status"].startswith("enabled") else "0")


@pytest.fixture
def binfmt(monkeypatch):
    """A sandbox: binfmt_misc restored afterwards, interpreters and state in a temp dir."""
    if os.geteuid() != 0:
        pytest.skip("binfmt_misc registration needs root")
    # binfmt_misc is one for the whole machine: pytest-xdist workers take turns
    lock = open(Path(tempfile.gettempdir()) / "qemuser-binfmt-tests.lock", "w")  # noqa: SIM115
    fcntl.flock(lock, fcntl.LOCK_EX)
    was_mounted = (BINFMT_DIR / "register").exists()
    try:
        ensure_mounted()
    except BinfmtError as exc:
        lock.close()
        pytest.skip(f"binfmt_misc unavailable: {exc}")
    before = snapshot()
    work = Path(tempfile.mkdtemp(prefix="qemuser-binfmt-"))
    work.chmod(0o755)  # the unprivileged runs must reach the binaries and the interpreter
    monkeypatch.setenv("QEMUSER_BINFMT_LIBEXEC", str(work / "libexec"))
    monkeypatch.setenv("QEMUSER_BINFMT_STATE", str(work / "state"))
    try:
        yield work
    finally:
        try:
            restore(before)
            shutil.rmtree(work, ignore_errors=True)
            assert snapshot() == before
        finally:
            if not was_mounted:
                subprocess.run(["umount", str(BINFMT_DIR)], check=False)
            lock.close()


def binfmt_cli(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run([BINFMT, *args], capture_output=True, text=True, timeout=120)
    if check:
        assert result.returncode == 0, result.stderr
    return result


def place(work: Path, arch: str, name: str, flavour: str) -> Path:
    target = work / f"{name}-{flavour}"
    shutil.copy(fixture_path(arch, name, flavour), target)
    target.chmod(0o755)
    return target


def run(argv: list[str], executable: str | None = None, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(argv, executable=executable, capture_output=True, timeout=120, **kwargs)


def args_lines(argv: list[str]) -> str:
    return "".join(f"argv[{i}]={a}\n" for i, a in enumerate(argv))


@pytest.mark.parametrize("flavour", ["static", "dynamic"])
def test_runs_by_name_without_p(binfmt, flavour):
    binfmt_cli("install", "--arch", "aarch64", "--no-preserve-argv0")
    prog = place(binfmt, "aarch64", "cli_probe", flavour)
    hello = place(binfmt, "aarch64", "hello", flavour)
    assert run([str(hello), "x"]).stdout == b"Hello, world!\nargc=2 argv0-set=1\n"
    # without P the kernel drops argv[0]: the guest sees the path it was run by
    result = run(["whatever", "args", "a b", ""], executable=str(prog), cwd=binfmt)
    assert result.returncode == 0, result.stderr
    assert result.stdout.decode().startswith(
        f"argc=4\n{args_lines([str(prog), 'args', 'a b', ''])}"
    )
    assert run([str(prog), "exit", "42"]).returncode == 42


@pytest.mark.parametrize("flavour", ["static", "dynamic"])
def test_runs_by_name_with_p(binfmt, flavour):
    binfmt_cli("install", "--arch", "aarch64")  # P is a default, as in qemu-user-static
    prog = place(binfmt, "aarch64", "cli_probe", flavour)
    result = run(["fancy-name", "args", "x"], executable=str(prog))
    assert result.returncode == 0, result.stderr
    assert result.stdout.decode().startswith(f"argc=3\n{args_lines(['fancy-name', 'args', 'x'])}")
    auxv = place(binfmt, "aarch64", "elf_auxv", flavour)
    assert b"AT_FLAGS=1 " in run([str(auxv)]).stdout


def test_environment_and_signal_status(binfmt):
    binfmt_cli("install", "--arch", "aarch64")
    prog = place(binfmt, "aarch64", "cli_probe", "static")
    result = run([str(prog), "args"], env={"CLI_A": "1", "CLI_B": "two words"})
    assert "env CLI_A=1\nenv CLI_B=two words\n" in result.stdout.decode()
    assert run([str(prog), "raise", "15"]).returncode == -15


NOBODY = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]


def require_setpriv() -> None:
    """The interpreter is the static one (nothing of this venv is run), so any user can run it;
    setpriv drops to nobody."""
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv is not installed")


def test_open_binary_reads_an_unreadable_binary(binfmt):
    """Mode 0711: only the kernel can read it. Without O the interpreter cannot open the file;
    with O it gets the kernel's fd (AT_EXECFD)."""
    require_setpriv()
    prog = place(binfmt, "aarch64", "cli_probe", "static")
    prog.chmod(0o711)
    nobody = NOBODY
    binfmt_cli("install", "--arch", "aarch64", "--no-open-binary")
    assert run([*nobody, str(prog), "exit", "3"]).returncode != 3
    binfmt_cli("install", "--arch", "aarch64")  # O is a default
    assert run([*nobody, str(prog), "exit", "3"]).returncode == 3


def test_credential_runs_setuid(binfmt):
    require_setpriv()
    prog = place(binfmt, "aarch64", "sys_info", "static")
    nobody = NOBODY
    binfmt_cli("install", "--arch", "aarch64", "--credential")
    assert "flags: POCF\n" in (BINFMT_DIR / "qemuser-aarch64").read_text()
    plain = run([*nobody, str(prog)])
    prog.chmod(0o4755)
    setuid = run([*nobody, str(prog)])
    assert plain.returncode == 0 and setuid.returncode == 0, setuid.stderr
    assert b"euid=0" in setuid.stdout and b"euid=0" not in plain.stdout


def fake_debian_qemu(work: Path) -> Handler:
    interpreter = work / "qemu-aarch64-fake"
    interpreter.write_text('#!/bin/sh\necho fake-qemu "$@"\n')
    interpreter.chmod(0o755)
    fake = handler_for(CPUS["aarch64"], str(interpreter), "P")
    return Handler(**{**fake.__dict__, "name": "qemu-aarch64"})


def test_conflict_replace_and_give_back(binfmt):
    register(fake_debian_qemu(binfmt))
    before = snapshot()
    refused = binfmt_cli("install", "--arch", "aarch64", check=False)
    assert refused.returncode == 1
    assert refused.stderr.startswith("qemuser-binfmt: aarch64: already claimed by qemu-aarch64")
    assert "Traceback" not in refused.stderr and snapshot() == before
    binfmt_cli("install", "--arch", "aarch64", "--replace")
    assert not (BINFMT_DIR / "qemu-aarch64").exists()
    prog = place(binfmt, "aarch64", "hello", "static")
    assert run([str(prog)]).stdout.startswith(b"Hello, world!")
    binfmt_cli("install", "--arch", "aarch64", "--replace")  # idempotent
    assert "qemuser-aarch64 [qemuser]" in binfmt_cli("status").stdout
    binfmt_cli("uninstall", "--arch", "aarch64")
    assert snapshot() == before
    assert run([str(prog)]).stdout.startswith(b"fake-qemu")


def test_default_flags_and_flag_choices(binfmt):
    """install registers P, O and F unless told otherwise; status shows what the kernel has."""
    before = snapshot()
    out = binfmt_cli("install", "--arch", "riscv64").stdout
    assert out.startswith("qemuser-riscv64: installed (") and out.endswith(", flags 'POF')\n")
    entry = (BINFMT_DIR / "qemuser-riscv64").read_text()
    assert "flags: POF\n" in entry
    status = binfmt_cli("status").stdout
    assert "riscv64: qemuser-riscv64 [qemuser] enabled flags 'POF' interpreter " in status
    binfmt_cli("install", "--arch", "riscv64", "--flags", "F", "--no-fix-binary")
    assert "flags: \n" in (BINFMT_DIR / "qemuser-riscv64").read_text()
    contradiction = ["--no-open-binary", "--credential"]
    refused = binfmt_cli("install", "--arch", "riscv64", *contradiction, check=False)
    assert refused.stderr == (
        "qemuser-binfmt: the credential flag (C) needs the open-binary flag (O)\n"
    )
    refused = binfmt_cli("install", "--arch", "riscv64", "--flags", "PQ", check=False)
    assert (refused.returncode, refused.stdout) == (1, "")
    assert refused.stderr == (
        "qemuser-binfmt: unknown binfmt_misc flag 'Q' in 'PQ'"
        " (the kernel's letters are P, O, C, F)\n"
    )
    assert "flags: \n" in (BINFMT_DIR / "qemuser-riscv64").read_text()  # untouched
    binfmt_cli("uninstall", "--arch", "riscv64")
    assert snapshot() == before


def test_install_uninstall_idempotent(binfmt):
    before = snapshot()
    binfmt_cli("install")
    after = snapshot()
    assert "already installed" in binfmt_cli("install").stdout
    assert snapshot() == after
    binfmt_cli("uninstall")
    assert snapshot() == before
    assert "not installed" in binfmt_cli("uninstall").stdout
    assert snapshot() == before


def test_refuses_when_not_root(binfmt):
    result = run(
        ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", BINFMT, "install"],
        text=True,
    )
    assert result.returncode == 1
    assert (
        result.stderr
        == "qemuser-binfmt: must be run as root (binfmt_misc handlers are system-wide)\n"
    )


@pytest.fixture
def debian_root() -> Path:
    from tests.real.debroot import ensure_root

    try:
        return ensure_root()
    except (OSError, subprocess.CalledProcessError, RuntimeError) as err:
        pytest.skip(f"no Debian arm64 root (run ./setup.sh as root): {err}")


@pytest.mark.slow
def test_chroot_into_debian_arm64_root(binfmt, debian_root):
    """As in debootstrap's second stage (/proc and /dev mounted in a private namespace): nested
    foreign programs (bash starting busybox and coreutils) find everything in the root.
    tests/containers/ has the chroot without /proc, pivot_root and podman."""
    if shutil.which("unshare") is None:
        pytest.skip("unshare (util-linux) is not installed")
    root = binfmt / "root"
    shutil.copytree(debian_root, root, symlinks=True)
    (root / "proc").mkdir(exist_ok=True)
    (root / "dev").mkdir(exist_ok=True)
    binfmt_cli("install", "--arch", "aarch64", "--persistent", "--preserve-argv0")
    mounts = f"mount -t proc proc {root}/proc && mount --bind /dev {root}/dev && exec chroot {root}"
    inside = ["unshare", "-m", "--propagation", "private", "sh", "-c", f'{mounts} "$@"', "sh"]
    result = run([*inside, "/bin/busybox", "echo", "ok"])
    assert (result.returncode, result.stdout) == (0, b"ok\n"), result.stderr
    script = "cd /etc && pwd; echo $0 $(/bin/busybox uname -m); /bin/ls / | /bin/busybox grep usr"
    script += "; exit 5"
    result = run([*inside, "/bin/bash", "-c", script], cwd="/")
    assert result.stdout == b"/etc\n/bin/bash aarch64\nusr\n", result.stderr
    assert result.returncode == 5


def test_both_architectures_by_name(binfmt):
    binfmt_cli("install")
    for arch in CPUS:
        hello = place(binfmt, arch, "hello", "static")
        target = hello.with_name(f"hello-{arch}")
        hello.rename(target)
        result = run([str(target), "a"])
        assert result.stdout == b"Hello, world!\nargc=2 argv0-set=1\n", result.stderr


def test_mounts_binfmt_misc_when_needed(binfmt):
    """In a private mount namespace without binfmt_misc mounted: status refuses, install mounts
    it (the registrations themselves are the kernel's, so uninstall runs too)."""
    if shutil.which("unshare") is None:
        pytest.skip("unshare (util-linux) is not installed")
    script = (
        f"umount {BINFMT_DIR} && {BINFMT} status; echo status=$?; "
        f"{BINFMT} install --arch riscv64 && {BINFMT} uninstall --arch riscv64"
    )
    result = run(["unshare", "-m", "--propagation", "private", "sh", "-c", script], text=True)
    assert result.stderr == f"qemuser-binfmt: binfmt_misc is not mounted on {BINFMT_DIR}\n"
    assert result.stdout.splitlines()[0] == "status=1"
    assert "qemuser-riscv64: installed" in result.stdout
    assert "qemuser-riscv64: removed" in result.stdout


def test_sysroot_precedence(binfmt):
    """Dynamic binaries find their libraries through --sysroot, else QEMU_LD_PREFIX, else
    Debian's /usr/<triple>."""
    if not Path("/usr/aarch64-linux-gnu/lib").is_dir():
        pytest.skip("Debian's aarch64 cross libc (libc6-dev-arm64-cross) is not installed")
    empty = binfmt / "empty"
    empty.mkdir()
    hello = place(binfmt, "aarch64", "hello", "dynamic")
    ok = b"Hello, world!\nargc=1 argv0-set=1\n"
    binfmt_cli("install", "--arch", "aarch64")
    assert run([str(hello)]).stdout == ok
    assert run([str(hello)], env={"QEMU_LD_PREFIX": str(empty)}).returncode != 0
    binfmt_cli("install", "--arch", "aarch64", "--sysroot", f"aarch64={empty}")
    assert run([str(hello)]).returncode != 0
    binfmt_cli("install", "--arch", "aarch64", "--sysroot", "aarch64=/usr/aarch64-linux-gnu")
    assert run([str(hello)], env={"QEMU_LD_PREFIX": str(empty)}).stdout == ok
