"""Streamed calls of each provider's SSE shape, as DataEvents, for bench/chunk_bench.py --shapes.

The bodies are the local fake provider's (tests/support/fake_provider.py,
the same bytes the end-to-end tests read): OpenAI Chat Completions with
``"usage":null`` in every chunk (stream_options.include_usage, as the SDKs
ask), Anthropic Messages (``event:`` lines), the Responses API, and Gemini
``alt=sse`` with CRLF line ends (as Google sends them).  Each is HTTP/1.1
chunked, one SSE event per chunk and one SSL_read per chunk, ten calls per
connection.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1] / "tests"
sys.path.insert(0, str(TESTS / "support"))
import fake_provider  # noqa: E402
from pipeline_bench import streamed_calls  # noqa: E402

from lumen_agent.pipeline.events import DataEvent  # noqa: E402

# (label, host, path, request body, extra request headers, CRLF line ends)
SHAPES = (
    ("OpenAI chat usage:null", "api.openai.com", "/v1/chat/completions",
     {"model": "gpt-4o-mini", "stream": True, "stream_options": {"include_usage": True}}, {}, False),
    ("Anthropic messages", "api.anthropic.com", "/v1/messages",
     {"model": "claude-sonnet-4-5", "stream": True, "max_tokens": 1024}, {"anthropic-version": "2023-06-01"}, False),
    ("OpenAI responses", "api.openai.com", "/v1/responses", {"model": "gpt-5-mini", "stream": True}, {}, False),
    ("Gemini sse CRLF", "generativelanguage.googleapis.com",
     "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse", {"contents": []}, {}, True),
)


def shape_events(label: str, n: int, chunks: int = 100, per_connection: int = 10) -> list[DataEvent]:
    _, host, path, body, extra, crlf = next(s for s in SHAPES if s[0] == label)
    raw = json.dumps(body).encode()
    headers = {"host": host, "authorization": "Bearer sk-test-fake-bench", "x-api-key": "sk-test-fake-bench",
               "x-fake-chunks": str(chunks), "content-type": "application/json", **extra}
    reply = fake_provider.build_reply("POST", path, headers, raw)
    assert reply.status == 200, reply
    pieces = [p.replace(b"\n", b"\r\n") if crlf else p for p in reply.pieces]
    head = "".join(f"{k}: {v}\r\n" for k, v in reply.headers)
    reads = [f"HTTP/1.1 200 OK\r\n{head}Transfer-Encoding: chunked\r\n\r\n".encode()]
    reads += [b"%x\r\n%s\r\n" % (len(p), p) for p in pieces] + [b"0\r\n\r\n"]
    request = "".join(f"{k}: {v}\r\n" for k, v in headers.items() if k != "x-api-key" or "anthropic" in host)
    request = f"POST {path} HTTP/1.1\r\n{request}Content-Length: {len(raw)}\r\n\r\n".encode() + raw
    return streamed_calls(request, reads, n, per_connection, first_pid=4000)
