"""The single DuckDB writer of a lumen-agent database.

DuckDB lets one process hold a file read-write, and while it does, no other
process can open the file at all, read-only included.  So the store never
keeps the file open: rows are buffered in memory and each :meth:`CallStore.flush`
opens the file, appends every pending row in one transaction, and closes it.
Between flushes readers (``duckdb -readonly``, ``lumen-agent sql``) open the
file freely.

When a reader holds the file at flush time the flush fails with a lock error;
nothing is lost: the rows go back to the front of the pending buffer and the
next flush retries them.  The buffer is bounded by ``max_pending``; rows that
arrive while it is full are dropped, counted (``stats()["dropped"]``, and the
``rows_dropped`` counter in the file) and logged.

Bulk path: DuckDB's ``Appender`` (``connection.appender(table)``).  When
this was written it came out fastest against executemany, multi-row
``VALUES`` with parameters, ``unnest`` of column lists and ``read_csv`` of a
temporary file; that comparison was a one-off, and bench/ does not repeat
it.  The Appender needs neither pandas nor pyarrow.

Threads: :meth:`add` / :meth:`add_many` may run on another thread than
:meth:`flush`; the pending list is swapped under a lock and only one flush
runs at a time.  With ``background_flush`` (the agent's run loop),
:meth:`on_tick` only wakes a flushing thread of the store's own: a flush is
tens of milliseconds, but the checkpoint that ends a flush which filled a
row group takes longer (0.2 s with ROW_GROUP_SIZE, 0.3-2.4 s with DuckDB's
default), and on the run loop that was capture standing still while the
kernel's ring buffer filled.  DuckDB lets go of the GIL while it works.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Iterable
from operator import attrgetter
from pathlib import Path

import duckdb

from lumen_agent.heap import release_free_heap
from lumen_agent.outputs.base import Output
from lumen_agent.outputs.dbcheck import DatabaseUnusable, check_folder, describe_open_error, prepare
from lumen_agent.outputs.schema import CALLS_TABLE, SchemaError
from lumen_agent.pipeline.call import CALL_COLUMNS, Call

log = logging.getLogger(__name__)

DEFAULT_FLUSH_INTERVAL = 2.0
# 200k rows of Call objects is roughly 200-400 MB at worst; at 5,000 calls/s
# that is 40 s of a reader holding the file before anything is dropped.
DEFAULT_MAX_PENDING = 200_000
# Flush early when this many rows are waiting, to keep each batch (and its
# memory) small even with a long flush interval.
DEFAULT_FLUSH_ROWS = 50_000
# How long close() keeps retrying a final flush while a reader holds the file.
DEFAULT_LOCK_RETRY = 10.0
# Pause between attempts while waiting for a lock.
LOCK_POLL_INTERVAL = 0.05
# DuckDB threads while the agent writes (see _connect).
STORE_THREADS = 1
# The name the file is attached under in the store's in-memory DuckDB (see _connect).
FILE_ALIAS = "lumen_store_file"
# Rows per row group of the file, instead of DuckDB's 122,880.  The
# checkpoint of the flush that fills a row group compresses the whole group
# at once: with 122,880 rows of llm_calls that took 0.6-0.8 s of CPU and the
# agent's RSS rose ~125 MB for it (every ~100k calls); with 8,192, at most
# 0.2 s and ~20 MB, the same as an ordinary flush of 2,600 rows.  The cost:
# mean flush CPU x1.05-1.10 and a file ~18 % larger; a GROUP BY over 260k
# rows takes the same 1.4-2.0 ms (bench/store_flush_bench.py, DuckDB 2.0.1).  Files stay readable by
# DuckDB versions that can read them now (the storage version is the file's).
ROW_GROUP_SIZE = 8192
# Opens one in-memory DuckDB serves before a new one replaces it: an
# instance's heap grows with the flushes it serves.  1,000 flushes of 300
# rows, RssAnon after every 200 (DuckDB 2.0.1, row groups as above): one
# instance kept for ever 32.4 -> 34.6 MB; replaced every 64 flushes 28.0 ->
# 29.6 MB; every 16, 27.9-28.7; every 8, 27.9 throughout.  In the agent after
# ~125k calls at ~1,600/s: 42.6/38.6/45.7 MB with 8 against 46.6/41.8/45.0 with
# 64 (alternating runs), agent CPU per call the same.  A new instance is
# ~17 ms of CPU: ~1 ms a second at one flush per 2 s.
HOST_OPENS = 8
# Seconds without a flush after which the in-memory DuckDB is closed: an
# idle agent does not keep its heap.
HOST_IDLE_S = 10.0

# The dead-letter file is for finding a bug, not a second database.
MAX_DEAD_LETTER_BYTES = 64 * 1024 * 1024
_CONTENT_COLUMNS = frozenset({"request_body", "response_body"})

_row_of = attrgetter(*CALL_COLUMNS)
_OUTCOME_INDEX = CALL_COLUMNS.index("outcome")


def is_lock_error(exc: BaseException) -> bool:
    """True when DuckDB refused to open a file because another process holds
    it, or another DuckDB instance of this process: the store's flush ATTACHes
    the file to an instance of its own (see ``CallStore._connect``), and while
    it is attached there ``duckdb.connect`` of the same file elsewhere in the
    process is refused ("Unique file handle conflict"), and the other way
    round.  Both pass as soon as the holder lets go: wait and retry."""
    if isinstance(exc, duckdb.ResourceInUseException):
        return "file handle conflict" in str(exc).lower()
    return isinstance(exc, duckdb.IOException) and "lock" in str(exc).lower()


def connect_when_free(path: Path, *, timeout: float, read_only: bool = False) -> duckdb.DuckDBPyConnection:
    """``duckdb.connect``, waiting up to ``timeout`` seconds while the file is
    held (:func:`is_lock_error`); then, or for any other error, it raises."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return duckdb.connect(str(path), read_only=read_only)
        except duckdb.Error as exc:
            if not is_lock_error(exc) or time.monotonic() >= deadline:
                raise
            time.sleep(LOCK_POLL_INTERVAL)


