"""The TCP segment of a frame read from a live packet socket, headers read directly.

Why by hand: scapy's dissection costs about 0.5 ms a packet on the
reference machine (bench/plain_http_bench.py prints both), which caps the
live sniffer near 2,000 packets a second, and importing scapy's layers costs
the agent ~28 MB of memory; reading the three fixed headers takes a few
microseconds.  Only the common shapes are read here (Ethernet, lo, raw-IP
tunnels; IPv4 and IPv6 without extension headers): anything else is handed
to scapy, imported the first time it is needed.  Capture files always go
through scapy (every link type, no hurry: ``packets.py``).

A reason to skip (``not_tcp``, ``ip_fragment``, ``truncated_packet``...) is
returned, never raised.
"""

from __future__ import annotations

import socket
import struct
from typing import Any

from lumen_agent.capture.packet_socket import ARPHRD_ETHER, ARPHRD_LOOPBACK, ARPHRD_NONE
from lumen_agent.capture.tcp_reassembly import Endpoint, Segment, normalise_ip

_ETH_IPV4, _ETH_IPV6 = b"\x08\x00", b"\x86\xdd"
_ETH_HEADER = 14
_TCP_HEADER = struct.Struct("!HHIIH")
_ETHERNET_LINKS = (ARPHRD_ETHER, ARPHRD_LOOPBACK)


def ethernet_segment(frame: bytes, ts_ns: int) -> Segment | str | None:
    """The TCP segment of an Ethernet frame (lo and Ethernet interfaces); None
    when it is not a shape read here (VLAN tags, IPv6 extension headers, BIG TCP)."""
    if len(frame) < _ETH_HEADER + 20 + 20:
        return None
    ethertype = frame[12:14]
    if ethertype == _ETH_IPV4:
        return _ipv4_segment(frame, _ETH_HEADER, ts_ns)
    if ethertype == _ETH_IPV6:
        return _ipv6_segment(frame, _ETH_HEADER, ts_ns)
    return None


def raw_ip_segment(frame: bytes, ts_ns: int) -> Segment | str | None:
    """The same for a frame that starts at the IP header (tun and WireGuard interfaces)."""
    if len(frame) < 20 + 20:
        return None
    version = frame[0] >> 4
    if version == 4:
        return _ipv4_segment(frame, 0, ts_ns)
    if version == 6:
        return _ipv6_segment(frame, 0, ts_ns)
    return None


def _ipv4_segment(frame: bytes, ip: int, ts_ns: int) -> Segment | str | None:
    first = frame[ip]
    if first >> 4 != 4:
        return None
    ihl = (first & 0x0F) * 4
    total = int.from_bytes(frame[ip + 2 : ip + 4], "big")
    if int.from_bytes(frame[ip + 6 : ip + 8], "big") & 0x3FFF:
        return "ip_fragment"  # LLM traffic is never fragmented on a TCP path (PMTU, TSO)
    if frame[ip + 9] != 6:
        return "not_tcp"
    if total == 0 or ihl < 20:
        return None  # TSO/BIG TCP leave the length 0: scapy decides
    src = socket.inet_ntop(socket.AF_INET, frame[ip + 12 : ip + 16])
    dst = socket.inet_ntop(socket.AF_INET, frame[ip + 16 : ip + 20])
    return _tcp_segment(frame, ip + ihl, ip + total, src, dst, ts_ns)


def _ipv6_segment(frame: bytes, ip: int, ts_ns: int) -> Segment | str | None:
    if frame[ip + 6] != 6 or len(frame) < ip + 40 + 20:
        return None  # an extension header, or not TCP: scapy knows them
    plen = int.from_bytes(frame[ip + 4 : ip + 6], "big")
    if plen == 0:
        return None
    src = normalise_ip(socket.inet_ntop(socket.AF_INET6, frame[ip + 8 : ip + 24]))
    dst = normalise_ip(socket.inet_ntop(socket.AF_INET6, frame[ip + 24 : ip + 40]))
    return _tcp_segment(frame, ip + 40, ip + 40 + plen, src, dst, ts_ns)


def _tcp_segment(frame: bytes, tcp: int, end: int, src: str, dst: str, ts_ns: int) -> Segment | str:
    # The IP length says where the segment ends (Ethernet pads short frames).
    if end > len(frame):
        return "truncated_packet"  # the snaplen cut it: the bytes are not all there
    if tcp + 20 > end:
        return "bad_length"
    sport, dport, seq, _ack, offset_flags = _TCP_HEADER.unpack_from(frame, tcp)
    data = tcp + (offset_flags >> 12) * 4
    if data > end:
        return "bad_length"
    return Segment(ts_ns, Endpoint(src, sport), Endpoint(dst, dport), seq, offset_flags & 0x1FF, frame[data:end])


def frame_segment(link: int, frame: bytes, ts_ns: int, *, fast: bool = True) -> Segment | str:
    """The TCP segment of one frame from a packet socket on a link of type ``link`` (ARPHRD_*).

    ``fast`` False has scapy dissect every frame (the benchmark's baseline)."""
    segment = None
    if fast:
        if link in _ETHERNET_LINKS:
            segment = ethernet_segment(frame, ts_ns)
        elif link == ARPHRD_NONE:
            segment = raw_ip_segment(frame, ts_ns)
    if segment is None:
        segment = _scapy_segment(link, frame, ts_ns)
    return segment


_scapy_classes: dict[int, Any] = {}


def _scapy_segment(link: int, frame: bytes, ts_ns: int) -> Segment | str:
    from lumen_agent.capture.packets import dissect_to_tcp_only, to_segment

    cls = _scapy_classes.get(link)
    if cls is None:
        from scapy.config import conf
        from scapy.data import ARPHRD_TO_DLT

        dissect_to_tcp_only()
        layers = conf.l2types.num2layer
        cls = layers.get(link) or layers.get(ARPHRD_TO_DLT.get(link, -1)) or False
        _scapy_classes[link] = cls
    if not cls:
        return "undissectable"
    try:
        packet = cls(frame)
    except Exception:  # noqa: BLE001 - scapy on a malformed frame: a reason to skip
        return "undissectable"
    return to_segment(packet, ts_ns)
