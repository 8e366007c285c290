"""Files, directories and I/O (issue 2, item 6) and the sysroot rule (item 7).

The expected outputs are what the same C sources print when built natively with gcc and run on
Linux (x86_64), in an empty directory: the file system behaves the same for every architecture,
and the fixtures print only values that do not depend on the machine.
"""

import os
from pathlib import Path

import pytest

from tests.conftest import all_builds, fixture_path, run_guest

FS_OPS_OUTPUT = b"""\
== open, read, write
open O_CREAT|O_EXCL new is fd>=3: 1
write: 12
open O_CREAT|O_EXCL again: -1 EEXIST
read from O_WRONLY: -1 EBADF
close: 0
close again: -1 EBADF
read 5: 5
  got "hello"
lseek SEEK_CUR: 5
read rest: 7
read at EOF: 0
  size 12 mode 640 regular 1
write to O_RDONLY: -1 EBADF
O_TRUNC size: 0
write abc: 3
lseek 0 then O_APPEND write: 0
write def: 3
offset after append: 6
after append: "abcdef"
O_DIRECTORY on a file: -1 ENOTDIR
O_DIRECTORY on a dir is fd: 1
O_NOFOLLOW on a symlink: -1 ELOOP
symlink followed: 1
O_PATH|O_NOFOLLOW is the link: 1
O_RDWR on a dir: -1 EISDIR
open missing: -1 ENOENT
open through a file: -1 ENOTDIR
O_CLOEXEC sets FD_CLOEXEC: 1
no O_CLOEXEC, no FD_CLOEXEC: 0
openat in a dirfd: 1
openat AT_FDCWD path: 0
openat with a file as dirfd: -1 ENOTDIR
openat with a bad dirfd: -1 EBADF
O_TMPFILE is fd: 1
O_TMPFILE nlink: 0
== pread, pwrite, readv, writev, preadv, pwritev, lseek
writev: 13
offset: 13
pwrite at 4: 3
offset unchanged: 13
pread at 8: 5
  got "three"
pread negative offset: -1 EINVAL
readv: 13
  got "one" " TWO three"
readv iovcnt -1: -1 EINVAL
readv iovcnt 1025: -1 EINVAL
pwritev at 9: 4
preadv at 8: 5
  got "tA" "BCD"
pwritev2 at -1 (current offset): 2
offset after pwritev2: 15
preadv2 bad flags: -1 EOPNOTSUPP
lseek SEEK_END -2: 13
lseek before 0: -1 EINVAL
lseek bad whence: -1 EINVAL
lseek past end: 100
contents: "one TWO tABCDAB"
SEEK_DATA from 0: 524288
SEEK_HOLE from 0: 0
SEEK_HOLE after the data is later: 1
SEEK_DATA at EOF: -1 ENXIO
lseek on a pipe: -1 ESPIPE
pread on a pipe: -1 ESPIPE
== stat, statx, statfs, utimensat, access
stat size: 6
stat nlink: 1
stat uid is euid: 1
stat gid is egid: 1
stat blksize > 0: 1
stat blocks*512 >= size: 1
fstat ino/dev same: 1
AT_EMPTY_PATH same: 1
lstat is a link: 1
lstat size (target length): 5
lstat ino differs: 1
fstatat NOFOLLOW: 1
fstatat bad flags: -1 EINVAL
fstatat empty path: -1 ENOENT
stat missing: -1 ENOENT
stat through a file: -1 ENOTDIR
dir is S_ISDIR: 1
utimensat: 0
  atime 1000000000.123456789 mtime 1234567890.000000005
futimens OMIT/NOW: 0
atime kept: 1
mtime now: 1
utimensat bad nsec: -1 EINVAL
utimensat on the link itself: 0
link mtime: 1234567890
statx: 0
statx mask has basic stats: 1
statx mask has mnt_id: 1
statx size: 6
statx mode: 416
statx type regular: 1
statx ino/nlink/uid/gid match stat: 1
statx dev matches stat: 1
statx blocks/blksize match: 1
statx mtime: 1
statx atime nsec: 123456789
statx on the link: 1
statx AT_EMPTY_PATH: 1
statx bad flags: -1 EINVAL
statx reserved mask: -1 EINVAL
statfs: 0
fstatfs: 0
same f_type/f_fsid: 1
f_bsize > 0: 1
f_blocks >= f_bfree >= f_bavail: 1
f_namelen: 255
statfs missing: -1 ENOENT
access R_OK: 0
access X_OK on 0644: -1 EACCES
access missing: -1 ENOENT
faccessat bad mode: -1 EINVAL
faccessat2 AT_EACCESS: 0
faccessat2 NOFOLLOW: 0
faccessat2 bad flags: -1 EINVAL
== directories and names
mkdir: 0
mkdir again: -1 EEXIST
mkdir missing parent: -1 ENOENT
  mode 750
mkdirat: 0
symlinkat: 0
symlinkat exists: -1 EEXIST
mknodat fifo: 0
mknodat regular: 0
mknodat bad type: -1 EINVAL
fifo is S_ISFIFO: 1
getdents64 end: 0
  entries: ..:4 .:4 f1:8 f2:8 fifo:1 l1:10 reg:8 sub:4
getdents64 tiny buffer: -1 EINVAL
getdents64 on a file: -1 ENOTDIR
readlinkat: 2
  target "f1"
readlink truncated: 3
  target "a.t"
readlink not a link: -1 EINVAL
readlink size 0: -1 EINVAL
readlinkat empty path on O_PATH fd: 5
  target "a.txt"
linkat: 0
nlink after linkat: 2
linkat to a symlink (no follow): 0
  is a symlink: 1
linkat AT_SYMLINK_FOLLOW: 0
  is regular: 1
linkat bad flags: -1 EINVAL
linkat exists: -1 EEXIST
renameat: 0
renameat missing: -1 ENOENT
renameat2 NOREPLACE onto existing: -1 EEXIST
renameat2 EXCHANGE: 0
  f1 now: "22"
  f3 now: "1"
renameat2 bad flags: -1 EINVAL
rename dir onto file: -1 ENOTDIR
unlinkat a dir without AT_REMOVEDIR: -1 EISDIR
unlinkat a file with AT_REMOVEDIR: -1 ENOTDIR
unlinkat bad flags: -1 EINVAL
rmdir non-empty: -1 ENOTEMPTY
unlinkat file: 0
unlinkat dir: 0
unlinkat missing: -1 ENOENT
== cwd
chdir: 0
getcwd is old + /d: 1
relative open after chdir: 0
fchdir: 0
back: 1
getcwd syscall length: 1
getcwd too small: -1 ERANGE
chdir to a file: -1 ENOTDIR
chdir missing: -1 ENOENT
fchdir to a file: -1 ENOTDIR
chroot missing: -1 ENOENT
chroot to a file: -1 ENOTDIR
== attributes, sizes, sync
fchmod: 0
  mode 604
fchmodat: 0
  mode 4751
fchmodat missing: -1 ENOENT
fchown to self: 0
fchown -1 -1: 0
fchownat NOFOLLOW on a link: 0
fchownat AT_EMPTY_PATH: 0
fchownat bad flags: -1 EINVAL
fchownat missing: -1 ENOENT
ftruncate 100: 0
  size: 100
truncate 7: 0
  size: 7
ftruncate negative: -1 EINVAL
truncate a dir: -1 EISDIR
ftruncate read-only fd: -1 EINVAL
fallocate: 0
  size: 8192
fallocate KEEP_SIZE: 0
  size: 8192
fallocate PUNCH_HOLE without KEEP_SIZE: -1 EOPNOTSUPP
fallocate len 0: -1 EINVAL
fsync: 0
fdatasync: 0
syncfs: 0
fsync on a pipe: -1 EINVAL
ftruncate on a pipe: -1 EINVAL
umask: 18
umask again: 23
  created mode 755
== dup, fcntl, pipe2
dup gives another fd: 1
dup drops FD_CLOEXEC: 0
dup shares the offset: 1
dup bad fd: -1 EBADF
dup3 same fd: -1 EINVAL
dup3 bad flags: -1 EINVAL
dup3 O_CLOEXEC: 50
  cloexec: 1
dup2 onto it: 50
  cloexec: 0
dup2 same fd: 3
dup2 bad fd: -1 EBADF
F_DUPFD from 60: 60
  cloexec: 0
F_DUPFD_CLOEXEC from 60: 61
  cloexec: 1
F_SETFD 1: 0
F_GETFD: 1
F_SETFD 0: 0
F_GETFD: 0
F_DUPFD negative: -1 EINVAL
F_GETFL access mode: 2
F_GETFL other bits are O_LARGEFILE: 1
F_SETFL O_APPEND|O_NONBLOCK: 0
  appends: 1
  nonblocking: 1
  nothing else: 1
F_SETFL cannot change the access mode: 1
F_GETFL on a directory has O_DIRECTORY: 1
F_GETFL O_PATH|O_NOFOLLOW: 1
close_range CLOEXEC 70-71: 0
  cloexec 70 71 72: 110
close_range 71-~0: 0
  70 open, 71 and 72 closed: 1
close_range first > last: -1 EINVAL
close_range bad flags: -1 EINVAL
fcntl bad fd: -1 EBADF
fcntl bad cmd: -1 EINVAL
pipe2 O_CLOEXEC|O_NONBLOCK: 0
  cloexec both: 1
  nonblocking: 1
  read empty: -1 EAGAIN
  write: 5
  FIONREAD: 0
  available: 5
  read: 5
  read at EOF: 0
pipe2 bad flags: -1 EINVAL
pipe2 plain: 0
  no cloexec: 0
  blocking: 0
== record locks
F_SETLK write lock 0-9: 0
F_GETLK same process: 0 type=F_UNLCK start=0 len=10 pid=0
child F_GETLK: 0 type=F_WRLCK start=0 len=10 pid=parent
child F_SETLK: -1 EAGAIN
child F_SETLK beyond: 0 type=F_WRLCK start=10 len=5 pid=0
child flock LOCK_EX|LOCK_NB: 0
F_SETLK unlock: 0
F_SETLKW read lock: 0
F_SETLK read lock on a write-only fd: -1 EBADF
F_GETLK bad type: -1 EINVAL
F_OFD_SETLK on a: 0 type=F_WRLCK start=100 len=10 pid=0
F_OFD_GETLK from b: 0 type=F_WRLCK start=100 len=10 pid=-1
F_OFD_SETLK from b: -1 EAGAIN
flock LOCK_EX on a: 0
flock LOCK_EX|LOCK_NB on b: -1 EAGAIN
flock bad op: -1 EINVAL
== memfd, copy_file_range, sendfile
memfd_create: 1
  cloexec: 1
  write: 6
  link "/memfd:qemuser-test (deleted)"
  F_ADD_SEALS write: 0
  F_GET_SEALS: 8
  write when sealed: -1 EPERM
memfd_create no flags, cloexec: 0
  F_ADD_SEALS without ALLOW_SEALING: -1 EPERM
memfd_create bad flags: -1 EINVAL
copy_file_range with offsets: 5
  offsets now 7 9, src position 0
copy_file_range from the positions: 3
  src position 3 dst position 3
copy_file_range bad flags: -1 EINVAL
copy_file_range same range: -1 EINVAL
dst read: 9
  dst "012.23456..."
sendfile with offset: 3
  offset now 9, src position 3
sendfile from the position: 2
  src position 3
  pipe got "67812"
sendfile from a pipe: -1 EINVAL
== fadvise, readahead, sync_file_range, xattrs
posix_fadvise SEQUENTIAL: 0
posix_fadvise on a pipe: ESPIPE
posix_fadvise bad advice: EINVAL
readahead: 0
readahead on a pipe: -1 EINVAL
sync_file_range: 0
sync_file_range bad flags: -1 EINVAL
setxattr then getxattr round trip (or unsupported): 1
getxattr size query (or unsupported): 1
listxattr has it (or unsupported): 1
fgetxattr (or unsupported): 1
XATTR_CREATE again (or unsupported): 1
getxattr too small (or unsupported): 1
fremovexattr (or unsupported): 1
getxattr missing attribute: 1
getxattr missing file: -1 ENOENT
lgetxattr on a link (user.* not allowed there): 1
setxattr bad flags: -1 EINVAL
== ioctl
isatty(file): 0
  errno is ENOTTY: 1
TCGETS on a file: -1 ENOTTY
TIOCGWINSZ on a file: -1 ENOTTY
FIOCLEX: 0
  cloexec: 1
FIONCLEX: 0
  cloexec: 0
FIONBIO 1: 0
  nonblocking: 1
FIONBIO 0: 0
  nonblocking: 0
FIONREAD on a file: 0
  bytes left: 4
FIGETBSZ: 0
  block size is a power of two >= 512: 1
unknown ioctl: -1 ENOTTY
ioctl bad fd: -1 EBADF
posix_openpt: 1
grantpt: 0
unlockpt: 0
ptsname: 1
open the slave: 1
isatty(slave): 1
tcgetattr: 0
  canonical, echo: 1
  VINTR is ^C: 3
  output speed: 1
tcsetattr TCSANOW: 0
tcsetattr TCSADRAIN: 0
tcsetattr TCSAFLUSH: 0
  raw now: 1
  VMIN: 1
  CS8: 1
TIOCSWINSZ on the master: 0
TIOCGWINSZ on the slave: 0
  24 rows 80 cols 640x480 pixels
tcflush: 0
tcdrain: 0
write to the slave: 2
read from the master: 2
  got "hi"
tcgetpgrp without a controlling tty: -1 ENOTTY
child TIOCSCTTY: 0
child tcgetpgrp is its pid: 1
child tcsetpgrp: 0
child tcgetsid is its pid: 1
child TIOCGPGRP bad pointer: -1 EFAULT
"""

