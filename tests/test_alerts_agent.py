"""The real agent (``run --capture hook``: ingest only, no probes): kill it after an
alert fired and start it again; no second alert, and the budget totals are the same."""

from __future__ import annotations

import csv
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest
from alerts_support import call_events
from typer.testing import CliRunner

from lumen_agent.cli import app
from lumen_agent.recording import event_to_json

LUMEN = str(Path(sys.executable).parent / "lumen-agent")

CONFIG = """
[alerts.spend_spike]
enabled = false
[alerts.expensive_call]
enabled = false
[alerts.error_burn]
enabled = false
[alerts.embed_surge]
enabled = false
[alerts.new_model]
scopes = ["all"]

[[budgets]]
name = "today"
period = "day"
amount_usd = 1
thresholds = [50, 100]
"""


def send(ingest: Path, events) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.connect(str(ingest))
        sock.sendall(b'{"op":"events"}\n' + b"".join(event_to_json(e).encode() + b"\n" for e in events))


def rows(db: Path, sql: str) -> list[tuple] | None:
    try:
        with duckdb.connect(str(db), read_only=True) as con:
            return con.execute(sql).fetchall()
    except duckdb.Error:  # not created yet, or the agent is mid-flush
        return None


def wait_for(what: str, predicate, agent: subprocess.Popen, log: Path, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if agent.poll() is not None:
            break
        time.sleep(0.1)
    pytest.fail(f"timed out waiting for {what}\n{log.read_text()[-3000:]}")


@pytest.mark.slow
def test_restart_neither_fires_twice_nor_forgets(tmp_path):
    for d in ("state", "run", "etc"):
        (tmp_path / d).mkdir()
    env = {**os.environ, "LUMEN_STATE_DIR": str(tmp_path / "state"), "LUMEN_RUNTIME_DIR": str(tmp_path / "run"),
           "LUMEN_CONFIG_DIR": str(tmp_path / "etc")}
    config, db, log = tmp_path / "config.toml", tmp_path / "x.duckdb", tmp_path / "agent.log"
    config.write_text(CONFIG)
    ingest = tmp_path / "run" / "ingest.sock"

    def start() -> subprocess.Popen:
        ingest.unlink(missing_ok=True)
        with open(log, "ab") as out:
            agent = subprocess.Popen([LUMEN, "run", "--capture", "hook", "--db", str(db), "--config", str(config)],
                                     env=env, stdout=out, stderr=subprocess.STDOUT)
        wait_for("the ingest socket", ingest.exists, agent, log)
        return agent

    # Calls of "now" (the budget is today's), a minute apart at most.
    now = time.time() - 60
    alerts_sql = "SELECT rule, subject, CAST(value AS VARCHAR), resolved_at IS NULL FROM alerts ORDER BY fired_at, subject"
    agent = start()
    try:
        send(ingest, call_events(now, out_tokens=30_000) + call_events(now + 1, out_tokens=30_000))  # $0.60: 50%
        fired = wait_for("2 calls and 2 alerts in the file", lambda: (
            rows(db, "SELECT count(*), CAST(sum(cost_usd) AS VARCHAR) FROM llm_calls") == [(2, "0.60000000")]
            and rows(db, alerts_sql)), agent, log)
        assert fired == [("new_model", "gpt-4o", "1.00000000", True), ("budget", "50%", "0.60000000", True)] \
            or fired == [("budget", "50%", "0.60000000", True), ("new_model", "gpt-4o", "1.00000000", True)]
        agent.send_signal(signal.SIGKILL)  # no goodbye: state comes from the file alone
        agent.wait(10)

        agent = start()
        time.sleep(2.5)  # a couple of housekeeping turns: anything it would fire twice is written by now
        assert rows(db, alerts_sql) == fired
        assert "alerts state rebuilt calls=2 alerts=2 adopted=2 fired=0 resolved=0" in log.read_text()
        status = json.loads((tmp_path / "run" / "status.json").read_text())
        budget = status["outputs"]["alerts"]["budgets"][0]
        assert (budget["budget"], budget["spent_usd"], budget["thresholds_fired"]) == ("today", "0.60000000", "50%")

        send(ingest, call_events(now + 2, out_tokens=20_000))  # $0.80: nothing new
        wait_for("3 calls", lambda: rows(db, "SELECT count(*) FROM llm_calls") == [(3,)], agent, log)
        time.sleep(1.5)
        assert rows(db, alerts_sql) == fired
        send(ingest, call_events(now + 3, out_tokens=20_000))  # $1.00: 100%, the one new alert
        wait_for("the 100% alert", lambda: len(rows(db, alerts_sql) or []) == 3, agent, log)
        assert rows(db, alerts_sql)[2] == ("budget", "100%", "1.00000000", True)
        agent.send_signal(signal.SIGTERM)
        assert agent.wait(30) == 0, log.read_text()[-3000:]
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.wait()
    result = CliRunner().invoke(app, ["budgets", "--config", str(config), "--db", str(db), "--format", "csv"],
                                env=env)
    assert result.exit_code == 0, result.output
    line = next(csv.reader(result.stdout.splitlines()[1:]))
    assert line[4:7] == ["1.00000000", "1", "100.00"]
    assert line[8] == "50%,100%"
