"""Imports every handler module so that their declarations fill the registry."""

from qemuser.syscalls import fs, mm, proc, time, lifecycle, signal  # noqa: F401
