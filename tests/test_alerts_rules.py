"""Every budget and rule fires and resolves with exact values: calls at controlled
times, spanning days, through the real pipeline into a real DuckDB file.

Prices (pricing/prices.json): gpt-4o $10 per 1M output tokens, so 10,000
output tokens cost exactly $0.10.
"""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
from alerts_support import Harness, alert_rows, at, only
from typer.testing import CliRunner

from lumen_agent.cli import app


@pytest.fixture(autouse=True)
def _state(tmp_path, monkeypatch):
    monkeypatch.setenv("LUMEN_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("LUMEN_RUNTIME_DIR", str(tmp_path / "run"))
    monkeypatch.setenv("LUMEN_CONFIG_DIR", str(tmp_path / "etc"))


def test_spend_spike_fires_when_todays_total_crosses_the_line_and_resolves_at_midnight(tmp_path):
    h = Harness(tmp_path, only("spend_spike"))
    for day in range(2, 9):  # 7 days of $0.50: baseline $0.50 a day, line 2 x 0.50 = $1.00
        h.call(f"2026-03-0{day}T10:00:00", out_tokens=50_000, tenant="acme")
    h.tick("2026-03-08T23:00:00")
    assert alert_rows(h.db) == []
    h.call("2026-03-09T09:00:00", out_tokens=40_000, tenant="acme")  # $0.40
    h.call("2026-03-09T10:00:00", out_tokens=40_000, tenant="acme")  # $0.80: not above $1.00
    h.tick("2026-03-09T10:30:00")
    assert alert_rows(h.db) == []
    h.call("2026-03-09T11:00:00", out_tokens=30_000, tenant="acme")  # $1.10 > $1.00 and >= the $1 floor
    h.tick("2026-03-09T11:00:01")
    fired = [("spend_spike", scope, None, None, None, "1.10000000", "1.00000000", "usd", "2026-03-09",
              "2026-03-09T11:00:00", None, 1) for scope in ("all", "tenant=acme")]
    assert alert_rows(h.db) == fired
    h.call("2026-03-09T12:00:00", out_tokens=20_000, tenant="acme")  # same day: no second alert, total $1.30
    h.tick("2026-03-09T23:59:59")
    assert [r[5] for r in alert_rows(h.db)] == ["1.10000000", "1.10000000"]
    h.tick("2026-03-10T00:00:05")  # the day ended at midnight UTC
    assert alert_rows(h.db) == [r[:5] + ("1.30000000",) + r[6:10] + ("2026-03-10T00:00:00", 1) for r in fired]
    h.close()


def test_spend_spike_floor_and_no_history(tmp_path):
    h = Harness(tmp_path, only("spend_spike"))
    h.call("2026-03-01T10:00:00", out_tokens=200_000)  # $2 on a first day: no baseline, no alert
    for day in range(2, 9):
        h.call(f"2026-03-0{day}T10:00:00", out_tokens=1_000, tenant="tiny")  # $0.01 a day
    h.call("2026-03-09T10:00:00", out_tokens=5_000, tenant="tiny")  # $0.05 = 5x, but under the $1 floor
    h.tick("2026-03-10T01:00:00")
    assert alert_rows(h.db) == []
    h.close()


def test_budget_thresholds_fire_once_and_resolve_when_the_month_ends(tmp_path):
    config = only(extra="") + """
[[budgets]]
name = "acme-monthly"
scope = { tenant = "acme*" }
period = "month"
amount_usd = 10
"""
    h = Harness(tmp_path, config)
    h.call("2026-03-02T10:00:00", out_tokens=300_000, tenant="acme-web")  # $3.00
    h.call("2026-03-03T10:00:00", out_tokens=10_000_000, tenant="other")  # $100, not in scope
    h.call("2026-03-04T10:00:00", out_tokens=250_000, tenant="acme-api")  # $5.50: 50% ($5.00)
    h.call("2026-03-05T10:00:00", out_tokens=300_000, tenant="acme-web")  # $8.50: 80% ($8.00)
    h.call("2026-03-06T10:00:00", out_tokens=200_000, tenant="acme-web")  # $10.50: 100% ($10.00)
    h.call("2026-03-07T10:00:00", out_tokens=100_000, tenant="acme-web")  # $11.50: nothing new
    h.tick("2026-03-16T00:00:00")
    rows = alert_rows(h.db)
    assert rows == [
        ("budget", "tenant=acme*", "acme-monthly", None, "50%", "5.50000000", "5.00000000", "usd", "2026-03",
         "2026-03-04T10:00:00", None, 1),
        ("budget", "tenant=acme*", "acme-monthly", None, "80%", "8.50000000", "8.00000000", "usd", "2026-03",
         "2026-03-05T10:00:00", None, 1),
        ("budget", "tenant=acme*", "acme-monthly", None, "100%", "10.50000000", "10.00000000", "usd", "2026-03",
         "2026-03-06T10:00:00", None, 1),
    ]
    snapshot = h.alerts.snapshot
    assert snapshot["firing_by_rule"]["budget"] == 3
    assert snapshot["budgets"][0]["spent_usd"] == Decimal("11.50")
    h.tick("2026-04-01T00:00:01")
    assert [r[10] for r in alert_rows(h.db)] == ["2026-04-01T00:00:00"] * 3
    h.call("2026-04-02T10:00:00", out_tokens=600_000, tenant="acme-web")  # April: $6.00 re-arms 50%
    h.tick("2026-04-02T10:00:01")
    assert alert_rows(h.db)[-1][4:11] == ("50%", "6.00000000", "5.00000000", "usd", "2026-04",
                                          "2026-04-02T10:00:00", None)
    h.close()

    # `lumen-agent budgets` from the file: $11.50 of $10 on March 16; 15 of 31 days
    # gone, so the projection is 11.50 x 31 / 15 = 23.76666667.
    (tmp_path / "etc").mkdir(exist_ok=True)
    result = CliRunner().invoke(app, ["budgets", "--config", str(tmp_path / "config.toml"), "--db", str(h.db),
                                      "--at", "2026-03-16T00:00:00Z", "--format", "json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == [{
        "budget": "acme-monthly", "scope": "tenant=acme*", "period": "month", "period_label": "2026-03",
        "spent_usd": 11.5, "limit_usd": 10, "used_percent": 115.0, "projected_usd": 23.76666667,
        "thresholds_fired": "50%,80%,100%", "action": "alert"}]
    assert '"spent_usd": 11.50000000' in result.stdout  # exact decimals, not floats
    csv = CliRunner().invoke(app, ["budgets", "--config", str(tmp_path / "config.toml"), "--db", str(h.db),
                                   "--at", "2026-04-02T12:00:00Z", "--format", "csv"])
    assert csv.stdout.splitlines() == [
        "budget,scope,period,period_label,spent_usd,limit_usd,used_percent,projected_usd,thresholds_fired,action",
        # 6.00 over 1.5 of 30 days -> 120.00 projected
        "acme-monthly,tenant=acme*,month,2026-04,6.00000000,10,60.00,120.00000000,50%,alert"]


def test_rolling_budget_resolves_when_spend_leaves_the_window(tmp_path):
    config = only() + """
[[budgets]]
name = "daily-roll"
period = "24h"
amount_usd = 1
thresholds = [100]
"""
    h = Harness(tmp_path, config)
    h.call("2026-03-02T10:00:00", out_tokens=60_000)  # $0.60
    h.call("2026-03-02T20:00:00", out_tokens=50_000)  # $1.10 in 24 h: 100%
    h.tick("2026-03-03T09:00:00")
    assert alert_rows(h.db) == [("budget", "all", "daily-roll", None, "100%", "1.10000000", "1.00000000", "usd",
                                 "rolling", "2026-03-02T20:00:00", None, 1)]
    # The 10:00 call's 5-minute bucket leaves the window at 10:05 the next day: $0.50 left.
    h.tick("2026-03-03T10:04:59")
    assert alert_rows(h.db)[0][10] is None
    h.tick("2026-03-03T10:05:00")
    assert alert_rows(h.db)[0][10] == "2026-03-03T10:05:00"
    h.close()


def test_new_model_first_call_and_after_30_days_unseen(tmp_path):
    h = Harness(tmp_path, only("new_model"))
    h.call("2026-03-01T10:00:00", out_tokens=10, model="gpt-4o")
    h.call("2026-03-01T11:00:00", out_tokens=10, model="gpt-4o")  # seen an hour ago: nothing
    h.call("2026-03-20T10:00:00", out_tokens=10, model="gpt-4o")  # seen 19 days ago: nothing
    h.call("2026-04-25T10:00:00", out_tokens=10, model="gpt-4o", tenant="acme")  # 36 days unseen
    h.tick("2026-04-26T00:00:01")
    assert alert_rows(h.db) == [
        ("new_model", "all", None, "gpt-4o", "gpt-4o", "1.00000000", "0.00000000", "calls", "2026-03-01",
         "2026-03-01T10:00:00", "2026-03-02T00:00:00", 1),
        ("new_model", "all", None, "gpt-4o", "gpt-4o", "1.00000000", "0.00000000", "calls", "2026-04-25",
         "2026-04-25T10:00:00", "2026-04-26T00:00:00", 1),
        ("new_model", "tenant=acme", None, "gpt-4o", "gpt-4o", "1.00000000", "0.00000000", "calls", "2026-04-25",
         "2026-04-25T10:00:00", "2026-04-26T00:00:00", 1),
    ]
    h.close()


def test_new_model_allow_list(tmp_path):
    h = Harness(tmp_path, only("new_model", extra='new_model.allow = ["gpt-4o-mini*"]\nnew_model.scopes = ["all"]'))
    h.call("2026-03-01T10:00:00", out_tokens=10, model="gpt-4o-mini")  # allowed, though new
    h.call("2026-03-01T11:00:00", out_tokens=10, model="gpt-4o")  # not allowed
    h.call("2026-03-02T11:00:00", out_tokens=10, model="gpt-4o")  # not allowed, next day: again
    h.tick("2026-03-02T12:00:00")
    assert [(r[3], r[9], r[10]) for r in alert_rows(h.db)] == [
        ("gpt-4o", "2026-03-01T11:00:00", "2026-03-02T00:00:00"), ("gpt-4o", "2026-03-02T11:00:00", None)]
    h.close()


def test_expensive_call_above_ten_times_the_p99(tmp_path):
    h = Harness(tmp_path, only("expensive_call", extra="expensive_call.min_baseline_calls = 10"))
    for day in range(2, 9):  # 14 calls of $0.01 and $0.02: p99 (nearest rank 14 of 14) = $0.02
        h.call(f"2026-03-0{day}T10:00:00", out_tokens=1_000)
        h.call(f"2026-03-0{day}T11:00:00", out_tokens=2_000)
    h.call("2026-03-09T09:00:00", out_tokens=15_000)  # $0.15 < 10 x 0.02
    h.call("2026-03-09T10:00:00", out_tokens=25_000)  # $0.25 > $0.20
    h.tick("2026-03-09T10:00:01")
    first = ("expensive_call", "all", None, "gpt-4o", None, "0.25000000", "0.20000000", "usd", "2026-03-09",
             "2026-03-09T10:00:00", None, 1)
    assert alert_rows(h.db) == [first]
    h.call("2026-03-09T11:00:00", out_tokens=30_000)  # another: same alert, its id added
    h.tick("2026-03-10T00:00:00")
    assert alert_rows(h.db) == [first[:5] + ("0.30000000",) + first[6:10] + ("2026-03-10T00:00:00", 2)]
    h.close()


def test_expensive_call_above_a_fixed_amount(tmp_path):
    h = Harness(tmp_path, only("expensive_call", extra="expensive_call.max_usd = 1.0\nexpensive_call.scopes = "
                                                        '["tenant"]'))
    h.call("2026-03-02T10:00:00", out_tokens=100_000, tenant="acme")  # $1.00: not above
    h.call("2026-03-02T11:00:00", out_tokens=150_000, tenant="acme")  # $1.50
    h.tick("2026-03-02T12:00:00")
    assert alert_rows(h.db) == [("expensive_call", "tenant=acme", None, "gpt-4o", None, "1.50000000", "1.00000000",
                                 "usd", "2026-03-02", "2026-03-02T11:00:00", None, 1)]
    h.close()


def test_error_burn_over_15_minutes_while_spending(tmp_path):
    h = Harness(tmp_path, only("error_burn", extra='error_burn.scopes = ["all"]'))
    for i in range(8):
        h.call(f"2026-03-02T10:00:0{i}", out_tokens=1_000)  # $0.01 each, success
    h.call("2026-03-02T10:01:00", status=500)
    h.call("2026-03-02T10:01:10", status=429)  # 2 of 10: 20%, not above
    h.tick("2026-03-02T10:01:30")
    assert alert_rows(h.db) == []
    h.call("2026-03-02T10:01:20", status=500)  # 3 of 11: 27.27%
    h.tick("2026-03-02T10:02:00")
    assert alert_rows(h.db) == [("error_burn", "all", None, None, None, "27.27000000", "20.00000000", "percent",
                                 "2026-03-02", "2026-03-02T10:01:20", None, 1)]
    # The 10:00 minute leaves the 15-minute window at 10:16: 3 calls left, under min_calls.
    h.tick("2026-03-02T10:15:59")
    assert alert_rows(h.db)[0][10] is None
    h.tick("2026-03-02T10:16:00")
    assert alert_rows(h.db)[0][10] == "2026-03-02T10:16:00"
    h.close()


def test_error_burn_needs_spend(tmp_path):
    h = Harness(tmp_path, only("error_burn", extra='error_burn.scopes = ["all"]'))
    for i in range(12):
        h.call(f"2026-03-02T10:00:{i:02d}", status=500)  # 100% errors but nothing spent
    h.tick("2026-03-02T10:01:00")
    assert alert_rows(h.db) == []
    h.close()


def test_unpriced_model(tmp_path):
    h = Harness(tmp_path, only("unpriced_model", extra='unpriced_model.scopes = ["all"]'))
    h.call("2026-03-02T10:00:00", out_tokens=10, in_tokens=5, model="lumen-test-unknown")
    h.call("2026-03-02T11:00:00", out_tokens=10, in_tokens=5, model="lumen-test-unknown")
    h.call("2026-03-02T12:00:00", out_tokens=10, model="gpt-4o")  # priced
    h.tick("2026-03-03T00:00:00")
    assert alert_rows(h.db) == [("unpriced_model", "all", None, "lumen-test-unknown", "lumen-test-unknown",
                                 "2.00000000", "0.00000000", "calls", "2026-03-02", "2026-03-02T10:00:00",
                                 "2026-03-03T00:00:00", 2)]
    assert [c.cost_usd for c in h.calls[:2]] == [None, None]  # never $0
    h.close()


def test_embed_surge(tmp_path):
    h = Harness(tmp_path, only("embed_surge", extra='embed_surge.scopes = ["all"]'))
    h.call("2026-03-02T09:00:00", in_tokens=20_000, out_tokens=30_000)  # generation: 50,000 tokens
    h.call("2026-03-02T10:00:00", in_tokens=60_000, embed=True, model="text-embedding-3-small")  # 60k < 100k min
    h.tick("2026-03-02T10:00:01")
    assert alert_rows(h.db) == []
    h.call("2026-03-02T11:00:00", in_tokens=50_000, embed=True, model="text-embedding-3-small")  # 110k > 50k
    h.tick("2026-03-02T11:00:01")
    assert alert_rows(h.db) == [("embed_surge", "all", None, None, None, "110000.00000000", "50000.00000000",
                                 "tokens", "2026-03-02", "2026-03-02T11:00:00", None, 1)]
    h.call("2026-03-02T12:00:00", out_tokens=70_000)  # generation 120k >= 110k: resolved
    h.tick("2026-03-02T12:00:01")
    assert alert_rows(h.db) == [("embed_surge", "all", None, None, None, "110000.00000000", "120000.00000000",
                                 "tokens", "2026-03-02", "2026-03-02T11:00:00", "2026-03-02T12:00:00", 1)]
    h.close()


def test_every_rule_on_by_default_for_all_and_per_tenant(tmp_path):
    h = Harness(tmp_path, "")
    h.call("2026-03-02T10:00:00", out_tokens=10, tenant="acme")
    h.tick("2026-03-02T10:00:01")
    assert [(r[0], r[1]) for r in alert_rows(h.db)] == [("new_model", "all"), ("new_model", "tenant=acme")]
    assert h.alerts.snapshot["firing_by_rule"] == {
        "budget": 0, "spend_spike": 0, "new_model": 2, "expensive_call": 0, "error_burn": 0, "unpriced_model": 0,
        "embed_surge": 0}
    h.close()


def test_alerts_command_lists_the_history(tmp_path):
    h = Harness(tmp_path, only("new_model", extra='new_model.scopes = ["all"]'))
    h.call("2026-03-01T10:00:00", out_tokens=10, model="gpt-4o")
    h.tick("2026-03-02T00:00:00")
    h.close()
    result = CliRunner().invoke(app, ["alerts", "--db", str(h.db), "--format", "csv"])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        "rule,scope,budget,model,subject,value,threshold,unit,period,fired_at,resolved_at,calls",
        "new_model,all,,gpt-4o,gpt-4o,1.00000000,0.00000000,calls,2026-03-01,2026-03-01T10:00:00+00:00,"
        "2026-03-02T00:00:00+00:00,1"]
    since = CliRunner().invoke(app, ["alerts", "--db", str(h.db), "--since", "2026-03-02", "--format", "json"])
    assert since.stdout == "[]\n"


