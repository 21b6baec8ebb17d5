"""From a dissected packet (scapy) to the ``Segment`` that TCP reassembly reads.

scapy does the dissection for every link type a capture may hold (Ethernet,
Linux cooked SLL/SLL2 from ``tcpdump -i any``, raw IP, BSD loopback), so this
module only picks the IP and TCP layers out.  Anything that is not one TCP
segment over IPv4/IPv6 is reported as a reason to skip, never raised.
"""

from __future__ import annotations

import socket
import struct

from scapy.config import conf
from scapy.layers.inet import IP, TCP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import CookedLinux, CookedLinuxV2, Dot1Q, Ether, Loopback
from scapy.packet import Packet

from lumen_agent.capture.tcp_reassembly import Endpoint, Segment, normalise_ip


def dissect_to_tcp_only() -> None:
    """Have scapy stop at TCP: its payload stays raw bytes.

    Faster, and a TCP payload is never taken for a layer scapy knows (TLS on
    443 would otherwise be parsed, statefully, on its own).
    """
    if not conf.layers.filtered:
        conf.layers.filter([Ether, Dot1Q, CookedLinux, CookedLinuxV2, Loopback, IP, IPv6, TCP])


def packet_time_ns(packet: Packet) -> int:
    # scapy keeps the capture's time as an EDecimal/float of seconds.
    return int(packet.time * 1_000_000_000)


def to_segment(packet: Packet, ts_ns: int | None = None) -> Segment | str:
    """The packet's TCP segment, or the reason it has none (``not_tcp``, ``fragment``, ...)."""
    tcp = packet.getlayer(TCP)
    if tcp is None:
        return "not_tcp"
    ip = tcp.underlayer
    if isinstance(ip, IP):
        if ip.frag or ip.flags.MF:
            return "ip_fragment"  # LLM traffic is never fragmented on a TCP path (PMTU, TSO)
        src, dst = ip.src, ip.dst
    elif isinstance(ip, IPv6):
        src, dst = ip.src, ip.dst
    else:
        return "not_ip"
    payload = bytes(tcp.payload)
    if isinstance(ip, IP) and ip.len:
        # Ethernet pads short frames: the IP length says where the segment ends.
        tcp_len = ip.len - ip.ihl * 4 - tcp.dataofs * 4
        if tcp_len < 0:
            return "bad_length"
        if len(payload) > tcp_len:
            payload = payload[:tcp_len]
        elif len(payload) < tcp_len:
            return "truncated_packet"  # snaplen cut it: the bytes are not all there
    elif isinstance(ip, IPv6) and ip.plen and ip.nh == 6:  # no extension headers
        tcp_len = ip.plen - tcp.dataofs * 4
        if len(payload) > tcp_len >= 0:
            payload = payload[:tcp_len]
        elif len(payload) < tcp_len:
            return "truncated_packet"
    return Segment(
        ts_ns=packet_time_ns(packet) if ts_ns is None else ts_ns,
        src=Endpoint(normalise_ip(src), int(tcp.sport)),
        dst=Endpoint(normalise_ip(dst), int(tcp.dport)),
        seq=int(tcp.seq),
        flags=int(tcp.flags),
        payload=payload,
    )


_ETH_IPV4, _ETH_IPV6 = b"\x08\x00", b"\x86\xdd"
_TCP_HEADER = struct.Struct("!HHIIH")


def ethernet_segment(frame: bytes, ts_ns: int) -> Segment | str | None:
    """The TCP segment of an Ethernet frame (lo and Ethernet interfaces), read directly.

    Why by hand: scapy's dissection costs about 0.5 ms a packet on the
    reference machine (bench/plain_http_bench.py prints both), which caps the
    live sniffer near 2,000 packets a second; reading the three fixed headers
    takes a few microseconds.  Only the common shapes are read here: None
    means "not one of them" (VLAN tags, IPv6 extension headers, BIG TCP) and
    the caller hands the frame to scapy instead.  Capture files always go
    through scapy (every link type, no hurry).
    """
    if len(frame) < 14 + 20 + 20:
        return None
    ethertype = frame[12:14]
    if ethertype == _ETH_IPV4:
        first = frame[14]
        if first >> 4 != 4:
            return None
        ihl = (first & 0x0F) * 4
        total = int.from_bytes(frame[16:18], "big")
        if int.from_bytes(frame[20:22], "big") & 0x3FFF:
            return "ip_fragment"
        if frame[23] != 6:
            return "not_tcp"
        if total == 0 or ihl < 20:
            return None
        src = socket.inet_ntop(socket.AF_INET, frame[26:30])
        dst = socket.inet_ntop(socket.AF_INET, frame[30:34])
        tcp, end = 14 + ihl, 14 + total
    elif ethertype == _ETH_IPV6:
        if frame[20] != 6 or len(frame) < 14 + 40 + 20:
            return None  # an extension header, or not TCP: scapy knows them
        plen = int.from_bytes(frame[18:20], "big")
        if plen == 0:
            return None
        src = normalise_ip(socket.inet_ntop(socket.AF_INET6, frame[22:38]))
        dst = normalise_ip(socket.inet_ntop(socket.AF_INET6, frame[38:54]))
        tcp, end = 54, 54 + plen
    else:
        return None
    if end > len(frame):
        return "truncated_packet"
    if tcp + 20 > end:
        return "bad_length"
    sport, dport, seq, _ack, offset_flags = _TCP_HEADER.unpack_from(frame, tcp)
    data = tcp + (offset_flags >> 12) * 4
    if data > end:
        return "bad_length"
    return Segment(ts_ns, Endpoint(src, sport), Endpoint(dst, dport), seq, offset_flags & 0x1FF, frame[data:end])


def frame_segment(cls: type[Packet] | None, frame: bytes, ts_ns: int, *, fast: bool = True) -> Segment | str:
    """The TCP segment of one frame read from a packet socket whose link layer is ``cls``.

    Ethernet frames (lo too) are read directly when ``fast``; anything else
    is dissected by scapy.  A reason to skip, never an exception.
    """
    segment = ethernet_segment(frame, ts_ns) if cls is Ether and fast else None
    if segment is None:
        if cls is None:
            return "undissectable"
        try:
            packet = cls(frame)
        except Exception:  # noqa: BLE001 - scapy on a malformed frame: a reason to skip
            return "undissectable"
        segment = to_segment(packet, ts_ns)
    return segment
