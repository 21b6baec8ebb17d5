"""Packet capture files (pcap, pcapng) in: their TCP conversations as DataEvents.

scapy reads both formats and every link type ``tcpdump`` writes.  A capture
is untrusted input: a truncated file ends the reading where it breaks, a
capture of something else yields skipped packets, and both are counted,
never raised.  Memory stays bounded by the reassembly limits
(``tcp_reassembly.MAX_*``): packets are read one at a time.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

from lumen_agent.capture.conversations import Conversations
from lumen_agent.capture.packets import dissect_to_tcp_only, to_segment
from lumen_agent.pipeline.counters import Counters
from lumen_agent.pipeline.events import DataEvent

log = logging.getLogger("lumen_agent")

# First bytes of the formats: pcap (both byte orders, micro- and nanosecond
# resolution) and pcapng's Section Header Block.
PCAP_MAGICS = (b"\xd4\xc3\xb2\xa1", b"\xa1\xb2\xc3\xd4", b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d")
PCAPNG_MAGIC = b"\x0a\x0d\x0d\x0a"


def is_packet_capture(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError:
        return False
    return head in PCAP_MAGICS or head == PCAPNG_MAGIC


def read_packets(path: Path, counters: Counters):
    """scapy packets of the file, one at a time; a broken file ends the iteration (counted)."""
    from scapy.utils import PcapReader

    dissect_to_tcp_only()
    try:
        reader = PcapReader(str(path))
    except Exception as exc:  # noqa: BLE001 - scapy raises several types for a bad header
        counters.skip("pcap_unreadable", str(exc))
        return
    with reader:
        while True:
            try:
                packet = reader.read_packet()
            except EOFError:
                return
            except Exception as exc:  # noqa: BLE001 - a damaged block, whatever scapy makes of it
                counters.skip("pcap_damaged", f"{type(exc).__name__}: {exc}")
                return
            if packet is None:
                return
            yield packet


def capture_events(path: Path, counters: Counters, *, keylog: Path | None = None) -> Iterator[DataEvent]:
    """The DataEvents of every TCP conversation in the capture, in capture order.

    With ``keylog`` (an NSS key log), TLS conversations are decrypted too.
    """
    conversations = Conversations(decrypt=_tls_decryptor(keylog, counters) if keylog else None)
    pending: list[DataEvent] = []
    last_ns = 0
    for packet in read_packets(path, counters):
        counters.add("pcap.packets")
        segment = to_segment(packet)
        if isinstance(segment, str):
            counters.skip(f"packet_{segment}")
            continue
        last_ns = max(last_ns, segment.ts_ns)
        conversations.feed(segment, pending.append)
        yield from pending
        pending.clear()
    conversations.close(last_ns, pending.append)
    yield from pending
    for name, value in conversations.table.counters.items():
        counters.add(f"pcap.{name}", value)



def _tls_decryptor(keylog: Path, counters: Counters):
    from lumen_agent.capture.tls_keylog import TlsDecryptor

    return TlsDecryptor.from_keylog(keylog, counters)
