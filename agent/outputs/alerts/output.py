"""The alerts output of the agent: engine, table, sinks and gauges on the run loop.

``on_call`` feeds the engine (microseconds: dictionary updates) and hands
what fired to the log and the sinks' queues; ``on_tick`` lets time pass
(periods end, windows slide), writes the alerts that changed and publishes
the snapshot that ``status``, ``top`` and the gauges read.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

from lumen_agent.outputs.alerts.engine import ZERO, Alert, Engine
from lumen_agent.outputs.alerts.settings import RULES, AlertSettings, Budget
from lumen_agent.outputs.alerts.sinks import SinkWorker, payload, start_sinks
from lumen_agent.outputs.alerts.table import AlertTable, rebuild
from lumen_agent.outputs.base import Output
from lumen_agent.pipeline.call import Call

log = logging.getLogger("lumen_agent.alerts")

# How long close() retries writing the last alerts while a reader holds the file.
CLOSE_RETRY_S = 10.0
# Firing alerts listed in the status (top shows them); the gauges count them all.
MAX_LISTED = 50
# Distinct features with their own spend series; later ones are summed as "other".
MAX_FEATURES = 100
# Calls are evaluated in batches of this many (and at every tick, so an alert
# fires within a second): the rules' state stays warm in the CPU caches
# instead of being interleaved with parsing, which measured 3x cheaper
# (bench/alerts_bench.py).
BATCH_CALLS = 256


class AlertsOutput(Output):
    name = "alerts"

    def __init__(self, db: Path, settings: AlertSettings, budgets: tuple[Budget, ...] = (), *,
                 clock: Callable[[], float] = time.time, host: str | None = None,
                 sinks: dict[str, SinkWorker] | None = None, batch: int = BATCH_CALLS) -> None:
        self.engine = Engine(settings, budgets)
        self.batch = batch
        self._pending: list[Call] = []
        self.table = AlertTable(db)
        self.db = Path(db)
        self.clock = clock
        self.host = host or socket.gethostname()
        self.sinks = start_sinks(settings.sinks) if sinks is None else sinks
        self.fired = 0
        self.resolved = 0
        self.rebuilt: dict[str, int] = {}
        self.snapshot: dict[str, Any] = {}
        # Spend by feature since start (lumen_feature_cost_usd_total: the agent's
        # call metrics carry no feature label).
        self._feature_cost: dict[str, Decimal] = {}

    def start(self) -> None:
        """State from the database (before the first call), then act on what that decided."""
        self.rebuilt = rebuild(self.engine, self.db, self.clock())
        fired_now = {a.id for kind, a in self.engine.changes if kind == "fire"}
        for kind, alert in self.engine.changes:
            if kind == "resolve":  # a stored row to update
                self.table.adopt(alert.id)
        for alert in self.engine.firing.values():
            if not alert.silent and alert.id not in fired_now:
                self.table.adopt(alert.id)
        log.info("alerts state rebuilt calls=%d alerts=%d adopted=%d fired=%d resolved=%d",
                 self.rebuilt["calls"], self.rebuilt["alerts"], self.rebuilt["adopted"], self.rebuilt["fired"],
                 self.rebuilt["resolved"])
        self._dispatch()
        self.publish()

    # -- Output -----------------------------------------------------------------

    def on_call(self, call: Call) -> None:
        self._pending.append(call)
        if len(self._pending) >= self.batch:
            self.evaluate()

    def evaluate(self) -> None:
        """Run the calls waiting for the rules through them, and act on what fired."""
        calls, self._pending = self._pending, []
        observe = self.engine.observe
        spent = self._feature_cost
        for call in calls:
            if call.cost_usd is not None:
                feature = call.feature or ""
                if feature not in spent and len(spent) >= MAX_FEATURES:
                    feature = "other"
                spent[feature] = spent.get(feature, ZERO) + call.cost_usd
            observe(call)
        if self.engine.changes:
            self._dispatch()

    def on_tick(self, now: float) -> None:
        if self._pending:
            self.evaluate()
        self.engine.advance(self.clock())
        if self.engine.changes:
            self._dispatch()
        self.table.flush()
        self.publish()

    def close(self) -> None:
        if self._pending:
            self.evaluate()
        if self.engine.changes:
            self._dispatch()
        deadline = time.monotonic() + CLOSE_RETRY_S
        while self.table.pending() and time.monotonic() < deadline:
            if not self.table.flush():
                time.sleep(0.05)
        if self.table.pending():
            log.error("%d alert changes could not be written to %s", self.table.pending(), self.db)
        for sink in self.sinks.values():
            sink.close()

    def stats(self) -> dict[str, Any]:
        return self.snapshot

    # -- what fired ----------------------------------------------------------------

    def _dispatch(self) -> None:
        changes, self.engine.changes = self.engine.changes, []
        for kind, alert in changes:
            self.table.changed(alert)
            if kind == "update":
                continue
            status = "firing" if kind == "fire" else "resolved"
            if kind == "fire":
                self.fired += 1
                log.warning("alert firing rule=%s scope=%s%s value=%s threshold=%s %s period=%s id=%s",
                            alert.rule, alert.scope, _about(alert), alert.value, alert.threshold, alert.unit,
                            alert.period, alert.id)
            else:
                self.resolved += 1
                log.warning("alert resolved rule=%s scope=%s%s value=%s threshold=%s %s period=%s id=%s",
                            alert.rule, alert.scope, _about(alert), alert.value, alert.threshold, alert.unit,
                            alert.period, alert.id)
            if alert.notify:
                body = payload(alert, status, self.host)
                for name in alert.notify:
                    sink = self.sinks.get(name)
                    if sink is not None:
                        sink.submit(body)

    def publish(self) -> None:
        """A fresh snapshot for other threads (status file, top, /metrics); never mutated after."""
        engine = self.engine
        budgets = engine.budget_rows(self.clock())
        firing = [a for a in engine.firing.values() if not a.silent]
        enabled = {rule for rule, s in engine.settings.rules if s.enabled}
        by_rule = {rule: 0 for rule in ("budget", *RULES) if rule == "budget" or rule in enabled}
        for alert in firing:
            by_rule[alert.rule] = by_rule.get(alert.rule, 0) + 1
        spend_today = {}
        for scope in list(engine._scopes):
            figures = engine.spike_figures(scope)
            if figures is not None:
                spend_today[scope] = figures
        self.snapshot = {
            "budgets": budgets,
            "firing": [_listed(a) for a in sorted(firing, key=lambda a: a.fired_at)[-MAX_LISTED:]],
            "firing_by_rule": by_rule,
            "spend_today": spend_today,
            "feature_cost": dict(self._feature_cost),
            "fired": self.fired,
            "resolved": self.resolved,
            "pending_writes": self.table.pending(),
            "tenants_folded": engine.tenants_folded,
            "sinks": {name: s.stats() for name, s in self.sinks.items()},
        }

    # -- proxy enforcement -------------------------------------------------------------

    def blocking(self) -> list[Budget]:
        """Budgets with action "block" whose period is spent."""
        return [s.budget for s in self.engine.budgets if s.budget.action == "block" and s.exhausted()]


def _about(alert: Alert) -> str:
    parts = []
    if alert.budget:
        parts.append(f" budget={alert.budget}")
    if alert.subject:
        parts.append(f" subject={alert.subject}")
    return "".join(parts)


def _listed(alert: Alert) -> dict[str, Any]:
    return {"rule": alert.rule, "scope": alert.scope, "budget": alert.budget, "model": alert.model,
            "subject": alert.subject, "value": str(alert.value), "threshold": str(alert.threshold),
            "unit": alert.unit, "fired_at": alert.fired_at}


def wanted(config) -> bool:
    """False when no budget is set and every rule is off."""
    return bool(config.budgets) or any(s.enabled for _, s in config.alerts.rules)


def install(agent, config, metrics_server=None) -> AlertsOutput | None:
    """Evaluate budgets and rules in ``agent`` (nothing when every rule is off and no budget is set)."""
    settings: AlertSettings = config.alerts
    if not wanted(config):
        return None
    output = AlertsOutput(config.db, settings, config.budgets)
    output.start()
    agent.add_output(output)
    if metrics_server is not None:
        from lumen_agent.outputs.alerts import gauges

        metrics_server.metrics.extra.append(gauges.Collector(lambda: output.snapshot).collect)
    return output
