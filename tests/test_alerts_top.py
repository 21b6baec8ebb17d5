"""`top` shows the budgets and the alerts that are firing (from the agent's snapshot)."""

from __future__ import annotations

import json
import time

import pytest
from alerts_support import Harness, only
from rich.console import Console

from lumen_agent.outputs.live import LiveFeed
from lumen_agent.top import build_view


@pytest.fixture(autouse=True)
def _env(tmp_path, monkeypatch):
    monkeypatch.setenv("LUMEN_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def test_top_lists_budgets_then_firing_alerts(tmp_path):
    config = only("new_model", extra='new_model.scopes = ["all"]') + """
[[budgets]]
name = "acme"
scope = { tenant = "acme" }
period = "month"
amount_usd = 10
"""
    h = Harness(tmp_path, config)
    h.call("2026-03-02T10:00:00", out_tokens=600_000, tenant="acme")  # $6.00 of $10: 50% fired
    h.tick("2026-03-02T10:00:01")
    # As the control socket hands it to `top`: the status through JSON.
    status = json.loads(json.dumps({"outputs": {"alerts": h.alerts.snapshot}}, default=str))
    snapshot = LiveFeed().snapshot(60, health=status, now=h.now)
    console = Console(width=120, height=40, color_system=None, legacy_windows=False)
    with console.capture() as capture:
        console.print(build_view(snapshot, 60, 120, 40))
    lines = capture.get().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("BUDGETS & ALERTS"))
    assert [line.split() for line in lines[start:start + 4]] == [
        ["BUDGETS", "&", "ALERTS", "USED", "OF", "STATE"],
        ["budget", "acme", "(month)", "$6.00", "$10.00", "60.00%", "fired", "50%"],
        ["budget", "acme", "50%", "$6.00", "$5.00", "firing", "since", "10:00:00"],
        ["new_model", "all", "gpt-4o", "1", "0", "firing", "since", "10:00:00"],
    ]
    h.close()
