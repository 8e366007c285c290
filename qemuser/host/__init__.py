"""The host (x86_64 Linux) below everything else: the one libc binding and the host's system
call numbers. A leaf package: it imports nothing of ours."""
