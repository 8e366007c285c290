"""Install and uninstall qemuser's handlers on this machine, safely and idempotently.

Another handler that claims the same ELF files (Debian's qemu-aarch64 from qemu-user-binfmt, say)
is a conflict: install refuses and names it, `--replace` saves its registration to the state
directory and removes it, and uninstall registers it again exactly as it was.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from qemuser.binfmt.handler import (
    DEFAULT_FLAGS,
    HANDLER_PREFIX,
    Handler,
    claims,
    handler_for,
    parse_entry,
)
from qemuser.cpu import CpuSpec

BINFMT_DIR = Path("/proc/sys/fs/binfmt_misc")
STATE_DIR = Path(os.environ.get("QEMUSER_BINFMT_STATE", "/var/lib/qemuser/binfmt"))
LIBEXEC_DIR = Path(os.environ.get("QEMUSER_BINFMT_LIBEXEC", "/usr/local/libexec/qemuser"))
SPECIAL = ("register", "status")


class BinfmtError(Exception):
    """Something the user must fix: one line, non-zero exit."""


@dataclass(frozen=True)
class InstallOptions:
    flags: str = DEFAULT_FLAGS  # binfmt_misc flags in the kernel's order (handler.choose_flags)
    sysroot: str | None = None
    replace: bool = False


def require_root() -> None:
    if os.geteuid() != 0:
        raise BinfmtError("must be run as root (binfmt_misc handlers are system-wide)")


def ensure_mounted(root: Path = BINFMT_DIR) -> None:
    """Mount binfmt_misc at `root` when it is not there yet."""
    if (root / "register").exists():
        return
    if not root.is_dir():
        raise BinfmtError(f"{root} does not exist (kernel without binfmt_misc?)")
    result = subprocess.run(
        ["mount", "-t", "binfmt_misc", "binfmt_misc", str(root)], capture_output=True, text=True
    )
    if result.returncode != 0 or not (root / "register").exists():
        reason = result.stderr.strip().splitlines()[-1:] or ["no register file"]
        raise BinfmtError(f"cannot mount binfmt_misc on {root}: {reason[0]}")


def entries(root: Path = BINFMT_DIR) -> list[Handler]:
    """Every registered handler, by name."""
    found = []
    for path in sorted(root.iterdir()):
        if path.name in SPECIAL:
            continue
        try:
            found.append(parse_entry(path.name, path.read_text()))
        except OSError:
            continue  # removed meanwhile
    return found


def register(handler: Handler, root: Path = BINFMT_DIR) -> None:
    try:
        with open(root / "register", "w") as f:
            f.write(handler.register_line())
    except OSError as exc:
        raise BinfmtError(f"cannot register {handler.name}: {exc.strerror}") from None
    if not handler.enabled:
        (root / handler.name).write_text("0")


def remove(name: str, root: Path = BINFMT_DIR) -> None:
    path = root / name
    if path.exists():
        path.write_text("-1")


LAUNCHER_SOURCE = Path(__file__).with_name("launcher.c")


def interpreter_path(spec: CpuSpec, libexec: Path = LIBEXEC_DIR) -> Path:
    """The registered interpreter: the static interpreter (static/main.c), else the launcher."""
    return libexec / f"qemuser-binfmt-{spec.name}"


def build_launcher(target: Path) -> None:
    """Compile launcher.c to a static binary at `target` unless it is up to date."""
    if target.exists() and target.stat().st_mtime >= LAUNCHER_SOURCE.stat().st_mtime:
        return
    tmp = target.with_name(target.name + ".new")
    command = ["cc", "-O2", "-static", "-o", str(tmp), str(LAUNCHER_SOURCE)]
    try:
        result = subprocess.run(command, capture_output=True, text=True)
    except FileNotFoundError:
        raise BinfmtError("no C compiler (cc) to build the binfmt launcher") from None
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["?"])[-1]
        raise BinfmtError(f"cannot build the binfmt launcher: {last}")
    tmp.chmod(0o755)
    tmp.replace(target)


SETTINGS_MARKER = b"@@QEMUSER-BINFMT-SETTINGS@@\0"  # static/main.c's settings slot
SETTINGS_SIZE = 4096


def patch_settings(image: bytes, settings: dict[str, object]) -> bytes:
    """The static interpreter with `settings` in its slot (static/main.c: SETTINGS_MARKER)."""
    text = json.dumps(settings, sort_keys=True).encode()
    if len(text) >= SETTINGS_SIZE:
        raise BinfmtError(f"settings too long for the interpreter ({len(text)} bytes)")
    at = image.find(SETTINGS_MARKER)
    if at < 0 or image.find(SETTINGS_MARKER, at + 1) >= 0:
        raise BinfmtError("the static interpreter has no (or no single) settings slot")
    start = at + len(SETTINGS_MARKER)
    return image[:start] + text.ljust(SETTINGS_SIZE, b"\0") + image[start + SETTINGS_SIZE :]


def _replace_file(path: Path, data: bytes) -> bool:
    """Write `data` at `path` atomically unless it is there already; whether it changed."""
    if path.is_file() and path.stat().st_size == len(data) and path.read_bytes() == data:
        return False
    tmp = path.with_name(path.name + ".new")
    tmp.write_bytes(data)
    tmp.chmod(0o755)
    tmp.replace(path)
    return True


def write_interpreter(
    spec: CpuSpec,
    options: InstallOptions,
    libexec: Path = LIBEXEC_DIR,
    log: Callable[[str], None] | None = None,
) -> tuple[Path, bool]:
    """The program the kernel runs, and whether it changed. Normally the self-contained static
    interpreter (binfmt/build.py, cached) with the install's choices in its settings slot; when
    that cannot be built here, the native launcher and a Python script naming this Python
    (which needs the host's files: no containers)."""
    from qemuser.binfmt.build import BuildError, build

    path = interpreter_path(spec, libexec)
    libexec.mkdir(parents=True, exist_ok=True)
    script = path.with_name(path.name + ".py")
    try:
        built = build(log=log)
    except BuildError as exc:
        if log:
            log(
                f"cannot build the static interpreter ({exc}); using the launcher, which needs"
                " this machine's Python and files (chroots as root only, no containers)"
            )
    else:
        settings = {"arch": spec.name, "sysroot": options.sysroot}
        changed = _replace_file(path, patch_settings(built.path.read_bytes(), settings))
        script.unlink(missing_ok=True)  # a launcher install's leftover
        return path, changed
    before = path.read_bytes() if path.is_file() else b""
    if SETTINGS_MARKER in before:
        path.unlink()  # a static interpreter: build_launcher would take it as up to date
    build_launcher(path)
    settings_launcher = {"arch": spec.name, "sysroot": options.sysroot}
    text = (
        f"#!{sys.executable}\n"
        "# Written by qemuser-binfmt install: run by the binfmt launcher for "
        f"{spec.name}.\n"
        "from qemuser.binfmt.interpreter import main\n"
        # no interpreter teardown once the guest is done (it costs tens of ms a process)
        "from qemuser.cli.user import exit_now\n"
        f"exit_now(main({json.dumps(settings_launcher)!r}))\n"
    )
    tmp = path.with_name(path.name + ".py.new")
    tmp.write_text(text)
    tmp.chmod(0o755)
    tmp.replace(script)
    return path, path.read_bytes() != before


def _saved_path(spec: CpuSpec, state: Path) -> Path:
    return state / f"{spec.name}.replaced.json"


def conflicts(spec: CpuSpec, root: Path = BINFMT_DIR) -> list[Handler]:
    """Handlers other than ours that claim this architecture's ELF files."""
    ours = HANDLER_PREFIX + spec.name
    return [h for h in entries(root) if h.name != ours and claims(h, spec)]


def install(
    spec: CpuSpec,
    options: InstallOptions,
    root: Path = BINFMT_DIR,
    state: Path = STATE_DIR,
    libexec: Path = LIBEXEC_DIR,
    log: Callable[[str], None] | None = None,
) -> str:
    """Register qemuser's handler for `spec`; returns what was done, in one line (`log` gets
    the progress of a first build of the static interpreter, and warnings)."""
    others = conflicts(spec, root)
    if others and not options.replace:
        names = ", ".join(f"{h.name} ({h.interpreter})" for h in others)
        raise BinfmtError(f"{spec.name}: already claimed by {names}; use --replace to take over")
    if others:
        state.mkdir(parents=True, exist_ok=True)
        saved = _saved_path(spec, state)
        previous = json.loads(saved.read_text()) if saved.exists() else []
        known = {entry["name"] for entry in previous}
        for h in others:
            if h.name not in known:
                entry = asdict(h)
                entry["magic"] = h.magic.hex()
                entry["mask"] = h.mask.hex() if h.mask is not None else None
                previous.append(entry)
        saved.write_text(json.dumps(previous, indent=1))
        for h in others:
            remove(h.name, root)
    interpreter, changed = write_interpreter(spec, options, libexec, log)
    flags = options.flags
    wanted = handler_for(spec, str(interpreter), flags)
    current = {h.name: h for h in entries(root)}.get(wanted.name)
    # with F the kernel holds the file it opened at registration: a new one needs a new one
    stale = changed and "F" in flags
    if current is not None and _same(current, wanted) and not stale:
        return f"{wanted.name}: already installed ({interpreter}, flags '{flags}')"
    if current is not None:
        remove(wanted.name, root)
    register(wanted, root)
    taken = f", replacing {', '.join(h.name for h in others)}" if others else ""
    return f"{wanted.name}: installed ({interpreter}, flags '{flags}'){taken}"


def _same(a: Handler, b: Handler) -> bool:
    return (a.interpreter, sorted(a.flags), a.offset, a.magic, a.mask, a.enabled) == (
        b.interpreter,
        sorted(b.flags),
        b.offset,
        b.magic,
        b.mask,
        b.enabled,
    )


def uninstall(spec: CpuSpec, root: Path = BINFMT_DIR, state: Path = STATE_DIR) -> str:
    """Remove qemuser's handler for `spec` and give back the handlers it replaced."""
    name = HANDLER_PREFIX + spec.name
    done = []
    if (root / name).exists():
        remove(name, root)
        done.append(f"{name}: removed")
    saved = _saved_path(spec, state)
    if saved.exists():
        present = {h.name for h in entries(root)}
        for entry in json.loads(saved.read_text()):
            entry["magic"] = bytes.fromhex(entry["magic"])
            entry["mask"] = bytes.fromhex(entry["mask"]) if entry["mask"] is not None else None
            handler = Handler(**entry)
            if handler.name not in present:
                register(handler, root)
                done.append(f"{handler.name}: restored")
        saved.unlink()
    return "; ".join(done) if done else f"{name}: not installed"
