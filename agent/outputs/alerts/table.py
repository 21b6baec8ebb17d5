"""The ``alerts`` table: writing alerts as they fire and resolve, and the state at start.

Like the call store, the writer never keeps the file open: each
:meth:`AlertTable.flush` opens it, inserts or updates the alerts that changed
since the last flush in one transaction, and closes it.  A reader holding the
file makes the flush wait for the next tick; nothing is lost.

At start, :func:`rebuild` replays the stored calls of the longest look-back
any budget or rule needs through a muted engine (state only), then reconciles
what the engine finds firing with what the table says is firing: an alert the
table has is adopted (no second alert), one it lacks fires now, and one the
table has but the calls no longer support resolves now.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb

from lumen_agent.outputs.alerts.engine import INF, Alert, Engine
from lumen_agent.outputs.schema import migrate
from lumen_agent.outputs.store import is_lock_error
from lumen_agent.pipeline.call import Outcome

log = logging.getLogger("lumen_agent.alerts")

DAY_S = 86_400
# Alerts read back at start: old enough to cover every calendar period (a month).
ALERT_LOOKBACK_DAYS = 32
# Rows fetched per round trip while replaying stored calls.
REBUILD_CHUNK = 50_000

COLUMNS = ("id", "rule", "scope", "budget", "model", "subject", "period", "value", "threshold", "unit",
           "fired_at", "resolved_at", "expires_at", "call_ids")


def _ts(value: float | None) -> datetime | None:
    if value is None or value == INF:
        return None
    return datetime.fromtimestamp(value, UTC)


def _row(alert: Alert) -> list[Any]:
    return [alert.id, alert.rule, alert.scope, alert.budget, alert.model, alert.subject, alert.period, alert.value,
            alert.threshold, alert.unit, _ts(alert.fired_at), _ts(alert.resolved_at), _ts(alert.expires_at),
            list(alert.call_ids)]


class AlertTable:
    """Buffers alert changes on the run loop; :meth:`flush` writes them."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._pending: dict[str, Alert] = {}
        self._stored: set[str] = set()  # ids with a row already (firing ones; resolved ones are forgotten)
        self.written = 0
        self.lock_conflicts = 0
        self.errors = 0

    def adopt(self, alert_id: str) -> None:
        self._stored.add(alert_id)

    def changed(self, alert: Alert) -> None:
        if not alert.silent:
            self._pending[alert.id] = alert

    def pending(self) -> int:
        return len(self._pending)

    def flush(self) -> int:
        if not self._pending:
            return 0
        batch = list(self._pending.values())
        try:
            con = duckdb.connect(str(self.path))
        except duckdb.Error as exc:
            if is_lock_error(exc):
                self.lock_conflicts += 1
            else:
                self.errors += 1
                log.error("cannot open %s to write alerts: %s", self.path, exc)
            return 0
        try:
            con.execute("SET TimeZone = 'UTC'")
            migrate(con)
            con.execute("BEGIN TRANSACTION")
            for alert in batch:
                if alert.id in self._stored:
                    con.execute("UPDATE alerts SET value = ?, threshold = ?, resolved_at = ?, call_ids = ? "
                                "WHERE id = ?", [alert.value, alert.threshold, _ts(alert.resolved_at),
                                                 list(alert.call_ids), alert.id])
                else:
                    con.execute(f"INSERT INTO alerts ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})",
                                _row(alert))
            con.execute("COMMIT")
        except duckdb.Error as exc:
            self.errors += 1
            log.error("writing %d alerts to %s failed, kept for the next try: %s", len(batch), self.path, exc)
            return 0
        finally:
            con.close()
        for alert in batch:
            if self._pending.get(alert.id) is alert:
                del self._pending[alert.id]
            if alert.resolved_at is None:
                self._stored.add(alert.id)
            else:
                self._stored.discard(alert.id)
        self.written += len(batch)
        return len(batch)


# -- state at start ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StoredCall:
    """The columns of a stored call that the engine reads."""

    id: str
    ts_start: datetime
    cost_usd: Decimal | None
    model: str | None
    request_model: str | None
    tenant: str | None
    feature: str | None
    api_key_hash: str | None
    process: str | None
    exe: str | None
    unit: str | None
    user: str | None
    container_id: str | None
    provider: str | None
    host: str | None
    outcome: Outcome
    unpriced: bool
    endpoint: str | None
    input_tokens: int | None
    output_tokens: int | None


_CALL_SQL = ("SELECT id, epoch_us(ts_start), cost_usd, model, request_model, tenant, feature, api_key_hash, "
             "process, exe, unit, \"user\", container_id, provider, host, outcome, coalesce(unpriced, false), "
             "endpoint, input_tokens, output_tokens FROM llm_calls WHERE ts_start >= ? AND ts_start <= ? ORDER BY ts_start")
