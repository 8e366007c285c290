"""An NBD server (docs/interop/nbd.txt, the NBD protocol's newstyle fixed handshake).

Negotiation: NBD_OPT_EXPORT_NAME, LIST, ABORT, INFO, GO, STRUCTURED_REPLY, LIST_META_CONTEXT,
SET_META_CONTEXT (base:allocation); STARTTLS is refused (no TLS). Transmission: READ, WRITE,
DISC, FLUSH, TRIM, CACHE, WRITE_ZEROES, BLOCK_STATUS, with simple or structured replies. This is
what QEMU's own NBD client (nbd://host:port/name in qemu-img and qemu-system) negotiates.
"""

from __future__ import annotations

import errno as errno_mod
import socket
import struct
import sys
import threading
from dataclasses import dataclass

from qemuser.system.block.driver import BlockDriver
from qemuser.system.block.errors import BlockError
from qemuser.system.block.tools import chain_map

NBDMAGIC = 0x4E42444D41474943
IHAVEOPT = 0x49484156454F5054
OPT_REPLY_MAGIC = 0x3E889045565A9
REQUEST_MAGIC = 0x25609513
SIMPLE_REPLY_MAGIC = 0x67446698
STRUCTURED_REPLY_MAGIC = 0x668E33EF

FLAG_FIXED_NEWSTYLE = 1
FLAG_NO_ZEROES = 2

OPT_EXPORT_NAME = 1
OPT_ABORT = 2
OPT_LIST = 3
OPT_STARTTLS = 5
OPT_INFO = 6
OPT_GO = 7
OPT_STRUCTURED_REPLY = 8
OPT_LIST_META_CONTEXT = 9
OPT_SET_META_CONTEXT = 10

REP_ACK = 1
REP_SERVER = 2
REP_INFO = 3
REP_META_CONTEXT = 4
REP_ERR_UNSUP = (1 << 31) + 1
REP_ERR_POLICY = (1 << 31) + 2
REP_ERR_INVALID = (1 << 31) + 3
REP_ERR_TLS_REQD = (1 << 31) + 5
REP_ERR_UNKNOWN = (1 << 31) + 6

INFO_EXPORT = 0
INFO_NAME = 1
INFO_DESCRIPTION = 2
INFO_BLOCK_SIZE = 3

TF_HAS_FLAGS = 1 << 0
TF_READ_ONLY = 1 << 1
TF_SEND_FLUSH = 1 << 2
TF_SEND_FUA = 1 << 3
TF_SEND_TRIM = 1 << 5
TF_SEND_WRITE_ZEROES = 1 << 6
TF_SEND_DF = 1 << 7
TF_CAN_MULTI_CONN = 1 << 8
TF_SEND_CACHE = 1 << 10

CMD_READ = 0
CMD_WRITE = 1
CMD_DISC = 2
CMD_FLUSH = 3
CMD_TRIM = 4
CMD_CACHE = 5
CMD_WRITE_ZEROES = 6
CMD_BLOCK_STATUS = 7

CMD_FLAG_FUA = 1 << 0
CMD_FLAG_NO_HOLE = 1 << 1
CMD_FLAG_DF = 1 << 2
CMD_FLAG_REQ_ONE = 1 << 3

REPLY_FLAG_DONE = 1
REPLY_TYPE_NONE = 0
REPLY_TYPE_OFFSET_DATA = 1
REPLY_TYPE_BLOCK_STATUS = 5
REPLY_TYPE_ERROR = (1 << 15) + 1

STATE_HOLE = 1
STATE_ZERO = 2

BASE_ALLOCATION = "base:allocation"
CONTEXT_ID = 1
MAX_BUFFER = 32 << 20  # the largest request accepted, as QEMU's NBD_MAX_BUFFER_SIZE
MAX_OPTION = 4096

# the errors NBD can carry; others become EIO (or EINVAL for bad requests)
NBD_ERRNOS = {
    errno_mod.EPERM,
    errno_mod.EIO,
    errno_mod.ENOMEM,
    errno_mod.EINVAL,
    errno_mod.ENOSPC,
    errno_mod.EOVERFLOW,
    errno_mod.ENOTSUP,
    errno_mod.ESHUTDOWN,
}


class Disconnect(Exception):
    """The client went away or broke the protocol: drop the connection."""