def _to_row(call: Call) -> list:
    row = list(_row_of(call))
    row[_OUTCOME_INDEX] = row[_OUTCOME_INDEX].value
    return row


def _add_counters(con: duckdb.DuckDBPyConnection, totals: dict[str, int]) -> None:
    if not totals:
        return
    values = ", ".join(["(?, ?, now())"] * len(totals))  # one statement: each upsert costs ~4 ms
    con.execute(
        f"INSERT INTO lumen_counters VALUES {values} "
        "ON CONFLICT (name) DO UPDATE SET "
        "value = lumen_counters.value + excluded.value, "
        "updated_at = excluded.updated_at",
        [v for item in totals.items() for v in item],
    )


def _without_stored_batch_lines(con: duckdb.DuckDBPyConnection, batch: list[Call],
                                totals: dict[str, int]) -> list[Call]:
    """``batch`` less the batch-results rows already in the file.

    A billed batch line's row id is the same on every download
    (pipeline/batch_rows.py), so results downloaded again after a restart
    are found here by id and counted, not stored twice.  Ordinary rows have
    random ids and never meet this check."""
    ids = [c.id for c in batch if c.service_tier == "batch"]
    if not ids:
        return batch
    stored = {r[0] for r in con.execute(
        f"SELECT id FROM {CALLS_TABLE} WHERE service_tier = 'batch' AND id IN (SELECT unnest(?::VARCHAR[]))",
        [ids]).fetchall()}
    if not stored:
        return batch
    totals["batch_lines_already_stored"] = totals.get("batch_lines_already_stored", 0) + len(stored)
    return [c for c in batch if c.id not in stored]


def sql_string(text: str) -> str:
    """``text`` as an SQL string literal, for statements that take no
    parameters (ATTACH, COPY ... TO)."""
    return "'" + text.replace("'", "''") + "'"


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return (text or type(exc).__name__)[:500]


def _keep_private(path: Path) -> None:
    try:
        if path.stat().st_mode & 0o077:
            os.chmod(path, 0o600)
    except OSError:
        pass