_OUTCOMES = {o.value: o for o in Outcome}


def lookback_days(engine: Engine) -> int:
    """How far back the budgets and rules look: the longest period, new-model memory or baseline, plus a day."""
    days = [1]
    for state in engine.budgets:
        days.append({"day": 1, "24h": 1, "week": 7, "7d": 7, "month": 31}[state.budget.period])
    for _rule, settings in engine.settings.rules:
        if not settings.enabled:
            continue
        params = dict(settings.params)
        days.append(params.get("days", 0))
        days.append(params.get("baseline_days", 0))
        if "window_minutes" in params:
            days.append(params["window_minutes"] // 1440 + 1)
    return max(days) + 1


def _tables(con: duckdb.DuckDBPyConnection) -> set[str]:
    return {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}


def rebuild(engine: Engine, db: Path, now: float) -> dict[str, int]:
    """Bring ``engine`` to where it was at ``now`` from the database; returns what was read.

    Leaves in ``engine.changes`` only what the reconciliation decided (alerts
    to fire now, stored alerts to resolve now).
    """
    stats = {"calls": 0, "alerts": 0, "adopted": 0, "fired": 0, "resolved": 0}
    stored: list[Alert] = []
    engine.muted = True
    try:
        if Path(db).exists():
            stored = _replay(engine, Path(db), now, stats)
        engine.advance(now)
    finally:
        engine.muted = False
        engine.changes.clear()
    stats["alerts"] = len(stored)
    firing_rows = {a.key: a for a in stored if a.resolved_at is None}
    known = {a.key for a in stored}
    for key, alert in list(engine.firing.items()):
        row = firing_rows.pop(key, None)
        if row is not None:
            alert.id, alert.fired_at, alert.call_ids = row.id, row.fired_at, row.call_ids
            stats["adopted"] += 1
        elif key in known:
            alert.silent = True  # it fired and resolved already in this period
        else:
            engine.changes.append(("fire", alert))
            stats["fired"] += 1
    for row in firing_rows.values():
        row.resolved_at = min(now, row.expires_at)
        engine.changes.append(("resolve", row))
        stats["resolved"] += 1
    return stats


def _replay(engine: Engine, db: Path, now: float, stats: dict[str, int]) -> list[Alert]:
    """Stream the stored calls of the look-back through ``engine`` (chunk by
    chunk: a month of calls is never all in memory); return the recent alerts."""
    from lumen_agent.outputs.queries import open_readonly

    stored: list[Alert] = []
    con = open_readonly(db)  # waits out a writer's flush
    try:
        tables = _tables(con)
        since = datetime.fromtimestamp(now - lookback_days(engine) * DAY_S, UTC)
        if "llm_calls" in tables:
            cur = con.execute(_CALL_SQL, [since, datetime.fromtimestamp(now, UTC)])
            observe = engine.observe
            while rows := cur.fetchmany(REBUILD_CHUNK):
                for row in rows:
                    observe(_stored_call(row))  # type: ignore[arg-type]  # StoredCall has what it reads
                stats["calls"] += len(rows)
        if "alerts" in tables:
            horizon = datetime.fromtimestamp(now - ALERT_LOOKBACK_DAYS * DAY_S, UTC)
            rows = con.execute(
                "SELECT id, rule, scope, budget, model, subject, period, value, threshold, unit, "
                "epoch_us(fired_at), epoch_us(resolved_at), epoch_us(expires_at), call_ids FROM alerts "
                "WHERE resolved_at IS NULL OR fired_at >= ? ORDER BY fired_at", [horizon]).fetchall()
            stored = [_stored_alert(r) for r in rows]
    finally:
        con.close()
    return stored


def _dt(us: int) -> datetime:
    return datetime.fromtimestamp(us / 1_000_000, UTC)


def _stored_call(r: tuple) -> StoredCall:
    return StoredCall(r[0], _dt(r[1]), r[2], r[3], r[4], r[5], r[6], r[7], r[8], r[9], r[10], r[11], r[12],
                      r[13], r[14], _OUTCOMES.get(r[15], Outcome.ERROR), bool(r[16]), r[17], r[18], r[19])


def _stored_alert(r: tuple) -> Alert:
    return Alert(id=r[0], rule=r[1], scope=r[2], budget=r[3], model=r[4], subject=r[5], period=r[6],
                 value=r[7], threshold=r[8], unit=r[9], fired_at=r[10] / 1e6,
                 resolved_at=None if r[11] is None else r[11] / 1e6,
                 expires_at=INF if r[12] is None else r[12] / 1e6, call_ids=list(r[13] or []))
