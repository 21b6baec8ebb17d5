"""Cost of budgets and alert rules: pipeline calls/s with 20 budgets and every
rule on, against the same pipeline with none, on the same events in one run.

The events are non-streaming OpenAI calls spread over 10 days (so periods,
baselines and windows roll), from 50 tenants, 5 models and 8 features; one
call in 50 is an error.  Both sides feed the real pipeline; the alerts side
also hands every call to the alerts output (batches, engine, dispatch, and
every 1,000 calls what the agent's tick does once a second: evaluate, advance
the clock, publish the snapshot; the alerts-table write, a DuckDB open only
when alerts changed, is left out as the store's flushes are).  The two
pipelines are fed alternately, 1,000 calls at a time, and timed in CPU time
of this process (the host is shared); best round of each.

    .venv/bin/python bench/alerts_bench.py [--calls 20000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from builders import request_bytes, response_bytes  # noqa: E402

from lumen_agent import config as config_mod  # noqa: E402
from lumen_agent.outputs.alerts.output import AlertsOutput  # noqa: E402
from lumen_agent.pipeline.build import build  # noqa: E402
from lumen_agent.pipeline.events import DataEvent, Direction, EventFlag  # noqa: E402

MODELS = ("gpt-4o", "gpt-4o-mini", "gpt-4.1", "gpt-4o-2024-08-06", "text-embedding-3-small")
START = 1_772_400_000  # 2026-03-01 21:20 UTC
SPAN_S = 10 * 86_400


def budgets_toml(n: int) -> str:
    periods = ("day", "week", "month", "24h", "7d")
    out = []
    for i in range(n):
        scope = ("scope = \"all\"" if i == 0 else
                 f"scope = {{ tenant = \"tenant-{i % 50:02d}*\" }}" if i % 3 == 0 else
                 f"scope = {{ model = \"gpt-4o*\", feature = \"feature-{i % 8}\" }}" if i % 3 == 1 else
                 "scope = { provider = \"openai\", process = \"python*\" }")
        out.append(f"[[budgets]]\nname = \"b{i}\"\n{scope}\nperiod = \"{periods[i % 5]}\"\namount_usd = {5 + i}\n")
    return "\n".join(out)


def events(n: int) -> list[DataEvent]:
    out: list[DataEvent] = []
    for i in range(n):
        model = MODELS[i % 5]
        tenant, feature = f"tenant-{i % 50:02d}", f"feature-{i % 8}"
        ts = START + i * SPAN_S // n
        status = 500 if i % 50 == 7 else 200
        body = {"id": f"chatcmpl-{i}", "object": "chat.completion", "model": model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 800 + i % 100, "completion_tokens": 60 + i % 40, "total_tokens": 0}}
        if status != 200:
            body = {"error": {"message": "boom", "type": "server_error"}}
        request = request_bytes("POST", "https://api.openai.com/v1/chat/completions",
                                {"model": model, "messages": [{"role": "user", "content": "x" * 200}]},
                                {"x-lumen-tenant": tenant, "x-lumen-feature": feature})
        t0 = ts * 1_000_000_000
        conn = i + 1
        out += [DataEvent(t0, 1000, 1000, conn, Direction.SEND, request),
                DataEvent(t0 + 400_000_000, 1000, 1000, conn, Direction.RECV,
                          response_bytes(json.dumps(body).encode(), status=status)),
                DataEvent(t0 + 400_000_001, 1000, 1000, conn, Direction.RECV, b"", EventFlag.CLOSE)]
    return out


class Side:
    """One pipeline (with or without the alerts output), fed chunk by chunk."""

    def __init__(self, config, with_alerts: bool, workdir: Path) -> None:
        self.calls = 0
        self.cpu = 0.0
        self.clock = float(START)
        self.output = AlertsOutput(workdir / f"{with_alerts}.duckdb", config.alerts, config.budgets,
                                   clock=lambda: self.clock, sinks={}) if with_alerts else None
        if self.output is not None:
            self.output.start()
        self.pipeline = build(config, capture="replay", on_call=self._on_call)

    def _on_call(self, call) -> None:
        self.calls += 1
        output = self.output
        if output is not None:
            output.on_call(call)
            if self.calls % 1000 == 0:  # the agent ticks once a second
                self.clock = call.ts_start.timestamp()
                output.evaluate()
                output.engine.advance(self.clock)
                output.publish()

    def feed(self, chunk: list[DataEvent], last: bool) -> None:
        # CPU time of this process: the host is shared, and waiting for a CPU is not the pipeline's cost.
        started = time.process_time()
        self.pipeline.feed_all(chunk)
        if last:
            self.pipeline.close()
            if self.output is not None:
                self.output.evaluate()
        self.cpu += time.process_time() - started


def run(config_off, config_on, evts, workdir: Path) -> tuple[Side, Side]:
    """Both sides on the same events, alternating chunks of 3,000 events (1,000 calls), so
    a change in the host's load hits both alike."""
    none, alerts = Side(config_off, False, workdir), Side(config_on, True, workdir)
    step = 3_000
    for i in range(0, len(evts), step):
        chunk, last = evts[i:i + step], i + step >= len(evts)
        first, second = (none, alerts) if (i // step) % 2 == 0 else (alerts, none)
        first.feed(chunk, last)
        second.feed(chunk, last)
    return none, alerts


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--budgets", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        os.environ.setdefault("LUMEN_STATE_DIR", str(workdir / "state"))
        on = workdir / "on.toml"
        on.write_text(budgets_toml(args.budgets))
        off = workdir / "off.toml"
        off.write_text("".join(f"[alerts.{r}]\nenabled = false\n" for r in (
            "spend_spike", "new_model", "expensive_call", "error_burn", "unpriced_model", "embed_surge")))
        config_on = config_mod.load(on, {"db": workdir / "x.duckdb"})
        config_off = config_mod.load(off, {"db": workdir / "x.duckdb"})
        evts = events(args.calls)
        best = {"none": 0.0, "alerts": 0.0}
        fired = n = 0
        for _ in range(args.rounds):
            none, alerts = run(config_off, config_on, evts, workdir)
            n = none.calls
            best["none"] = max(best["none"], none.calls / none.cpu)
            best["alerts"] = max(best["alerts"], alerts.calls / alerts.cpu)
            fired = alerts.output.fired
        slower = 1 - best["alerts"] / best["none"]
        print(f"calls: {n} over 10 days, 50 tenants, 5 models; budgets: {args.budgets}, rules: all 6 (all + tenant)")
        print(f"pipeline, no budgets or rules:     {best['none']:10,.0f} calls/s")
        print(f"pipeline, {args.budgets} budgets + all rules:  {best['alerts']:10,.0f} calls/s")
        print(f"slower by: {slower:.1%} (aim: at most 10%); alerts fired: {fired}")


if __name__ == "__main__":
    main()
