"""The user-mode runtime: one guest Linux process (its CPU loop, signals, threads, fork and
exec), the options qemu-user takes, and the per-architecture Linux facts it needs."""
