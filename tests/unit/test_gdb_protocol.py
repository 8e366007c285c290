"""The GDB remote protocol's framing, escaping and data, without running a guest."""

import xml.etree.ElementTree as ET

from qemuser.cpu import CPUS
from qemuser.gdb.packets import (
    GDB_TO_LINUX_SIGNAL,
    BadPacket,
    Interrupt,
    Packet,
    PacketReader,
    checksum,
    escape,
    frame,
    gdb_signal,
    unescape,
)
from qemuser.gdb.tdesc import TargetDescription, decode_register, encode_register

# the target descriptions user mode serves (qemuser.user.gdbtarget)
AARCH64_GDB = TargetDescription(CPUS["aarch64"], osabi="GNU/Linux")
RISCV64_GDB = TargetDescription(CPUS["riscv64"], osabi="GNU/Linux")


def test_checksum_is_the_byte_sum_modulo_256() -> None:
    assert checksum(b"") == 0
    assert checksum(b"OK") == 0x9A
    assert checksum(b"\xff\x02") == 0x01


def test_frame_of_a_plain_reply() -> None:
    assert frame(b"OK") == b"$OK#9a"
    assert frame(b"") == b"$#00"


def test_frame_escapes_special_bytes_and_sums_what_is_sent() -> None:
    # '#', '$', '}' and '*' travel as '}' followed by the byte xor 0x20
    assert escape(b"a#b$c}d*e") == b"a}\x03b}\x04c}]d}\x0ae"
    body = b"a}\x03b}\x04c}]d}\x0ae"
    assert frame(b"a#b$c}d*e") == b"$" + body + b"#%02x" % checksum(body)


def test_unescape_undoes_escape() -> None:
    data = bytes(range(256))
    assert unescape(escape(data)) == data
    assert unescape(b"plain") == b"plain"


def test_reader_splits_packets_and_drops_acks() -> None:
    reader = PacketReader()
    events = reader.feed(b"+$g#67+$m10,4#")
    assert events == [Packet(b"g")]
    # the rest of the second packet arrives later
    assert reader.feed(b"2e") == [Packet(b"m10,4")]
    assert reader.buffer == bytearray()


def test_reader_reports_a_bad_checksum() -> None:
    assert PacketReader().feed(b"$g#00$?#3f") == [BadPacket(), Packet(b"?")]
    assert PacketReader().feed(b"$g#zz") == [BadPacket()]


def test_reader_sees_ctrl_c_between_packets() -> None:
    assert PacketReader().feed(b"\x03$?#3f") == [Interrupt(), Packet(b"?")]


def test_reader_unescapes_binary_payloads() -> None:
    body = b"X10,1:}]"  # one byte, 0x7d, escaped
    events = PacketReader().feed(b"$" + body + b"#%02x" % checksum(body))
    assert events == [Packet(b"X10,1:}")]


def test_signal_numbers_are_gdbs_own() -> None:
    assert gdb_signal(5) == 5  # SIGTRAP
    assert gdb_signal(11) == 11  # SIGSEGV
    assert gdb_signal(7) == 10  # Linux SIGBUS is GDB_SIGNAL_BUS
    assert gdb_signal(10) == 30  # Linux SIGUSR1 is GDB_SIGNAL_USR1
    assert gdb_signal(17) == 20  # SIGCHLD
    assert GDB_TO_LINUX_SIGNAL[30] == 10
    assert gdb_signal(99) == 143  # GDB_SIGNAL_UNKNOWN


def test_registers_travel_little_endian_hex() -> None:
    assert encode_register(0x1122334455667788, 64) == b"8877665544332211"
    assert encode_register(-1, 32) == b"ffffffff"
    assert decode_register(b"8877665544332211", 64) == 0x1122334455667788
    assert decode_register(encode_register(1 << 127, 128), 128) == 1 << 127


def _features(xml: bytes) -> dict[str, list[str]]:
    root = ET.fromstring(xml)
    return {
        feature.get("name", ""): [reg.get("name", "") for reg in feature.findall("reg")]
        for feature in root.findall("feature")
    }


def test_aarch64_target_description() -> None:
    xml = AARCH64_GDB.target_xml()
    assert ET.fromstring(xml).findtext("architecture") == "aarch64"
    features = _features(xml)
    core = [f"x{i}" for i in range(31)] + ["sp", "pc", "cpsr"]
    fpu = [f"v{i}" for i in range(32)] + ["fpsr", "fpcr"]
    assert features == {"org.gnu.gdb.aarch64.core": core, "org.gnu.gdb.aarch64.fpu": fpu}
    assert [reg.name for reg in AARCH64_GDB.registers] == core + fpu


def test_riscv64_target_description() -> None:
    xml = RISCV64_GDB.target_xml()
    assert ET.fromstring(xml).findtext("architecture") == "riscv:rv64"
    features = _features(xml)
    cpu = features["org.gnu.gdb.riscv.cpu"]
    assert cpu[:3] == ["zero", "ra", "sp"] and cpu[-2:] == ["t6", "pc"] and len(cpu) == 33
    fpu = features["org.gnu.gdb.riscv.fpu"]
    assert fpu[:2] == ["ft0", "ft1"] and fpu[-4:] == ["ft11", "fflags", "frm", "fcsr"]
    assert len(fpu) == 35
