"""Imports every handler module so that their declarations fill the registry."""

from qemuser.syscalls import (  # noqa: F401
    events,
    fs,
    futex,
    ioctl,
    lifecycle,
    misc,
    mm,
    net,
    poll,
    proc,
    signal,
    time,
    timers,
)
