"""Parquet export: hive-partitioned files, exact totals, exactly once across kill -9.

Real DuckDB files and real Parquet files; chDB (ClickHouse in-process) reads
the same files as a second engine.
"""

from __future__ import annotations

import random
import subprocess
import sys
from dataclasses import replace
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import duckdb
import pytest
from builders import exchange_events, load_fixture, request_bytes, response_bytes
from test_store_support import make_call
from typer.testing import CliRunner

from lumen_agent.cli import app
from lumen_agent.outputs.parquet import ParquetExporter
from lumen_agent.outputs.store import CallStore
from lumen_agent.pipeline.events import DataEvent
from lumen_agent.recording import Recorder

TOTALS_SQL = ("SELECT host, date::VARCHAR AS date, count(*) AS calls, count(DISTINCT id) AS ids, "
              "sum(cost_usd)::VARCHAR AS cost FROM read_parquet(?, hive_partitioning = true) "
              "GROUP BY ALL ORDER BY ALL")


def lake_totals(root: Path) -> list[tuple]:
    with duckdb.connect() as con:
        return con.execute(TOTALS_SQL, [str(root / "**" / "*.parquet")]).fetchall()


def store_calls(db: Path, calls) -> None:
    store = CallStore(db)
    store.add_many(calls)
    store.close()


def calls_over_days(start: int, n: int, host: str = "host-a"):
    """n calls, one every 8 hours: they span several UTC days."""
    out = []
    for i in range(start, start + n):
        call = make_call(i, host=host, cost_usd=Decimal("0.00450000"))
        out.append(replace(call, ts_start=call.ts_start + timedelta(hours=8 * i),
                           ts_end=call.ts_end + timedelta(hours=8 * i)))
    return out


def test_export_writes_each_day_once_and_only_new_rows_after(tmp_path):
    db, root = tmp_path / "a.duckdb", tmp_path / "lake"
    store_calls(db, calls_over_days(0, 7))  # 2026-03-01 12:00 + 8h steps: 3 + 3 + 1 calls per day
    exporter = ParquetExporter(db, root, host="host-a")
    first = exporter.export_once()
    assert (first.first, first.last) == (0, 6)
    assert sorted(p.relative_to(root).as_posix() for p in first.files) == [
        f"host=host-a/date=2026-03-0{d}/part-{0:020d}-{6:020d}.parquet" for d in (1, 2, 3)]
    assert lake_totals(root) == [
        ("host-a", "2026-03-01", 2, 2, "0.00900000"),  # 12:00, 20:00
        ("host-a", "2026-03-02", 3, 3, "0.01350000"),  # 04:00, 12:00, 20:00
        ("host-a", "2026-03-03", 2, 2, "0.00900000"),  # 04:00, 12:00
    ]
    assert exporter.export_once() is None  # nothing new
    store_calls(db, calls_over_days(7, 2))  # 2026-03-03 20:00, 2026-03-04 04:00
    second = exporter.export_once()
    assert (second.first, second.last) == (7, 8)
    assert lake_totals(root)[-2:] == [("host-a", "2026-03-03", 3, 3, "0.01350000"),
                                      ("host-a", "2026-03-04", 1, 1, "0.00450000")]
    # No temporary file is ever visible to a *.parquet glob.
    assert not [p for p in root.rglob("*") if p.is_file() and not p.name.endswith(".parquet")]


CRASHING_EXPORT = """
import os, signal, sys
from pathlib import Path
from lumen_agent.outputs import parquet

db, root, where, after = sys.argv[1], Path(sys.argv[2]), sys.argv[3], int(sys.argv[4])
seen = 0

def kill_now():
    os.kill(os.getpid(), signal.SIGKILL)

if where == "rename":           # killed after `after` files were renamed into place
    real_replace = os.replace
    def replace(src, dst):
        global seen
        if seen == after:
            kill_now()
        seen += 1
        real_replace(src, dst)
    parquet.os.replace = replace
elif where == "write":          # killed after `after` files were written, before their rename
    real_fsync = parquet._fsync
    def fsync(path):
        global seen
        real_fsync(path)
        if str(path).endswith(".tmp"):
            if seen == after:
                kill_now()
            seen += 1
    parquet._fsync = fsync
elif where == "mark":           # killed after every rename, before the mark moved
    parquet.ParquetExporter._set_mark = lambda self, con, last: kill_now()
parquet.ParquetExporter(db, root, host="host-a").export_once()
"""


