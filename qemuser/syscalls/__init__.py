"""The guest's Linux system calls: their declarations (registry), argument kinds, strace
formatting, numbers per architecture, the handler modules by topic, and the guest ABI layouts
(abi/). Kept empty: start-up imports only the handler modules a program needs (deferred.py)."""
