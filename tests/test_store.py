"""CallStore and schema: flush/close, migrations, bounded pending, lock conflicts."""

from __future__ import annotations

import stat
import subprocess
import threading
import time
from decimal import Decimal

import duckdb
import pytest
from test_store_support import make_call, script

from lumen_agent.outputs import schema
from lumen_agent.outputs.queries import run_sql
from lumen_agent.outputs.store import CallStore
from lumen_agent.pipeline.call import CALL_COLUMNS, Outcome


def _count(db) -> int:
    return run_sql(db, "SELECT count(*) FROM llm_calls").rows[0][0]


def _counters(db) -> dict[str, int]:
    return dict(run_sql(db, "SELECT name, value FROM lumen_counters").rows)


@pytest.fixture
def db(tmp_path):
    return tmp_path / "state" / "lumen.duckdb"


# -- schema ----------------------------------------------------------------


def test_table_has_the_call_columns_in_order(db):
    CallStore(db).close()  # nothing pending: no file yet
    assert not db.exists()
    store = CallStore(db)
    store.add(make_call())
    store.close()
    cols = run_sql(db, "SELECT column_name, data_type FROM information_schema.columns "
                       "WHERE table_name = 'llm_calls' ORDER BY ordinal_position").rows
    assert tuple(c for c, _ in cols) == CALL_COLUMNS
    types = dict(cols)
    assert types["ts_start"] == "TIMESTAMP WITH TIME ZONE"
    assert types["cost_usd"] == "DECIMAL(18,8)"
    assert types["input_tokens"] == "BIGINT"
    assert types["latency_ms"] == "DOUBLE"
    assert types["streaming"] == "BOOLEAN"
    assert types["outcome"] == "VARCHAR"


def test_fresh_file_gets_current_version_and_views(db):
    with CallStore(db) as store:
        store.add(make_call())
    meta = run_sql(db, "SELECT version, description FROM lumen_meta ORDER BY version").rows
    assert [v for v, _ in meta] == list(range(1, schema.SCHEMA_VERSION + 1))
    for view, rows in (("calls_by_day", 1), ("spend_by_model", 1), ("unpriced_models", 0)):
        assert run_sql(db, f"SELECT count(*) FROM {view}").rows[0][0] == rows


def test_v1_file_is_migrated_on_open_and_keeps_its_rows(db):
    db.parent.mkdir()
    con = duckdb.connect(str(db))
    assert schema.migrate(con, target=1) == 0
    assert schema.schema_version(con) == 1
    # A version-1 file has only the columns of migration 1.
    v1_columns = [name for name, _ in schema._V1_COLUMN_TYPES]
    appender = con.appender("llm_calls", columns=v1_columns)
    from lumen_agent.outputs.store import _to_row

    appender.append_rows([_to_row(make_call(0))[: len(v1_columns)]])
    appender.flush()
    con.close()
    assert "lumen_counters" not in {r[0] for r in run_sql(db, "SHOW TABLES").rows}

    with CallStore(db) as store:
        store.add(make_call(1))
    assert run_sql(db, "SELECT max(version) FROM lumen_meta").rows == [(schema.SCHEMA_VERSION,)]
    assert run_sql(db, "SELECT id FROM llm_calls ORDER BY id").rows == [("call-000000",), ("call-000001",)]
    assert run_sql(db, "SELECT calls FROM calls_by_day").rows == [(2,)]
    assert _counters(db) == {"rows_written": 1}


def test_newer_schema_is_refused_and_rows_kept(db):
    db.parent.mkdir()
    con = duckdb.connect(str(db))
    schema.migrate(con)
    con.execute("INSERT INTO lumen_meta VALUES (99, now(), 'future', 'from the future')")
    con.close()
    store = CallStore(db)
    store.add(make_call())
    with pytest.raises(schema.SchemaError, match="version 99"):
        store.flush()
    assert store.stats()["pending"] == 1
    assert store.stats()["flush_errors"] == 1
    assert store.maybe_flush(now=1e9) == 0  # logged, not raised


# -- flush / close ---------------------------------------------------------


