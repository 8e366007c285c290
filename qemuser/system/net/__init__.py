"""Network backends of system mode (`-netdev`): user-mode networking through libslirp."""
