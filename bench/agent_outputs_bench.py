"""What the agent spends per call outside the pipeline: its outputs and housekeeping.

Both sides are fed the same finished calls (a real Call per fixture-shaped
call: priced, with request and response bodies) in one process:

- baseline: a CallStore alone, flushed every 2,000 rows, as the pipeline-only
  replay of bench/capture_bench.py section (e) does;
- agent: a real ``Agent`` (default configuration: store, live feed, alerts;
  ``--metrics`` adds the Prometheus output) given every call through
  ``Agent._on_call``, with one housekeeping turn (outputs' ticks, the store's
  flush when due, status file) per ``--rate`` calls, i.e. one second of
  calls at that rate.  The clock the store and alerts read is simulated.

Prints CPU microseconds per call of each side and the agent's extra, best of
``--rounds`` (sides interleaved).

    .venv/bin/python bench/agent_outputs_bench.py [--calls 20000] [--rate 1000] [--rounds 3] [--metrics]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from lumen_agent.pipeline.call import Call, Outcome  # noqa: E402
from lumen_agent.pipeline.core import new_call_id  # noqa: E402

REQUEST = '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"say hello in five words"}],"max_tokens":20}'
RESPONSE = ('{"id":"chatcmpl-abc","object":"chat.completion","created":1764460800,"model":"gpt-4o-mini-2024-07-18",'
            '"choices":[{"index":0,"message":{"role":"assistant","content":"Hello there, how are you?"},'
            '"finish_reason":"stop"}],"usage":{"prompt_tokens":14,"completion_tokens":7,"total_tokens":21}}')


def make_calls(n: int) -> list[Call]:
    start = datetime(2026, 11, 30, 6, 0, tzinfo=UTC)
    calls = []
    for i in range(n):
        ts = start + timedelta(microseconds=i * 900)
        calls.append(Call(
            id=new_call_id(), ts_start=ts, ts_end=ts + timedelta(milliseconds=3), latency_ms=3.0, ttft_ms=2.5,
            host="bench", pid=4000 + i % 4, process="python3", exe="/usr/bin/python3.13", user="root",
            unit=None, container_id=None, provider="openai", endpoint="chat.completions",
            server_address="127.0.0.1", server_port=443, request_model="gpt-4o-mini",
            model="gpt-4o-mini-2024-07-18", streaming=False, status_code=200, outcome=Outcome.SUCCESS,
            request_id=f"req_{i}", input_tokens=14, output_tokens=7, cache_read_tokens=0, cache_write_tokens=None,
            cache_write_1h_tokens=None, reasoning_tokens=0, cost_usd=Decimal("0.0000063"),
            price_id="openai/gpt-4o-mini", unpriced=False, usage_missing=False, api_key_hash="0123456789abcdef",
            tenant=None, feature=None, capture="ebpf", http_version="1.1", request_body=REQUEST,
            response_body=RESPONSE, token_cost_usd=Decimal("0.0000063"), charged_usd=None))
    return calls


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def baseline(calls: list[Call], workdir: Path) -> float:
    from lumen_agent.outputs.store import CallStore

    store = CallStore(workdir / "base.duckdb")
    store.check()
    c0 = time.process_time()
    for call in calls:
        store.add(call)
        if store.pending() >= 2000:
            store.flush()
    store.close()
    return time.process_time() - c0


def agent_side(calls: list[Call], workdir: Path, rate: int, with_metrics: bool) -> float:
    from lumen_agent.config import load
    from lumen_agent.outputs import live, metrics
    from lumen_agent.outputs.alerts import output as alerts
    from lumen_agent.runner import Agent, IngestOnly

    os.environ["LUMEN_STATE_DIR"] = str(workdir / "state")
    os.environ["LUMEN_RUNTIME_DIR"] = str(workdir / "run")
    config = load(None)
    config = dataclasses.replace(config, db=workdir / "agent.duckdb", runtime_dir=workdir / "run")
    agent = Agent(config, lambda on_event, on_exec: IngestOnly(), capture_name="hook")
    agent.store.check()
    live.install(agent, config)
    server = None
    if with_metrics:
        config = dataclasses.replace(config, metrics_addr="127.0.0.1:0")
        server = metrics.install(agent, config)
    clock = Clock()
    out = alerts.install(agent, config, metrics_server=server)
    if out is not None:
        out.clock = clock
    sim_mono = time.monotonic()
    mono = time.monotonic
    time.monotonic = lambda: sim_mono  # the store's flush interval and the status, on simulated seconds
    try:
        c0 = time.process_time()
        on_call = agent._on_call
        for i, call in enumerate(calls, 1):
            on_call(call)
            if i % rate == 0:
                sim_mono += 1.0
                clock.now += 1.0
                agent._housekeeping()
        for output in agent.outputs:
            output.close()
        cpu = time.process_time() - c0
    finally:
        time.monotonic = mono
        if server is not None:
            server.close()
    return cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--rate", type=int, default=1000, help="calls per simulated second")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--metrics", action="store_true")
    args = parser.parse_args()
    calls = make_calls(args.calls)
    best = {"baseline": float("inf"), "agent": float("inf")}
    for r in range(args.rounds):
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            sides = [("baseline", lambda work=work: baseline(calls, work)),
                     ("agent", lambda work=work: agent_side(calls, work, args.rate, args.metrics))]
            if r % 2:
                sides.reverse()
            for name, run in sides:
                best[name] = min(best[name], run())
    b = best["baseline"] / args.calls * 1e6
    a = best["agent"] / args.calls * 1e6
    print(f"calls={args.calls} rate={args.rate}/s metrics={args.metrics} load: {os.getloadavg()[0]:.2f}")
    print(f"baseline (store, flush per 2000) {b:7.1f} us CPU/call")
    print(f"agent outputs + housekeeping    {a:7.1f} us CPU/call   extra {a - b:6.1f} us/call  ratio x{a / b:.2f}")


if __name__ == "__main__":
    main()
