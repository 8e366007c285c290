"""`-chardev BACKEND,id=ID,...` and the legacy chardev strings of -serial/-monitor/-qmp, as QEMU
parses them (chardev/char.c, qemu_chr_parse_compat), turned into backends."""

from __future__ import annotations

from dataclasses import dataclass, field

from qemuser.system.chardev.backends import (
    Chardev,
    NullChardev,
    RingbufChardev,
    SocketChardev,
    file_chardev,
    pipe_chardev,
    pty_chardev,
    stdio_chardev,
)
from qemuser.system.chardev.sockets import ChardevError, SocketSpec, parse_socket_spec
from qemuser.system.qemuopts import split_options

# Options each backend takes (besides id), as QEMU 7.2's -chardev.
BACKEND_OPTIONS = {
    "null": (),
    "stdio": ("signal",),
    "file": ("path", "append"),
    "pipe": ("path",),
    "pty": (),
    "socket": ("path", "host", "port", "server", "wait", "nodelay", "reconnect", "telnet"),
    "ringbuf": ("size",),
    "memory": ("size",),
}
ON_OFF = {"on": True, "yes": True, "off": False, "no": False}


@dataclass(frozen=True)
class ChardevSpec:
    """One chardev as the command line gave it."""

    id: str
    backend: str
    options: dict[str, str] = field(default_factory=dict)
    mux: bool = False  # mux=on / the "mon:" prefix: shared with a monitor through Ctrl-A


def parse_chardev_option(text: str) -> ChardevSpec:
    """-chardev BACKEND,id=ID[,options]"""
    pairs = split_options(text)
    backend = pairs[0][0]
    if pairs[0][1]:
        raise ChardevError("chardev: backend type is missing")
    if backend not in BACKEND_OPTIONS:
        raise ChardevError(f"'{backend}' is not a valid char driver name")
    options: dict[str, str] = {}
    chardev_id = None
    mux = False
    for key, value in pairs[1:]:
        if key == "id":
            chardev_id = value
        elif key == "mux":
            if value not in ON_OFF:
                raise ChardevError("Parameter 'mux' expects 'on' or 'off'")
            mux = ON_OFF[value]
        elif key in BACKEND_OPTIONS[backend]:
            options[key] = value
        else:
            raise ChardevError(f"Invalid parameter '{key}'")
    if not chardev_id:
        raise ChardevError("chardev: no id specified")
    if backend in ("file", "pipe") and "path" not in options:
        raise ChardevError(f"chardev: {backend}: no filename given")
    return ChardevSpec(chardev_id, backend, options, mux)


def parse_legacy(text: str, chardev_id: str) -> ChardevSpec | str:
    """A -serial/-monitor/-qmp string: a ChardevSpec, or "chardev:ID" -> ID (a reference), or
    "none" for no device."""
    mux = False
    if text.startswith("mon:"):
        mux, text = True, text[4:]
    if text.startswith("chardev:"):
        return text[len("chardev:") :]
    if text in ("null", "stdio", "pty", "none"):
        return "none" if text == "none" else ChardevSpec(chardev_id, text, {}, mux)
    kind, sep, rest = text.partition(":")
    if sep and kind == "file":
        return ChardevSpec(chardev_id, "file", {"path": rest}, mux)
    if sep and kind == "pipe":
        return ChardevSpec(chardev_id, "pipe", {"path": rest}, mux)
    if sep and kind in ("tcp", "unix"):
        parse_socket_spec(text)  # check it now, with QEMU's errors
        return ChardevSpec(chardev_id, "socket", {"legacy": text}, mux)
    raise ChardevError(f"'{text}' is not a valid char driver")


def _socket_spec(spec: ChardevSpec) -> SocketSpec:
    opts = spec.options
    if "legacy" in opts:
        return parse_socket_spec(opts["legacy"])
    flags = []
    for name in ("server", "wait"):
        if name in opts:
            if opts[name] not in ON_OFF:
                raise ChardevError(f"Parameter '{name}' expects 'on' or 'off'")
            flags.append(f"{name}={opts[name]}")
    if "path" in opts:
        if "host" in opts or "port" in opts:
            raise ChardevError("chardev: socket: 'path' and 'host'/'port' are mutually exclusive")
        legacy = f"unix:{opts['path']}"
    elif "port" in opts:
        legacy = f"tcp:{opts.get('host', '')}:{opts['port']}"
    else:
        raise ChardevError("chardev: socket: no host given")
    return parse_socket_spec(",".join([legacy, *flags]))


def socket_spec(spec: ChardevSpec) -> SocketSpec:
    """Where a socket chardev listens or connects (a monitor serves it itself)."""
    return _socket_spec(spec)


def open_chardev(spec: ChardevSpec) -> Chardev:
    """The backend of one spec, opened (a socket server is listening once this returns)."""
    opts = spec.options
    if spec.backend == "null":
        dev: Chardev = NullChardev(spec.id)
    elif spec.backend == "stdio":
        dev = stdio_chardev(spec.id)
    elif spec.backend == "file":
        append = opts.get("append", "off")
        if append not in ON_OFF:
            raise ChardevError("Parameter 'append' expects 'on' or 'off'")
        dev = file_chardev(spec.id, opts["path"], ON_OFF[append])
    elif spec.backend == "pipe":
        dev = pipe_chardev(spec.id, opts["path"])
    elif spec.backend == "pty":
        dev = pty_chardev(spec.id)
    elif spec.backend in ("ringbuf", "memory"):
        try:
            size = int(opts.get("size", "65536"), 0)
        except ValueError:
            raise ChardevError("Parameter 'size' expects a size") from None
        dev = RingbufChardev(spec.id, size)
    else:
        reconnect = opts.get("reconnect", "0")
        if not reconnect.isdigit():
            raise ChardevError("Parameter 'reconnect' expects uint64")
        if opts.get("telnet", "off") not in ("off", "no"):
            raise ChardevError("chardev: socket: telnet is not supported by qemuser")
        dev = SocketChardev(spec.id, _socket_spec(spec), int(reconnect))
    dev.label = spec.id
    return dev
