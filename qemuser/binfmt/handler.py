"""binfmt_misc handlers built from the cpu specs, and the kernel's view of them.

A handler is registered by writing `:name:M:offset:magic:mask:interpreter:flags` to
/proc/sys/fs/binfmt_misc/register; each registered handler then shows up as a file of that name
(`enabled`, `interpreter …`, `flags: …`, `offset …`, `magic …`, `mask …`). Writing `-1` to it
removes it, `0`/`1` disables/enables it.
"""

from __future__ import annotations

from dataclasses import dataclass

from qemuser.cpu import CpuSpec

ELFCLASS64 = 2
ELFDATA2LSB = 1
ELFDATA2MSB = 2
EV_CURRENT = 1
ET_EXEC = 2
ET_DYN = 3

# Flags in the kernel's order (fs/binfmt_misc.c); what each qemuser-binfmt option turns on.
FLAG_PRESERVE_ARGV0 = "P"
FLAG_OPEN_BINARY = "O"
FLAG_CREDENTIALS = "C"
FLAG_FIX_BINARY = "F"
FLAG_ORDER = "POCF"

HANDLER_PREFIX = "qemuser-"


@dataclass(frozen=True)
class Handler:
    """One binfmt_misc registration (a magic-type 'M' entry, or an extension-type 'E' one)."""

    name: str
    interpreter: str
    flags: str = ""
    offset: int = 0
    magic: bytes = b""
    mask: bytes | None = None  # None: all bits significant
    kind: str = "M"  # 'M' magic, 'E' extension (magic then holds the extension)
    enabled: bool = True

    def register_line(self) -> str:
        """The string to write to /proc/sys/fs/binfmt_misc/register."""
        if self.kind == "E":
            return f":{self.name}:E::{self.magic.decode()}::{self.interpreter}:{self.flags}"
        mask = escape(self.mask) if self.mask is not None else ""
        offset = str(self.offset) if self.offset else ""
        return (
            f":{self.name}:M:{offset}:{escape(self.magic)}:{mask}:{self.interpreter}:{self.flags}"
        )

    def matches(self, header: bytes) -> bool:
        """Whether the kernel would hand a file starting with `header` to this handler."""
        if self.kind != "M":
            return False
        window = header[self.offset : self.offset + len(self.magic)]
        if len(window) < len(self.magic):
            return False
        mask = self.mask if self.mask is not None else b"\xff" * len(self.magic)
        return all((h & m) == (g & m) for h, g, m in zip(window, self.magic, mask))


def escape(data: bytes) -> str:
    """Every byte as \\xHH: the kernel unescapes this, and ':' or NUL never appear raw."""
    return "".join(f"\\x{b:02x}" for b in data)


def elf_magic(spec: CpuSpec) -> tuple[bytes, bytes]:
    """(magic, mask) over the first 20 bytes of an ELF header: ELFCLASS64, the spec's byte order,
    EV_CURRENT, any EI_OSABI, EI_ABIVERSION 0, ET_EXEC or ET_DYN, the spec's e_machine."""
    data = ELFDATA2LSB if spec.little_endian else ELFDATA2MSB
    order = "little" if spec.little_endian else "big"
    ident = b"\x7fELF" + bytes([ELFCLASS64, data, EV_CURRENT, 0]) + bytes(8)
    magic = ident + ET_EXEC.to_bytes(2, order) + spec.elf_machine.to_bytes(2, order)
    # EI_OSABI (byte 7) is free; e_type's low bit is free so ET_EXEC (2) and ET_DYN (3) match.
    type_mask = b"\xfe\xff" if spec.little_endian else b"\xff\xfe"
    mask = b"\xff" * 7 + b"\x00" + b"\xff" * 8 + type_mask + b"\xff\xff"
    return magic, mask


# The defaults of `install`, as qemu-user-static's registration (issue 12): preserve-argv0,
# open-binary, fix-binary; credential (setuid binaries run as their owner) only when asked.
DEFAULT_FLAGS = "POF"


class FlagsError(ValueError):
    """Flags the kernel would not take, or a contradictory choice: one line for the user."""


