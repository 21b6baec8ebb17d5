"""What ``lumen-agent budgets`` and ``lumen-agent alerts`` print, read from the database.

``budgets`` rebuilds the budgets the same way the agent does at start
(:func:`lumen_agent.outputs.alerts.table.rebuild` over the stored calls), so
the CLI and the agent cannot disagree about a total.
"""

from __future__ import annotations

import os
from dataclasses import replace
from datetime import datetime

from lumen_agent.outputs.alerts.engine import Engine
from lumen_agent.outputs.alerts.settings import AlertSettings, Budget
from lumen_agent.outputs.alerts.table import rebuild
from lumen_agent.outputs.queries import QueryError, Result, _existing, _fetch, _reading, parse_since

BUDGET_COLUMNS = ("budget", "scope", "period", "period_label", "spent_usd", "limit_usd", "used_percent",
                  "projected_usd", "thresholds_fired", "action")
ALERT_COLUMNS = ("rule", "scope", "budget", "model", "subject", "value", "threshold", "unit", "period", "fired_at",
                 "resolved_at", "calls")


def budget_status(db: str | os.PathLike[str], settings: AlertSettings, budgets: tuple[Budget, ...],
                  at: datetime) -> Result:
    """Per budget: spent, limit, percent, projected spend at the period's end, thresholds fired."""
    if not budgets:
        raise QueryError("no budgets are configured", "add [[budgets]] to the config file (docs/configuration.md)")
    path = _existing(db)
    rules_off = tuple((name, replace(s, enabled=False)) for name, s in settings.rules)
    engine = Engine(replace(settings, rules=rules_off), budgets)
    rebuild(engine, path, at.timestamp())
    rows = engine.budget_rows(at.timestamp())
    return Result(list(BUDGET_COLUMNS), [tuple(r[c] for c in BUDGET_COLUMNS) for r in rows])


def alert_history(db: str | os.PathLike[str], since: str | None = None) -> Result:
    """Alerts fired since ``since`` (every alert when None), oldest first."""
    where, params = "", []
    if since is not None:
        where, params = "WHERE fired_at >= ?", [parse_since(since)]
    with _reading(db) as con:
        tables = {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
        if "alerts" not in tables:
            return Result(list(ALERT_COLUMNS), [])
        rel = con.sql(f"SELECT rule, scope, budget, model, subject, value, threshold, unit, period, fired_at, "
                      f"resolved_at, len(call_ids) AS calls FROM alerts {where} ORDER BY fired_at, rule, scope",
                      params=params or None)
        return _fetch(rel)