def test_bad_budget_config_is_one_line(tmp_path):
    (tmp_path / "c.toml").write_text('[[budgets]]\nname = "x"\namount_usd = 5\nperiod = "fortnight"\n')
    result = CliRunner().invoke(app, ["budgets", "--config", str(tmp_path / "c.toml")])
    assert result.exit_code == 2
    assert result.stderr.strip() == (f"error: {tmp_path / 'c.toml'}: budget 'x' period must be one of day, week, "
                                     "month, 24h, 7d, not 'fortnight'")


RESTART_CONFIG = only("spend_spike", "new_model", extra='new_model.scopes = ["all"]') + """
[[budgets]]
name = "month"
period = "month"
amount_usd = 3
"""


def test_restart_rebuilds_state_from_the_database(tmp_path):
    h = Harness(tmp_path, RESTART_CONFIG, start=0)
    for day in range(2, 9):
        h.call(f"2026-03-0{day}T10:00:00", out_tokens=10_000)  # $0.10 a day: budget $0.70
    h.call("2026-03-09T10:00:00", out_tokens=100_000)  # $1.00 today > 2 x 0.10, over the floor; budget $1.70: 50%
    # (of $3)
    h.tick("2026-03-09T10:00:01")
    before = alert_rows(h.db)
    assert [(r[0], r[4], r[10]) for r in before] == [("new_model", "gpt-4o", "2026-03-03T00:00:00"),
                                                       ("budget", "50%", None), ("spend_spike", None, None)]
    budgets_before = h.alerts.snapshot["budgets"]
    h.close()

    again = Harness(tmp_path, RESTART_CONFIG, start=at("2026-03-09T10:00:01"))
    assert again.alerts.rebuilt == {"calls": 8, "alerts": 3, "adopted": 2, "fired": 0, "resolved": 0}
    assert again.alerts.snapshot["budgets"] == budgets_before
    assert budgets_before[0]["spent_usd"] == Decimal("1.70")
    again.call("2026-03-09T11:00:00", out_tokens=10_000)  # same day, same model, budget $1.80: nothing new
    again.tick("2026-03-09T11:00:01")
    assert alert_rows(again.db) == before
    again.call("2026-03-09T12:00:00", out_tokens=130_000)  # $3.10: 80% and 100%, the only new alerts
    again.tick("2026-03-10T00:00:00")
    after = alert_rows(again.db)
    assert [(r[0], r[4], r[5], r[10]) for r in after] == [
        ("new_model", "gpt-4o", "1.00000000", "2026-03-03T00:00:00"),
        ("budget", "50%", "1.70000000", None),
        ("spend_spike", None, "2.40000000", "2026-03-10T00:00:00"),  # the day's total, written at midnight
        ("budget", "100%", "3.10000000", None),
        ("budget", "80%", "3.10000000", None)]
    again.close()


