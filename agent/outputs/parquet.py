"""Parquet export: the calls since the last export, every N minutes and at stop.

Files land in ``ROOT/host=H/date=YYYY-MM-DD/part-<first>-<last>.parquet``,
hive-partitioned, so DuckDB, ClickHouse, Trino or Spark read a whole fleet's
calls from one folder (docs/export.md).

Exactly once, without a transaction spanning the database and the files:

* ``llm_calls`` is append-only, so its ``rowid`` numbers rows in the order
  they were stored.  An export takes the rows after the high-water mark up to
  the current last row, ``[first, last]``, and names every file it writes
  ``part-<first>-<last>``: the range, not the time, is the file's identity.
* Each file is written under a temporary name (no ``.parquet`` suffix, so a
  ``**/*.parquet`` glob never sees it) and renamed into place: a reader sees
  a whole file or none.
* Only then is the mark moved to ``last``, in a transaction of its own.
* After a crash anywhere in between, the mark still says ``first - 1``.  If
  any ``part-<first>-<last>`` file already exists, that range is written
  again, exactly, and every file of it is replaced by an identical one (a
  range is immutable once stored); otherwise nothing of it was published and
  the next export starts afresh.  No call is lost or written twice.

The export runs on a worker thread so capture never waits for it; it opens
the database the way the store does (and retries later when a reader holds
the lock).
"""

from __future__ import annotations

import logging
import os
import re
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb

from lumen_agent.outputs.base import Output
from lumen_agent.outputs.schema import CALLS_TABLE
from lumen_agent.outputs.store import connect_when_free, is_lock_error, sql_string

log = logging.getLogger(__name__)

MARKS_TABLE = "lumen_export_marks"
# Digits of the row numbers in file names: lexical order is numeric order.
ROW_DIGITS = 20
# How long a round waits for the database while it is held.
LOCK_WAIT_S = 5.0
_PART = re.compile(r"part-(\d+)-(\d+)\.parquet$")


@dataclass(frozen=True, slots=True)
class ExportResult:
    first: int
    last: int
    files: tuple[Path, ...]


def _part_name(first: int, last: int) -> str:
    return f"part-{first:0{ROW_DIGITS}d}-{last:0{ROW_DIGITS}d}.parquet"


