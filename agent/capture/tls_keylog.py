"""Decrypt TLS conversations of a packet capture with an NSS key log (``replay --keylog``).

``SSLKEYLOGFILE`` (curl, Node, Python, browsers) writes the secrets of every
TLS session: ``CLIENT_RANDOM`` lines for TLS 1.2, ``*_TRAFFIC_SECRET_0``
lines for TLS 1.3.  scapy's TLS layer (with ``cryptography``) parses each
record with a per-connection ``tlsSession`` that finds its secrets in the log
by the ClientHello's random, derives the keys and decrypts; this module only
cuts the reassembled byte streams into records (scapy wants whole records)
and hands on the application data, in order, as plaintext ``StreamData``.

A connection whose client does not open with a TLS handshake record passes
through untouched (plain HTTP in the same capture).  A TLS connection the log
has no secrets for, or whose records do not decrypt, yields nothing and is
counted; a record larger than TLS allows ends the connection's decryption.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from pathlib import Path

from lumen_agent.capture.tcp_reassembly import StreamData
from lumen_agent.pipeline.counters import Counters

log = logging.getLogger("lumen_agent")

RECORD_HEADER = 5
# TLSCiphertext.length is at most 2^14 + 2048 (RFC 8446 5.2, RFC 5246 6.2.3).
MAX_RECORD_BYTES = (1 << 14) + 2048
# A content type (handshake 22) and a legacy version 3.x: how a TLS client opens.
_HANDSHAKE = 0x16
_APPLICATION_DATA = 0x17


def looks_like_tls(data: bytes) -> bool:
    return len(data) >= 3 and data[0] == _HANDSHAKE and data[1] == 3 and data[2] <= 4


@dataclass(slots=True)
class _TlsFlow:
    session: object  # scapy tlsSession
    reading_client: bool = True  # which side the session is oriented to read
    buffers: dict[bool, bytearray] = field(default_factory=lambda: {True: bytearray(), False: bytearray()})
    gap: dict[bool, bool] = field(default_factory=lambda: {True: False, False: False})
    broken: bool = False
    decrypted: int = 0


class TlsDecryptor:
    def __init__(self, nss_keys: dict, counters: Counters) -> None:
        self._keys = nss_keys
        self._counters = counters
        self._flows: dict[int, _TlsFlow | None] = {}  # None: not TLS, passed through

    @classmethod
    def from_keylog(cls, path: Path, counters: Counters) -> TlsDecryptor:
        from scapy.layers.tls.session import load_nss_keys

        keys = load_nss_keys(str(path)) or {}
        counters.add("keylog.secrets", sum(len(v) for v in keys.values()))
        return cls(keys, counters)

    def feed(self, event: StreamData) -> list[StreamData]:
        flow_id = event.flow_id
        if flow_id not in self._flows:
            if not event.from_client or not looks_like_tls(event.data):
                self._flows[flow_id] = None
                return [event]
            self._flows[flow_id] = self._new_flow()
            self._counters.add("keylog.tls_connections")
        flow = self._flows[flow_id]
        if flow is None:
            return [event]
        if flow.broken:
            return []
        side = event.from_client
        if event.gap:
            # Bytes are missing: record boundaries are lost with them.
            self._break(flow, "tls_gap")
            return []
        buf = flow.buffers[side]
        buf += event.data
        plain: list[StreamData] = []
        while len(buf) >= RECORD_HEADER:
            length = int.from_bytes(buf[3:5], "big")
            if length > MAX_RECORD_BYTES:
                self._break(flow, "tls_bad_record")
                return plain
            if len(buf) < RECORD_HEADER + length:
                break
            record = bytes(buf[: RECORD_HEADER + length])
            del buf[: RECORD_HEADER + length]
            data = self._record(flow, side, record)
            if data is None:
                return plain
            if data:
                plain.append(replace(event, data=data, gap=flow.gap[side]))
                flow.gap[side] = False
        return plain

    def closed(self, flow_id: int) -> None:
        flow = self._flows.pop(flow_id, None)
        if flow is not None and not flow.decrypted and not flow.broken:
            self._counters.skip("tls_no_secrets", "no application data decrypted")

    # -- internals ------------------------------------------------------------

    def _new_flow(self) -> _TlsFlow:
        from scapy.layers.tls.session import tlsSession

        session = tlsSession()
        session.nss_keys = self._keys
        return _TlsFlow(session)

    def _record(self, flow: _TlsFlow, from_client: bool, record: bytes) -> bytes | None:
        """The record's application data ("" for handshake records), None when it breaks."""
        from scapy.layers.tls.record import TLS, TLSApplicationData

        if from_client != flow.reading_client:
            flow.session = flow.session.mirror()
            flow.reading_client = from_client
        try:
            packet = TLS(record, tls_session=flow.session)
        except Exception as exc:  # noqa: BLE001 - scapy's TLS on hostile bytes: any error, one skip
            self._break(flow, "tls_undecodable", f"{type(exc).__name__}: {exc}")
            return None
        flow.session = packet.tls_session
        if record[0] == _APPLICATION_DATA and type(flow.session.rcs.cipher).__name__ == "Cipher_NULL":
            # Encrypted records and still no keys: the log lacks this session.
            self._break(flow, "tls_no_secrets", "the key log has no secrets for this connection")
            return None
        inner = getattr(packet, "inner", None)
        messages = inner.msg if inner is not None else getattr(packet, "msg", [])
        out = bytearray()
        for message in messages or ():
            if isinstance(message, TLSApplicationData):
                out += bytes(message.data)
        if record[0] == _APPLICATION_DATA and packet.__class__.__name__ == "TLS13" and inner is None:
            self._break(flow, "tls_integrity", "a record did not decrypt (wrong secrets?)")
            return None
        if out:
            flow.decrypted += 1
            self._counters.add("keylog.records_decrypted")
        return bytes(out)

    def _break(self, flow: _TlsFlow, reason: str, detail: str = "") -> None:
        flow.broken = True
        flow.buffers[True].clear()
        flow.buffers[False].clear()
        self._counters.skip(reason, detail)
