"""Guest ABI layouts: every struct a system call reads or writes in guest memory, each defined
once, citing the kernel header it follows (asm-generic, 64-bit little-endian, with the arch
overrides the kernel has), each unpacking to a typed record (layout.py).

- layout.py: the Layout helper (named fields, padding, arrays, packed structs, records);
- timespec.py: timespec, timeval, itimerspec, itimerval, timezone, tms;
- resources.py: rusage, rlimit64; sysinfo.py: new_utsname, sysinfo; futex.py: robust_list_head;
- sockets.py: sockaddr_*, iovec, msghdr, mmsghdr, cmsghdr, ucred, linger, sock_fprog;
- poll.py: pollfd, epoll_event (per arch: x86_64 packs it), pselect6's sigset_argpack;
- sigaction.py: sigset_t, struct sigaction (per arch), stack_t;
- siginfo.py: siginfo_t and its union members, sigevent, signalfd_siginfo;
- ucontext.py: ucontext, sigcontext and its records, rt_sigframe, per arch; sigframe.py builds
  and reads the frames from the CPU's registers with them;
- filestat.py (stat, statx, statfs), filecontrol.py (open flags, flock), dirent.py,
  termbits.py (termios, winsize, ioctl numbers), scalars.py (int, loff_t, int[2]), and the
  System V IPC, capability and file-handle records; mqueue.py (mq_attr); schedattr.py
  (sched_attr, kcmp_epoll_slot).

tests/unit/test_abi_layouts.py holds each layout's size and offsets as the cross compilers give
them, and checks those numbers against the real headers.
"""