class ParquetExporter:
    """One database's calls into ``root``; :meth:`export_once` does one round."""

    def __init__(self, db: Path, root: Path, host: str | None = None) -> None:
        self.db = Path(db)
        self.root = Path(root)
        self.host = host or socket.gethostname()
        self.host_dir = self.root / f"host={self.host}"
        self.mark_name = f"parquet:{self.root.resolve()}"

    def export_once(self) -> ExportResult | None:
        """Export what is new (or finish an interrupted range); None when nothing was."""
        # The store's flush holds the file for milliseconds every few seconds;
        # a reader holding it longer makes this round give up (next round).
        con = connect_when_free(self.db, timeout=LOCK_WAIT_S)
        try:
            con.execute("SET TimeZone = 'UTC'")
            if not _has_table(con, CALLS_TABLE):
                return None
            con.execute(f"CREATE TABLE IF NOT EXISTS {MARKS_TABLE} (name VARCHAR PRIMARY KEY, "
                        "high_water BIGINT NOT NULL, updated_at TIMESTAMPTZ NOT NULL)")
            start = self._mark(con) + 1
            first, files = start, []
            interrupted = self._interrupted_range_end(first)
            if interrupted is not None:  # finish what a crash left half published
                files += self._write_range(con, first, interrupted)
                self._set_mark(con, interrupted)
                first = interrupted + 1
            last = con.execute(f"SELECT max(rowid) FROM {CALLS_TABLE}").fetchone()[0]
            if last is not None and last >= first:
                files += self._write_range(con, first, last)
                self._set_mark(con, last)
            else:
                last = first - 1
            self._remove_temporary_files()
            return ExportResult(start, last, tuple(files)) if last >= start else None
        finally:
            con.close()

    # -- the steps ------------------------------------------------------------

    def _mark(self, con: duckdb.DuckDBPyConnection) -> int:
        row = con.execute(f"SELECT high_water FROM {MARKS_TABLE} WHERE name = ?", [self.mark_name]).fetchone()
        return row[0] if row else -1

    def _set_mark(self, con: duckdb.DuckDBPyConnection, last: int) -> None:
        con.execute(f"INSERT INTO {MARKS_TABLE} VALUES (?, ?, now()) ON CONFLICT (name) DO UPDATE SET "
                    "high_water = excluded.high_water, updated_at = excluded.updated_at", [self.mark_name, last])

    def _interrupted_range_end(self, first: int) -> int | None:
        """``last`` of a range starting at ``first`` that a crash left published in part."""
        prefix = f"part-{first:0{ROW_DIGITS}d}-"
        for path in self.host_dir.glob(f"date=*/{prefix}*.parquet"):
            match = _PART.search(path.name)
            if match:
                return int(match.group(2))
        return None

    def _write_range(self, con: duckdb.DuckDBPyConnection, first: int, last: int) -> list[Path]:
        in_range = f"rowid BETWEEN {int(first)} AND {int(last)}"
        day = "CAST(ts_start AT TIME ZONE 'UTC' AS DATE)"
        days = [row[0] for row in con.execute(
            f"SELECT DISTINCT {day} FROM {CALLS_TABLE} WHERE {in_range} ORDER BY 1").fetchall()]
        written = []
        for d in days:
            folder = self.host_dir / f"date={d.isoformat()}"
            folder.mkdir(parents=True, exist_ok=True)
            final = folder / _part_name(first, last)
            temporary = folder / f".{final.name}.tmp"
            con.execute(f"COPY (SELECT * FROM {CALLS_TABLE} WHERE {in_range} AND {day} = ? ORDER BY rowid) "
                        f"TO {sql_string(str(temporary))} (FORMAT parquet, COMPRESSION zstd)", [d])
            _fsync(temporary)
            os.replace(temporary, final)
            _fsync(folder)
            written.append(final)
        return written

    def _remove_temporary_files(self) -> None:
        for path in self.host_dir.glob("date=*/.part-*.tmp"):
            try:
                path.unlink()
            except OSError:
                pass


def _has_table(con: duckdb.DuckDBPyConnection, name: str) -> bool:
    return bool(con.execute("SELECT count(*) FROM duckdb_tables() WHERE table_name = ?", [name]).fetchone()[0])


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class ParquetExport(Output):
    """The exporter as an agent output: a round every ``interval`` seconds on
    its own thread, and a last one at stop (after the store's final flush)."""

    name = "parquet"

    def __init__(self, exporter: ParquetExporter, interval: float) -> None:
        self._exporter = exporter
        self._interval = interval
        self._next = time.monotonic() + interval
        self._worker: threading.Thread | None = None
        self._exports = 0
        self._files = 0
        self._rows = 0
        self._lock_conflicts = 0
        self._errors = 0

    def on_tick(self, now: float) -> None:
        if now < self._next or (self._worker is not None and self._worker.is_alive()):
            return
        self._next = now + self._interval
        self._worker = threading.Thread(target=self._round, name="lumen-parquet", daemon=True)
        self._worker.start()

    def close(self) -> None:
        if self._worker is not None:
            self._worker.join()
        self._round()

    def _round(self) -> None:
        try:
            result = self._exporter.export_once()
        except duckdb.Error as exc:
            if is_lock_error(exc):
                self._lock_conflicts += 1  # a reader holds the file: next round
                return
            self._errors += 1
            log.warning("parquet export failed root=%s error=%s", self._exporter.root, exc)
            return
        except OSError as exc:
            self._errors += 1
            log.warning("parquet export failed root=%s error=%s", self._exporter.root, exc)
            return
        if result is not None:
            self._exports += 1
            self._files += len(result.files)
            self._rows += result.last - result.first + 1
            log.info("parquet export rows=%d files=%d root=%s", result.last - result.first + 1,
                     len(result.files), self._exporter.root)

    def stats(self) -> dict[str, Any]:
        return {"exports": self._exports, "files": self._files, "rows": self._rows,
                "lock_conflicts": self._lock_conflicts, "errors": self._errors}