@dataclass
class Export:
    name: str
    image: BlockDriver
    read_only: bool
    description: str = ""
    offset: int = 0  # -o: the export starts this far into the image

    def size(self) -> int:
        return self.image.size() - self.offset

    def flags(self) -> int:
        f = TF_HAS_FLAGS | TF_SEND_FLUSH | TF_SEND_FUA | TF_SEND_DF | TF_SEND_CACHE
        if self.read_only:
            f |= TF_READ_ONLY | TF_CAN_MULTI_CONN
        else:
            f |= TF_SEND_TRIM | TF_SEND_WRITE_ZEROES
        return f


class Connection:
    """One client: negotiation, then requests until it disconnects."""

    def __init__(self, sock: socket.socket, exports: dict[str, Export], lock: threading.Lock):
        self.sock = sock
        self.exports = exports
        self.lock = lock
        self.structured = False
        self.meta = False  # base:allocation selected
        self.no_zeroes = False

    # -- plumbing

    def recv(self, n: int) -> bytes:
        buf = bytearray(n)
        view = memoryview(buf)
        got = 0
        while got < n:
            k = self.sock.recv_into(view[got:], n - got)
            if not k:
                raise Disconnect
            got += k
        return bytes(buf)

    def send(self, *parts: bytes) -> None:
        self.sock.sendall(b"".join(parts))

    def opt_reply(self, option: int, kind: int, data: bytes = b"") -> None:
        self.send(struct.pack(">QIII", OPT_REPLY_MAGIC, option, kind, len(data)), data)

    # -- negotiation

    def negotiate(self) -> Export | None:
        self.send(struct.pack(">QQH", NBDMAGIC, IHAVEOPT, FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES))
        (cflags,) = struct.unpack(">I", self.recv(4))
        self.no_zeroes = bool(cflags & FLAG_NO_ZEROES)
        if cflags & ~(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES):
            raise Disconnect
        while True:
            magic, option, length = struct.unpack(">QII", self.recv(16))
            if magic != IHAVEOPT:
                raise Disconnect
            if length > MAX_OPTION:
                raise Disconnect
            data = self.recv(length)
            if option == OPT_EXPORT_NAME:
                export = self.exports.get(data.decode("utf-8", "replace"))
                if export is None:
                    raise Disconnect  # the protocol offers no error for this option
                pad = b"" if self.no_zeroes else bytes(124)
                self.send(struct.pack(">QH", export.size(), export.flags()), pad)
                return export
            if option == OPT_ABORT:
                self.opt_reply(option, REP_ACK)
                return None
            if option == OPT_LIST:
                if data:
                    self.opt_reply(option, REP_ERR_INVALID)
                    continue
                for name in self.exports:
                    raw = name.encode()
                    self.opt_reply(option, REP_SERVER, struct.pack(">I", len(raw)) + raw)
                self.opt_reply(option, REP_ACK)
            elif option in (OPT_INFO, OPT_GO):
                export = self.handle_info(option, data)
                if export is not None and option == OPT_GO:
                    return export
            elif option == OPT_STRUCTURED_REPLY:
                if data:
                    self.opt_reply(option, REP_ERR_INVALID)
                else:
                    self.structured = True
                    self.opt_reply(option, REP_ACK)
            elif option in (OPT_LIST_META_CONTEXT, OPT_SET_META_CONTEXT):
                self.handle_meta(option, data)
            elif option == OPT_STARTTLS:
                self.opt_reply(option, REP_ERR_POLICY)
            else:
                self.opt_reply(option, REP_ERR_UNSUP)

    def handle_info(self, option: int, data: bytes) -> Export | None:
        if len(data) < 6:
            self.opt_reply(option, REP_ERR_INVALID)
            return None
        (nlen,) = struct.unpack_from(">I", data)
        if 4 + nlen + 2 > len(data):
            self.opt_reply(option, REP_ERR_INVALID)
            return None
        name = data[4 : 4 + nlen].decode("utf-8", "replace")
        (nreq,) = struct.unpack_from(">H", data, 4 + nlen)
        if len(data) != 4 + nlen + 2 + 2 * nreq:
            self.opt_reply(option, REP_ERR_INVALID)
            return None
        requests = struct.unpack_from(f">{nreq}H", data, 6 + nlen)
        export = self.exports.get(name)
        if export is None:
            msg = f"export '{name}' not present".encode()
            self.opt_reply(option, REP_ERR_UNKNOWN, msg)
            return None
        if INFO_NAME in requests:
            self.opt_reply(option, REP_INFO, struct.pack(">H", INFO_NAME) + name.encode())
        if INFO_DESCRIPTION in requests and export.description:
            self.opt_reply(
                option, REP_INFO, struct.pack(">H", INFO_DESCRIPTION) + export.description.encode()
            )
        self.opt_reply(option, REP_INFO, struct.pack(">HIII", INFO_BLOCK_SIZE, 1, 4096, MAX_BUFFER))
        self.opt_reply(
            option, REP_INFO, struct.pack(">HQH", INFO_EXPORT, export.size(), export.flags())
        )
        self.opt_reply(option, REP_ACK)
        return export

    def handle_meta(self, option: int, data: bytes) -> None:
        try:
            (nlen,) = struct.unpack_from(">I", data)
            name = data[4 : 4 + nlen].decode("utf-8", "replace")
            (nq,) = struct.unpack_from(">I", data, 4 + nlen)
            pos = 8 + nlen
            queries = []
            for _ in range(nq):
                (qlen,) = struct.unpack_from(">I", data, pos)
                queries.append(data[pos + 4 : pos + 4 + qlen].decode("utf-8", "replace"))
                pos += 4 + qlen
            if pos != len(data):
                raise struct.error
        except struct.error:
            self.opt_reply(option, REP_ERR_INVALID)
            return
        if option == OPT_SET_META_CONTEXT and not self.structured:
            self.opt_reply(option, REP_ERR_INVALID, b"request structured replies first")
            return
        if name not in self.exports:
            self.opt_reply(option, REP_ERR_UNKNOWN, f"export '{name}' not present".encode())
            return
        wanted = (not queries and option == OPT_LIST_META_CONTEXT) or any(
            q in (BASE_ALLOCATION, "base:") for q in queries
        )
        if option == OPT_SET_META_CONTEXT:
            self.meta = BASE_ALLOCATION in queries
        if wanted:
            self.opt_reply(
                option, REP_META_CONTEXT, struct.pack(">I", CONTEXT_ID) + BASE_ALLOCATION.encode()
            )
        self.opt_reply(option, REP_ACK)

    # -- transmission

    def reply_error(self, handle: int, err: int) -> None:
        if self.structured:
            msg = b""
            self.send(
                struct.pack(
                    ">IHHQI",
                    STRUCTURED_REPLY_MAGIC,
                    REPLY_FLAG_DONE,
                    REPLY_TYPE_ERROR,
                    handle,
                    6 + len(msg),
                ),
                struct.pack(">IH", err, len(msg)),
                msg,
            )
        else:
            self.send(struct.pack(">IIQ", SIMPLE_REPLY_MAGIC, err, handle))

    def reply_ok(self, handle: int) -> None:
        if self.structured:
            self.send(
                struct.pack(
                    ">IHHQI", STRUCTURED_REPLY_MAGIC, REPLY_FLAG_DONE, REPLY_TYPE_NONE, handle, 0
                )
            )
        else:
            self.send(struct.pack(">IIQ", SIMPLE_REPLY_MAGIC, 0, handle))

    def serve(self, export: Export) -> None:
        img = export.image
        size = export.size()
        base = export.offset
        while True:
            magic, flags, cmd, handle, offset, length = struct.unpack(">IHHQQI", self.recv(28))
            if magic != REQUEST_MAGIC:
                raise Disconnect
            payload = b""
            if cmd == CMD_WRITE:
                if length > MAX_BUFFER:
                    raise Disconnect  # cannot skip a payload this large sanely
                payload = self.recv(length)
            if cmd == CMD_DISC:
                with self.lock:
                    img.flush()
                return
            if cmd in (
                CMD_READ,
                CMD_WRITE,
                CMD_TRIM,
                CMD_WRITE_ZEROES,
                CMD_CACHE,
                CMD_BLOCK_STATUS,
            ) and (offset + length > size):
                self.reply_error(handle, errno_mod.EINVAL)
                continue
            if cmd in (CMD_WRITE, CMD_TRIM, CMD_WRITE_ZEROES) and export.read_only:
                self.reply_error(handle, errno_mod.EPERM)
                continue
            try:
                with self.lock:
                    if cmd == CMD_READ:
                        if length > MAX_BUFFER:
                            raise BlockError("request too large", errno_mod.EINVAL)
                        data = img.read(base + offset, length)
                    elif cmd == CMD_WRITE:
                        img.write(base + offset, payload)
                    elif cmd == CMD_WRITE_ZEROES:
                        img.write_zeroes(base + offset, length, unmap=not flags & CMD_FLAG_NO_HOLE)
                    elif cmd == CMD_TRIM:
                        img.discard(base + offset, length)
                    elif cmd == CMD_FLUSH:
                        img.flush()
                    elif cmd == CMD_BLOCK_STATUS:
                        if not self.meta:
                            raise BlockError("no metadata context selected", errno_mod.EINVAL)
                        entries = chain_map(img, base + offset, length)
                    elif cmd == CMD_CACHE:
                        pass
                    else:
                        raise BlockError("unknown command", errno_mod.EINVAL)
                    if flags & CMD_FLAG_FUA and cmd in (CMD_WRITE, CMD_WRITE_ZEROES):
                        img.flush()
            except BlockError as e:
                err = e.errno if e.errno in NBD_ERRNOS else errno_mod.EIO
                self.reply_error(handle, err)
                continue
            if cmd == CMD_READ:
                if self.structured:
                    self.send(
                        struct.pack(
                            ">IHHQIQ",
                            STRUCTURED_REPLY_MAGIC,
                            REPLY_FLAG_DONE,
                            REPLY_TYPE_OFFSET_DATA,
                            handle,
                            8 + len(data),
                            offset,
                        ),
                        data,
                    )
                else:
                    self.send(struct.pack(">IIQ", SIMPLE_REPLY_MAGIC, 0, handle), data)
            elif cmd == CMD_BLOCK_STATUS:
                descs = []
                for e in entries:
                    state = (0 if e.data else STATE_HOLE) | (STATE_ZERO if e.zero else 0)
                    if descs and descs[-1][1] == state:
                        descs[-1][0] += e.length
                    else:
                        descs.append([e.length, state])
                if flags & CMD_FLAG_REQ_ONE:
                    descs = descs[:1]
                body = struct.pack(">I", CONTEXT_ID) + b"".join(
                    struct.pack(">II", n, st) for n, st in descs
                )
                self.send(
                    struct.pack(
                        ">IHHQI",
                        STRUCTURED_REPLY_MAGIC,
                        REPLY_FLAG_DONE,
                        REPLY_TYPE_BLOCK_STATUS,
                        handle,
                        len(body),
                    ),
                    body,
                )
            else:
                self.reply_ok(handle)

    def run(self) -> None:
        try:
            export = self.negotiate()
            if export is not None:
                self.serve(export)
        except (Disconnect, OSError):
            pass
        except Exception as e:  # a bug must cost this client its connection, not the server
            print(f"qemuser-nbd: dropping a client: {type(e).__name__}: {e}", file=sys.stderr)
        finally:
            try:
                self.sock.close()
            except OSError:
                pass


class Server:
    """Accepts clients on a listening socket; `persistent` keeps serving after the last one."""

    def __init__(
        self,
        listener: socket.socket,
        exports: dict[str, Export],
        shared: int = 1,
        persistent: bool = False,
    ) -> None:
        self.listener = listener
        self.exports = exports
        self.shared = max(1, shared)
        self.persistent = persistent
        self.lock = threading.Lock()
        self.active = 0
        self.cond = threading.Condition()
        self.served = 0

    def _client(self, sock: socket.socket) -> None:
        try:
            Connection(sock, self.exports, self.lock).run()
        finally:
            with self.cond:
                self.active -= 1
                self.cond.notify_all()

    def serve_forever(self) -> None:
        while True:
            with self.cond:
                while self.active >= self.shared:
                    self.cond.wait()
            sock, _ = self.listener.accept()
            if sock.family in (socket.AF_INET, socket.AF_INET6):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self.cond:
                self.active += 1
                self.served += 1
            t = threading.Thread(target=self._client, args=(sock,), daemon=True)
            t.start()
            if not self.persistent:
                # like qemu-nbd without -t: exit once the clients are gone
                t.join()
                with self.cond:
                    while self.active:
                        self.cond.wait()
                return
