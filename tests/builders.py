"""Build DataEvents from wire fixtures: the bytes a real client would write and read."""

from __future__ import annotations

import gzip
import itertools
import json
import re
import zlib
from pathlib import Path

import brotli
import zstandard

from lumen_agent.pipeline.events import DataEvent, Direction, EventFlag

SHARED = Path(__file__).resolve().parents[2] / "shared"
WIRE = SHARED / "fixtures" / "wire"
FAKE_KEY = "sk-test-fake-key-0000"


def load_fixture(name: str) -> tuple[dict[str, str], bytes]:
    """The fixture's request facts (from its `# request:` line) and its body."""
    text = (WIRE / name).read_text()
    header_lines = [line for line in text.splitlines() if line.startswith("# ")]
    body = "\n".join(line for line in text.splitlines() if not line.startswith("# "))
    request_line = next(line for line in header_lines if line.startswith("# request:"))
    match = re.match(r"# request: (\w+) (\S+)", request_line)
    model = re.search(r"model='?\"?([^'\" ,)]+)", request_line)
    facts = {"method": match.group(1), "url": match.group(2), "model": model.group(1) if model else ""}
    facts["stream"] = "stream=True" in request_line
    return facts, body.strip("\n").encode() + (b"\n\n" if "data:" in body[:200] or "event:" in body[:200] else b"")


def request_bytes(method: str, url: str, body: dict | bytes | None, headers: dict[str, str] | None = None) -> bytes:
    m = re.match(r"https?://([^/]+)(/.*)?", url)
    host, path = m.group(1), m.group(2) or "/"
    raw = body if isinstance(body, bytes) else (json.dumps(body).encode() if body is not None else b"")
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}", "User-Agent: test-client/1.0",
             f"Authorization: Bearer {FAKE_KEY}", "Content-Type: application/json",
             f"Content-Length: {len(raw)}"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + raw


def encode(body: bytes, encoding: str | None) -> bytes:
    if encoding == "gzip":
        return gzip.compress(body)
    if encoding == "deflate":
        return zlib.compress(body)
    if encoding == "br":
        return brotli.compress(body)
    if encoding == "zstd":
        return zstandard.ZstdCompressor().compress(body)
    return body


def response_bytes(body: bytes, *, status: int = 200, content_type: str = "application/json",
                   chunked: bool = False, encoding: str | None = None, chunk_size: int = 97,
                   headers: dict[str, str] | None = None) -> bytes:
    payload = encode(body, encoding)
    lines = [f"HTTP/1.1 {status} {'OK' if status == 200 else 'Status'}", f"Content-Type: {content_type}",
             "x-request-id: req_test_0001"]
    if encoding:
        lines.append(f"Content-Encoding: {encoding}")
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    if chunked:
        lines.append("Transfer-Encoding: chunked")
        out = [("\r\n".join(lines) + "\r\n\r\n").encode()]
        for i in range(0, len(payload), chunk_size):
            piece = payload[i : i + chunk_size]
            out.append(b"%x\r\n%s\r\n" % (len(piece), piece))
        out.append(b"0\r\n\r\n")
        return b"".join(out)
    lines.append(f"Content-Length: {len(payload)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + payload


_ts = itertools.count(1_763_000_000_000_000_000, 1_000_000)


def exchange_events(request: bytes, response: bytes, *, pid: int = 4242, conn: int = 0xABC,
                    piece: int | None = None, close: bool = False) -> list[DataEvent]:
    """A client's writes of ``request`` and reads of ``response``, cut in pieces."""
    events = []
    for direction, data in ((Direction.SEND, request), (Direction.RECV, response)):
        step = piece or len(data) or 1
        for i in range(0, len(data), step):
            events.append(DataEvent(next(_ts), pid, pid, conn, direction, data[i : i + step]))
    if close:
        events.append(DataEvent(next(_ts), pid, pid, conn, Direction.RECV, b"", EventFlag.CLOSE))
    return events


def server_view(events: list[DataEvent], pid: int) -> list[DataEvent]:
    """The same bytes seen from the server process: directions swapped."""
    swap = {Direction.SEND: Direction.RECV, Direction.RECV: Direction.SEND}
    return [DataEvent(e.ts_ns, pid, pid, e.conn + 1, swap[e.direction], e.data, e.flags) for e in events]
