"""The block layer: image formats (raw, qcow2) behind one driver interface, and the image tools'
operations (qemuser-img, qemuser-io, qemuser-nbd are front ends over it)."""

from qemuser.system.block.driver import BlockDriver, Extent
from qemuser.system.block.errors import BlockError
from qemuser.system.block.probe import open_image, probe

__all__ = ["BlockDriver", "BlockError", "Extent", "open_image", "probe"]
