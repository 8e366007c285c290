"""qemuser-io: qemu-io's command interpreter (-c commands, or lines on stdin) over the block layer.

Each command prints what qemu-io prints: `read N/N bytes at offset X`, then the statistics line
`N KiB, 1 ops; 00.00 sec (R MiB/sec and P ops/sec)` (its figures are timings: tests compare the
first line and the shape of the second). aio_read/aio_write complete before the next command,
so their lines come right away, as they do with qemu-io for a single request.
"""

from __future__ import annotations

import getopt
import os
import shlex
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from qemuser.system.block import BlockError, open_image
from qemuser.system.block.driver import BlockDriver
from qemuser.system.block.probe import FORMATS
from qemuser.system.block.qcow2 import Qcow2Image
from qemuser.system.block.sizes import cvtstr, parse_size

PROG = "qemuser-io"


class CommandError(Exception):
    """A command failed; its message was printed already or is printed by the caller."""


@dataclass
class Session:
    img: BlockDriver | None = None
    temp: str | None = None  # the -s overlay, removed at close
    failed: bool = False
    out: list[str] = field(default_factory=list)


def tdiv(value: float, seconds: float) -> float:
    return value / seconds if seconds > 0 else float("inf")


def timestr(seconds: float, verbose: bool) -> str:
    whole = int(seconds)
    frac = seconds - whole
    if verbose or whole:
        return "%u:%02u:%05.2f" % (whole // 3600, whole // 60 % 60, whole % 60 + frac)  # noqa: UP031 (QEMU's printf format)
    return f"{frac:05.2f} sec"


def report(
    op: str, seconds: float, offset: int, count: int, total: int, cnt: int, bare: bool
) -> None:
    ts = timestr(seconds, bare)
    if not bare:
        print(f"{op} {total}/{count} bytes at offset {offset}")
        print(
            "%s, %d ops; %s (%s/sec and %.4f ops/sec)"  # noqa: UP031 (QEMU's printf format)
            % (cvtstr(total), cnt, ts, cvtstr(tdiv(total, seconds)), tdiv(cnt, seconds))
        )
    else:
        print("%d,%d,%s,%.3f,%.3f" % (total, cnt, ts, tdiv(total, seconds), tdiv(cnt, seconds)))  # noqa: UP031 (QEMU's printf format)


def cvtnum(text: str) -> int:
    try:
        return parse_size(text)
    except BlockError:
        print(f"Parsing error: non-numeric argument, or extraneous/unrecognized suffix -- {text}")
        raise CommandError from None


def pattern_byte(text: str) -> int:
    try:
        value = int(text, 0)
    except ValueError:
        value = -1
    if not 0 <= value <= 255:
        print(f"{text} is not a valid pattern byte")
        raise CommandError
    return value


def dump(data: bytes, offset: int) -> None:
    for i in range(0, len(data), 16):
        row = data[i : i + 16]
        hexes = "".join(f"{b:02x} " for b in row)
        text = "".join(chr(b) if 32 <= b < 127 else "." for b in row)
        print(f"{offset + i:08x}:  {hexes} {text}")


def need(s: Session) -> BlockDriver:
    if s.img is None:
        print("no file open, try 'help open'", file=sys.stderr)
        raise CommandError
    return s.img


def opts(args: list[str], short: str, usage: str) -> tuple[dict[str, str], list[str]]:
    try:
        found, rest = getopt.getopt(args, short)
    except getopt.GetoptError as e:
        print(f"{PROG}: invalid option -- '{e.opt}'")
        print(usage)
        raise CommandError from None
    return {k[1:]: v for k, v in found}, rest


def _io_error(op: str, e: BlockError) -> None:
    print(f"{op} failed: {e}")
    raise CommandError


def cmd_read(s: Session, args: list[str], vectored: bool = False, op: str = "read") -> None:
    usage = (
        "read [-abCqv] [-P pattern [-s off] [-l len]] off len -- reads a number of bytes "
        "at a specified offset"
    )
    o, rest = opts(args, "bCpqvP:s:l:" if not vectored else "CqvP:", usage)
    if "b" in o:
        print("read from the VM state is not supported")
        raise CommandError
    need_args = 2 if not vectored else 2
    if len(rest) < need_args or (not vectored and len(rest) != 2):
        print(f"bad argument count {len(rest)} to {op}, expected 2 arguments")
        raise CommandError
    img = need(s)
    offset = cvtnum(rest[0])
    lengths = [cvtnum(x) for x in rest[1:]]
    count = sum(lengths)
    pattern = pattern_byte(o["P"]) if "P" in o else None
    pstart = cvtnum(o["s"]) if "s" in o else 0
    plen = cvtnum(o["l"]) if "l" in o else count - pstart
    t0 = time.perf_counter()
    try:
        data = img.read(offset, count)
    except BlockError as e:
        _io_error("read", e)
    elapsed = time.perf_counter() - t0
    bad = False
    if pattern is not None:
        region = data[pstart : pstart + plen]
        if region != bytes([pattern]) * len(region):
            print(f"Pattern verification failed at offset {offset + pstart}, {plen} bytes")
            bad = True
    if "q" not in o:
        if "v" in o:
            dump(data, offset)
        report("read", elapsed, offset, count, count, 1, "C" in o)
    if bad:
        s.failed = True


def cmd_write(s: Session, args: list[str], vectored: bool = False) -> None:
    usage = (
        "write [-bcCfnquz] [-P pattern] off len -- writes a number of bytes at a specified offset"
    )
    o, rest = opts(args, "bcCfnpquzP:" if not vectored else "CfquP:", usage)
    if "b" in o:
        print("write to the VM state is not supported")
        raise CommandError
    if not vectored and len(rest) != 2:
        print(f"bad argument count {len(rest)} to write, expected 2 arguments")
        raise CommandError
    if vectored and len(rest) < 2:
        print(f"bad argument count {len(rest)} to writev, expected at least 2 arguments")
        raise CommandError
    if "z" in o and "P" in o:
        print("-z and -P cannot be specified at the same time")
        raise CommandError
    if "u" in o and "z" not in o:
        print("-u requires -z to be specified")
        raise CommandError
    if "c" in o and "z" in o:
        print("-c and -z cannot be specified at the same time")
        raise CommandError
    img = need(s)
    offset = cvtnum(rest[0])
    count = sum(cvtnum(x) for x in rest[1:])
    pattern = pattern_byte(o["P"]) if "P" in o else 0xCD
    t0 = time.perf_counter()
    try:
        if "z" in o:
            img.write_zeroes(offset, count, unmap="u" in o)
        elif "c" in o:
            if not isinstance(img, Qcow2Image):
                raise BlockError("Operation not supported")
            img.check_request(offset, count)
            img.write_compressed(offset, bytes([pattern]) * count)
        else:
            img.write(offset, bytes([pattern]) * count)
        if "f" in o:
            img.flush()
    except BlockError as e:
        _io_error("write", e)
    elapsed = time.perf_counter() - t0
    if "q" not in o:
        report("wrote", elapsed, offset, count, count, 1, "C" in o)


def cmd_discard(s: Session, args: list[str]) -> None:
    o, rest = opts(args, "Cq", "discard [-Cq] off len -- discards a number of bytes")
    if len(rest) != 2:
        print(f"bad argument count {len(rest)} to discard, expected 2 arguments")
        raise CommandError
    img = need(s)
    offset, count = cvtnum(rest[0]), cvtnum(rest[1])
    t0 = time.perf_counter()
    try:
        img.discard(offset, count)
    except BlockError as e:
        _io_error("discard", e)
    if "q" not in o:
        report("discard", time.perf_counter() - t0, offset, count, count, 1, "C" in o)


def cmd_flush(s: Session, args: list[str]) -> None:
    need(s).flush()


def cmd_info(s: Session, args: list[str]) -> None:
    img = need(s)
    print(f"format name: {img.format_name}")
    cs = img.cluster_size() or 0
    print(f"cluster size: {cvtstr(cs)}")
    vm_state = 0
    if isinstance(img, Qcow2Image):
        span = img.cs * img.l2_entries
        vm_state = -(-img.size() // span) * span
    print(f"vm state offset: {cvtstr(vm_state)}")
    spec = img.info_specific()
    if spec:
        print("Format specific information:")
        for k, v in spec.items():
            text = ("true" if v else "false") if isinstance(v, bool) else str(v)
            print(f"    {k.replace('-', ' ')}: {text}")


def cmd_length(s: Session, args: list[str]) -> None:
    print(cvtstr(need(s).size()))


def cmd_map(s: Session, args: list[str]) -> None:
    img = need(s)
    try:
        extents = img.block_status(0, img.size())  # this image's layer only, as qemu-io's map
    except BlockError as e:
        _io_error("map", e)
    merged: list[list[int]] = []
    for e in extents:
        if merged and bool(merged[-1][2]) == e.allocated:
            merged[-1][1] += e.length
        else:
            merged.append([e.start, e.length, int(e.allocated)])
    for start, length, present in merged:
        print(
            f"{cvtstr(length)} (0x{length:x}) bytes {'    ' if present else 'not '}allocated at "
            f"offset {cvtstr(start)} (0x{start:x})"
        )


def cmd_alloc(s: Session, args: list[str]) -> None:
    if len(args) not in (1, 2):
        print(f"bad argument count {len(args)} to alloc, expected between 1 and 2 arguments")
        raise CommandError
    img = need(s)
    offset = cvtnum(args[0])
    count = cvtnum(args[1]) if len(args) == 2 else 512
    allocated = sum(
        max(0, min(e.start + e.length, offset + count) - max(e.start, offset))
        for e in img.block_status(offset, min(count, img.size() - offset))
        if e.allocated
    )
    print(f"{allocated}/{count} bytes allocated at offset {cvtstr(offset)}")


def cmd_truncate(s: Session, args: list[str]) -> None:
    o, rest = opts(args, "m:", "truncate [-m prealloc_mode] off -- truncates the current file")
    if len(rest) != 1:
        print(f"bad argument count {len(rest)} to truncate, expected 1 arguments")
        raise CommandError
    try:
        need(s).truncate(cvtnum(rest[0]), shrink=True)
    except BlockError as e:
        print(e)
        raise CommandError from None


def temporary_overlay(filename: str, fmt: str | None) -> str:
    """-s: a temporary qcow2 over the image, so that writes leave the image alone."""
    from qemuser.system.block.probe import probe
    from qemuser.system.block.qcow2 import create_qcow2

    base_fmt = fmt or probe(filename)
    with open_image(filename, base_fmt, True, warn=False) as base:
        size = base.size()
    fd, path = tempfile.mkstemp(prefix="vl.", dir=os.environ.get("TMPDIR", "/var/tmp"))
    os.close(fd)
    create_qcow2(path, size, backing_file=os.path.abspath(filename), backing_format=base_fmt)
    return path


def open_file(
    s: Session, filename: str, fmt: str | None, read_only: bool, snapshot: bool = False
) -> None:
    if fmt is not None and fmt not in FORMATS:
        print(f"{PROG}: can't open device {filename}: Unknown driver '{fmt}'", file=sys.stderr)
        raise CommandError
    try:
        if snapshot:
            s.temp = temporary_overlay(filename, fmt)
            s.img = open_image(s.temp, "qcow2", read_only)
        else:
            s.img = open_image(filename, fmt, read_only)
    except BlockError as e:
        msg = str(e)
        if not msg.startswith("Could not open"):
            msg = f"Could not open '{filename}': {msg}"
        print(f"{PROG}: can't open device {filename}: {msg}", file=sys.stderr)
        raise CommandError from None


def cmd_open(s: Session, args: list[str]) -> None:
    o, rest = opts(
        args,
        "Crsnkt:d:f:o:U",
        "open [-Cirsnk] [-t cache] [-d discard] [-o options] [name] -- open a file",
    )
    if s.img is not None:
        print("file open already, try 'help close'", file=sys.stderr)
        raise CommandError
    fmt = o.get("f")
    filename = rest[0] if rest else None
    for item in o.get("o", "").split(","):
        key, _, value = item.partition("=")
        if key == "driver":
            fmt = value
        elif key in ("file.filename", "file"):
            filename = value
        elif key:
            print(f"{PROG}: Unsupported open option '{key}'", file=sys.stderr)
            raise CommandError
    if "C" in o:
        print(f"{PROG}: -C (copy-on-read) is not supported by qemuser-io", file=sys.stderr)
        raise CommandError
    if filename is None:
        print("open: no filename given", file=sys.stderr)
        raise CommandError
    open_file(s, filename, fmt, "r" in o, snapshot="s" in o)


def cmd_close(s: Session, args: list[str]) -> None:
    img = need(s)
    img.close()
    s.img = None
    drop_temp(s)


def drop_temp(s: Session) -> None:
    if s.temp is not None:
        os.unlink(s.temp)
        s.temp = None


COMMANDS: dict[str, Callable[[Session, list[str]], None]] = {
    "read": cmd_read,
    "r": cmd_read,
    "readv": lambda s, a: cmd_read(s, a, vectored=True),
    "aio_read": lambda s, a: cmd_read(s, [x for x in a if x != "-i"], vectored=True),
    "write": cmd_write,
    "w": cmd_write,
    "writev": lambda s, a: cmd_write(s, a, vectored=True),
    "aio_write": lambda s, a: cmd_write(s, [x for x in a if x != "-i"], vectored=True),
    "aio_flush": cmd_flush,
    "flush": cmd_flush,
    "f": cmd_flush,
    "discard": cmd_discard,
    "d": cmd_discard,
    "info": cmd_info,
    "i": cmd_info,
    "length": cmd_length,
    "l": cmd_length,
    "map": cmd_map,
    "alloc": cmd_alloc,
    "truncate": cmd_truncate,
    "t": cmd_truncate,
    "open": cmd_open,
    "o": cmd_open,
    "close": cmd_close,
    "c": cmd_close,
}

COMMAND_HELP = (
    "aio_flush -- completes all outstanding aio requests",
    "aio_read [-Cqv] [-P pattern] off len [len..] -- asynchronously reads a number of bytes",
    "aio_write [-Cfiquz] [-P pattern] off len [len..] -- asynchronously writes a number of bytes",
    "alloc offset [count] -- checks if offset is allocated in the file",
    "close -- close the current open file",
    "discard [-Cq] off len -- discards a number of bytes at a specified offset",
    "flush -- flush all in-core file state to disk",
    "help [command] -- help for one or all commands",
    "info -- prints information about the current file",
    "length -- gets the length of the current file",
    "map -- prints the allocated areas of a file",
    "open [-Crsn] [-f fmt] [-o options] [name] -- open a file",
    "quit -- exit the program",
    "read [-abCqv] [-P pattern [-s off] [-l len]] off len -- reads a number of bytes at a "
    "specified offset",
    "readv [-Cqv] [-P pattern] off len [len..] -- reads a number of bytes at a specified offset",
    "truncate off -- truncates the current file at the given offset",
    "write [-bcCfnquz] [-P pattern] off len -- writes a number of bytes at a specified offset",
    "writev [-Cfq] [-P pattern] off len [len..] -- writes a number of bytes at a specified offset",
)


def run_command(s: Session, line: str) -> bool:
    """Run one command line; False when it asks to quit."""
    try:
        words = shlex.split(line)
    except ValueError:
        words = line.split()
    if not words:
        return True
    name, args = words[0], words[1:]
    if name in ("quit", "q", "exit"):
        return False
    if name in ("help", "?"):
        for h in COMMAND_HELP:
            if not args or h.split()[0] == args[0]:
                print(h)
        if not args:
            print("\nUse 'help commandname' for extended help.")
        return True
    cmd = COMMANDS.get(name)
    if cmd is None:
        print(f'command "{name}" not found', file=sys.stderr)
        s.failed = True
        return True
    try:
        cmd(s, args)
    except CommandError:
        s.failed = True
    except BlockError as e:
        print(f"{name} failed: {e}")
        s.failed = True
    except OSError as e:
        print(f"{name} failed: {os.strerror(e.errno) if e.errno else e}")
        s.failed = True
    sys.stdout.flush()
    return True


USAGE = """Usage: qemuser-io [OPTIONS]... [-c STRING]... [file]
QEMU Disk exerciser (qemuser)

  -c, --cmd STRING     execute command with its arguments
                       from the given string
  -f, --format FMT     specifies the block driver to use
  -r, --read-only      export read-only
  -n, --nocache        disable host cache, short for -t none
  -t, --cache=MODE     use the given cache mode for the image
  -U, --force-share    force shared permissions
  -h, --help           display this help and exit
  -V, --version        output version information and exit

See 'qemuser-io -c help' for information on available commands."""


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    try:
        found, rest = getopt.gnu_getopt(
            args,
            "hVc:f:rsnCmkt:d:i:UT:",
            [
                "help",
                "version",
                "cmd=",
                "format=",
                "read-only",
                "snapshot",
                "nocache",
                "copy-on-read",
                "misalign",
                "native-aio",
                "cache=",
                "discard=",
                "aio=",
                "force-share",
                "trace=",
                "image-opts",
                "object=",
            ],
        )
    except getopt.GetoptError as e:
        kind = (
            f"invalid option -- '{e.opt}'"
            if len(e.opt) == 1
            else f"unrecognized option '--{e.opt}'"
        )
        print(f"{PROG}: {kind}", file=sys.stderr)
        print(f"Try '{PROG} --help' for more information.", file=sys.stderr)
        return 1
    commands: list[str] = []
    fmt = None
    read_only = snapshot = False
    for opt, val in found:
        if opt in ("-h", "--help"):
            print(USAGE)
            return 0
        if opt in ("-V", "--version"):
            print("qemu-io version 7.2.0 (qemuser)")
            return 0
        if opt in ("-c", "--cmd"):
            commands.append(val)
        elif opt in ("-f", "--format"):
            fmt = val
        elif opt in ("-r", "--read-only"):
            read_only = True
        elif opt in ("-s", "--snapshot"):
            snapshot = True
        elif opt in ("-C", "--copy-on-read", "--image-opts", "--object"):
            print(f"{PROG}: option '{opt}' is not supported by qemuser-io", file=sys.stderr)
            return 1
        # -n, -t, -d, -i, -k, -m, -U, -T: caching, AIO engine, locking, tracing: no effect
    if len(rest) > 1:
        print(f"{PROG}: too many arguments", file=sys.stderr)
        return 1
    s = Session()
    if rest:
        try:
            open_file(s, rest[0], fmt, read_only, snapshot)
        except CommandError:
            return 1
    try:
        if commands:
            for c in commands:
                if not run_command(s, c):
                    break
        else:
            interactive = sys.stdin.isatty()
            while True:
                if interactive:
                    sys.stdout.write("qemu-io> ")
                    sys.stdout.flush()
                line = sys.stdin.readline()
                if not line or not run_command(s, line.strip()):
                    break
    except BrokenPipeError:
        return 1
    except KeyboardInterrupt:
        return 130
    finally:
        if s.img is not None:
            try:
                s.img.flush()
            finally:
                s.img.close()
        drop_temp(s)
    return 1 if s.failed else 0


if __name__ == "__main__":
    sys.exit(main())
