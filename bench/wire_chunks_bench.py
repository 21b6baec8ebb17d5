"""Pipeline CPU per stream chunk for chunks shaped as api.openai.com sends
them with ``stream_options.include_usage`` (``"usage":null`` on every chunk,
service_tier, system_fingerprint, logprobs, obfuscation; the shape of
shared/fixtures/wire/openai_chat_completions_stream_text.txt), and per
non-streaming call.  bench/pipeline_bench.py's chunks name no usage at all,
so they never show what decoding each chunk costs.

Run with a tree's venv for that tree's pipeline (the bench code comes from
this file's tree):

    .venv/bin/python bench/wire_chunks_bench.py [--streams 1000] [--calls 5000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "tests"))
import pipeline_bench  # noqa: E402
from builders import request_bytes  # noqa: E402

import lumen_agent  # noqa: E402
from lumen_agent.pipeline.events import DataEvent, Direction  # noqa: E402
from lumen_agent.pricing.table import PriceTable  # noqa: E402


def wire_parts(chunks: int) -> list[bytes]:
    def chunk(delta, finish, usage=None, choices=True) -> bytes:
        obj = {"id": "chatcmpl-Dx0Xq5Xx9rHB2ehcHZCRDsnuymUXc", "object": "chat.completion.chunk",
               "created": 1782955818, "model": "gpt-4o-mini-2024-07-18", "service_tier": "default",
               "system_fingerprint": "fp_d0469e1700",
               "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}] if choices else [],
               "usage": usage, "obfuscation": "HM7mrUsjk"}
        return b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n"

    parts = [chunk({"role": "assistant", "content": "", "refusal": None}, None)]
    parts += [chunk({"content": f" tok{i}"}, None) for i in range(chunks)]
    parts.append(chunk({}, "stop"))
    parts.append(chunk({}, None, {"prompt_tokens": 40, "completion_tokens": chunks, "total_tokens": 40 + chunks,
                                  "prompt_tokens_details": {"cached_tokens": 0},
                                  "completion_tokens_details": {"reasoning_tokens": 0}}, choices=False))
    parts.append(b"data: [DONE]\n\n")
    return parts


def stream_events(n: int, chunks: int = 100) -> tuple[list[DataEvent], int]:
    head = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
    parts = wire_parts(chunks)
    pieces = [head] + [b"%x\r\n%s\r\n" % (len(p), p) for p in parts] + [b"0\r\n\r\n"]
    request = request_bytes("POST", "https://api.openai.com/v1/chat/completions",
                            {"model": "gpt-4o-mini", "stream": True, "stream_options": {"include_usage": True},
                             "messages": [{"role": "user", "content": "count"}]})
    events, ts = [], 1
    for i in range(n):
        pid = 2000 + i % 50
        events.append(DataEvent(ts, pid, pid, i, Direction.SEND, request))
        for piece in pieces:  # one SSL_read per SSE chunk
            ts += 1000
            events.append(DataEvent(ts, pid, pid, i, Direction.RECV, piece))
    return events, len(parts)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--streams", type=int, default=1000)
    ap.add_argument("--calls", type=int, default=5000)
    ap.add_argument("--rounds", type=int, default=3, help="best of")
    args = ap.parse_args()
    prices = PriceTable.load()
    streams, per_call = stream_events(args.streams)
    calls = pipeline_bench.nonstream_events(args.calls)
    s = min(pipeline_bench.measure(streams, args.streams, prices)[0] for _ in range(args.rounds))
    c = min(pipeline_bench.measure(calls, args.calls, prices)[0] for _ in range(args.rounds))
    print(f"pipeline of {Path(lumen_agent.__file__).resolve().parents[1]}: "
          f"streamed (wire-shaped, {per_call} SSE events/call) {s / (args.streams * per_call) * 1e6:.2f} us/chunk "
          f"{s / args.streams * 1e6:.0f} us/call; non-streaming {c / args.calls * 1e6:.1f} us/call  (best of {args.rounds})")


if __name__ == "__main__":
    main()
