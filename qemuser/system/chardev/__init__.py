"""Character devices (`-chardev`, and the legacy forms -serial/-monitor take): backends.py has the
backends, sockets.py the socket syntax, spec.py turns command-line text into backends."""