def test_restart_resolves_what_ended_while_the_agent_was_down(tmp_path):
    h = Harness(tmp_path, RESTART_CONFIG)
    h.call("2026-03-02T10:00:00", out_tokens=10_000)
    h.tick("2026-03-02T10:00:01")
    assert [r[10] for r in alert_rows(h.db)] == [None]  # new_model firing until midnight
    h.close()
    again = Harness(tmp_path, RESTART_CONFIG, start=at("2026-03-05T08:00:00"))
    assert again.alerts.rebuilt["resolved"] == 1
    again.tick()
    assert [r[10] for r in alert_rows(again.db)] == ["2026-03-03T00:00:00"]
    again.close()


def test_days_follow_the_configured_time_zone(tmp_path):
    """Asia/Tokyo is UTC+9: its 2026-03-02 ends at 2026-03-02T15:00:00Z."""
    h = Harness(tmp_path, only("new_model", extra='new_model.scopes = ["all"]') + '[alerts]\ntimezone = "Asia/Tokyo"\n')
    h.call("2026-03-02T14:59:00", out_tokens=10)  # 23:59 in Tokyo
    h.tick("2026-03-02T15:00:01")
    assert [(r[8], r[9], r[10]) for r in alert_rows(h.db)] == [
        ("2026-03-02", "2026-03-02T14:59:00", "2026-03-02T15:00:00")]
    h.close()