def test_flush_round_trips_every_column(db):
    call = make_call(
        7,
        ttft_ms=None,
        container_id="c0ffee",
        outcome=Outcome.RATE_LIMITED,
        status_code=429,
        streaming=True,
        cost_usd=Decimal("123.45678901"),
        cache_write_1h_tokens=5,
        request_body='{"messages": []}',
        http_version="2",
    )
    store = CallStore(db)
    store.add(call)
    assert store.flush() == 1
    result = run_sql(db, "SELECT * FROM llm_calls")
    assert result.columns == list(CALL_COLUMNS)
    (row,) = result.rows
    expected = [getattr(call, c) for c in CALL_COLUMNS]
    expected[CALL_COLUMNS.index("outcome")] = "rate_limited"
    assert list(row) == expected
    store.close()


def test_flush_closes_the_file_so_readers_can_open_it(db):
    store = CallStore(db)
    store.add_many(make_call(i) for i in range(3))
    assert store.flush() == 3
    # A writer that kept the file open would make this read-only open fail
    # from another process.
    out = subprocess.run(
        script("hold", str(db), "0"), capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    store.add(make_call(3))
    store.close()
    assert _count(db) == 4
    s = store.stats()
    assert (s["rows_written"], s["pending"], s["dropped"], s["flushes"]) == (4, 0, 0, 2)
    assert s["last_flush_ms"] > 0


def test_rows_go_into_row_groups_of_row_group_size(db):
    # DuckDB's own 122,880-row groups made the flush that filled one take
    # ~125 MB and 0.6 s (store.ROW_GROUP_SIZE says why).
    from lumen_agent.outputs.store import ROW_GROUP_SIZE

    store = CallStore(db)
    store.add_many(make_call(i) for i in range(2 * ROW_GROUP_SIZE + 50))
    store.close()
    groups = run_sql(db, "SELECT row_group_id, max(count) FROM pragma_storage_info('llm_calls') "
                         "GROUP BY row_group_id ORDER BY row_group_id").rows
    assert groups == [(0, ROW_GROUP_SIZE), (1, ROW_GROUP_SIZE), (2, 50)]
    assert _count(db) == 2 * ROW_GROUP_SIZE + 50


def test_in_process_readers_and_the_flush_wait_for_each_other(db):
    """The flush ATTACHes the file to the store's own DuckDB; while it is there,
    duckdb.connect of it elsewhere in this process is refused, and the other
    way round.  Both are the file being held: waited for, never an error."""
    from lumen_agent.outputs.store import connect_when_free, is_lock_error

    store = CallStore(db)
    store.add(make_call(0))
    assert store.flush() == 1
    reader = duckdb.connect(str(db), read_only=True)  # as the Parquet exporter's thread would
    try:
        store.add(make_call(1))
        assert store.maybe_flush(now=1e9) == 0  # held: the row stays pending, counted
        assert store.stats()["lock_conflicts"] == 1 and store.pending() == 1
    finally:
        reader.close()
    assert store.maybe_flush(now=2e9) == 1
    store._connect()  # the file attached, as mid-flush
    try:
        with pytest.raises(duckdb.Error) as refused:
            duckdb.connect(str(db), read_only=True)
        assert is_lock_error(refused.value)
        released = threading.Timer(0.3, store._release, args=(store._host,))
        released.start()
        con = connect_when_free(db, read_only=True, timeout=10)  # waits for the DETACH
        released.join()
    finally:
        if store._attached.locked():
            store._release(store._host)
    assert con.execute("SELECT count(*) FROM llm_calls").fetchone() == (2,)
    con.close()
    store.close()


def test_flushes_share_one_in_memory_duckdb_closed_when_idle_and_renewed(db, monkeypatch):
    from lumen_agent.outputs import store as store_module

    monkeypatch.setattr(store_module, "HOST_OPENS", 3)
    store = CallStore(db, flush_interval=2.0)
    store.check()
    assert store._host is None  # none held until rows come
    store.add(make_call(0))
    assert store.maybe_flush(now=100.0) == 1
    host = store._host
    assert host is not None  # kept between flushes; the file itself is detached (test above)
    store.add(make_call(1))
    assert store.maybe_flush(now=102.0) == 1
    assert store._host is host
    store.add(make_call(2))
    assert store.maybe_flush(now=104.0) == 1
    assert store._host is host  # its third open
    store.add(make_call(3))
    assert store.maybe_flush(now=106.0) == 1
    assert store._host is not host  # HOST_OPENS reached: a new one
    store.on_tick(106.0 + store_module.HOST_IDLE_S - 0.5)
    assert store._host is not None
    store.on_tick(106.0 + store_module.HOST_IDLE_S)  # nothing to flush for HOST_IDLE_S: closed
    assert store._host is None
    store.add(make_call(4))
    store.close()
    assert store._host is None
    assert _count(db) == 5


def test_parent_directory_is_created_0750(tmp_path):
    db = tmp_path / "a" / "b" / "lumen.duckdb"
    CallStore(db)
    assert stat.S_IMODE(db.parent.stat().st_mode) == 0o750


def test_maybe_flush_waits_for_interval_or_size(db):
    store = CallStore(db, flush_interval=2.0, flush_rows=5)
    store.add(make_call(0))
    assert store.maybe_flush(now=100.0) == 1  # first call: due
    store.add(make_call(1))
    assert store.maybe_flush(now=101.0) == 0  # 1 s later, one row: wait
    assert store.maybe_flush(now=102.0) == 1  # interval elapsed
    store.add_many(make_call(i) for i in range(2, 7))
    assert store.maybe_flush(now=102.5) == 5  # many rows: flush early
    assert store.maybe_flush(now=200.0) == 0  # nothing pending
    store.close()
    assert _count(db) == 7


def test_pending_is_bounded_and_drops_are_counted(db):
    store = CallStore(db, max_pending=5)
    store.add_many(make_call(i) for i in range(4))
    store.add_many(make_call(i) for i in range(4, 8))  # 1 fits, 3 dropped
    store.add(make_call(8))  # dropped
    assert store.stats()["pending"] == 5
    assert store.stats()["dropped"] == 4
    store.close()
    store.add(make_call(9))  # after close: dropped too
    assert store.stats()["dropped"] == 5
    assert _count(db) == 5
    assert _counters(db) == {"rows_written": 5, "rows_dropped": 4}


def test_counters_accumulate_across_stores(db):
    for run in range(2):
        with CallStore(db) as store:
            store.add(make_call(run))
            store.count("calls.unpriced", 3)
    assert _counters(db) == {"rows_written": 2, "calls.unpriced": 6}


def test_add_from_another_thread_while_flushing(db):
    store = CallStore(db)
    n_threads, per_thread = 4, 2_500

    def produce(t: int) -> None:
        for i in range(per_thread):
            store.add(make_call(t * per_thread + i))

    threads = [threading.Thread(target=produce, args=(t,)) for t in range(n_threads)]
    for t in threads:
        t.start()
    flushed = 0
    while any(t.is_alive() for t in threads):
        flushed += store.flush()
    for t in threads:
        t.join()
    store.close()
    assert _count(db) == n_threads * per_thread
    assert run_sql(db, "SELECT count(DISTINCT id) FROM llm_calls").rows == [(n_threads * per_thread,)]
    assert store.stats()["rows_written"] == n_threads * per_thread



def test_background_flush_leaves_the_ticking_thread_free_and_close_writes_the_rest(db, monkeypatch):
    store = CallStore(db, flush_interval=0.0, background_flush=True)
    store.check()
    writing, release = threading.Event(), threading.Event()
    write = store._write

    def slow_write(batch, counts):  # a flush that ends in a long checkpoint
        writing.set()
        assert release.wait(10)
        return write(batch, counts)

    monkeypatch.setattr(store, "_write", slow_write)
    store.add(make_call(0))
    ticks = []
    for i in range(3):  # the first wakes the flusher; the others come while its flush holds the file
        started = time.monotonic()
        store.on_tick(started)
        ticks.append(time.monotonic() - started)
        assert writing.wait(5)
        store.add(make_call(i + 1))
    assert max(ticks) < 0.5 and store.stats()["pending"] == 4
    assert store._flusher.name == "lumen-store-flush" and store._flusher.is_alive()
    release.set()
    deadline = time.monotonic() + 10
    while store.stats()["rows_written"] < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    store.close()  # the flusher ends; what came during its flush is written now
    assert not store._flusher.is_alive()
    assert _count(db) == 4 and store.stats()["pending"] == 0
    assert run_sql(db, "SELECT count(DISTINCT id) FROM llm_calls").rows == [(4,)]

# -- lock conflicts (a real second process) --------------------------------


def _hold(db, seconds, *extra):
    holder = subprocess.Popen(
        script("hold", str(db), str(seconds), *extra), stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout.readline().strip() == "held"
    return holder


def test_reader_holding_the_file_defers_rows_without_loss(db):
    store = CallStore(db, max_pending=10)
    store.add(make_call(0))
    store.flush()
    holder = _hold(db, 1.5)
    try:
        store.add_many(make_call(i) for i in range(1, 9))
        assert store.flush() == 0  # locked: kept
        s = store.stats()
        assert (s["pending"], s["lock_conflicts"], s["dropped"]) == (8, 1, 0)
        store.add_many(make_call(i) for i in range(9, 13))  # 2 fit, 2 dropped
        assert store.stats()["dropped"] == 2
    finally:
        holder.wait(timeout=60)
    assert store.flush() == 10
    store.close()
    ids = [r[0] for r in run_sql(db, "SELECT id FROM llm_calls").rows]
    assert ids == [f"call-{i:06d}" for i in range(11)]  # insertion order kept
    assert _counters(db) == {"rows_written": 11, "rows_dropped": 2, "lock_conflicts": 1}


def test_close_waits_for_the_lock_within_lock_retry(db):
    store = CallStore(db, lock_retry=30.0)
    store.add(make_call(0))
    store.flush()
    holder = _hold(db, 1.0)
    store.add(make_call(1))
    store.close()  # retries until the reader lets go
    holder.wait(timeout=60)
    assert _count(db) == 2
    assert store.stats()["lock_conflicts"] > 1
    assert store.stats()["dropped"] == 0


def test_close_gives_up_after_lock_retry_and_counts_the_loss(db):
    store = CallStore(db, lock_retry=0.3)
    store.add(make_call(0))
    store.flush()
    holder = _hold(db, 2.0)
    try:
        store.add_many([make_call(1), make_call(2)])
        store.close()
        s = store.stats()
        assert (s["pending"], s["dropped"], s["rows_written"]) == (0, 2, 1)
    finally:
        holder.wait(timeout=60)


def test_migration_1_is_frozen_ddl_and_migrating_from_it_gives_the_current_columns(tmp_path):
    """A file made by migration 1 alone (as the first release made it), then
    migrated, has exactly the current columns in the Call order: the frozen
    v1 text plus every later migration."""
    with duckdb.connect(str(tmp_path / "v1.duckdb")) as con:
        schema.migrate(con, target=1)
        assert schema.schema_version(con) == 1
        v1 = [(r[0], r[1]) for r in con.execute("DESCRIBE llm_calls").fetchall()]
        schema.migrate(con)
        migrated = [(r[0], r[1]) for r in con.execute("DESCRIBE llm_calls").fetchall()]
    with duckdb.connect(str(tmp_path / "fresh.duckdb")) as con:
        schema.migrate(con)
        fresh = [(r[0], r[1]) for r in con.execute("DESCRIBE llm_calls").fetchall()]
    assert migrated == fresh
    assert [name for name, _ in migrated] == list(CALL_COLUMNS)
    declared = [t.removesuffix(" NOT NULL").replace("TIMESTAMPTZ", "TIMESTAMP WITH TIME ZONE")
                for _, t in schema.CALL_COLUMN_TYPES]
    assert [t for _, t in migrated] == declared
    # What the first release created, whatever columns were added since.
    assert [name for name, _ in v1] == V1_COLUMNS


V1_COLUMNS = [
    "id", "ts_start", "ts_end", "latency_ms", "ttft_ms", "host", "pid", "process", "exe", "user", "unit",
    "container_id", "provider", "endpoint", "server_address", "server_port", "request_model", "model", "streaming",
    "status_code", "outcome", "request_id", "input_tokens", "output_tokens", "cache_read_tokens",
    "cache_write_tokens", "cache_write_1h_tokens", "reasoning_tokens", "cost_usd", "price_id", "unpriced",
    "usage_missing", "api_key_hash", "tenant", "feature", "capture", "http_version", "request_body",
    "response_body",
]
