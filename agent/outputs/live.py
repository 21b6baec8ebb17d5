"""The live feed behind ``lumen-agent top``: recent spend, kept in memory by the agent.

:func:`install` attaches a :class:`LiveFeed` to a running Agent: every call
is added to time buckets as it is produced (on the run loop's thread), and
the control op ``snapshot`` (answered on socket threads) summarises a window
of them as a JSON-able dict, which ``top`` renders.

Two rings of buckets, keyed by the time the agent saw the call (a replayed or
late call counts as "now", which is what a live view shows):

- one-second buckets over the last 5 minutes, for the 1m and 5m windows and
  the "last minute" rates, so those slide smoothly;
- one-minute buckets over the last 24 hours, for the 1h and 24h windows.

A window of W seconds holds the last W/resolution buckets, the current
(partial) one included.  Each bucket keeps cost, calls, tokens and unpriced
calls, in total and by process, model, provider and tenant.  Memory is
bounded: a fixed number of buckets, at most ``MAX_KEYS_PER_BUCKET`` names per
dimension in a bucket (the rest are summed under ``OTHER``), and the latest
``LATEST_CALLS`` calls.

Costs are Decimals and travel as strings, so no figure passes through a float.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from lumen_agent.outputs.base import Output
from lumen_agent.pipeline.call import Call

# Windows ``top`` offers, in seconds, with their labels.
WINDOWS: dict[int, str] = {60: "1m", 300: "5m", 3600: "1h", 86400: "24h"}
DIMENSIONS = ("process", "model", "provider", "tenant")
TOP_N = 10
LATEST_CALLS = 50
# Distinct names kept per dimension in one bucket.  A host with more distinct
# processes (or models, tenants) in one second or minute is unusual; beyond
# this the rest are summed under OTHER so a flood of names cannot grow memory.
# Worst case: (300 + 1440) buckets x 4 dimensions x 65 entries.
MAX_KEYS_PER_BUCKET = 64
OTHER = "(other)"
NONE_NAME = "-"
# "The last minute" of the spend and throughput rates.
RATE_WINDOW_S = 60

_ZERO = Decimal(0)


@dataclass(slots=True)
class _Bucket:
    cost: Decimal = _ZERO
    calls: int = 0
    tokens: int = 0
    unpriced: int = 0
    # dimension -> name -> [cost, calls, tokens, unpriced calls]
    by: dict[str, dict[str, list]] = field(default_factory=lambda: {d: {} for d in DIMENSIONS})

    def add(self, names: tuple[str, ...], cost: Decimal | None, tokens: int) -> None:
        """``names``: the call's name in each of DIMENSIONS, in that order."""
        unpriced = 1 if cost is None else 0
        cost = _ZERO if cost is None else cost
        self.calls += 1
        self.tokens += tokens
        self.unpriced += unpriced
        self.cost += cost
        # self.by holds DIMENSIONS in order (built so, and copies keep the order).
        for groups, name in zip(self.by.values(), names, strict=True):
            entry = groups.get(name)
            if entry is None:
                if len(groups) >= MAX_KEYS_PER_BUCKET:
                    name = OTHER
                    entry = groups.get(name)
                if entry is None:
                    entry = groups[name] = [_ZERO, 0, 0, 0]
            entry[0] += cost
            entry[1] += 1
            entry[2] += tokens
            entry[3] += unpriced

    def copy(self) -> _Bucket:
        return _Bucket(self.cost, self.calls, self.tokens, self.unpriced,
                       {dim: {name: list(entry) for name, entry in groups.items()} for dim, groups in self.by.items()})


