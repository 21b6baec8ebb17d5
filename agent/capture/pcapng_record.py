"""``run --record FILE.pcapng``: what the agent captured, as a packet capture Wireshark opens.

Every connection (pid, conn) becomes one synthetic TCP flow: a handshake at
its first event, one segment per run of bytes (split at ``MAX_SEGMENT``),
FIN both ways at its close.  The process's side is the client
(127.0.0.1, a port per connection) and the far side 127.0.0.2:80, so
Wireshark reads the decrypted HTTP with no hints.  Each packet's pcapng
comment names the process: ``pid=4242 process=curl conn=0x5581...``.
Credentials are redacted as in the JSON-lines recording; a GAP leaves a
one-byte hole in the sequence numbers ("previous segment not captured").

scapy's ``PcapNgWriter`` writes the blocks and the per-packet comments.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether
from scapy.packet import Raw
from scapy.utils import PcapNgWriter

from lumen_agent.pipeline.attribution import ProcessInfo
from lumen_agent.pipeline.events import DataEvent, Direction, EventFlag
from lumen_agent.recording import redact_credentials

# Largest payload of one synthetic segment (an IPv4 packet is at most 64 KiB).
MAX_SEGMENT = 65000
# Connections open in the recording at once (oldest forgotten: its flow just ends).
MAX_FLOWS = 16384
CLIENT_IP, SERVER_IP, SERVER_PORT = "127.0.0.1", "127.0.0.2", 80
# Fixed link addresses: scapy would otherwise look the destination up (ARP).
CLIENT_MAC, SERVER_MAC = "02:00:00:00:00:01", "02:00:00:00:00:02"
FIRST_CLIENT_PORT, CLIENT_PORTS = 1024, 64000
ISN = 1_000_000


@dataclass(slots=True)
class _Flow:
    port: int
    comment: bytes
    client_seq: int = ISN + 1
    server_seq: int = ISN + 1


class PcapngRecorder:
    def __init__(self, path: Path, describe: Callable[[int], ProcessInfo] | None = None) -> None:
        self._writer = PcapNgWriter(str(path))
        self._describe = describe
        self._flows: OrderedDict[tuple[int, int], _Flow] = OrderedDict()
        self._next_port = 0

    def write(self, event: DataEvent) -> None:
        key = event.conn_key
        flow = self._flows.get(key)
        ts = event.ts_ns / 1e9
        if flow is None:
            if event.flags & EventFlag.CLOSE:
                return
            flow = self._open(event, ts)
        if event.flags & EventFlag.CLOSE:
            self._close(key, flow, ts)
            return
        data = event.data
        sending = event.direction is Direction.SEND
        if sending and data:
            data = redact_credentials(data)
        if event.flags & EventFlag.GAP:
            if sending:
                flow.client_seq += 1
            else:
                flow.server_seq += 1
        for start in range(0, len(data), MAX_SEGMENT):
            self._segment(flow, sending, "PA", data[start:start + MAX_SEGMENT], ts)

    def flush(self) -> None:
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()

    # -- internals ------------------------------------------------------------

    def _open(self, event: DataEvent, ts: float) -> _Flow:
        port = FIRST_CLIENT_PORT + self._next_port % CLIENT_PORTS
        self._next_port += 1
        info = self._describe(event.pid) if self._describe is not None else None
        process = info.process if info is not None and info.process else "?"
        comment = f"pid={event.pid} process={process} conn={event.conn:#x}".encode()
        flow = _Flow(port, comment)
        self._flows[event.conn_key] = flow
        if len(self._flows) > MAX_FLOWS:
            self._flows.popitem(last=False)
        self._packet(flow, True, "S", ISN, 0, b"", ts)
        self._packet(flow, False, "SA", ISN, ISN + 1, b"", ts)
        self._packet(flow, True, "A", ISN + 1, ISN + 1, b"", ts)
        return flow

    def _close(self, key: tuple[int, int], flow: _Flow, ts: float) -> None:
        del self._flows[key]
        self._packet(flow, True, "FA", flow.client_seq, flow.server_seq, b"", ts)
        self._packet(flow, False, "FA", flow.server_seq, flow.client_seq + 1, b"", ts)
        self._packet(flow, True, "A", flow.client_seq + 1, flow.server_seq + 1, b"", ts)

    def _segment(self, flow: _Flow, from_client: bool, flags: str, payload: bytes, ts: float) -> None:
        if from_client:
            self._packet(flow, True, flags, flow.client_seq, flow.server_seq, payload, ts)
            flow.client_seq += len(payload)
        else:
            self._packet(flow, False, flags, flow.server_seq, flow.client_seq, payload, ts)
            flow.server_seq += len(payload)

    def _packet(self, flow: _Flow, from_client: bool, flags: str, seq: int, ack: int, payload: bytes,
                ts: float) -> None:
        if from_client:
            frame = (Ether(src=CLIENT_MAC, dst=SERVER_MAC) / IP(src=CLIENT_IP, dst=SERVER_IP)
                     / TCP(sport=flow.port, dport=SERVER_PORT, flags=flags, seq=seq % (1 << 32), ack=ack % (1 << 32)))
        else:
            frame = (Ether(src=SERVER_MAC, dst=CLIENT_MAC) / IP(src=SERVER_IP, dst=CLIENT_IP)
                     / TCP(sport=SERVER_PORT, dport=flow.port, flags=flags, seq=seq % (1 << 32), ack=ack % (1 << 32)))
        if payload:
            frame = frame / Raw(payload)
        frame.time = ts
        frame.comments = [flow.comment]
        self._writer.write(frame)
