"""virtio-scsi (virtio 1.1 section 5.6) and the disks on its bus (`-device scsi-hd` and
`scsi-cd`): requests carry a CDB for a LUN, answered by the SCSI command sets of
qemuser/system/scsi/disk.py.

Addressing follows QEMU's virtio-scsi: LUN field bytes 1 = target, 2-3 = 0x4000 | lun (flat
space); one channel, targets 0-255, LUNs 0-16383. A scsi-hd without scsi-id takes the lowest
free target, as QEMU's bus does.
"""

from __future__ import annotations

import struct

from qemuser.system.devices.registry import DeviceOptionError, PlugContext, Property, pluggable
from qemuser.system.scsi.disk import GOOD, ScsiDisk, scsi_cd, scsi_hd
from qemuser.system.virtio.transport import Chain, DmaError, DmaHost, VirtioDevice

CDB_SIZE, SENSE_SIZE = 32, 96
# struct virtio_scsi_cmd_req (include/uapi/linux/virtio_scsi.h): u8 lun[8], le64 tag,
# u8 task_attr, u8 prio, u8 crn, u8 cdb[CDB_SIZE]
CMD_REQ = struct.Struct(f"<8sQBBB{CDB_SIZE}s")
# struct virtio_scsi_cmd_resp: le32 sense_len, le32 resid, le16 status_qualifier, u8 status,
# u8 response, u8 sense[SENSE_SIZE]
CMD_RESP = struct.Struct(f"<IIHBB{SENSE_SIZE}s")
S_OK, S_OVERRUN, S_BAD_TARGET, S_FAILURE = 0, 1, 3, 9
T_TMF, T_AN_QUERY, T_AN_SUBSCRIBE = 0, 1, 2
S_FUNCTION_COMPLETE = 0
MAX_TARGET, MAX_LUN = 255, 16383
CONTROL_QUEUE, EVENT_QUEUE, FIRST_REQUEST_QUEUE = 0, 1, 2


@pluggable
class VirtioScsi(VirtioDevice):
    """virtio-scsi with one request queue; its LUNs are `disks[(target, lun)]`."""

    model = "virtio-scsi-device"
    category = "Storage"
    description = "Virtio SCSI controller"
    properties = (Property("num_queues", "uint32", "request queues (only 1)"),)
    device_id = 8
    num_queues = 3  # control, event, one request queue

    def __init__(self) -> None:
        super().__init__()
        self.disks: dict[tuple[int, int], ScsiDisk] = {}

    @classmethod
    def from_options(cls, opts: dict[str, str], plan: PlugContext, option: str) -> VirtioScsi:
        if opts.get("num_queues", "1") != "1":
            raise DeviceOptionError(f"{option}: only num_queues=1 is supported")
        return cls()

    def attach_disk(self, disk: ScsiDisk, target: int | None, lun: int, option: str) -> None:
        if target is None:
            target = next(t for t in range(MAX_TARGET + 1) if (t, lun) not in self.disks)
        if not 0 <= target <= MAX_TARGET or not 0 <= lun <= MAX_LUN:
            raise DeviceOptionError(f"{option}: bad scsi device id {target}/{lun}")
        if (target, lun) in self.disks:
            raise DeviceOptionError(
                f"{option}: lun already used by '{self.disks[(target, lun)].product.strip()}'"
            )
        self.disks[(target, lun)] = disk

    def config(self) -> bytes:
        # struct virtio_scsi_config: num_queues, seg_max, max_sectors, cmd_per_lun,
        # event_info_size, sense_size, cdb_size (le32 each), le16 max_channel, le16 max_target,
        # le32 max_lun
        return struct.pack(
            "<IIIIIIIHHI", 1, 254, 0xFFFF, 128, 16, SENSE_SIZE, CDB_SIZE, 0, MAX_TARGET, MAX_LUN
        )

    def notify(self, queue_index: int) -> None:
        transport = self.transport
        assert transport is not None
        if queue_index == EVENT_QUEUE:
            return  # buffers for events stay with us until an event (none: no hotplug here)
        served = False
        while (chain := transport.pop(queue_index)) is not None:
            if queue_index == CONTROL_QUEUE:
                written = self._control(transport.host, chain)
            else:
                written = self._command(transport.host, chain)
            transport.push(queue_index, chain, written)
            served = True
        if served:
            transport.interrupt()

    def _control(self, host: DmaHost, chain: Chain) -> int:
        request = chain.read(host)
        if len(request) < 4:
            raise DmaError("virtio-scsi control request without a type")
        (kind,) = struct.unpack_from("<I", request)
        if kind == T_TMF:
            # Task management (abort, reset): every command completes at once here, so there
            # is never anything in flight to act on.
            chain.write(host, 0, bytes((S_FUNCTION_COMPLETE,)))
            return 1
        if kind in (T_AN_QUERY, T_AN_SUBSCRIBE):
            chain.write(host, 0, struct.pack("<IB", 0, S_OK))  # no asynchronous events
            return 5
        chain.write(host, 0, bytes((S_FAILURE,)))
        return 1

    def _command(self, host: DmaHost, chain: Chain) -> int:
        readable = chain.read(host)
        room = chain.writable_length()
        if len(readable) < CMD_REQ.size or room < CMD_RESP.size:
            raise DmaError("virtio-scsi request shorter than its header")
        lun_field, _tag, _attr, _prio, _crn, cdb = CMD_REQ.unpack_from(readable)
        data_out = readable[CMD_REQ.size :]
        disk = self._lookup(lun_field)
        if disk is None:
            chain.write(host, 0, CMD_RESP.pack(0, 0, 0, 0, S_BAD_TARGET, b""))
            return CMD_RESP.size
        result = disk.execute(_trim_cdb(cdb), data_out)
        data_in = result.data[: room - CMD_RESP.size]
        resid = len(result.data) - len(data_in)
        if result.status == GOOD and data_out:
            resid = 0
        sense = result.sense[:SENSE_SIZE]
        response = S_OVERRUN if resid and result.status == GOOD else S_OK
        chain.write(host, 0, CMD_RESP.pack(len(sense), resid, 0, result.status, response, sense))
        if data_in:
            chain.write(host, CMD_RESP.size, data_in)
        return CMD_RESP.size + len(data_in)

    def _lookup(self, lun_field: bytes) -> ScsiDisk | None:
        if lun_field[0] != 1:
            return None  # not a single-level LUN (e.g. the well-known REPORT LUNS LUN)
        target = lun_field[1]
        lun = ((lun_field[2] << 8) | lun_field[3]) & 0x3FFF
        return self.disks.get((target, lun))

    def reset(self) -> None:
        for disk in self.disks.values():
            disk.reset()


