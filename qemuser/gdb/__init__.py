"""The GDB remote serial protocol: packets, the connection, the target description. It knows
nothing of user or system mode: each plugs in a `Target` (qemuser.gdb.target)."""