def choose_flags(
    letters: str | None = None,
    *,
    preserve_argv0: bool | None = None,
    open_binary: bool | None = None,
    credential: bool | None = None,
    fix_binary: bool | None = None,
) -> str:
    """binfmt_misc flags: `letters` in the kernel's letters (default DEFAULT_FLAGS), then each
    option given (True adds, False removes, None leaves it). C implies O, as in the kernel."""
    base = DEFAULT_FLAGS if letters is None else letters
    unknown = sorted({c for c in base if c not in FLAG_ORDER})
    if unknown:
        raise FlagsError(
            f"unknown binfmt_misc flag {', '.join(repr(c) for c in unknown)} in '{base}'"
            f" (the kernel's letters are {', '.join(FLAG_ORDER)})"
        )
    chosen = set(base)
    for flag, wanted in (
        (FLAG_PRESERVE_ARGV0, preserve_argv0),
        (FLAG_OPEN_BINARY, open_binary),
        (FLAG_CREDENTIALS, credential),
        (FLAG_FIX_BINARY, fix_binary),
    ):
        if wanted is True:
            chosen.add(flag)
        elif wanted is False:
            chosen.discard(flag)
    if FLAG_CREDENTIALS in chosen:
        if open_binary is False:
            raise FlagsError("the credential flag (C) needs the open-binary flag (O)")
        chosen.add(FLAG_OPEN_BINARY)
    return "".join(f for f in FLAG_ORDER if f in chosen)


def handler_name(spec: CpuSpec) -> str:
    return HANDLER_PREFIX + spec.name


def handler_for(spec: CpuSpec, interpreter: str, flags: str) -> Handler:
    magic, mask = elf_magic(spec)
    return Handler(
        name=handler_name(spec), interpreter=interpreter, flags=flags, magic=magic, mask=mask
    )


def sample_header(spec: CpuSpec, e_type: int = ET_EXEC) -> bytes:
    """The first 20 bytes of a typical ELF executable of this architecture."""
    magic, _ = elf_magic(spec)
    order = "little" if spec.little_endian else "big"
    return magic[:16] + e_type.to_bytes(2, order) + magic[18:]


def claims(handler: Handler, spec: CpuSpec) -> bool:
    """Whether `handler` would take this architecture's executables or shared objects."""
    return any(handler.matches(sample_header(spec, t)) for t in (ET_EXEC, ET_DYN))


def parse_entry(name: str, text: str) -> Handler:
    """A handler from the text of /proc/sys/fs/binfmt_misc/<name>."""
    enabled = True
    interpreter = ""
    flags = ""
    offset = 0
    magic = b""
    mask: bytes | None = None
    kind = "M"
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if line in ("enabled", "disabled"):
            enabled = line == "enabled"
        elif key == "interpreter":
            interpreter = value
        elif line.startswith("flags:"):
            flags = line[len("flags:") :].strip()
        elif key == "offset":
            offset = int(value)
        elif key == "magic":
            magic = bytes.fromhex(value)
        elif key == "mask":
            mask = bytes.fromhex(value)
        elif key == "extension":
            kind = "E"
            magic = value.lstrip(".").encode()
    return Handler(
        name=name,
        interpreter=interpreter,
        flags=flags,
        offset=offset,
        magic=magic,
        mask=mask,
        kind=kind,
        enabled=enabled,
    )


def systemd_line(handler: Handler) -> str:
    """A line for /etc/binfmt.d/*.conf (systemd-binfmt writes it to the register file as is)."""
    return handler.register_line()


def debian_import(handler: Handler, package: str = "qemuser") -> str:
    """An import file for update-binfmts (/usr/share/binfmts/<name>), as qemu-user-binfmt has.

    update-binfmts knows no open-binary setting of its own (it sets O only with credentials), so
    O without C cannot be written: refused rather than silently dropped."""
    if FLAG_OPEN_BINARY in handler.flags and FLAG_CREDENTIALS not in handler.flags:
        raise FlagsError(
            "update-binfmts cannot register the open-binary flag (O) without credentials (C):"
            " add --credential or --no-open-binary"
        )
    lines = [
        f"package {package}",
        f"interpreter {handler.interpreter}",
        f"magic {escape(handler.magic)}",
    ]
    if handler.offset:
        lines.append(f"offset {handler.offset}")
    if handler.mask is not None:
        lines.append(f"mask {escape(handler.mask)}")
    if "P" in handler.flags:
        lines.append("preserve yes")
    if "C" in handler.flags:
        lines.append("credentials yes")
    if "F" in handler.flags:
        lines.append("fix_binary yes")
    return "\n".join(lines) + "\n"