FS_ERRORS_OUTPUT = b"""\
== EFAULT
openat bad path: -1 EFAULT
read into a bad buffer: -1 EFAULT
  the data is still there: 4
write from a bad buffer: -1 EFAULT
pread into a bad buffer: -1 EFAULT
pwrite from a bad buffer: -1 EFAULT
readv bad iovec array: -1 EFAULT
readv bad iov_base: -1 EFAULT
writev bad iov_base: -1 EFAULT
fstat bad buffer: -1 EFAULT
newfstatat bad path: -1 EFAULT
newfstatat bad buffer: -1 EFAULT
statx bad buffer: -1 EFAULT
statfs bad buffer: -1 EFAULT
fstatfs bad buffer: -1 EFAULT
faccessat bad path: -1 EFAULT
readlinkat bad buffer: -1 EFAULT
getdents64 bad buffer: -1 EFAULT
getcwd bad buffer: -1 EFAULT
pipe2 bad array: -1 EFAULT
mkdirat bad path: -1 EFAULT
unlinkat bad path: -1 EFAULT
renameat2 bad new path: -1 EFAULT
  file still there: 0
utimensat bad times: -1 EFAULT
fcntl F_GETLK bad flock: -1 EFAULT
chdir bad path: -1 EFAULT
copy_file_range bad offset: -1 EFAULT
sendfile bad offset: -1 EFAULT
memfd_create bad name: -1 EFAULT
ioctl FIONREAD bad pointer: -1 EFAULT
== EBADF
read: -1 EBADF
write: -1 EBADF
close: -1 EBADF
close -1: -1 EBADF
fstat: -1 EBADF
lseek: -1 EBADF
dup: -1 EBADF
dup3: -1 EBADF
fcntl F_GETFL: -1 EBADF
fcntl unknown cmd: -1 EBADF
getdents64: -1 EBADF
fchdir: -1 EBADF
fchmod: -1 EBADF
fsync: -1 EBADF
ftruncate: -1 EBADF
openat relative to a bad dirfd: -1 EBADF
openat absolute ignores the dirfd: 1
ioctl: -1 EBADF
ioctl unknown request: -1 EBADF
write to a read-only fd: -1 EBADF
fstatfs: -1 EBADF
== others
open a 4999-byte path: -1 ENAMETOOLONG
open a 300-byte name: -1 ENAMETOOLONG
open empty path: -1 ENOENT
write to a directory fd: -1 EBADF
read a directory: -1 EISDIR
mkdirat under a file: -1 ENOTDIR
unlinkat a dir: -1 EISDIR
rmdir .: -1 EINVAL
linkat a directory: -1 EPERM
readlinkat negative size: -1 EINVAL
lseek SEEK_DATA past EOF: -1 ENXIO
readv a huge total: -1 EFAULT
fcntl F_SETFL O_APPEND on a read-only fd: 0
symlinkat empty target: -1 ENOENT
truncate a missing file: -1 ENOENT
fallocate on a read-only fd: -1 EBADF
fallocate negative offset: -1 EINVAL
  write to a pipe without a reader (SIGPIPE ignored): -1 EPIPE
"""


