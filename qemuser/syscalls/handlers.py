"""Imports the handler modules every program needs from its first instructions, so that their
declarations fill the registry; the others come with the guest's first call of one of theirs
(qemuser.syscalls.deferred)."""

from qemuser.syscalls.deferred import EAGER_MODULES, import_module

for _module in EAGER_MODULES:
    import_module(_module)
