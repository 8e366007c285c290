"""The layout helper's records: what unpack returns, what pack writes, and the checks that keep
a layout and its record together. The bytes are spelled out by hand (struct offsets as the
kernel headers give them, see test_abi_layouts.py)."""

from __future__ import annotations

import struct
from typing import NamedTuple

import pytest

from qemuser.syscalls.abi import poll, sigaction, siginfo, sockets, sysinfo, timespec, ucontext
from qemuser.syscalls.abi.layout import Layout


def test_unpack_returns_the_typed_record() -> None:
    spec = timespec.TIMESPEC.unpack(struct.pack("<qq", 5, 123))
    assert isinstance(spec, timespec.Timespec)
    assert (spec.tv_sec, spec.tv_nsec) == (5, 123)
    assert timespec.timespec_ns(spec) == 5_000_000_123
    assert timespec.pack_timespec_ns(5_000_000_123) == struct.pack("<qq", 5, 123)


def test_pack_takes_a_record_or_named_values_with_zero_defaults() -> None:
    record = sockets.Ucred(pid=7, uid=1000, gid=100)
    assert sockets.UCRED.pack(record) == struct.pack("<iII", 7, 1000, 100)
    assert sockets.UCRED.pack(pid=7, uid=1000, gid=100) == sockets.UCRED.pack(record)
    assert sockets.UCRED.pack(pid=7) == struct.pack("<iII", 7, 0, 0)


def test_unpack_reads_at_an_offset_of_a_longer_buffer() -> None:
    data = bytes(4) + struct.pack("<iI", -1, 2) + bytes(8)
    assert sockets.LINGER.unpack(data, 4) == sockets.Linger(-1, 2)
    with pytest.raises(struct.error):
        sockets.LINGER.unpack(bytes(7))


def test_padding_has_an_offset_but_no_value_and_is_written_as_zero() -> None:
    assert "__pad" in sockets.SOCKADDR_IN.offsets
    assert sockets.SockaddrIn._fields == ("sin_family", "sin_port", "sin_addr")
    packed = sockets.SOCKADDR_IN.pack(
        sockets.SockaddrIn(2, (80).to_bytes(2, "big"), bytes([10, 0, 0, 1]))
    )
    assert packed == b"\x02\x00\x00\x50\x0a\x00\x00\x01" + bytes(8)
    # the pad is skipped on unpack: the guest's bytes there do not reach the record
    assert sockets.SOCKADDR_IN.unpack(packed[:8] + b"\xff" * 8).sin_addr == bytes([10, 0, 0, 1])


def test_arrays_unpack_to_tuples_and_round_trip() -> None:
    values = {name: index + 1 for index, name in enumerate(sysinfo.Sysinfo._fields)}
    values["loads"] = (7, 8, 9)
    record = sysinfo.Sysinfo(**values)  # type: ignore[arg-type]
    packed = sysinfo.SYSINFO.pack(record)
    assert len(packed) == 112
    assert struct.unpack_from("<3Q", packed, 8) == (7, 8, 9)
    assert struct.unpack_from("<H", packed, 82) == (0,)  # the __u16 pad
    assert sysinfo.SYSINFO.unpack(packed) == record


def test_packed_layout_has_no_padding() -> None:
    event = poll.EpollEvent(events=0x11, data=0x1122334455667788)
    assert poll.HOST_EPOLL_EVENT.pack(event) == struct.pack("<IQ", 0x11, 0x1122334455667788)
    assert poll.GUEST_EPOLL_EVENT.pack(event) == struct.pack("<I4xQ", 0x11, 0x1122334455667788)
    assert poll.EPOLL_EVENT["riscv64"].pack(event) == poll.GUEST_EPOLL_EVENT.pack(event)


def test_a_record_that_does_not_match_its_fields_is_refused() -> None:
    class Pair(NamedTuple):
        a: int
        b: int

    with pytest.raises(TypeError, match="Pair"):
        Layout("pair", Pair, [("a", "i"), ("c", "i")])
    with pytest.raises(ValueError, match="more than 4"):
        Layout("pair", Pair, [("a", "i"), ("b", "i")], size=4)


def test_siginfo_views_put_each_union_member_at_offset_16() -> None:
    kill = siginfo.pack_siginfo(siginfo.SiginfoKill(10, 0, siginfo.SI_USER, 42, 1000))
    assert kill == struct.pack("<iiii", 10, 0, 0, 0) + struct.pack("<iI", 42, 1000) + bytes(104)
    timer = siginfo.pack_siginfo(siginfo.SiginfoTimer(14, 0, siginfo.SI_TIMER, 3, 1, 0xABC))
    assert timer[16:32] == struct.pack("<iiQ", 3, 1, 0xABC) and len(timer) == 128
    rt = siginfo.pack_siginfo(siginfo.SiginfoRt(34, 0, siginfo.SI_QUEUE, 5, 6, 77))
    assert rt[8:12] == struct.pack("<i", -1) and rt[16:32] == struct.pack("<iIQ", 5, 6, 77)
    fault = siginfo.pack_siginfo(siginfo.SiginfoFault(11, 0, 1, 0xDEAD0))
    assert fault[16:24] == struct.pack("<Q", 0xDEAD0) and not any(fault[24:])
    chld = siginfo.SIGINFO_CHLD.unpack(
        siginfo.pack_siginfo(siginfo.SiginfoChld(17, 0, 1, 9, 8, 3, 4, 5))
    )
    assert chld == siginfo.SiginfoChld(17, 0, 1, 9, 8, 3, 4, 5)
    # every view reads the same head
    assert siginfo.SIGINFO_HEAD.unpack(rt) == siginfo.SiginfoHead(34, 0, -1)


def test_sigaction_differs_per_arch() -> None:
    """riscv64 has no SA_RESTORER: its struct sigaction has no sa_restorer and is 24 bytes."""
    a64 = sigaction.SIGACTION["aarch64"].unpack(struct.pack("<4Q", 0x400, 0x4000000, 0x500, 6))
    assert a64 == sigaction.Sigaction(0x400, 0x4000000, 0x500, 6)
    rv = sigaction.SIGACTION["riscv64"].unpack(struct.pack("<3Q", 0x400, 0, 6))
    assert rv == sigaction.SigactionNoRestorer(0x400, 0, 6)


def test_rt_sigframe_nests_the_ucontext_and_sigcontext_layouts() -> None:
    for frame, uc, context in (
        (ucontext.A64_RT_SIGFRAME, ucontext.A64_UCONTEXT, ucontext.A64_SIGCONTEXT),
        (ucontext.RV_RT_SIGFRAME, ucontext.RV_UCONTEXT, ucontext.RV_SIGCONTEXT),
    ):
        assert frame.size == siginfo.SIGINFO_SIZE + uc.size
        assert uc.size == uc.offsets["uc_mcontext"] + context.size
    assert ucontext.FPSIMD_CONTEXT.size + ucontext.ESR_CONTEXT.size < ucontext.A64_RESERVED_SIZE
    assert ucontext.RV_D_EXT_STATE.size < ucontext.RV_FP_STATE_SIZE


def test_packing_a_field_the_layout_does_not_have_is_refused() -> None:
    with pytest.raises(TypeError, match="linger has no field l_onof"):
        sockets.LINGER.pack(l_onof=1)
