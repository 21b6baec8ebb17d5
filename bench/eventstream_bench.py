"""Bedrock ConverseStream (binary AWS event stream, CRC-checked) through the
pipeline, next to the same stream as SSE (OpenAI chat chunks) in the same run.

Both: 100 text deltas and a final usage event per call, one SSL_read per
event, rows committed to a real DuckDB file.  Also the bare event-stream
parser's throughput (MB/s, whole stream and byte-split).  Run:

    .venv/bin/python bench/eventstream_bench.py [--streams 3000]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from builders import request_bytes  # noqa: E402
from pipeline_bench import measure, stream_events  # noqa: E402

from lumen_agent.parsers.eventstream import EventStreamParser, encode_message  # noqa: E402
from lumen_agent.pipeline.events import DataEvent, Direction  # noqa: E402
from lumen_agent.pricing.table import PriceTable  # noqa: E402

MODEL_PATH = "us.anthropic.claude-sonnet-4-5-20250929-v1%3A0"


def _event(kind: str, payload: dict) -> bytes:
    return encode_message({":event-type": kind, ":content-type": "application/json", ":message-type": "event"},
                          json.dumps({**payload, "p": "abcdefghijkl"}).encode())


def converse_stream_events(n: int, chunks: int = 100) -> list[DataEvent]:
    messages = [_event("messageStart", {"role": "assistant"})]
    messages += [_event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": f"tok{i} "}})
                 for i in range(chunks)]
    messages += [_event("contentBlockStop", {"contentBlockIndex": 0}), _event("messageStop", {"stopReason": "end_turn"}),
                 _event("metadata", {"usage": {"inputTokens": 40, "outputTokens": chunks, "totalTokens": 40 + chunks},
                                     "metrics": {"latencyMs": 900}})]
    head = (b"HTTP/1.1 200 OK\r\nContent-Type: application/vnd.amazon.eventstream\r\n"
            b"x-amzn-RequestId: 00000000-0000-4000-8000-000000000000\r\nTransfer-Encoding: chunked\r\n\r\n")
    pieces = [head] + [b"%x\r\n%s\r\n" % (len(m), m) for m in messages] + [b"0\r\n\r\n"]
    request = request_bytes("POST", f"https://bedrock-runtime.us-east-1.amazonaws.com/model/{MODEL_PATH}"
                            "/converse-stream", {"messages": [{"role": "user", "content": [{"text": "count"}]}]})
    events, ts = [], 1
    for i in range(n):
        pid, conn = 3000 + i % 50, i
        events.append(DataEvent(ts, pid, pid, conn, Direction.SEND, request))
        for piece in pieces:
            ts += 1000
            events.append(DataEvent(ts, pid, pid, conn, Direction.RECV, piece))
    return events


def parser_rate(data: bytes, step: int) -> float:
    parser = EventStreamParser()
    start = time.perf_counter()
    for i in range(0, len(data), step):
        parser.receive_data(data[i : i + step])
        parser.next_events()
    return len(data) / (time.perf_counter() - start) / 1e6


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--streams", type=int, default=3000)
    args = ap.parse_args()
    prices = PriceTable.load()
    results = {}
    for label, events in (("SSE (OpenAI chunks)", stream_events(args.streams)),
                          ("AWS event stream (Bedrock)", converse_stream_events(args.streams))):
        elapsed, rows = measure(events, args.streams, prices)
        results[label] = rows / elapsed
        print(f"{label:28s} {rows:6d} streamed calls x100 deltas  {elapsed:6.2f} s  {rows / elapsed:8.0f} calls/s")
    sse, aws = results.values()
    print(f"event stream / SSE throughput ratio {aws / sse:.2f}")
    stream = b"".join(_event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": f"tok{i} "}})
                      for i in range(20000))
    print(f"EventStreamParser alone: {parser_rate(stream, len(stream)):.0f} MB/s whole, "
          f"{parser_rate(stream, 4096):.0f} MB/s in 4 KiB reads, {parser_rate(stream[:200_000], 1):.2f} MB/s byte by byte")


if __name__ == "__main__":
    main()
