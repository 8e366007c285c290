"""virtio over MMIO: the transport (transport.py) and one file per device model."""
