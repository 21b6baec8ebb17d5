"""The alert and budget gauges for Prometheus, from the alerts output's published snapshot.

:func:`families` is the one list of what is exported; :class:`Collector`
hands it to ``prometheus_client``: to a registry (``registry.register(Collector(get))``)
or to the agent's own ``/metrics`` (``metrics.extra.append(Collector(get).collect)``).
The snapshot is a fresh dict each second, never mutated: a scrape reads it
without a lock.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

Family = tuple[str, str, str, list[tuple[tuple[tuple[str, str], ...], float]]]

EXPORTED = ("lumen_budget_used_ratio", "lumen_budget_spent_usd", "lumen_budget_limit_usd", "lumen_alert_firing",
            "lumen_spend_today_usd", "lumen_spend_daily_baseline_usd", "lumen_alert_sink_failures_total",
            "lumen_alert_sink_dropped_total", "lumen_feature_cost_usd_total")


def families(snapshot: Mapping[str, Any] | None) -> list[Family]:
    snap = snapshot or {}
    budgets = snap.get("budgets") or []
    spike = snap.get("spend_today") or {}
    sinks = snap.get("sinks") or {}
    return [
        ("lumen_budget_used_ratio", "gauge", "Spend of the budget's current period over its amount (1 = all of it).",
         [((("budget", b["budget"]),), float(b["spent_usd"]) / float(b["limit_usd"])) for b in budgets]),
        ("lumen_budget_spent_usd", "gauge", "Spend of the budget's current period, US dollars.",
         [((("budget", b["budget"]),), float(b["spent_usd"])) for b in budgets]),
        ("lumen_budget_limit_usd", "gauge", "The budget's amount per period, US dollars.",
         [((("budget", b["budget"]),), float(b["limit_usd"])) for b in budgets]),
        ("lumen_alert_firing", "gauge", "Alerts firing now, by rule (budget, spend_spike, new_model, ...).",
         [((("rule", rule),), n) for rule, n in sorted((snap.get("firing_by_rule") or {}).items())]),
        ("lumen_spend_today_usd", "gauge", "Spend of the current day (alerts time zone), by scope (all, tenant=...).",
         [((("scope", scope),), float(today)) for scope, (today, _) in sorted(spike.items())]),
        ("lumen_spend_daily_baseline_usd", "gauge",
         "Average daily spend of the scope over the spend_spike baseline days before today.",
         [((("scope", scope),), float(base)) for scope, (_, base) in sorted(spike.items()) if base is not None]),
        ("lumen_alert_sink_failures_total", "counter", "Alerts a sink could not deliver after its retries.",
         [((("sink", name),), s["failed"]) for name, s in sorted(sinks.items())]),
        ("lumen_alert_sink_dropped_total", "counter", "Alerts dropped because a sink's queue was full.",
         [((("sink", name),), s["dropped"]) for name, s in sorted(sinks.items())]),
        ("lumen_feature_cost_usd_total", "counter", "Spend of priced calls by feature (x-lumen-feature), US dollars.",
         [((("feature", name),), float(v)) for name, v in sorted((snap.get("feature_cost") or {}).items())]),
    ]


class Collector:
    """A prometheus_client custom collector over the same families."""

    def __init__(self, get_snapshot: Callable[[], Mapping[str, Any] | None]) -> None:
        self._get = get_snapshot

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        for name, kind, help_text, samples in families(self._get()):
            labels = [k for k, _ in samples[0][0]] if samples else []
            if kind == "counter":
                family = CounterMetricFamily(name.removesuffix("_total"), help_text, labels=labels)
            else:
                family = GaugeMetricFamily(name, help_text, labels=labels)
            for label_pairs, value in samples:
                family.add_metric([v for _, v in label_pairs], value)
            yield family
