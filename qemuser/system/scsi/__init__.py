"""SCSI: the command sets of scsi-hd and scsi-cd (disk.py), used by virtio-scsi."""
