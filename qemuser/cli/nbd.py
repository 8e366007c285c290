"""qemuser-nbd: qemu-nbd's command line, exporting an image over NBD (TCP or a unix socket)."""

from __future__ import annotations

import getopt
import os
import signal
import socket
import sys
import tempfile

from qemuser.system.block import BlockError, open_image
from qemuser.system.block.nbd import Export, Server
from qemuser.system.block.probe import FORMATS
from qemuser.system.block.qcow2 import Qcow2Image, create_qcow2
from qemuser.system.block.sizes import parse_size

PROG = "qemuser-nbd"

USAGE = """Usage: qemuser-nbd [OPTIONS] FILE
QEMU Disk Network Block Device Utility (qemuser)

Connection properties:
  -p, --port=PORT           port to listen on (default `10809')
  -b, --bind=IFACE          interface to bind to (default `0.0.0.0')
  -k, --socket=PATH         path to the unix socket
  -e, --shared=NUM          device can be shared by NUM clients (default '1')
  -t, --persistent          don't exit on the last connection
  -x, --export-name=NAME    expose export by name (default is empty string)
  -D, --description=TEXT    export a human-readable description

Exposing part of the image:
  -o, --offset=OFFSET       offset into the image

General purpose options:
  --fork                    fork off the server process and exit the parent
                            once the server is running
  --pid-file=PATH           store the server's process ID in the given file

Block device options:
  -f, --format=FORMAT       set image format (raw, qcow2)
  -r, --read-only           export read-only
  -s, --snapshot            use FILE as an external snapshot, create a temporary
                            file with backing_file=FILE, redirect the write to
                            the temporary one
  -l, --load-snapshot=SNAPSHOT_PARAM
                            load an internal snapshot inside FILE and export it
                            as an read-only device (an ID or a name)"""


