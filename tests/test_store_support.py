"""Helpers for the store and data-CLI tests (no tests here).

Also runnable as a script, so tests can start real processes:

    python test_store_support.py write DB N SECONDS FLUSH_INTERVAL
        add N synthetic calls over SECONDS with a CallStore, close it, print
        its stats as JSON on the last line
    python test_store_support.py hold DB SECONDS [rw]
        open DB (read-only unless "rw"), print "held", sleep, close
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

TESTS = Path(__file__).resolve().parent


def make_call(i: int = 0, **overrides):
    from lumen_agent.pipeline.call import Call, Outcome

    start = datetime(2026, 3, 1, 12, 0, tzinfo=UTC) + timedelta(seconds=i)
    call = Call(
        id=f"call-{i:06d}",
        ts_start=start,
        ts_end=start + timedelta(milliseconds=750),
        latency_ms=750.25,
        ttft_ms=120.5,
        host="host-a",
        pid=4242,
        process="python3",
        exe="/usr/bin/python3.12",
        user="alice",
        unit="app.service",
        container_id=None,
        provider="openai",
        endpoint="chat.completions",
        server_address="api.openai.com",
        server_port=443,
        request_model="gpt-4o",
        model="gpt-4o-2024-08-06",
        streaming=False,
        status_code=200,
        outcome=Outcome.SUCCESS,
        request_id=f"req_{i}",
        input_tokens=1000,
        output_tokens=200,
        cache_read_tokens=0,
        cache_write_tokens=0,
        cache_write_1h_tokens=None,
        reasoning_tokens=None,
        cost_usd=Decimal("0.00450000"),
        price_id="openai/gpt-4o-2024-08-06@2024-08-06",
        unpriced=False,
        usage_missing=False,
        api_key_hash="k-1234abcd",
        tenant="acme",
        feature="chat",
        capture="ebpf",
    )
    return replace(call, **overrides) if overrides else call


def script(*args: str) -> list[str]:
    return [sys.executable, str(Path(__file__).resolve()), *args]


def _write(db: str, n: int, seconds: float, flush_interval: float) -> None:
    from lumen_agent.outputs.store import CallStore

    store = CallStore(db, flush_interval=flush_interval, lock_retry=30.0)
    per_tick = max(1, n // max(1, int(seconds / 0.01)))
    added = 0
    while added < n:
        k = min(per_tick, n - added)
        store.add_many(make_call(added + j) for j in range(k))
        added += k
        store.maybe_flush()
        time.sleep(0.01)
    store.close()
    print(json.dumps(store.stats()), flush=True)


def _hold(db: str, seconds: float, rw: bool) -> None:
    import duckdb

    deadline = time.monotonic() + 30
    while True:  # the writer may be mid-flush: wait for it, like any reader
        try:
            con = duckdb.connect(db, read_only=not rw)
            break
        except duckdb.IOException:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.01)
    print("held", flush=True)
    time.sleep(seconds)
    con.close()


if __name__ == "__main__":
    sys.path.insert(0, str(TESTS))
    cmd, db, *rest = sys.argv[1:]
    if cmd == "write":
        _write(db, int(rest[0]), float(rest[1]), float(rest[2]))
    elif cmd == "hold":
        _hold(db, float(rest[0]), rw=rest[1:] == ["rw"])
    else:
        raise SystemExit(f"unknown command {cmd}")
