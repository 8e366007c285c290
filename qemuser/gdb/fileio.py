"""vFile, GDB's host I/O packets: the debugged program's files read through the stub (GDB's
default sysroot "target:" then finds the program, its loader and libraries where the guest
does). The constants are the protocol's own (GDB manual, "File-I/O Remote Protocol
Extension"), not the host's."""

from __future__ import annotations

import errno
import struct

# vFile's own constants (GDB manual, "File-I/O Remote Protocol Extension"): open flags, errno
# values, and struct stat as big-endian fixed-size fields.
FILEIO_O_RDONLY = 0
FILEIO_EBADF = 9
FILEIO_EROFS = 30
FILEIO_EUNKNOWN = 9999
FILEIO_ERRNO = {
    errno.EPERM: 1,
    errno.ENOENT: 2,
    errno.EINTR: 4,
    errno.EBADF: 9,
    errno.EACCES: 13,
    errno.EFAULT: 14,
    errno.EBUSY: 16,
    errno.EEXIST: 17,
    errno.ENODEV: 19,
    errno.ENOTDIR: 20,
    errno.EISDIR: 21,
    errno.EINVAL: 22,
    errno.ENFILE: 23,
    errno.EMFILE: 24,
    errno.EFBIG: 27,
    errno.ENOSPC: 28,
    errno.ESPIPE: 29,
    errno.EROFS: 30,
    errno.ENAMETOOLONG: 91,
}
# st_dev, st_ino, st_mode, st_nlink, st_uid, st_gid, st_rdev, st_size, st_blksize, st_blocks,
# st_atime, st_mtime, st_ctime
FILEIO_STAT = struct.Struct(">IIIIIIIQQQIII")
