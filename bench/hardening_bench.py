"""The pathological inputs of the hardening issue, timed against a baseline.

* NDJSON: a 40 MB response body with no newline (one huge line) and with
  short lines, fed in 64 KiB pieces, against the same bytes as a plain JSON
  body of 40 MB (given up at MAX_RESPONSE_BODY, so nearly free) and as an
  SSE body of the same short lines: NDJSON must scale like SSE (linear).
* SSE brotli bomb: a few KB of brotli inflating to 256 MiB; peak RSS growth
  (the high-water mark after the NDJSON runs is the baseline).

    .venv/bin/python bench/hardening_bench.py
"""

from __future__ import annotations

import resource
import sys
import time
from pathlib import Path

import brotli

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from builders import exchange_events, request_bytes, response_bytes  # noqa: E402

from lumen_agent.pipeline.core import Pipeline  # noqa: E402
from lumen_agent.pricing.table import PriceTable  # noqa: E402

PIECE = 64 * 1024
SIZE = 40 * 1000 * 1000


def run(prices, host: str, path: str, body_json: dict, response: bytes) -> float:
    request = request_bytes("POST", f"https://{host}{path}", body_json)
    events = exchange_events(request, response, piece=PIECE, close=True)
    pipeline = Pipeline(prices, lambda call: None, salt=b"s" * 32)
    started = time.process_time()
    pipeline.feed_all(events)
    pipeline.close()
    return time.process_time() - started


def main() -> None:
    prices = PriceTable.load()
    ollama = ("localhost:11434", "/api/chat", {"model": "llama3.2", "messages": []})
    line = b'{"model":"llama3.2","message":{"content":"hello world"},"done":false}\n'
    lines = line * (SIZE // len(line))
    one_line = b'{"junk":"' + b"x" * SIZE + b'"}\n'
    figures = {
        "NDJSON 40 MB of short lines": run(prices, *ollama, response_bytes(lines, content_type="application/x-ndjson")),
        "NDJSON 40 MB in one line": run(prices, *ollama, response_bytes(one_line, content_type="application/x-ndjson")),
        "SSE 40 MB of the same lines (baseline)": run(
            prices, "api.openai.com", "/v1/chat/completions", {"model": "gpt-4o-mini", "stream": True},
            response_bytes(b"".join(b"data: " + chunk + b"\n" for chunk in lines.splitlines(keepends=True)),
                           content_type="text/event-stream")),
    }
    base = figures["SSE 40 MB of the same lines (baseline)"]
    for name, seconds in figures.items():
        print(f"{name:<42} {seconds:7.2f} s cpu   x{seconds / base:.2f} of baseline")

    # Made in a child-free way before measuring: the 256 MiB plaintext itself
    # would raise the high-water mark.  Compressed piecewise for that reason.
    compressor = brotli.Compressor(quality=11)
    piece = b"data: {}\n\n" * (1024 * 1024 // 10)
    bomb = b"".join(compressor.process(piece) for _ in range(256)) + compressor.finish()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    head = (b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Encoding: br\r\n"
            b"Content-Length: %d\r\n\r\n" % len(bomb))
    seconds = run(prices, "api.anthropic.com", "/v1/messages", {"model": "claude-sonnet-4-5", "stream": True},
                  head + bomb)
    grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    name = f"SSE brotli bomb ({len(bomb)} bytes -> 256 MiB)"
    print(f"{name:<42} {seconds:7.2f} s cpu   "
          f"peak RSS grew {grown:.0f} MiB")


if __name__ == "__main__":
    main()