def test_prometheus_client_collector_exports_the_same_families(tmp_path):
    prometheus_client = pytest.importorskip("prometheus_client")
    from lumen_agent.outputs.alerts import gauges

    config = only() + '[[budgets]]\nname = "m"\namount_usd = 4\n'
    h = Harness(tmp_path, config)
    h.call("2026-03-02T10:00:00", out_tokens=100_000)  # $1.00 of $4
    h.tick("2026-03-02T10:00:01")
    registry = prometheus_client.CollectorRegistry()
    registry.register(gauges.Collector(lambda: h.alerts.snapshot))
    text = prometheus_client.generate_latest(registry).decode()
    assert 'lumen_budget_used_ratio{budget="m"} 0.25' in text
    assert 'lumen_alert_firing{rule="budget"} 0.0' in text
    h.close()


def test_gauges_on_the_agents_metrics_page(tmp_path):
    from lumen_agent.outputs.alerts import gauges
    from lumen_agent.outputs.metrics import Metrics

    config = only("new_model", extra='new_model.scopes = ["all"]') + '[[budgets]]\nname = "m"\namount_usd = 4\n'
    h = Harness(tmp_path, config)
    h.call("2026-03-02T10:00:00", out_tokens=100_000, tenant="acme")  # $1.00 of $4
    h.tick("2026-03-02T10:00:01")
    metrics = Metrics()
    metrics.extra.append(gauges.Collector(lambda: h.alerts.snapshot).collect)
    lines = metrics.render({}).splitlines()
    # prometheus_client writes values as Go floats ("1.0"), which Prometheus reads as 1.
    for line in ('lumen_budget_used_ratio{budget="m"} 0.25', 'lumen_budget_spent_usd{budget="m"} 1.0',
                 'lumen_budget_limit_usd{budget="m"} 4.0', 'lumen_alert_firing{rule="budget"} 0.0',
                 'lumen_alert_firing{rule="new_model"} 1.0', 'lumen_feature_cost_usd_total{feature=""} 1.0'):
        assert line in lines, line
    h.close()