class _Ring:
    """Buckets of ``resolution`` seconds covering the last ``span`` seconds.

    Only the newest bucket changes, so a reader may sum the others without
    the lock; a bucket older than the newest (the clock stepped back) is
    replaced by a changed copy, never changed in place.
    """

    def __init__(self, resolution: int, span: int) -> None:
        self.resolution = resolution
        self.count = span // resolution
        self._buckets: dict[int, _Bucket] = {}
        self._newest = -1

    def bucket(self, now: float) -> _Bucket:
        """The bucket to add to at ``now`` (under the feed's lock)."""
        index = int(now // self.resolution)
        bucket = self._buckets.get(index)
        if bucket is None:
            self._prune(max(index, self._newest))
            bucket = self._buckets[index] = _Bucket()
            self._newest = max(index, self._newest)
        elif index < self._newest:
            bucket = self._buckets[index] = bucket.copy()
        return bucket

    def _prune(self, current: int) -> None:
        oldest = current - self.count
        for index in [i for i in self._buckets if i <= oldest]:
            del self._buckets[index]

    def window(self, now: float, seconds: int) -> list[_Bucket]:
        """The buckets of the last ``seconds`` (under the feed's lock): safe to read after it is released."""
        current = int(now // self.resolution)
        first = current - seconds // self.resolution
        return [b.copy() if i == self._newest else b for i, b in self._buckets.items() if first < i <= current]


def call_tokens(call: Call) -> int:
    """Tokens of a call as the live view counts them: all input plus all output."""
    return (call.input_tokens or 0) + (call.output_tokens or 0)


def _names(call: Call) -> tuple[str, str, str, str]:
    """The call's name in each of DIMENSIONS, in that order."""
    return (
        call.process or (f"pid {call.pid}" if call.pid else NONE_NAME),
        call.model or call.request_model or NONE_NAME,
        call.provider or NONE_NAME,
        call.tenant or NONE_NAME,
    )


def _cost_text(cost: Decimal | None) -> str | None:
    return None if cost is None else format(cost, "f")


class LiveFeed(Output):
    """Thread-safe: :meth:`add` on the run loop, :meth:`snapshot` on any thread."""

    name = "live"

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seconds = _Ring(1, 300)
        self._minutes = _Ring(60, 86400)
        self._latest: deque[tuple] = deque(maxlen=LATEST_CALLS)  # see add()
        self._total_calls = 0

    def on_call(self, call: Call) -> None:
        self.add(call)

    def add(self, call: Call, now: float | None = None) -> None:
        now = time.time() if now is None else now
        names = _names(call)
        tokens = call_tokens(call)
        cost = call.cost_usd
        # What the "latest" list shows, kept raw: it becomes a dict (_latest_row)
        # only for the LATEST_CALLS a snapshot reads, not for every call.
        latest = (call.ts_end, names[0], call.pid, call.provider, names[1], call.input_tokens,
                  call.output_tokens, cost, call.latency_ms, call.outcome, call.tenant)
        with self._lock:
            self._seconds.bucket(now).add(names, cost, tokens)
            self._minutes.bucket(now).add(names, cost, tokens)
            self._latest.append(latest)
            self._total_calls += 1

    def snapshot(self, window: int = 60, health: dict[str, Any] | None = None,
                 now: float | None = None) -> dict[str, Any]:
        if window not in WINDOWS:
            raise ValueError(f"window must be one of {', '.join(str(w) for w in WINDOWS)} seconds, "
                             f"not {window!r}")
        now = time.time() if now is None else now
        ring = self._seconds if window <= 300 else self._minutes
        with self._lock:
            rate_buckets = self._seconds.window(now, RATE_WINDOW_S)
            buckets = ring.window(now, window)
            latest = list(reversed(self._latest))
            total_calls = self._total_calls
        rate = _sum(rate_buckets)
        totals = _sum(buckets)
        groups = {dim: _merge(buckets, dim) for dim in DIMENSIONS}
        cost_per_min = rate.cost  # RATE_WINDOW_S is one minute
        return {
            "now": now,
            "window": window,
            "window_label": WINDOWS[window],
            "rate": {
                "cost_per_min": format(cost_per_min, "f"),
                "cost_per_hour": format(cost_per_min * 60, "f"),
                "calls_per_s": rate.calls / RATE_WINDOW_S,
                "tokens_per_s": rate.tokens / RATE_WINDOW_S,
            },
            "totals": {
                "cost": format(totals.cost, "f"),
                "calls": totals.calls,
                "tokens": totals.tokens,
                "unpriced": totals.unpriced,
            },
            "unpriced": totals.unpriced,
            "top": {dim: _top(entries) for dim, entries in groups.items()},
            "latest": [_latest_row(entry) for entry in latest],
            "calls_seen": total_calls,
            "health": health_summary(health or {}),
            # Budgets and firing alerts, when the alerts output runs (outputs/alerts).
            "alerts": ((health or {}).get("outputs") or {}).get("alerts"),
        }


def _latest_row(entry: tuple) -> dict[str, Any]:
    ts_end, process, pid, provider, model, input_tokens, output_tokens, cost, latency_ms, outcome, tenant = entry
    return {
        "ts": ts_end.timestamp(),
        "process": process,
        "pid": pid,
        "provider": provider,
        "model": model,
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "cost": _cost_text(cost),
        "latency_ms": latency_ms,
        "outcome": outcome.value,
        "tenant": tenant,
    }


def _sum(buckets: list[_Bucket]) -> _Bucket:
    total = _Bucket(by={})
    for b in buckets:
        total.cost += b.cost
        total.calls += b.calls
        total.tokens += b.tokens
        total.unpriced += b.unpriced
    return total


def _merge(buckets: list[_Bucket], dim: str) -> dict[str, list]:
    merged: dict[str, list] = {}
    for b in buckets:
        for name, values in b.by[dim].items():
            entry = merged.get(name)
            if entry is None:
                merged[name] = list(values)
            else:
                for i, value in enumerate(values):
                    entry[i] += value
    return merged


def _top(entries: dict[str, list]) -> list[dict[str, Any]]:
    ranked = sorted(entries.items(), key=lambda kv: (-kv[1][0], -kv[1][1], -kv[1][2], kv[0]))
    return [{"name": name, "cost": format(cost, "f"), "calls": calls, "tokens": tokens, "unpriced": unpriced}
            for name, (cost, calls, tokens, unpriced) in ranked[:TOP_N]]


def health_summary(status: dict[str, Any]) -> dict[str, Any]:
    """The agent status fields ``top`` shows (same meaning as ``lumen-agent status``)."""
    if not status:
        return {}
    from lumen_agent.runner import status_rows

    rows = dict(status_rows(status))
    keep = ("pid", "uptime_s", "targets_attached", "events", "lost", "truncated", "ingested_events", "calls",
            "unpriced", "skipped", "open_connections", "rows_written", "rows_pending", "rows_dropped")
    return {key: rows.get(key) for key in keep}


def parse_window(request: dict[str, Any]) -> int:
    window = request.get("window", 60)
    if isinstance(window, bool) or not isinstance(window, int):
        raise ValueError(f"window must be one of {', '.join(str(w) for w in WINDOWS)} seconds, not {window!r}")
    return window


def install(agent, config) -> LiveFeed:
    """Attach a LiveFeed to a running Agent and serve it as control op ``snapshot``."""
    feed = LiveFeed()
    agent.add_output(feed)

    def snapshot(request: dict[str, Any]) -> dict[str, Any]:
        # The run loop replaces agent._status with a new dict once a second and
        # never mutates it, so reading the reference here is thread-safe.
        return feed.snapshot(parse_window(request), health=getattr(agent, "_status", None))

    agent.control.register("snapshot", snapshot)
    return feed
