"""Where alerts go besides the log: webhooks and commands, each on its own thread.

The run loop only puts a payload on a sink's bounded queue (never waits);
the sink's thread delivers it.  A full queue drops the payload, a delivery
that fails after its retries is a failure: both are counted (``stats``,
``lumen_alert_sink_*_total``) and logged.

* webhook: ``POST`` of the alert as JSON, ``timeout_s`` per attempt, up to
  ``retries`` more attempts with exponential backoff (0.5 s, 1 s, 2 s...).  A
  4xx answer other than 408/429 is not retried: sending again cannot help.
* command: the program runs with the alert in ``LUMEN_ALERT_*`` environment
  variables (and the JSON in ``LUMEN_ALERT_JSON``), killed after ``timeout_s``.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import subprocess
import threading
from decimal import Decimal
from typing import Any

from lumen_agent import __version__
from lumen_agent.outputs.alerts.engine import Alert
from lumen_agent.outputs.alerts.settings import Sink

log = logging.getLogger("lumen_agent.alerts")

# Alerts waiting for one sink; a sink that is down for long drops the rest
# (counted) rather than growing without end.
MAX_QUEUE = 1_000
BACKOFF_FIRST_S = 0.5
BACKOFF_MAX_S = 30.0
# How long close() waits for a sink to deliver what it has.
CLOSE_WAIT_S = 5.0


def payload(alert: Alert, status: str, host: str) -> dict[str, Any]:
    """What a webhook receives and a command sees in LUMEN_ALERT_JSON."""
    body = alert.as_dict()
    return {"status": status, **body, "value": _number(alert.value), "threshold": _number(alert.threshold),
            "host": host}


def _number(value: Decimal | float | int | None) -> float | int | None:
    if value is None:
        return None
    if isinstance(value, Decimal) and value == value.to_integral_value():
        return int(value)
    return float(value)


class SinkWorker:
    """A bounded queue and a daemon thread that delivers what is put on it."""

    def __init__(self, sink: Sink) -> None:
        self.sink = sink
        self.name = sink.name
        self._queue: queue.Queue[dict[str, Any] | None] = queue.Queue(MAX_QUEUE)
        self._stop = threading.Event()
        self.sent = 0
        self.failed = 0
        self.dropped = 0
        self.retries = 0
        self._thread = threading.Thread(target=self._run, name=f"lumen-alert-{sink.name}", daemon=True)
        self._thread.start()

    def submit(self, body: dict[str, Any]) -> None:
        try:
            self._queue.put_nowait(body)
        except queue.Full:
            self.dropped += 1
            log.warning("alert sink %s: queue full (%d), alert dropped (%d in total)", self.name, MAX_QUEUE,
                        self.dropped)

    def _run(self) -> None:
        while True:
            body = self._queue.get()
            if body is None:
                return
            try:
                ok = self._deliver_with_retries(body)
            except Exception:  # noqa: BLE001 - a bug here must not kill the thread
                log.exception("alert sink %s failed", self.name)
                ok = False
            if ok:
                self.sent += 1
            else:
                self.failed += 1
                log.warning("alert sink %s: could not deliver alert %s %s (%d failures)", self.name,
                            body.get("rule"), body.get("id"), self.failed)

    def _deliver_with_retries(self, body: dict[str, Any]) -> bool:
        delay = BACKOFF_FIRST_S
        for attempt in range(self.sink.retries + 1):
            if attempt:
                self.retries += 1
                if self._stop.wait(delay):
                    return False
                delay = min(delay * 2, BACKOFF_MAX_S)
            result = self.deliver(body)
            if result is True:
                return True
            if result is None:  # not worth retrying
                return False
        return False

    def deliver(self, body: dict[str, Any]) -> bool | None:  # pragma: no cover - overridden
        raise NotImplementedError

    def close(self, wait: float = CLOSE_WAIT_S) -> None:
        try:
            self._queue.put(None, timeout=wait)
        except queue.Full:
            pass
        self._thread.join(wait)
        self._stop.set()  # whatever still waits on a backoff gives up
        self._thread.join(1.0)

    def stats(self) -> dict[str, int]:
        return {"sent": self.sent, "failed": self.failed, "dropped": self.dropped, "retries": self.retries,
                "queued": self._queue.qsize()}


class WebhookSink(SinkWorker):
    def deliver(self, body: dict[str, Any]) -> bool | None:
        # Here, not at the top: urllib.request (http.client, email, ssl) is
        # ~1.1 MB of heap that an agent without a webhook sink never needs.
        import urllib.error
        import urllib.request

        data = json.dumps(body).encode()
        headers = {"Content-Type": "application/json", "User-Agent": f"lumen-agent/{__version__}",
                   **dict(self.sink.headers)}
        request = urllib.request.Request(self.sink.webhook, data=data, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.sink.timeout_s) as response:
                response.read()
                return True
        except urllib.error.HTTPError as exc:
            log.info("alert webhook %s answered %d", self.name, exc.code)
            if 400 <= exc.code < 500 and exc.code not in (408, 429):
                return None
            return False
        except (OSError, ValueError) as exc:
            log.info("alert webhook %s: %s", self.name, exc)
            return False


def environment(body: dict[str, Any]) -> dict[str, str]:
    """The alert as LUMEN_ALERT_* variables (empty string for a missing value)."""
    env = {f"LUMEN_ALERT_{k.upper()}": "" if v is None else (",".join(v) if isinstance(v, list) else str(v))
           for k, v in body.items()}
    env["LUMEN_ALERT_JSON"] = json.dumps(body)
    return env


class CommandSink(SinkWorker):
    def deliver(self, body: dict[str, Any]) -> bool | None:
        try:
            done = subprocess.run(list(self.sink.command), env={**os.environ, **environment(body)},
                                  stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                  timeout=self.sink.timeout_s, check=False)
        except subprocess.TimeoutExpired:
            log.info("alert command %s timed out after %g s", self.name, self.sink.timeout_s)
            return False
        except OSError as exc:
            log.info("alert command %s: %s", self.name, exc)
            return None
        if done.returncode != 0:
            log.info("alert command %s exited %d: %s", self.name, done.returncode,
                     done.stderr.decode(errors="replace").strip()[:200])
            return False
        return True


def start_sinks(sinks: tuple[Sink, ...]) -> dict[str, SinkWorker]:
    return {s.name: (WebhookSink(s) if s.webhook else CommandSink(s)) for s in sinks}