def fail(message: str) -> int:
    print(f"{PROG}: {message}", file=sys.stderr)
    return 1


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    try:
        found, rest = getopt.gnu_getopt(
            args,
            "hVp:b:k:e:tvx:D:o:f:rsl:c:dnLAB:T:",
            [
                "help",
                "version",
                "port=",
                "bind=",
                "socket=",
                "shared=",
                "persistent",
                "verbose",
                "export-name=",
                "description=",
                "offset=",
                "format=",
                "read-only",
                "snapshot",
                "load-snapshot=",
                "fork",
                "pid-file=",
                "connect=",
                "disconnect",
                "nocache",
                "cache=",
                "aio=",
                "discard=",
                "detect-zeroes=",
                "list",
                "allocation-depth",
                "bitmap=",
                "object=",
                "tls-creds=",
                "tls-authz=",
                "tls-hostname=",
                "image-opts",
                "trace=",
                "selinux-label=",
                "fork",
            ],
        )
    except getopt.GetoptError as e:
        kind = (
            f"invalid option -- '{e.opt}'"
            if len(e.opt) == 1
            else f"unrecognized option '--{e.opt}'"
        )
        fail(kind)
        print(f"Try `{PROG} --help' for more information.", file=sys.stderr)
        return 1
    port = 10809
    bind = "0.0.0.0"
    unix_path = None
    shared = 1
    persistent = False
    name = ""
    description = ""
    offset = 0
    fmt = None
    read_only = False
    snapshot = False
    load_snapshot = None
    fork = False
    pid_file = None
    for opt, val in found:
        if opt in ("-h", "--help"):
            print(USAGE)
            return 0
        if opt in ("-V", "--version"):
            print("qemu-nbd 7.2.0 (qemuser)")
            return 0
        if opt in ("-p", "--port"):
            if not val.isdigit() or not 0 < int(val) < 65536:
                return fail(f"Invalid port '{val}'")
            port = int(val)
        elif opt in ("-b", "--bind"):
            bind = val
        elif opt in ("-k", "--socket"):
            unix_path = val
        elif opt in ("-e", "--shared"):
            if not val.isdigit() or int(val) < 1:
                return fail(f"Invalid shared device number '{val}'")
            shared = int(val)
        elif opt in ("-t", "--persistent"):
            persistent = True
        elif opt in ("-x", "--export-name"):
            if len(val.encode()) > 4096:
                return fail("export name '...' too long")
            name = val
        elif opt in ("-D", "--description"):
            description = val
        elif opt in ("-o", "--offset"):
            try:
                offset = parse_size(val)
            except BlockError:
                return fail(f"Invalid offset '{val}'")
        elif opt in ("-f", "--format"):
            fmt = val
        elif opt in ("-r", "--read-only"):
            read_only = True
        elif opt in ("-s", "--snapshot"):
            snapshot = True
        elif opt in ("-l", "--load-snapshot"):
            load_snapshot = val.removeprefix("snapshot.name=").removeprefix("snapshot.id=")
            read_only = True
        elif opt == "--fork":
            fork = True
        elif opt == "--pid-file":
            pid_file = val
        elif opt in ("-c", "--connect", "-d", "--disconnect"):
            return fail("the kernel NBD client (-c/-d) is not supported by qemuser-nbd")
        elif opt in ("-L", "--list"):
            return fail("listing a remote server's exports (-L) is not supported by qemuser-nbd")
        elif opt in (
            "--tls-creds",
            "--tls-authz",
            "--tls-hostname",
            "--object",
            "--image-opts",
            "-B",
            "--bitmap",
            "-A",
            "--allocation-depth",
        ):
            return fail(f"option '{opt}' is not supported by qemuser-nbd")
        # -n/--cache/--aio/--discard/--detect-zeroes/-v/-T/--selinux-label: no effect here
    if len(rest) != 1:
        return fail(f"Expected exactly one argument, got {len(rest)}")
    if fmt is not None and fmt not in FORMATS:
        return fail(f"Failed to blk_new_open '{rest[0]}': Unknown driver '{fmt}'")
    filename = rest[0]
    temp = None
    try:
        if snapshot:
            # writes go to a temporary overlay, the image itself stays untouched
            from qemuser.system.block.probe import probe

            base_fmt = fmt or probe(filename)
            with open_image(filename, base_fmt, True, warn=False) as base:
                size = base.size()
            fd, temp = tempfile.mkstemp(prefix="vl.", dir=os.environ.get("TMPDIR", "/var/tmp"))
            os.close(fd)
            create_qcow2(
                temp, size, backing_file=os.path.abspath(filename), backing_format=base_fmt
            )
            img = open_image(temp, "qcow2", read_only)
        else:
            img = open_image(filename, fmt, read_only)
        if load_snapshot is not None:
            if not isinstance(img, Qcow2Image):
                return fail("Failed to load snapshot: Operation not supported")
            sn = img.find_snapshot(load_snapshot)
            if sn is None:
                return fail("Failed to load snapshot: Can't find snapshot")
            img.l1 = img._read_l1(sn.l1_offset, sn.l1_size) if sn.l1_size else []
            img._size = sn.disk_size if sn.disk_size is not None else img.size()
    except BlockError as e:
        msg = str(e)
        return fail(f"Failed to blk_new_open '{filename}': {msg}")
    if offset > img.size():
        return fail("Offset must be less than or equal to the image size")
    export = Export(name, img, read_only, description, offset)
    try:
        if unix_path is not None:
            listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                os.unlink(unix_path)
            except FileNotFoundError:
                pass
            listener.bind(unix_path)
        else:
            family = socket.AF_INET6 if ":" in bind else socket.AF_INET
            listener = socket.socket(family, socket.SOCK_STREAM)
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind((bind, port))
        listener.listen(max(shared, 1) + 1)
    except OSError as e:
        where = unix_path if unix_path is not None else f"{bind}:{port}"
        return fail(f"Failed to bind socket to {where}: {os.strerror(e.errno or 0)}")
    if fork:
        pid = os.fork()
        if pid:
            os._exit(0)  # the socket listens already: the parent's job is done
        # daemon(): a session of its own, the standard streams on /dev/null (so that a caller
        # reading our output sees its end when the parent exits)
        os.setsid()
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(devnull, fd)
        os.close(devnull)
    if pid_file:
        with open(pid_file, "w") as f:
            f.write(f"{os.getpid()}\n")

    def stop(signum: int, frame: object) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGHUP, stop)
    try:
        Server(listener, {name: export}, shared, persistent).serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        listener.close()
        with_lock_close(img)
        if unix_path is not None:
            try:
                os.unlink(unix_path)
            except OSError:
                pass
        if temp is not None:
            os.unlink(temp)
        if pid_file:
            try:
                os.unlink(pid_file)
            except OSError:
                pass
    return 0


def with_lock_close(img: object) -> None:
    try:
        img.flush()  # type: ignore[attr-defined]
    finally:
        img.close()  # type: ignore[attr-defined]


if __name__ == "__main__":
    sys.exit(main())
