"""The static binfmt interpreter by itself (qemuser/binfmt/build.py, static/main.c): built once
into its cache, needing nothing from the filesystem, run here as the kernel would run it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from qemuser.binfmt.build import BuildError, build, cache_dir
from qemuser.binfmt.system import SETTINGS_MARKER, BinfmtError, patch_settings
from tests.conftest import fixture_path

PT_INTERP = 3


@pytest.fixture(scope="module")
def static_interpreter() -> Path:
    cache = cache_dir()
    if os.geteuid() != 0 and not os.access(cache if cache.exists() else cache.parent, os.W_OK):
        pytest.skip(f"{cache} is not writable (set QEMUSER_BINFMT_CACHE, or run as root)")
    try:
        return build().path
    except BuildError as exc:
        pytest.fail(f"the static interpreter does not build here: {exc}")


def program_headers(path: Path) -> list[int]:
    data = path.read_bytes()
    phoff = int.from_bytes(data[32:40], "little")
    size, count = int.from_bytes(data[54:56], "little"), int.from_bytes(data[56:58], "little")
    return [
        int.from_bytes(data[phoff + i * size : phoff + i * size + 4], "little")
        for i in range(count)
    ]


def install_copy(image: Path, where: Path, arch: str, sysroot: str | None = None) -> Path:
    target = where / f"qemuser-binfmt-{arch}"
    target.write_bytes(patch_settings(image.read_bytes(), {"arch": arch, "sysroot": sysroot}))
    target.chmod(0o755)
    return target


def test_is_static_and_reused(static_interpreter):
    """No PT_INTERP: the kernel needs no ld.so from the caller's root to start it. A second
    build finds the first in the cache."""
    assert PT_INTERP not in program_headers(static_interpreter)
    first = build()  # (the sources may have changed since the fixture's build)
    again = build()
    assert again.reused and again.path == first.path


@pytest.mark.parametrize("arch", ["aarch64", "riscv64"])
def test_runs_a_guest_as_the_kernel_calls_it(static_interpreter, tmp_path, arch):
    """argv as binfmt_misc makes it without P: interpreter, filename, arguments; an empty
    environment and a cwd where none of our files are."""
    interpreter = install_copy(static_interpreter, tmp_path, arch)
    hello = fixture_path(arch, "hello", "static")
    result = subprocess.run(
        [str(interpreter), str(hello), "x"], capture_output=True, env={}, cwd="/", timeout=120
    )
    assert (result.returncode, result.stderr) == (0, b"")
    assert result.stdout == b"Hello, world!\nargc=2 argv0-set=1\n"
    probe = fixture_path(arch, "cli_probe", "static")
    result = subprocess.run([str(interpreter), str(probe), "exit", "9"], capture_output=True)
    assert result.returncode == 9
    result = subprocess.run([str(interpreter), str(probe), "raise", "15"], capture_output=True)
    assert result.returncode == -15


def test_sysroot_setting(static_interpreter, tmp_path):
    if not Path("/usr/aarch64-linux-gnu/lib").is_dir():
        pytest.skip("Debian's aarch64 cross libc (libc6-dev-arm64-cross) is not installed")
    empty = tmp_path / "empty"
    empty.mkdir()
    hello = fixture_path("aarch64", "hello", "dynamic")
    good = install_copy(static_interpreter, tmp_path, "aarch64", "/usr/aarch64-linux-gnu")
    result = subprocess.run([str(good), str(hello)], capture_output=True, env={})
    assert result.stdout == b"Hello, world!\nargc=1 argv0-set=1\n", result.stderr
    bad = install_copy(static_interpreter, tmp_path, "aarch64", str(empty))
    # QEMU_LD_PREFIX would have found the libraries: the installed sysroot wins
    env = {"QEMU_LD_PREFIX": "/usr/aarch64-linux-gnu"}
    assert subprocess.run([str(bad), str(hello)], capture_output=True, env=env).returncode != 0


def test_errors_are_one_line(static_interpreter, tmp_path):
    interpreter = install_copy(static_interpreter, tmp_path, "aarch64")
    result = subprocess.run([str(interpreter), str(tmp_path / "missing")], capture_output=True)
    assert result.returncode == 1 and result.stdout == b""
    assert result.stderr.startswith(b"qemuser-binfmt-aarch64: ")
    assert result.stderr.count(b"\n") == 1 and b"Traceback" not in result.stderr
    result = subprocess.run([str(interpreter)], capture_output=True)
    assert result.returncode == 1
    assert result.stderr == (
        b"qemuser-binfmt-aarch64: no binary given (this program is run by binfmt_misc)\n"
    )


def test_the_architecture_comes_from_the_settings(static_interpreter, tmp_path):
    """One image for both architectures: the slot says which; a riscv64 interpreter refuses an
    aarch64 program as qemu-riscv64 would."""
    interpreter = install_copy(static_interpreter, tmp_path, "riscv64")
    renamed = tmp_path / "some-name"
    shutil.copy(interpreter, renamed)
    hello = fixture_path("aarch64", "hello", "static")
    result = subprocess.run([str(renamed), str(hello)], capture_output=True)
    assert result.returncode == 1 and result.stderr.startswith(b"qemuser-binfmt-riscv64: ")


def test_patch_settings():
    image = b"head" + SETTINGS_MARKER + b"{}".ljust(4096, b"\0") + b"tail"
    patched = patch_settings(image, {"arch": "aarch64", "sysroot": None})
    assert len(patched) == len(image) and patched.endswith(b"tail")
    slot = patched[4 + len(SETTINGS_MARKER) :][:4096]
    assert json.loads(slot.rstrip(b"\0")) == {"arch": "aarch64", "sysroot": None}
    with pytest.raises(BinfmtError, match=r"no \(or no single\) settings slot"):
        patch_settings(image + image, {})
    with pytest.raises(BinfmtError, match=r"no \(or no single\) settings slot"):
        patch_settings(b"nothing", {})
    with pytest.raises(BinfmtError, match="settings too long"):
        patch_settings(image, {"sysroot": "x" * 5000})


def test_falls_back_to_the_launcher_when_it_cannot_build(tmp_path, monkeypatch):
    """No static interpreter (no libpython3.11-dev, say): install says why and writes the
    launcher and its Python script instead; a later successful build replaces them."""
    import qemuser.binfmt.build as build_module
    from qemuser.binfmt.system import InstallOptions, write_interpreter
    from qemuser.cpu import CPUS

    if shutil.which("cc") is None:
        pytest.skip("no C compiler for the launcher")

    def broken(**_: object) -> None:
        raise BuildError("/usr/lib/x86_64-linux-gnu/libpython3.11.a is missing")

    notes: list[str] = []
    monkeypatch.setattr(build_module, "build", broken)
    path, changed = write_interpreter(CPUS["aarch64"], InstallOptions(), tmp_path, notes.append)
    assert changed and path == tmp_path / "qemuser-binfmt-aarch64"
    assert path.with_name(path.name + ".py").read_text().startswith("#!")
    assert SETTINGS_MARKER not in path.read_bytes()
    assert notes == [
        "cannot build the static interpreter (/usr/lib/x86_64-linux-gnu/libpython3.11.a is"
        " missing); using the launcher, which needs this machine's Python and files (chroots"
        " as root only, no containers)"
    ]
    monkeypatch.undo()
    if os.geteuid() != 0:
        return
    path, changed = write_interpreter(CPUS["aarch64"], InstallOptions(), tmp_path, notes.append)
    assert changed and SETTINGS_MARKER in path.read_bytes()
    assert not path.with_name(path.name + ".py").exists()
    assert write_interpreter(CPUS["aarch64"], InstallOptions(), tmp_path)[1] is False


def test_deb_src_lines_mirror_the_machines_debian_sources(tmp_path):
    """The private apt configuration that fetches python3.11's source: deb-src lines for the
    Debian archives of /etc/apt (deb822 and one-line formats), nothing of third parties."""
    from qemuser.binfmt.build import deb_src_lines

    (tmp_path / "sources.list").write_text(
        "# comment\ndeb http://mirror.example/debian bookworm main contrib\n"
        "deb-src http://mirror.example/debian bookworm main\n"
    )
    parts = tmp_path / "sources.list.d"
    parts.mkdir()
    (parts / "debian.sources").write_text(
        "Types: deb\n# http://snapshot.debian.org/archive/debian/20250520T000000Z\n"
        "URIs: http://deb.debian.org/debian\nSuites: bookworm bookworm-updates\n"
        "Components: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\n"
        "Types: deb\nURIs: http://deb.debian.org/debian-security\nSuites: bookworm-security\n"
        "Components: main\n"
    )
    (parts / "node.sources").write_text(
        "Types: deb\nURIs: https://deb.nodesource.com/node_20.x\nSuites: nodistro\n"
        "Components: main\n"
    )
    (parts / "cloud.list").write_text("deb https://packages.cloud.google.com/apt cloud main\n")
    key = "[signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] "
    assert deb_src_lines(tmp_path) == [
        "deb-src http://mirror.example/debian bookworm main contrib",
        f"deb-src {key}http://deb.debian.org/debian bookworm main",
        f"deb-src {key}http://deb.debian.org/debian bookworm-updates main",
        "deb-src http://deb.debian.org/debian-security bookworm-security main",
    ]