def _trim_cdb(cdb: bytes) -> bytes:
    """The CDB's own length from its group code (SAM-5): the rest of the 32 bytes is padding."""
    group = cdb[0] >> 5
    length = {0: 6, 1: 10, 2: 10, 4: 16, 5: 12}.get(group, CDB_SIZE)
    return cdb[:length]


class _ScsiDevice:
    """`-device scsi-hd` / `scsi-cd`: a LUN on the newest virtio-scsi controller (no device of
    its own on a bus QEMU models separately)."""

    model = ""
    bus = "SCSI"
    category = "Storage"
    description = ""
    properties = (
        Property("drive", "str", "Node name or ID of a block device to use as a backend"),
        Property("scsi-id", "uint32", "target (default: the lowest free one)"),
        Property("lun", "uint32", "logical unit (default 0)"),
        Property("channel", "uint32", "channel (only 0)"),
        Property("serial", "str", "unit serial number (VPD page 0x80)"),
        Property("bootindex", "int32", "boot order of this device for the firmware"),
        Property("id", "str", "the device's id"),
    )

    @classmethod
    def make(cls, opts: dict[str, str], plan: PlugContext, option: str) -> ScsiDisk:
        raise NotImplementedError

    @classmethod
    def from_options(cls, opts: dict[str, str], plan: PlugContext, option: str) -> None:
        controllers = [
            d
            for d in (getattr(p, "virtio", p) for p in plan.planned())
            if isinstance(d, VirtioScsi)
        ]
        if not controllers:
            raise DeviceOptionError(f"{option}: No 'SCSI' bus found for device '{cls.model}'")
        try:
            target = int(opts["scsi-id"], 0) if "scsi-id" in opts else None
            lun = int(opts.get("lun", "0"), 0)
            channel = int(opts.get("channel", "0"), 0)
        except ValueError:
            raise DeviceOptionError(f"{option}: Parameter expects an integer") from None
        if channel != 0:
            raise DeviceOptionError(f"{option}: bad scsi device id {channel}:{target}:{lun}")
        controllers[-1].attach_disk(cls.make(opts, plan, option), target, lun, option)


@pluggable
class ScsiHd(_ScsiDevice):
    model = "scsi-hd"
    description = "virtual SCSI disk"

    @classmethod
    def make(cls, opts: dict[str, str], plan: PlugContext, option: str) -> ScsiDisk:
        drive = plan.claim_drive(opts.get("drive"), option)
        assert drive.backend is not None
        return scsi_hd(drive.backend, serial=opts.get("serial", ""))


@pluggable
class ScsiCd(_ScsiDevice):
    model = "scsi-cd"
    description = "virtual SCSI CD-ROM"

    @classmethod
    def make(cls, opts: dict[str, str], plan: PlugContext, option: str) -> ScsiDisk:
        backend = None
        if opts.get("drive"):
            drive = plan.claim_drive(opts["drive"], option)
            backend = drive.backend
        return scsi_cd(backend, serial=opts.get("serial", ""))
