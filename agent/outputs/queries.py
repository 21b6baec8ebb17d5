"""Read-side helpers for the CLI: SQL, reports, unpriced models, re-pricing.

Every reader opens the file read-only and closes it as soon as the rows are
fetched, so the agent's next flush is not kept waiting.  The agent holds the
file only for the length of a flush (tens of milliseconds); a reader that
finds it locked retries for a few seconds before giving up.

Timestamps come back as timezone-aware UTC datetimes.  (DuckDB's Python
client needs pytz to return ``TIMESTAMPTZ`` values; we ask DuckDB for the
UTC wall time instead and attach UTC ourselves, so pytz is not needed.)
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb

from lumen_agent.outputs.query_terms import REPORT_KEYS, QueryError
from lumen_agent.outputs.schema import CALLS_TABLE, SCHEMA_VERSION, SchemaError, schema_version
from lumen_agent.outputs.store import connect_when_free, is_lock_error

# How long a reader waits for the agent to finish a flush.
DEFAULT_LOCK_TIMEOUT = 5.0
# Rows fetched per round trip when re-pricing.
_REPRICE_CHUNK = 50_000


@dataclass(slots=True)
class Result:
    columns: list[str]
    rows: list[tuple[Any, ...]] = field(default_factory=list)

    def dicts(self) -> list[dict[str, Any]]:
        return [dict(zip(self.columns, r, strict=False)) for r in self.rows]


def _one_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


# -- connections ---------------------------------------------------------


def _connect(path: Path, read_only: bool, timeout: float) -> duckdb.DuckDBPyConnection:
    try:
        con = connect_when_free(path, read_only=read_only, timeout=timeout)
    except duckdb.Error as exc:
        if is_lock_error(exc):
            raise QueryError(f"{path} stayed locked by another process for {timeout:g} s; try again") from None
        raise QueryError(f"cannot open {path}: {_one_line(exc)}") from None
    con.execute("SET TimeZone = 'UTC'")
    return con


def open_readonly(
    path: str | os.PathLike[str], timeout: float = DEFAULT_LOCK_TIMEOUT
) -> duckdb.DuckDBPyConnection:
    """A read-only connection; retries while the writer is mid-flush."""
    return _connect(_existing(path), read_only=True, timeout=timeout)


def open_readwrite(
    path: str | os.PathLike[str], timeout: float = DEFAULT_LOCK_TIMEOUT
) -> duckdb.DuckDBPyConnection:
    return _connect(_existing(path), read_only=False, timeout=timeout)


def _existing(path: str | os.PathLike[str]) -> Path:
    path = Path(path)
    if not path.is_file():
        raise QueryError(f"no database at {path} (has the agent run yet? use --db PATH)")
    return path


@contextmanager
def _reading(path: str | os.PathLike[str]) -> Iterator[duckdb.DuckDBPyConnection]:
    con = open_readonly(path)
    try:
        yield con
    finally:
        con.close()


def _fetch(rel: duckdb.DuckDBPyRelation) -> Result:
    """Fetch a relation, turning TIMESTAMPTZ into aware UTC datetimes."""
    columns = list(rel.columns)
    types = [str(t) for t in rel.types]
    tz_cols = {i for i, t in enumerate(types) if t == "TIMESTAMP WITH TIME ZONE"}
    # Nested or other zoned types (lists of TIMESTAMPTZ, TIMETZ) become text.
    text_cols = {i for i, t in enumerate(types) if "WITH TIME ZONE" in t and i not in tz_cols}
    if tz_cols or text_cols:
        exprs = []
        for i in range(len(columns)):
            ref = f"#{i + 1}"
            if i in tz_cols:
                exprs.append(f"{ref} AT TIME ZONE 'UTC'")
            elif i in text_cols:
                exprs.append(f"CAST({ref} AS VARCHAR)")
            else:
                exprs.append(ref)
        rel = rel.project(", ".join(exprs))
    rows = rel.fetchall()
    if tz_cols:
        rows = [
            tuple(
                v.replace(tzinfo=UTC) if i in tz_cols and v is not None else v
                for i, v in enumerate(row)
            )
            for row in rows
        ]
    return Result(columns, rows)


def _query(con: duckdb.DuckDBPyConnection, sql: str, params: list | None = None) -> Result:
    try:
        rel = con.sql(sql, params=params) if params else con.sql(sql)
        if rel is None:  # a statement without a result
            return Result([], [])
        return _fetch(rel)
    except duckdb.Error as exc:
        raise QueryError(_one_line(exc)) from None


def run_sql(path: str | os.PathLike[str], query: str) -> Result:
    """Run any SQL on a read-only connection."""
    if not query.strip():
        raise QueryError("empty query")
    with _reading(path) as con:
        return _query(con, query)


# -- --since -------------------------------------------------------------

_RELATIVE = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$", re.IGNORECASE)
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_since(value: str, now: datetime | None = None) -> datetime:
    """``7d``, ``24h``, ``30m``, ``90s``, ``2w`` before now, or an ISO date or
    datetime (a date means its UTC midnight; a naive datetime is UTC)."""
    now = now or datetime.now(UTC)
    if m := _RELATIVE.match(value):
        return now - timedelta(**{_UNITS[m.group(2).lower()]: int(m.group(1))})
    try:
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", value.strip()):
            d = date.fromisoformat(value.strip())
            return datetime(d.year, d.month, d.day, tzinfo=UTC)
        at = datetime.fromisoformat(value.strip())
    except ValueError:
        raise QueryError(
            f"bad --since {value!r}: use e.g. 7d, 24h, 30m or an ISO date (2026-01-31)"
        ) from None
    return at if at.tzinfo else at.replace(tzinfo=UTC)


# -- report --------------------------------------------------------------


def report(path: str | os.PathLike[str], by: str, since: str | None = None) -> Result:
    """Calls, tokens and spend grouped by one dimension.

    Token sums and cost are 0 rather than NULL for a group without them;
    ``unpriced_calls`` says how many calls had tokens but no price, i.e. how
    far ``cost_usd`` understates the spend.  A group whose only calls with
    tokens are unpriced has no known cost: ``cost_usd`` is NULL there, never
    0, which would read as free.  Days are UTC days.
    """
    if by not in REPORT_KEYS:
        raise QueryError(f"bad --by {by!r}: choose one of {', '.join(REPORT_KEYS)}")
    expr, name = REPORT_KEYS[by]
    where, params = "", []
    if since:
        where = "WHERE ts_start >= ?"
        params.append(parse_since(since))
    order = f'"{name}"' if by == "day" else f'cost_usd DESC NULLS LAST, calls DESC, "{name}" NULLS LAST'
    sql = f"""
        SELECT {expr} AS "{name}",
               count(*) AS calls,
               coalesce(sum(input_tokens), 0) AS input_tokens,
               coalesce(sum(output_tokens), 0) AS output_tokens,
               coalesce(sum(cache_read_tokens), 0) AS cache_read_tokens,
               coalesce(sum(cache_write_tokens), 0) AS cache_write_tokens,
               CASE WHEN count(cost_usd) = 0 AND count(*) FILTER (WHERE unpriced) > 0 THEN NULL
                    ELSE CAST(coalesce(sum(cost_usd), 0) AS DECIMAL(38, 8)) END AS cost_usd,
               count(*) FILTER (WHERE unpriced) AS unpriced_calls
        FROM {CALLS_TABLE}
        {where}
        GROUP BY 1
        ORDER BY {order}
    """
    with _reading(path) as con:
        return _query(con, sql, params)


def missing_prices(path: str | os.PathLike[str], since: str | None = None) -> Result:
    """Models seen with tokens but no price (``unpriced``), most calls first."""
    where, params = "WHERE unpriced", []
    if since:
        where += " AND ts_start >= ?"
        params.append(parse_since(since))
    sql = f"""
        SELECT provider,
               model,
               count(*) AS calls,
               coalesce(sum(input_tokens), 0) AS input_tokens,
               coalesce(sum(output_tokens), 0) AS output_tokens,
               min(ts_start) AS first_seen,
               max(ts_start) AS last_seen
        FROM {CALLS_TABLE}
        {where}
        GROUP BY provider, model
        ORDER BY calls DESC, coalesce(sum(input_tokens), 0) + coalesce(sum(output_tokens), 0) DESC,
                 provider, model NULLS LAST
    """
    with _reading(path) as con:
        return _query(con, sql, params)


# -- reprice -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RepriceResult:
    examined: int  # rows in the window
    changed: int  # rows whose cost_usd, price_id or unpriced changed
    newly_priced: int  # had no cost, have one now
    now_unpriced: int  # had tokens and a price, no price row matches any more


def reprice(
    path: str | os.PathLike[str],
    table: Any,
    since: str | None = None,
    timeout: float = DEFAULT_LOCK_TIMEOUT,
) -> RepriceResult:
    """Recompute ``cost_usd``, ``price_id`` and ``unpriced`` of stored rows
    with ``table`` (a :class:`lumen_agent.pricing.table.PriceTable`), the
    way the pipeline prices a new call: the row in force at ``ts_start`` for
    ``model``, else ``request_model``, of the call's provider.  A stated
    charge (``charged_usd``) stays the cost; ``token_cost_usd`` is recomputed.
    (Compaction iterations are not stored: such calls are repriced from their
    summed tokens.)"""
    from lumen_agent.parsers.usage import Usage
    from lumen_agent.pricing.cost import price_call

    where, params = "", []
    if since:
        where = "WHERE ts_start >= ?"
        params.append(parse_since(since))
    con = open_readwrite(path, timeout=timeout)
    try:
        version = schema_version(con)
        if version > SCHEMA_VERSION:  # its columns may mean something else now
            raise SchemaError(f"{path} has schema version {version}, newer than this lumen-agent knows "
                              f"({SCHEMA_VERSION}): not repriced; upgrade lumen-agent")
        result = con.execute(
            f"""SELECT id, CAST(ts_start AT TIME ZONE 'UTC' AS DATE), provider, model, request_model,
                       input_tokens, output_tokens, cache_read_tokens, cache_write_tokens,
                       cache_write_1h_tokens, reasoning_tokens, cost_usd, price_id, unpriced,
                       token_cost_usd, charged_usd, service_tier, web_search_requests,
                       input_audio_tokens, cache_read_audio_tokens
                FROM {CALLS_TABLE} {where}""",
            params,
        )
        examined = 0
        updates: list[tuple] = []
        newly_priced = now_unpriced = 0
        while chunk := result.fetchmany(_REPRICE_CHUNK):
            for (id_, day, provider, model, request_model, inp, out, read, write, write_1h,
                 reasoning, old_cost, old_price_id, old_unpriced, old_token_cost, charged, tier, searches,
                 audio, cached_audio) in chunk:
                examined += 1
                usage = Usage(model=model, input_tokens=inp, output_tokens=out, cache_read_tokens=read,
                              cache_write_tokens=write, cache_write_1h_tokens=write_1h,
                              reasoning_tokens=reasoning, service_tier=tier, web_search_requests=searches,
                              input_audio_tokens=audio, cache_read_audio_tokens=cached_audio,
                              charged_usd=charged)
                priced = price_call(table, usage, provider, request_model, day)
                cost, price_id, unpriced = priced.cost_usd, priced.price_id, priced.unpriced
                if (cost, price_id, unpriced, priced.token_cost_usd) != (
                        old_cost, old_price_id, bool(old_unpriced), old_token_cost):
                    updates.append((id_, cost, price_id, unpriced, priced.token_cost_usd))
                    if old_cost is None and cost is not None:
                        newly_priced += 1
                    if unpriced and not old_unpriced:
                        now_unpriced += 1
        if updates:
            con.execute("BEGIN TRANSACTION")
            try:
                appender = con.appender(
                    CALLS_TABLE,
                    columns=["id", "cost_usd", "price_id", "unpriced", "token_cost_usd"],
                    action="update",
                    key=["id"],
                )
                appender.append_rows(updates)
                appender.flush()
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
    except duckdb.Error as exc:
        raise QueryError(_one_line(exc)) from None
    finally:
        con.close()
    return RepriceResult(examined, len(updates), newly_priced, now_unpriced)
