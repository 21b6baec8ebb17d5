"""Helpers for the alerts tests (no tests here): calls as wire bytes at chosen times,
and the real pipeline -> CallStore + AlertsOutput into a real DuckDB file."""

from __future__ import annotations

import itertools
import json
from datetime import UTC, datetime
from pathlib import Path

import duckdb
from builders import request_bytes, response_bytes

from lumen_agent import config as config_mod
from lumen_agent.outputs.alerts.output import AlertsOutput
from lumen_agent.outputs.store import CallStore
from lumen_agent.pipeline.build import build
from lumen_agent.pipeline.events import DataEvent, Direction, EventFlag

_conn = itertools.count(1)


def at(text: str) -> float:
    """Epoch seconds of an ISO time (UTC when no zone is given)."""
    when = datetime.fromisoformat(text)
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()


def call_events(ts: float, *, model: str = "gpt-4o", out_tokens: int = 0, in_tokens: int = 0,
                tenant: str | None = None, status: int = 200, embed: bool = False,
                pid: int = 4242) -> list[DataEvent]:
    """One OpenAI call whose request is written at ``ts`` and answered 0.5 s later.

    gpt-4o costs $2.50 per 1M input and $10 per 1M output tokens, so 10,000
    output tokens are $0.10.
    """
    conn = next(_conn)
    headers = {"x-lumen-tenant": tenant} if tenant else None
    if embed:
        request = request_bytes("POST", "https://api.openai.com/v1/embeddings", {"model": model, "input": "x"},
                                headers)
        body = {"object": "list", "data": [{"object": "embedding", "index": 0, "embedding": [0.1]}], "model": model,
                "usage": {"prompt_tokens": in_tokens, "total_tokens": in_tokens}}
    else:
        request = request_bytes("POST", "https://api.openai.com/v1/chat/completions",
                                {"model": model, "messages": [{"role": "user", "content": "hi"}]}, headers)
        body = {"id": f"chatcmpl-{conn}", "object": "chat.completion", "model": model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": in_tokens, "completion_tokens": out_tokens,
                          "total_tokens": in_tokens + out_tokens}}
    if status != 200:
        body = {"error": {"message": "boom", "type": "server_error", "code": None}}
    response = response_bytes(json.dumps(body).encode(), status=status)
    t0 = int(ts * 1e9)
    return [DataEvent(t0, pid, pid, conn, Direction.SEND, request),
            DataEvent(t0 + 500_000_000, pid, pid, conn, Direction.RECV, response),
            DataEvent(t0 + 500_000_001, pid, pid, conn, Direction.RECV, b"", EventFlag.CLOSE)]


class Harness:
    """The agent's outputs on the real pipeline, with a clock the test moves."""

    def __init__(self, tmp_path: Path, config_text: str, *, start: float = 0.0, sinks=None) -> None:
        path = tmp_path / "config.toml"
        self.db = tmp_path / "lumen.duckdb"
        path.write_text(config_text)
        self.config = config_mod.load(path, {"db": self.db})
        self.now = start
        self.store = CallStore(self.db, flush_interval=0)
        self.alerts = AlertsOutput(self.db, self.config.alerts, self.config.budgets, clock=lambda: self.now,
                                   host="test-host", sinks=sinks)
        self.alerts.start()
        self.calls = []
        self.pipeline = build(self.config, capture="replay", on_call=self._on_call)

    def _on_call(self, call) -> None:
        self.calls.append(call)
        self.store.on_call(call)
        self.alerts.on_call(call)

    def feed(self, events: list[DataEvent]) -> None:
        self.pipeline.feed_all(events)

    def call(self, when: str, **kw) -> None:
        self.feed(call_events(at(when), **kw))

    def tick(self, when: str | None = None) -> None:
        """A housekeeping turn at ``when``: the store flushes, time passes for the rules."""
        if when is not None:
            self.now = at(when)
        self.store.flush()
        self.alerts.on_tick(0.0)

    def close(self) -> None:
        self.pipeline.close()
        self.store.close()
        self.alerts.close()


def alert_rows(db: Path, where: str = "true") -> list[tuple]:
    """(rule, scope, budget, model, subject, value, threshold, unit, period, fired_at, resolved_at, n ids)."""
    with duckdb.connect(str(db), read_only=True) as con:
        con.execute("SET TimeZone = 'UTC'")
        return con.execute(
            "SELECT rule, scope, budget, model, subject, CAST(value AS VARCHAR), CAST(threshold AS VARCHAR), unit, "
            "period, strftime(fired_at AT TIME ZONE 'UTC', '%Y-%m-%dT%H:%M:%S'), "
            "strftime(resolved_at AT TIME ZONE 'UTC', '%Y-%m-%dT%H:%M:%S'), len(call_ids) "
            f"FROM alerts WHERE {where} ORDER BY fired_at, rule, scope, subject").fetchall()


ONLY = """
[alerts.spend_spike]
enabled = {spend_spike}
[alerts.new_model]
enabled = {new_model}
[alerts.expensive_call]
enabled = {expensive_call}
[alerts.error_burn]
enabled = {error_burn}
[alerts.unpriced_model]
enabled = {unpriced_model}
[alerts.embed_surge]
enabled = {embed_surge}
"""


def only(*rules: str, extra: str = "") -> str:
    """Config text with only ``rules`` on, plus ``extra`` lines added to their tables."""
    names = ("spend_spike", "new_model", "expensive_call", "error_burn", "unpriced_model", "embed_surge")
    text = ONLY.format(**{n: "true" if n in rules else "false" for n in names})
    return _merge(text, extra) if extra else text


def _merge(text: str, extra: str) -> str:
    """Put each ``rule.key = value`` line of ``extra`` into its rule's table."""
    lines = text.splitlines()
    for item in extra.strip().splitlines():
        rule_key, value = item.split("=", 1)
        rule, key = rule_key.strip().split(".", 1)
        i = lines.index(f"[alerts.{rule}]")
        lines.insert(i + 1, f"{key} = {value.strip()}")
    return "\n".join(lines) + "\n"