def dead_letter_path(db_path: Path) -> Path:
    return db_path.with_name(db_path.name + ".deadletter.jsonl")


def write_dead_letters(path: Path, dead: list[tuple[Call, str]]) -> None:
    """Append rows DuckDB refused, one JSON object a line, to a 0600 file.

    Rows hold no credentials (only a salted hash); the opt-in prompt and
    completion text is left out all the same.  Past ``MAX_DEAD_LETTER_BYTES``
    rows are only counted."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    except OSError as exc:
        log.error("cannot open dead-letter file %s: %s", path, exc)
        return
    try:
        os.fchmod(fd, 0o600)
        if os.fstat(fd).st_size >= MAX_DEAD_LETTER_BYTES:
            log.error("dead-letter file %s is full; %d rows only counted", path, len(dead))
            return
        lines = []
        for call, error in dead:
            record = {name: value for name, value in zip(CALL_COLUMNS, _to_row(call), strict=True)
                      if name not in _CONTENT_COLUMNS}
            record["error"] = error
            # ensure_ascii: lone surrogates and controls become \u escapes.
            lines.append(json.dumps(record, default=str, ensure_ascii=True) + "\n")
        os.write(fd, "".join(lines).encode("ascii"))
    finally:
        os.close(fd)


class CallStore(Output):
    """Buffers :class:`Call` rows and appends them to ``llm_calls`` in batches.

    As an :class:`Output` of the agent it queues every call and flushes when due.
    """

    name = "store"

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        flush_interval: float = DEFAULT_FLUSH_INTERVAL,
        max_pending: int = DEFAULT_MAX_PENDING,
        lock_retry: float = DEFAULT_LOCK_RETRY,
        flush_rows: int = DEFAULT_FLUSH_ROWS,
        adopt: bool = False,
        background_flush: bool = False,
    ) -> None:
        if max_pending < 1:
            raise ValueError("max_pending must be at least 1")
        self.path = Path(path)
        self.flush_interval = flush_interval
        self.max_pending = max_pending
        self.lock_retry = lock_retry
        self.flush_rows = min(flush_rows, max_pending)
        # Add our tables to a DuckDB file that holds other tables (run --init).
        self.adopt = adopt
        self.path.parent.mkdir(mode=0o750, parents=True, exist_ok=True)

        self._lock = threading.Lock()  # guards _pending, _inflight, _dropped, _counts
        self._flush_lock = threading.Lock()  # one flush at a time
        self._pending: list[Call] = []
        self._inflight = 0  # rows taken out of _pending by a running flush
        self._closed = False

        self._rows_written = 0
        self._dropped = 0
        self._flushes = 0
        self._lock_conflicts = 0
        self._flush_errors = 0
        self._dead_lettered = 0
        self._last_flush_ms: float | None = None
        self._last_attempt: float | None = None
        # Counter increments not yet persisted to lumen_counters.
        self._counts: dict[str, int] = {}
        self._dropped_logged = 0
        # An in-memory DuckDB the file is attached to for each flush (see _connect).
        self._host: duckdb.DuckDBPyConnection | None = None
        self._host_opens = 0
        self._attached = threading.Lock()  # held from attach to detach
        # background_flush: the thread that does what on_tick asks for.
        self._background = background_flush
        self._flusher: threading.Thread | None = None
        self._tick_wanted = threading.Event()

    # -- producers ---------------------------------------------------------

    def add(self, call: Call) -> None:
        """Queue one row.  Never blocks on I/O; drops (and counts) when full."""
        with self._lock:
            if self._closed or len(self._pending) + self._inflight >= self.max_pending:
                self._drop(1)
                return
            self._pending.append(call)

    def add_many(self, calls: Iterable[Call]) -> None:
        calls = list(calls)
        with self._lock:
            room = 0 if self._closed else self.max_pending - len(self._pending) - self._inflight
            room = max(room, 0)
            if room < len(calls):
                self._drop(len(calls) - room)
                calls = calls[:room]
            self._pending.extend(calls)

    def on_call(self, call: Call) -> None:
        self.add(call)

    def on_tick(self, now: float) -> None:
        if not self._background:
            self._tick(now)
            return
        if self._flusher is None:
            self._flusher = threading.Thread(target=self._flush_loop, name="lumen-store-flush", daemon=True)
            self._flusher.start()
        self._tick_wanted.set()

    def _flush_loop(self) -> None:
        while True:
            self._tick_wanted.wait()
            self._tick_wanted.clear()
            if self._closed:
                return
            try:
                self._tick(time.monotonic())
            except Exception:  # noqa: BLE001 - the next tick tries again
                log.exception("store tick failed")

    def _tick(self, now: float) -> None:
        if self.maybe_flush(now):
            release_free_heap()  # what DuckDB freed during the flush (~3 MB)
        elif self._host is not None and self._last_attempt is not None and now - self._last_attempt >= HOST_IDLE_S:
            self._close_host()
            release_free_heap()

    def count(self, name: str, n: int = 1) -> None:
        """Add ``n`` to the persisted counter ``name`` (written at the next flush)."""
        with self._lock:
            self._counts[name] = self._counts.get(name, 0) + n

    def _drop(self, n: int) -> None:
        # Caller holds self._lock.
        self._dropped += n
        self._counts["rows_dropped"] = self._counts.get("rows_dropped", 0) + n

    # -- the writer --------------------------------------------------------

    def pending(self) -> int:
        with self._lock:
            return len(self._pending) + self._inflight

    def maybe_flush(self, now: float | None = None) -> int:
        """Flush when ``flush_interval`` has passed since the last attempt or
        many rows wait.  Meant for the run loop: a lock conflict or an I/O
        error is counted and logged, never raised; the rows stay pending."""
        now = time.monotonic() if now is None else now
        with self._lock:
            waiting = len(self._pending)
        if not waiting:
            return 0
        due = self._last_attempt is None or now - self._last_attempt >= self.flush_interval
        if not due and waiting < self.flush_rows:
            return 0
        self._last_attempt = now
        try:
            return self.flush()
        except Exception as exc:  # noqa: BLE001 - the run loop must survive a bad flush
            log.error("flush of %s failed, %d rows kept pending: %s", self.path, waiting, exc)
            return 0

    def flush(self, timeout: float = 0.0) -> int:
        """Append every pending row; return how many were written.

        Opens the file read-write, applies schema migrations, appends all
        rows in one transaction and closes the file.  A lock held by another
        process is retried for up to ``timeout`` seconds, then the rows stay
        pending and 0 is returned.  Other errors keep the rows pending and
        are raised.
        """
        with self._flush_lock:
            with self._lock:
                batch, self._pending = self._pending, []
                self._inflight = len(batch)
                counts, self._counts = self._counts, {}
            if not batch and not counts:
                return 0
            deadline = time.monotonic() + timeout
            try:
                while True:
                    try:
                        ms, written = self._write(batch, counts)
                        break
                    except Exception as exc:  # noqa: BLE001 - sorted below
                        if not is_lock_error(exc):
                            if isinstance(exc, SchemaError | DatabaseUnusable | duckdb.IOException) or not batch:
                                raise  # the file, not a row: keep the rows pending
                            # Some row DuckDB will not take: find it, keep the rest.
                            ms, written = self._write_isolated(batch, counts, exc)
                            break
                        self._lock_conflicts += 1
                        counts["lock_conflicts"] = counts.get("lock_conflicts", 0) + 1
                        if time.monotonic() + LOCK_POLL_INTERVAL > deadline:
                            log.info(
                                "%s is held by another process; %d rows stay pending",
                                self.path,
                                len(batch),
                            )
                            self._give_back(batch, counts)
                            return 0
                        time.sleep(LOCK_POLL_INTERVAL)
            except BaseException:
                self._flush_errors += 1
                self._give_back(batch, counts)
                raise
            with self._lock:
                self._inflight = 0
            self._rows_written += written
            self._flushes += 1
            self._last_flush_ms = ms
            self._log_drops()
            return written

    def _give_back(self, batch: list[Call], counts: dict[str, int]) -> None:
        with self._lock:
            self._pending[:0] = batch  # in front: rows keep their order
            self._inflight = 0
            for name, n in counts.items():
                self._counts[name] = self._counts.get(name, 0) + n
        self._log_drops()

    def _log_drops(self) -> None:
        dropped = self._dropped
        if dropped > self._dropped_logged:
            log.warning(
                "pending buffer full (%d rows): dropped %d rows (%d in total)",
                self.max_pending,
                dropped - self._dropped_logged,
                dropped,
            )
            self._dropped_logged = dropped

    def _write(self, batch: list[Call], counts: dict[str, int]) -> tuple[float, int]:
        """One open-append-close cycle; returns its duration in ms and the rows written."""
        started = time.perf_counter()
        con = self._connect()
        try:
            con.execute("BEGIN TRANSACTION")
            try:
                totals = dict(counts)
                rows = _without_stored_batch_lines(con, batch, totals)
                if rows:
                    appender = con.appender(CALLS_TABLE, columns=list(CALL_COLUMNS))
                    appender.append_rows([_to_row(c) for c in rows])
                    appender.flush()
                    totals["rows_written"] = totals.get("rows_written", 0) + len(rows)
                if totals:
                    _add_counters(con, totals)
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
        finally:
            try:
                self._release(con)
            except duckdb.Error as exc:  # committed already: the rows are stored
                log.warning("closing %s after a flush: %s", self.path, exc)
        return (time.perf_counter() - started) * 1000.0, len(rows)

    def _write_isolated(self, batch: list[Call], counts: dict[str, int],
                        first_error: BaseException) -> tuple[float, int]:
        """Append row by row after a batch failed; rows that still fail go to
        the dead-letter file, so one bad row never stops the writer."""
        started = time.perf_counter()
        log.warning("a batch of %d rows failed (%s); writing them one by one", len(batch), _one_line(first_error))
        dead: list[tuple[Call, str]] = []
        con = self._connect()
        try:
            written = 0
            for call in batch:
                con.execute("BEGIN TRANSACTION")
                try:
                    appender = con.appender(CALLS_TABLE, columns=list(CALL_COLUMNS))
                    appender.append_row(*_to_row(call))
                    appender.flush()
                    con.execute("COMMIT")
                    written += 1
                except duckdb.IOException:
                    con.execute("ROLLBACK")
                    raise
                except Exception as exc:  # noqa: BLE001 - the row, not the file
                    con.execute("ROLLBACK")
                    dead.append((call, _one_line(exc)))
            totals = dict(counts)
            totals["rows_written"] = totals.get("rows_written", 0) + written
            if dead:
                totals["rows_dead_lettered"] = totals.get("rows_dead_lettered", 0) + len(dead)
            _add_counters(con, totals)
        finally:
            self._release(con)
        if dead:
            self._dead_lettered += len(dead)
            write_dead_letters(self.dead_letter_path, dead)
            log.error("%d rows DuckDB refused were set aside in %s (rows_dead_lettered=%d)",
                      len(dead), self.dead_letter_path, self._dead_lettered)
        return (time.perf_counter() - started) * 1000.0, written

    def _connect(self) -> duckdb.DuckDBPyConnection:
        """Open the file read-write with its schema current; it is kept 0600
        whatever the umask (rows say who called what, and when).

        The file is ATTACHed to an in-memory DuckDB the store keeps, and
        DETACHed by :meth:`_release`: 4 ms of CPU an open and close instead of
        40 ms for a new connection, which builds a whole database instance
        (its catalogue of built-in functions) every time (DuckDB 2.0.1, this
        VM).  DETACH checkpoints and releases the file's lock as closing a
        connection does, so readers open it between flushes as before."""
        self._attached.acquire()
        try:
            host = self._host_connection()
            host.execute(f"ATTACH {sql_string(str(self.path))} AS {FILE_ALIAS} (ROW_GROUP_SIZE {ROW_GROUP_SIZE})")
        except BaseException:
            self._attached.release()
            raise
        try:
            host.execute(f"USE {FILE_ALIAS}")
            _keep_private(self.path)
            prepare(host, self.path, adopt=self.adopt)
        except BaseException:
            self._release(host)
            raise
        return host

    def _host_connection(self) -> duckdb.DuckDBPyConnection:
        if self._host is not None and self._host_opens >= HOST_OPENS:
            self._host.close()
            self._host = None
        if self._host is None:
            self._host_opens = 0
            # One thread, from the open on: a flush is one appender and a commit,
            # and each worker thread DuckDB starts gets its own malloc arena,
            # which kept growing the agent's heap (+6 MB / 100k calls).
            # Without the bulk-deallocation flush, what a flush freed stayed
            # in DuckDB's allocator: +4.7 MB RssAnon over 1,000 flushes of
            # 300 rows with one instance; with it, flat (DuckDB 2.0.1).
            host = duckdb.connect(":memory:", config={
                "threads": STORE_THREADS, "allocator_bulk_deallocation_flush_threshold": "0MB"})
            host.execute("SET TimeZone = 'UTC'")
            self._host = host
        self._host_opens += 1
        return self._host

    def _close_host(self) -> None:
        with self._attached:  # never while a flush has the file attached
            if self._host is not None:
                self._host.close()
                self._host = None

    def _release(self, con: duckdb.DuckDBPyConnection) -> None:
        """Close the file opened by :meth:`_connect` (detach it)."""
        try:
            con.execute("USE memory")
            con.execute(f"DETACH {FILE_ALIAS}")
        except BaseException:
            # The file may still be attached: closing the instance lets it go,
            # and the next flush starts from a new one.
            self._host = None
            try:
                con.close()
            except duckdb.Error:
                pass
            raise
        finally:
            self._attached.release()

    def check(self, timeout: float | None = None) -> None:
        """At start: raise :class:`DatabaseUnusable` (one line) unless the file
        can be written: a DuckDB file, ours or new (or adopted), a schema this
        code knows, a writable folder.  Creates the file and its schema."""
        check_folder(self.path)
        deadline = time.monotonic() + (self.lock_retry if timeout is None else timeout)
        while True:
            try:
                con = self._connect()
                break
            except DatabaseUnusable:
                raise
            except duckdb.Error as exc:
                if is_lock_error(exc) and time.monotonic() < deadline:
                    time.sleep(LOCK_POLL_INTERVAL)
                    continue
                if is_lock_error(exc):
                    raise DatabaseUnusable(f"{self.path} stayed locked by another process") from None
                raise describe_open_error(self.path, exc) from None
        try:
            con.execute("CHECKPOINT")  # a real write: a read-only file fails here
        except duckdb.Error as exc:
            raise DatabaseUnusable(f"cannot write {self.path}: {_one_line(exc)}") from None
        finally:
            self._release(con)
            self._close_host()  # an agent that makes no call holds no in-memory DuckDB

    @property
    def dead_letter_path(self) -> Path:
        return dead_letter_path(self.path)

    def close(self) -> None:
        """Final flush, retrying for up to ``lock_retry`` seconds while a
        reader holds the file.  Rows still pending after that are counted as
        dropped and logged.  Later ``add`` calls are dropped."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        if self._flusher is not None:
            self._tick_wanted.set()
            self._flusher.join()  # a flush under way ends (the one below waits for it anyway)
        self.flush(timeout=self.lock_retry)
        self._close_host()
        with self._lock:
            left = len(self._pending)
            if left:
                self._pending.clear()
                self._drop(left)
        if left:
            log.error(
                "%s stayed locked for %.1f s: %d rows could not be written",
                self.path,
                self.lock_retry,
                left,
            )

    def __enter__(self) -> CallStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def stats(self) -> dict[str, int | float | None]:
        with self._lock:
            pending = len(self._pending) + self._inflight
            dropped = self._dropped
        return {
            "rows_written": self._rows_written,
            "pending": pending,
            "dropped": dropped,
            "flushes": self._flushes,
            "lock_conflicts": self._lock_conflicts,
            "flush_errors": self._flush_errors,
            "dead_lettered": self._dead_lettered,
            "last_flush_ms": self._last_flush_ms,
        }
