"""Imports every handler module so that their declarations fill the registry."""

from qemuser.syscalls import fs, mm, proc, time, lifecycle, signal, futex, net, poll, events  # noqa: F401