def test_kill_9_anywhere_in_an_export_never_duplicates_or_loses_a_call(tmp_path):
    db, root = tmp_path / "a.duckdb", tmp_path / "lake"
    script = tmp_path / "crash.py"
    script.write_text(CRASHING_EXPORT)
    rng = random.Random(7)
    stored = 0
    killed = 0
    for round_no in range(12):
        n = rng.randint(1, 9)
        store_calls(db, calls_over_days(stored, n))
        stored += n
        where = rng.choice(["rename", "write", "mark"])
        r = subprocess.run([sys.executable, str(script), str(db), str(root), where, str(rng.randint(0, 3))],
                           capture_output=True, text=True, timeout=60)
        killed += r.returncode == -9
        assert r.returncode in (0, -9), r.stderr
        if rng.random() < 0.5:
            continue  # crash again on top of this one before any clean export
        ParquetExporter(db, root, host="host-a").export_once()
        with duckdb.connect() as con:
            calls, ids = con.execute("SELECT count(*), count(DISTINCT id) FROM read_parquet(?)",
                                     [str(root / "**" / "*.parquet")]).fetchone()
        assert (calls, ids) == (stored, stored), f"round {round_no}"
    ParquetExporter(db, root, host="host-a").export_once()
    with duckdb.connect() as con:
        calls, ids, cost = con.execute("SELECT count(*), count(DISTINCT id), sum(cost_usd)::VARCHAR "
                                       "FROM read_parquet(?)", [str(root / "**" / "*.parquet")]).fetchone()
    assert (calls, ids) == (stored, stored)
    assert Decimal(cost) == Decimal("0.0045") * stored
    assert killed >= 6  # the crashes really happened


# -- three agents, one lake ---------------------------------------------------------

DAY_NS = 86_400 * 10**9


def recording(path: Path, days: list[int]) -> None:
    """One Anthropic streamed call (20 in, 5 out: $0.000135 on claude-sonnet-4-5) per entry,
    on 2025-11-13 + that many days."""
    facts, body = load_fixture("anthropic_messages_stream.txt")
    request = request_bytes("POST", facts["url"], {"model": "claude-sonnet-4-5", "max_tokens": 64, "stream": True,
                                                   "messages": [{"role": "user", "content": "hi"}]})
    response = response_bytes(body, content_type="text/event-stream", chunked=True)
    with open(path, "w") as f:
        rec = Recorder(f)
        for n, day in enumerate(days):
            for e in exchange_events(request, response, conn=0x100 + n, close=True):
                rec.write(DataEvent(e.ts_ns + day * DAY_NS, e.pid, e.tid, e.conn, e.direction, e.data, e.flags))


def test_three_agents_export_into_one_root_read_by_duckdb_and_clickhouse(tmp_path, monkeypatch):
    root = tmp_path / "lake"
    plan = {"web-1": [0, 0, 1], "web-2": [1, 1, 1, 1], "batch-1": [0, 2]}
    for host, days in plan.items():
        state = tmp_path / host
        state.mkdir()
        monkeypatch.setenv("LUMEN_STATE_DIR", str(state))
        (state / "config.toml").write_text(f'[agent]\nhostname = "{host}"\n')
        recording(state / "r.jsonl", days)
        result = CliRunner().invoke(app, ["replay", str(state / "r.jsonl"), "--db", str(state / "lumen.duckdb"),
                                          "--config", str(state / "config.toml"), "--export-parquet", str(root)])
        assert result.exit_code == 0, result.output
    expected = [
        ("batch-1", "2025-11-13", 1, 1, "0.00013500"),
        ("batch-1", "2025-11-15", 1, 1, "0.00013500"),
        ("web-1", "2025-11-13", 2, 2, "0.00027000"),
        ("web-1", "2025-11-14", 1, 1, "0.00013500"),
        ("web-2", "2025-11-14", 4, 4, "0.00054000"),
    ]
    assert lake_totals(root) == expected

    chdb = pytest.importorskip("chdb")
    glob = str(root / "**" / "*.parquet")
    text = chdb.query(
        "SELECT host, toString(toDate(ts_start, 'UTC')) AS day, count() AS calls, uniqExact(id) AS ids, "
        f"toString(sum(cost_usd)) AS cost FROM file('{glob}', Parquet) GROUP BY host, day ORDER BY host, day",
        "CSV").data()
    rows = [tuple(field.strip('"') for field in line.split(",")) for line in text.strip().splitlines()]
    assert [(h, d, int(c), int(i), Decimal(cost)) for h, d, c, i, cost in rows] == [
        (h, d, c, i, Decimal(cost)) for h, d, c, i, cost in expected]


def test_fleet_history_reprices_from_the_lake_as_docs_say(tmp_path, monkeypatch):
    """docs/export.md: CREATE TABLE llm_calls AS SELECT * EXCLUDE (date) FROM the files, then reprice."""
    monkeypatch.setenv("LUMEN_STATE_DIR", str(tmp_path / "state"))
    db, root = tmp_path / "a.duckdb", tmp_path / "lake"
    store_calls(db, [replace(c, cost_usd=Decimal("99")) for c in calls_over_days(0, 3)])  # a wrong old price
    ParquetExporter(db, root, host="host-a").export_once()
    fleet = tmp_path / "fleet.duckdb"
    with duckdb.connect(str(fleet)) as con:
        con.execute("CREATE TABLE llm_calls AS SELECT * EXCLUDE (date) FROM read_parquet(?, hive_partitioning = true)",
                    [str(root / "**" / "*.parquet")])
    result = CliRunner().invoke(app, ["reprice", "--db", str(fleet)])
    assert result.exit_code == 0, result.output
    with duckdb.connect(str(fleet), read_only=True) as con:
        costs = con.execute("SELECT DISTINCT cost_usd::VARCHAR FROM llm_calls").fetchall()
    # gpt-4o-2024-08-06: 1000 in x $2.50/1M + 200 out x $10/1M
    assert costs == [("0.00450000",)]
