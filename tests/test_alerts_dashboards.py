"""The shipped Prometheus rules and Grafana dashboard: promtool accepts the rules,
every query names a metric the agent exports, and a real Prometheus scraping a
real agent fires the spike alert on a replayed spike."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from alerts_support import call_events
from test_metrics_prometheus import (
    agent_command,
    free_port,
    http_get,
    prom_query,
    send_events,
    stop,
    wait_for,
)
from test_store_support import make_call

from lumen_agent.outputs.alerts import gauges
from lumen_agent.outputs.metrics import Metrics
from lumen_agent.outputs.store import CallStore

ROOT = Path(__file__).resolve().parents[1]
RULES = ROOT / "dashboards" / "lumen-alerts.rules.yml"
GRAFANA = ROOT / "dashboards" / "lumen-grafana.json"
PROMTOOL = shutil.which("promtool")
PROMETHEUS = shutil.which("prometheus")
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def exported_metrics() -> set[str]:
    """Every family name the agent's /metrics serves, with the alerts output on."""
    metrics = Metrics()
    metrics.extra.append(gauges.Collector(lambda: {}).collect)
    names = {line.split()[2] for line in metrics.render({}).splitlines() if line.startswith("# TYPE ")}
    assert set(gauges.EXPORTED) <= names
    return names


def named_metrics(expr: str) -> set[str]:
    names = set(re.findall(r"\b((?:lumen|process)_[a-z0-9_]+)", expr))
    if re.search(r"\bup\b", expr):
        names.add("up")
    return names


def test_promtool_accepts_the_rules():
    if PROMTOOL is None:
        pytest.skip("promtool not installed (apt-get install prometheus; scripts/install.sh --test)")
    done = subprocess.run([PROMTOOL, "check", "rules", str(RULES)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: 10 rules found" in done.stdout


def test_every_rule_names_an_exported_metric():
    exported = exported_metrics() | {"up"}
    exprs = re.findall(r"expr: \|?\n?((?:.*\n)*?)\s*(?:for|labels):", RULES.read_text())
    assert len(exprs) == 10
    for expr in exprs:
        names = named_metrics(expr)
        assert names, expr
        assert names <= exported, (expr, names - exported)


def test_grafana_dashboard_parses_and_every_query_names_an_exported_metric():
    dashboard = json.loads(GRAFANA.read_text())
    exported = exported_metrics()
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    titles = [p["title"] for p in panels]
    for wanted in ("Spend by feature (per day, stacked)", "Top tenants, last 24 h", "Top tenants, last 7 days",
                   "Cost by model (dashboard range)", "Tokens by direction", "Budgets used", "Events and calls"):
        assert wanted in titles
    queries = [t["expr"] for p in panels for t in p["targets"]]
    assert len(queries) == 26
    for expr in queries:
        names = named_metrics(expr)
        assert names, expr
        for name in names:
            base = next((name[: -len(s)] for s in HISTOGRAM_SUFFIXES if name.endswith(s)
                         and name[: -len(s)] in exported), name)
            assert base in exported, (expr, name)
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])


@pytest.mark.slow
@pytest.mark.skipif(PROMETHEUS is None, reason="prometheus binary not installed (scripts/install.sh --test)")
def test_prometheus_rule_fires_the_spike_alert_on_a_replayed_spike(tmp_path):
    runtime, state, config_dir = tmp_path / "run", tmp_path / "state", tmp_path / "etc"
    for d in (runtime, state, config_dir):
        d.mkdir()
    env = {**os.environ, "LUMEN_RUNTIME_DIR": str(runtime), "LUMEN_STATE_DIR": str(state),
           "LUMEN_CONFIG_DIR": str(config_dir)}
    db = tmp_path / "x.duckdb"
    # History: $0.10 a day on each of the 7 days before today -> baseline $0.10 a day.
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    with CallStore(db) as store:
        for day in range(1, 8):
            start = today - timedelta(days=day) + timedelta(hours=12)
            store.add(make_call(day, ts_start=start, ts_end=start + timedelta(seconds=1), tenant=None,
                                model="gpt-4o", cost_usd=Decimal("0.10")))
    (config_dir / "config.toml").write_text('[alerts.new_model]\nenabled = false\n')
    agent_port, prom_port = free_port(), free_port()
    agent_log, prom_log = tmp_path / "agent.log", tmp_path / "prometheus.log"
    procs: list[tuple[subprocess.Popen, Path]] = []
    try:
        with open(agent_log, "wb") as out:
            agent = subprocess.Popen(agent_command() + ["run", "--capture", "hook", "--metrics-addr",
                                                        f"127.0.0.1:{agent_port}", "--db", str(db)],
                                     env=env, stdout=out, stderr=subprocess.STDOUT)
        procs.append((agent, agent_log))
        metrics_url = f"http://127.0.0.1:{agent_port}/metrics"
        wait_for("the agent", lambda: (runtime / "ingest.sock").exists() and http_get(metrics_url), procs)
        (tmp_path / "prometheus.yml").write_text(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
            f"rule_files: ['{RULES}']\n"
            "scrape_configs:\n  - job_name: lumen\n    static_configs:\n"
            f"      - targets: ['127.0.0.1:{agent_port}']\n")
        with open(prom_log, "wb") as out:
            prom = subprocess.Popen([PROMETHEUS, f"--config.file={tmp_path / 'prometheus.yml'}",
                                     f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                                     f"--web.listen-address=127.0.0.1:{prom_port}"],
                                    stdout=out, stderr=subprocess.STDOUT, cwd=tmp_path)
        procs.append((prom, prom_log))
        wait_for("Prometheus to scrape the agent", lambda: prom_query(prom_port, 'up{job="lumen"} == 1'), procs)

        # The spike, replayed into the running agent: $1.10 today (110,000 gpt-4o output tokens at $10/1M)
        # > 2 x $0.10 and >= $1.
        now = max(time.time() - 5, today.timestamp() + 1)
        send_events(runtime / "ingest.sock", call_events(now, out_tokens=60_000) +
                    call_events(now + 1, out_tokens=50_000))

        def spike_alert():
            reply = json.loads(http_get(f"http://127.0.0.1:{prom_port}/api/v1/alerts"))
            return [a for a in reply["data"]["alerts"] if a["labels"]["alertname"] == "LumenSpendSpike"
                    and a["state"] == "firing"]

        alerts = wait_for("Prometheus to fire LumenSpendSpike", spike_alert, procs)
        assert [(a["labels"]["scope"], float(a["value"])) for a in alerts] == [("all", 1.1)]
        assert alerts[0]["annotations"]["summary"] == "LLM spend spike: all at $1.10 today"
        assert [(r["metric"]["scope"], r["value"][1]) for r in prom_query(prom_port, "lumen_spend_daily_baseline_usd")] \
            == [("all", "0.1")]
        firing = prom_query(prom_port, 'lumen_alert_firing{rule="spend_spike"}')
        assert firing[0]["value"][1] == "1"  # the agent's own rule agrees
        assert stop(prom) == 0
        assert stop(agent) == 0, agent_log.read_text()[-3000:]
    finally:
        for proc, _ in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
