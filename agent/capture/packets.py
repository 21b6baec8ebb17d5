"""From a dissected packet (scapy) to the ``Segment`` that TCP reassembly reads.

scapy does the dissection for every link type a capture may hold (Ethernet,
Linux cooked SLL/SLL2 from ``tcpdump -i any``, raw IP, BSD loopback), so this
module only picks the IP and TCP layers out.  Anything that is not one TCP
segment over IPv4/IPv6 is reported as a reason to skip, never raised.
"""

from __future__ import annotations

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