@pytest.mark.parametrize(("arch", "flavour"), all_builds("fs_ops"))
def test_file_system_calls_behave_as_on_linux(arch: str, flavour: str, tmp_path: Path) -> None:
    result = run_guest(arch, fixture_path(arch, "fs_ops", flavour), cwd=tmp_path)
    assert result.stderr == b""
    assert result.stdout.decode() == FS_OPS_OUTPUT.decode()
    assert result.returncode == 0


@pytest.mark.parametrize(("arch", "flavour"), all_builds("fs_errors"))
def test_file_system_errors_are_linux_errno(arch: str, flavour: str, tmp_path: Path) -> None:
    result = run_guest(arch, fixture_path(arch, "fs_errors", flavour), cwd=tmp_path)
    assert result.stderr == b""
    assert result.stdout.decode() == FS_ERRORS_OUTPUT.decode()
    assert result.returncode == 0


PROBE_DIR = "/qemuser-sysroot-probe"  # absent from the host: only the sysroot has it


@pytest.mark.parametrize(
    ("arch", "flavour", "given_by"),
    [("aarch64", "dynamic", "-L"), ("riscv64", "static", "QEMU_LD_PREFIX")],
)
def test_absolute_paths_resolve_inside_the_sysroot_first(
    arch: str, flavour: str, given_by: str, tmp_path: Path
) -> None:
    root = tmp_path / "root"
    (root / PROBE_DIR.lstrip("/")).mkdir(parents=True)
    (root / PROBE_DIR.lstrip("/") / "file").write_text("inside the sysroot")
    (root / PROBE_DIR.lstrip("/") / "link").symlink_to("lib-target")
    program = fixture_path(arch, "fs_ops", flavour)
    (root / PROBE_DIR.lstrip("/") / "prog").write_bytes(program.read_bytes())
    (root / PROBE_DIR.lstrip("/") / "prog").chmod(0o755)
    # a dynamic guest still needs its loader and libc from the sysroot
    (root / "lib").symlink_to(f"/usr/{arch}-linux-gnu/lib")
    work = tmp_path / "work"
    work.mkdir()
    assert not Path(PROBE_DIR).exists()
    by_option = given_by == "-L"
    result = run_guest(
        arch,
        program,
        "sysroot",
        f"{PROBE_DIR}/file",
        f"{PROBE_DIR}/link",
        f"{PROBE_DIR}/prog",
        options=("-L", str(root)) if by_option else (),
        env=None if by_option else {**os.environ, "QEMU_LD_PREFIX": str(root)},
        cwd=work,
    )
    assert result.stderr == b""
    assert result.stdout == (
        b'open in the sysroot: "inside the sysroot"\n'
        b"stat in the sysroot: 0\n"
        b"  size: 18\n"
        b"access in the sysroot: 0\n"
        b"readlink in the sysroot: 10\n"
        b'  target "lib-target"\n'
        b"lstat in the sysroot is a link: 1\n"
        b'absolute path missing from the sysroot: "host file"\n'
        b"exec'd program runs\n"
        b"exec from the sysroot: exit status: 7\n"
    )
    assert result.returncode == 0
    # a name the guest creates goes where it said, not into the sysroot
    assert (work / "outside").read_bytes() == b"host file"
    assert not (root / str(work).lstrip("/")).exists()


def test_without_the_sysroot_the_probe_is_missing(tmp_path: Path) -> None:
    result = run_guest(
        "riscv64",
        fixture_path("riscv64", "fs_ops", "static"),
        "sysroot",
        f"{PROBE_DIR}/file",
        f"{PROBE_DIR}/link",
        f"{PROBE_DIR}/prog",
        options=("-L", str(tmp_path)),
        cwd=tmp_path,
    )
    assert result.stdout.startswith(
        b"open in the sysroot: -1 ENOENT\nstat in the sysroot: -1 ENOENT\n"
    )
    assert result.stdout.endswith(b"execl: -1 ENOENT\nexec from the sysroot: exit status: 1\n")
    assert result.returncode == 0
