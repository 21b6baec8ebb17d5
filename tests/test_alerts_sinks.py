"""Alert sinks: a webhook to a local HTTP server gets the exact JSON; with the
server down capture goes on and the failure is counted; a command sees the
alert in its environment; the log line is a warning."""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from alerts_support import Harness, alert_rows, only

CONFIG = only("new_model", extra='new_model.scopes = ["all"]') + """
[alerts]
notify = ["hook"]
[alerts.sinks.hook]
webhook = "{url}"
timeout_s = 2
retries = {retries}
headers = {{ Authorization = "Bearer test-fake-token" }}
"""


@pytest.fixture(autouse=True)
def _state(tmp_path, monkeypatch):
    monkeypatch.setenv("LUMEN_STATE_DIR", str(tmp_path / "state"))


class Receiver:
    """A local webhook endpoint that keeps what it is sent."""

    def __init__(self) -> None:
        self.bodies: list[dict] = []
        self.headers: list[dict] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                length = int(self.headers["Content-Length"])
                receiver.bodies.append(json.loads(self.rfile.read(length)))
                receiver.headers.append(dict(self.headers))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/alerts"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait(self, n: int, timeout: float = 10.0) -> list[dict]:
        deadline = time.monotonic() + timeout
        while len(self.bodies) < n and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.bodies

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def wait_for(predicate, timeout: float = 15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    return predicate()


def test_webhook_receives_the_exact_json(tmp_path, caplog):
    receiver = Receiver()
    try:
        h = Harness(tmp_path, CONFIG.format(url=receiver.url, retries=3))
        caplog.clear()  # the harness's start-up lines, kept when an earlier test left INFO on
        with caplog.at_level(logging.WARNING, logger="lumen_agent.alerts"):
            h.call("2026-03-02T10:00:00", out_tokens=10)
        h.tick("2026-03-02T10:00:01")
        call_id = h.calls[0].id
        alert_id = h.alerts.engine.firing[("new_model", "all", "gpt-4o", "2026-03-02")].id
        firing = {"status": "firing", "id": alert_id, "rule": "new_model", "scope": "all", "budget": None,
                  "model": "gpt-4o", "subject": "gpt-4o", "period": "2026-03-02", "value": 1, "threshold": 0,
                  "unit": "calls", "fired_at": "2026-03-02T10:00:00Z", "resolved_at": None, "call_ids": [call_id],
                  "host": "test-host"}
        assert receiver.wait(1) == [firing]
        assert receiver.headers[0]["Authorization"] == "Bearer test-fake-token"
        assert receiver.headers[0]["Content-Type"] == "application/json"
        assert [r.levelname for r in caplog.records] == ["WARNING"]
        assert caplog.records[0].getMessage() == (
            f"alert firing rule=new_model scope=all subject=gpt-4o value=1 threshold=0 calls period=2026-03-02 "
            f"id={alert_id}")
        h.tick("2026-03-03T00:00:10")
        assert receiver.wait(2)[1] == {**firing, "status": "resolved", "resolved_at": "2026-03-03T00:00:00Z"}
        h.close()
        assert h.alerts.sinks["hook"].stats() == {"sent": 2, "failed": 0, "dropped": 0, "retries": 0, "queued": 0}
    finally:
        receiver.close()


def test_webhook_down_capture_continues_and_the_failure_is_counted(tmp_path):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}/alerts"
    h = Harness(tmp_path, CONFIG.format(url=url, retries=2))
    h.call("2026-03-02T10:00:00", out_tokens=10, model="gpt-4o")
    h.call("2026-03-02T10:00:01", out_tokens=10, model="gpt-4o-mini")
    for i in range(20):  # capture goes on while the sink retries
        h.call(f"2026-03-02T10:01:{i:02d}", out_tokens=10)
    h.tick("2026-03-02T10:02:00")
    assert len(h.calls) == 22
    assert [r[3] for r in alert_rows(h.db)] == ["gpt-4o", "gpt-4o-mini"]
    sink = h.alerts.sinks["hook"]
    # Each alert: 1 attempt + 2 retries after 0.5 s and 1 s, then counted as failed.
    assert wait_for(lambda: sink.stats()["failed"] == 2), sink.stats()
    assert sink.stats() == {"sent": 0, "failed": 2, "dropped": 0, "retries": 4, "queued": 0}
    h.alerts.publish()
    assert h.alerts.snapshot["sinks"]["hook"]["failed"] == 2
    h.close()
    import duckdb

    with duckdb.connect(str(h.db), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM llm_calls").fetchone() == (22,)


def test_command_sink_gets_the_alert_in_its_environment(tmp_path):
    out = tmp_path / "alert.env"
    config = only("unpriced_model", extra='unpriced_model.scopes = ["all"]') + f"""
[alerts]
notify = ["page"]
[alerts.sinks.page]
command = ["sh", "-c", "env | grep ^LUMEN_ALERT_ | grep -v ^LUMEN_ALERT_JSON | sort > {out}"]
"""
    h = Harness(tmp_path, config)
    h.call("2026-03-02T10:00:00", out_tokens=10, model="lumen-test-unknown")
    h.tick("2026-03-02T10:00:01")
    assert wait_for(lambda: out.exists() and out.read_text())
    alert_id = next(iter(h.alerts.engine.firing.values())).id
    assert out.read_text().splitlines() == [
        "LUMEN_ALERT_BUDGET=",
        f"LUMEN_ALERT_CALL_IDS={h.calls[0].id}",
        "LUMEN_ALERT_FIRED_AT=2026-03-02T10:00:00Z",
        "LUMEN_ALERT_HOST=test-host",
        f"LUMEN_ALERT_ID={alert_id}",
        "LUMEN_ALERT_MODEL=lumen-test-unknown",
        "LUMEN_ALERT_PERIOD=2026-03-02",
        "LUMEN_ALERT_RESOLVED_AT=",
        "LUMEN_ALERT_RULE=unpriced_model",
        "LUMEN_ALERT_SCOPE=all",
        "LUMEN_ALERT_STATUS=firing",
        "LUMEN_ALERT_SUBJECT=lumen-test-unknown",
        "LUMEN_ALERT_THRESHOLD=0",
        "LUMEN_ALERT_UNIT=calls",
        "LUMEN_ALERT_VALUE=1",
    ]
    h.close()
