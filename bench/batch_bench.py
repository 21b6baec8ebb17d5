"""Batch results downloads through the pipeline: billed lines/s and memory.

A synthetic OpenAI batch output file (N chat.completion lines, ~1 KiB each,
read in 16 KiB TLS-record-sized events as a client downloads it) is fed
through the pipeline; each billed line becomes a priced row.  The baseline,
measured in the same run: the same number of ordinary non-streaming chat
calls with the same usage (one exchange per call, ten per connection).
Prints rows/s for both, their ratio, and the peak RSS growth while each
phase feeds the pipeline, each phase in a process of its own (the download
is read line by line: memory grows with the rows kept, not the file; the
synthetic events themselves are built before the measurement).  Run:

    flock /tmp/lumen-bench.lock .venv/bin/python bench/batch_bench.py [--lines 50000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from builders import exchange_events, request_bytes, response_bytes  # noqa: E402

from lumen_agent.pipeline.core import Pipeline  # noqa: E402
from lumen_agent.pricing.table import PriceTable  # noqa: E402

TLS_RECORD = 16 * 1024


def _chat_body(i: int) -> dict:
    return {"id": f"chatcmpl-bench{i}", "object": "chat.completion", "created": 1711475054,
            "model": "gpt-4o-mini-2024-07-18",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "Paris is the capital. " * 30},
                         "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 812, "completion_tokens": 64, "total_tokens": 876,
                      "prompt_tokens_details": {"cached_tokens": 512}}}


def batch_events(lines: int):
    body = b"".join(json.dumps({"id": f"batch_req_{i:012d}", "custom_id": f"request-{i}", "response": {
        "status_code": 200, "request_id": f"req_{i}", "body": _chat_body(i)}, "error": None}).encode() + b"\n"
        for i in range(lines))
    request = request_bytes("GET", "https://api.openai.com/v1/files/file-bench/content", None)
    response = response_bytes(body, content_type="application/octet-stream")
    return exchange_events(request, response, piece=TLS_RECORD), len(body)


def call_events(calls: int):
    request = request_bytes("POST", "https://api.openai.com/v1/chat/completions",
                            {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x" * 200}]})
    response = response_bytes(json.dumps(_chat_body(0)).encode())
    events = []
    for i in range(calls):
        events += exchange_events(request, response, pid=1000 + (i // 10) % 50, conn=i // 10)
    return events


def _status_mib(field: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def reset_peak() -> float:
    """Reset the peak-RSS mark (VmHWM) to the current RSS and return that:
    building the synthetic input must not hide what feeding it costs."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    return _status_mib("VmRSS")


def peak_mib() -> float:
    return _status_mib("VmHWM")


def run(prices, events) -> tuple[float, int]:
    rows = 0

    def on_call(call) -> None:
        nonlocal rows
        rows += 1

    pipeline = Pipeline(prices, on_call, salt=b"s" * 32)
    t0 = time.perf_counter()
    pipeline.feed_all(events)
    pipeline.close()
    return time.perf_counter() - t0, rows


def phase(name: str, lines: int, rounds: int) -> dict:
    """One phase in this process: its own peak RSS (ru_maxrss is a high-water mark)."""
    prices = PriceTable.load()
    if name == "batch":
        events, size = batch_events(lines)
    else:
        events, size = call_events(lines), 0
    rss0 = reset_peak()
    rates = []
    for _ in range(rounds):
        seconds, rows = run(prices, events)
        assert rows == lines, rows
        rates.append(lines / seconds)
    return {"rate": max(rates), "rss_growth_mib": peak_mib() - rss0, "file_mib": size / 2**20}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lines", type=int, default=50_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--phase", choices=("batch", "calls"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.phase:
        print(json.dumps(phase(args.phase, args.lines, args.rounds)))
        return 0
    print(f"load: {os.getloadavg()[0]:.2f} (1-min), lines {args.lines}, rounds {args.rounds}")
    got = {}
    for name in ("calls", "batch"):
        out = subprocess.run([sys.executable, __file__, "--phase", name, "--lines", str(args.lines),
                              "--rounds", str(args.rounds)], check=True, capture_output=True, text=True).stdout
        got[name] = json.loads(out)
    base, batch = got["calls"], got["batch"]
    print(f"ordinary calls : {base['rate']:10.0f} rows/s (best of {args.rounds}), "
          f"peak RSS growth while feeding {base['rss_growth_mib']:.0f} MiB")
    print(f"batch download : {batch['rate']:10.0f} rows/s (best of {args.rounds}), file {batch['file_mib']:.1f} MiB, "
          f"peak RSS growth while feeding {batch['rss_growth_mib']:.0f} MiB")
    print(f"ratio batch/ordinary: {batch['rate'] / base['rate']:.2f}x")
    print(f"load after: {os.getloadavg()[0]:.2f} (1-min)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
