"""Pipeline throughput: DataEvents in, rows committed to a real DuckDB file.

Prints calls/s for non-streaming calls and for streamed calls of 100 SSE
chunks, each against a baseline measured in the same run on the same bytes
(HTTP framing alone, by llhttp), and the peak RSS.  Run:

    .venv/bin/python bench/pipeline_bench.py [--calls 20000] [--streams 4000]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import httptools

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from builders import exchange_events, request_bytes, response_bytes  # noqa: E402

from lumen_agent.outputs.store import CallStore  # noqa: E402
from lumen_agent.pipeline.core import Pipeline  # noqa: E402
from lumen_agent.pricing.table import PriceTable  # noqa: E402


def nonstream_events(n: int):
    body = json.dumps({
        "id": "chatcmpl-bench", "object": "chat.completion", "model": "gpt-4o-mini-2024-07-18",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Paris is the capital." * 8},
                     "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 812, "completion_tokens": 64, "total_tokens": 876,
                  "prompt_tokens_details": {"cached_tokens": 512}},
    }).encode()
    request = request_bytes("POST", "https://api.openai.com/v1/chat/completions",
                            {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x" * 1500}]})
    response = response_bytes(body)
    events = []
    for i in range(n):  # keep-alive: 10 calls per connection
        events += exchange_events(request, response, pid=1000 + (i // 10) % 50, conn=i // 10)
    return events


def stream_events(n: int, chunks: int = 100):
    parts = []
    for i in range(chunks):
        parts.append("data: " + json.dumps({"id": "chatcmpl-bench", "object": "chat.completion.chunk",
                                             "model": "gpt-4o-mini-2024-07-18", "choices": [
                                                 {"index": 0, "delta": {"content": f"tok{i} "}}]}) + "\n\n")
    parts.append("data: " + json.dumps({"id": "chatcmpl-bench", "object": "chat.completion.chunk",
                                         "model": "gpt-4o-mini-2024-07-18", "choices": [],
                                         "usage": {"prompt_tokens": 40, "completion_tokens": chunks,
                                                   "total_tokens": 40 + chunks}}) + "\n\n")
    parts.append("data: [DONE]\n\n")
    head = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
    # One SSL_read per SSE chunk, as a real client reads a stream.
    pieces = [head] + [b"%x\r\n%s\r\n" % (len(p), p.encode()) for p in parts] + [b"0\r\n\r\n"]
    request = request_bytes("POST", "https://api.openai.com/v1/chat/completions",
                            {"model": "gpt-4o-mini", "stream": True, "stream_options": {"include_usage": True},
                             "messages": [{"role": "user", "content": "count"}]})
    from lumen_agent.pipeline.events import DataEvent, Direction
    events = []
    ts = 1
    for i in range(n):
        pid, conn = 2000 + i % 50, i
        events.append(DataEvent(ts, pid, pid, conn, Direction.SEND, request))
        for piece in pieces:
            ts += 1000
            events.append(DataEvent(ts, pid, pid, conn, Direction.RECV, piece))
    return events


class _Sink:
    def __init__(self):
        self.done = 0

    def on_message_complete(self):
        self.done += 1


def baseline(events) -> float:
    """llhttp framing of the same bytes, nothing else: the floor."""
    parsers = {}
    start = time.perf_counter()
    for e in events:
        key = (e.pid, e.conn, e.direction)
        p = parsers.get(key)
        if p is None:
            sink = _Sink()
            cls = httptools.HttpRequestParser if e.direction.value == "send" else httptools.HttpResponseParser
            p = parsers[key] = cls(sink)
        p.feed_data(e.data)
    return time.perf_counter() - start


def measure(events, expected_calls: int, prices: PriceTable) -> tuple[float, int]:
    with tempfile.TemporaryDirectory() as tmp:
        store = CallStore(Path(tmp) / "bench.duckdb")
        pipeline = Pipeline(prices, store.add, salt=b"b" * 32)
        start = time.perf_counter()
        for event in events:
            pipeline.feed(event)
            if store.pending() >= 5000:
                store.flush()
        pipeline.close()
        store.close()
        elapsed = time.perf_counter() - start
        rows = store.stats()["rows_written"]
        assert rows == expected_calls, (rows, expected_calls, pipeline.counters.snapshot())
        return elapsed, rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=20000)
    parser.add_argument("--streams", type=int, default=4000)
    args = parser.parse_args()
    prices = PriceTable.load()
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(f"python {sys.version.split()[0]}, pid {os.getpid()}, one core")
    for label, events, n, aim in (
        ("non-streaming", nonstream_events(args.calls), args.calls, 5000),
        ("streamed x100 chunks", stream_events(args.streams), args.streams, 500),
    ):
        base = baseline(events)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        elapsed, rows = measure(events, n, prices)
        grew = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
        rate = rows / elapsed
        print(f"{label:22s} {rows:6d} calls  {len(events):8d} events  {elapsed:6.2f} s  "
              f"{rate:9.0f} calls/s  (aim {aim})  baseline llhttp-only {n / base:9.0f} calls/s  "
              f"ratio {elapsed / base:5.1f}x  peak RSS growth while running {max(grew, 0) / 1024:.0f} MiB")
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(f"peak RSS {rss / 1024:.0f} MiB (at start {rss0 / 1024:.0f} MiB; includes the generated events)")


if __name__ == "__main__":
    main()
