"""The agent's run loop: capture -> pipeline -> store, until told to stop.

One thread does everything, in short turns: drain the capture (at most
``POLL_MS`` of waiting), then once a second expire idle connections, flush
the store when due and publish the status file.  SIGTERM/SIGINT end the
loop; the capture is detached first so nothing new arrives, then every open
exchange is closed out and the store flushed.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol

from lumen_agent import paths
from lumen_agent.attribution import Attribution
from lumen_agent.events import DataEvent
from lumen_agent.keyhash import load_or_create_salt
from lumen_agent.pipeline import Pipeline, PipelineOptions
from lumen_agent.pricing.table import PriceTable
from lumen_agent.recording import Recorder
from lumen_agent.store import CallStore

log = logging.getLogger("lumen_agent")

POLL_MS = 100
HOUSEKEEPING_S = 1.0
# A status file older than this means the agent is gone or stuck.
STATUS_STALE_S = 5.0


class CaptureSource(Protocol):
    def start(self) -> None: ...
    def poll(self, timeout_ms: int = POLL_MS) -> None: ...
    def ignore_connection(self, pid: int, conn: int) -> None: ...
    def stats(self) -> dict[str, int]: ...
    def targets(self) -> list[Any]: ...
    def close(self) -> None: ...


@dataclass
class AgentSettings:
    db_path: Path
    capture_content: bool = False
    record: Path | None = None
    price_overrides: Path | None = None
    status_path: Path = field(default_factory=lambda: paths.runtime_dir() / "status.json")


class Agent:
    def __init__(self, settings: AgentSettings, make_capture: Callable[[Callable[[DataEvent], None], Callable[[int], None]], CaptureSource], capture_name: str = "ebpf") -> None:
        self.settings = settings
        self._stop = False
        self._started = time.time()
        self._record_file: IO[str] | None = None
        self._recorder: Recorder | None = None
        prices = PriceTable.load(settings.price_overrides)
        self.store = CallStore(settings.db_path)
        self.attribution = Attribution()
        self.pipeline = Pipeline(
            prices,
            self.store.add,
            salt=load_or_create_salt(paths.state_dir()),
            options=PipelineOptions(capture=capture_name, capture_content=settings.capture_content),
            attribution=self.attribution,
            on_ignore=self._ignore,
        )
        self.capture = make_capture(self._on_event, self.attribution.observe)

    def _on_event(self, event: DataEvent) -> None:
        if self._recorder is not None:
            self._recorder.write(event)
        self.pipeline.feed(event)

    def _ignore(self, pid: int, conn: int) -> None:
        self.capture.ignore_connection(pid, conn)

    def request_stop(self, *_: object) -> None:
        self._stop = True

    def run(self, ready: Callable[[], None] | None = None) -> None:
        if self.settings.record is not None:
            self._record_file = open(self.settings.record, "a", encoding="utf-8")
            self._recorder = Recorder(self._record_file)
        signal.signal(signal.SIGTERM, self.request_stop)
        signal.signal(signal.SIGINT, self.request_stop)
        self.store.flush()  # create the file and schema now, not at the first call
        self.capture.start()
        log.info("capturing db=%s targets=%d", self.settings.db_path, len(self.capture.targets()))
        if ready is not None:
            ready()
        next_housekeeping = 0.0
        try:
            while not self._stop:
                self.capture.poll(POLL_MS)
                now = time.monotonic()
                if now >= next_housekeeping:
                    next_housekeeping = now + HOUSEKEEPING_S
                    self._housekeeping()
        finally:
            self.shutdown()

    def _housekeeping(self) -> None:
        self.pipeline.tick(time.time_ns())
        self.store.maybe_flush(time.monotonic())
        if self._recorder is not None:
            self._recorder.flush()
        self.write_status()

    def shutdown(self) -> None:
        try:
            self.capture.close()
        finally:
            self.pipeline.close(time.time_ns())
            self.store.close()
            if self._record_file is not None:
                self._record_file.close()
            try:
                self.settings.status_path.unlink()
            except OSError:
                pass
            log.info("stopped rows_written=%d", self.store.stats().get("rows_written", 0))

    def status(self) -> dict[str, Any]:
        capture = self.capture.stats()
        counters = self.pipeline.counters
        store = self.store.stats()
        return {
            "pid": os.getpid(),
            "started": self._started,
            "updated": time.time(),
            "db": str(self.settings.db_path),
            "targets": [_describe_target(t) for t in self.capture.targets()],
            "capture": capture,
            "pipeline": counters.snapshot(),
            "open_connections": self.pipeline.open_connections,
            "store": store,
        }

    def write_status(self) -> None:
        path = self.settings.status_path
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(self.status(), default=str))
            os.replace(tmp, path)
        except OSError as exc:
            log.warning("cannot write status file path=%s error=%s", path, exc)


def _describe_target(target: Any) -> str:
    path = getattr(target, "path", None)
    if path is None:
        return str(target)
    return f"{path} ({target.kind}, {target.mode}, {len(target.pids)} processes)"


def read_status(path: Path | None = None) -> dict[str, Any] | None:
    """The running agent's last status, or None when no agent is running."""
    path = path or paths.runtime_dir() / "status.json"
    try:
        status = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if time.time() - status.get("updated", 0) > STATUS_STALE_S:
        return None
    try:
        os.kill(int(status["pid"]), 0)
    except (OSError, KeyError, ValueError):
        return None
    return status


def status_rows(status: dict[str, Any]) -> list[tuple[str, Any]]:
    """The status file as (what, value) rows for ``lumen-agent status``."""
    capture = status.get("capture", {})
    pipeline = status.get("pipeline", {})
    store = status.get("store", {})
    skipped = sum(v for k, v in pipeline.items() if k.startswith("skipped."))
    return [
        ("pid", status.get("pid")),
        ("database", status.get("db")),
        ("uptime_s", round(status.get("updated", 0) - status.get("started", 0))),
        ("targets_attached", len(status.get("targets", []))),
        ("targets", ", ".join(status.get("targets", []))),
        ("events", capture.get("events", pipeline.get("events", 0))),
        ("bytes", capture.get("bytes", pipeline.get("bytes", 0))),
        ("lost", capture.get("lost", 0)),
        ("truncated", capture.get("truncated", 0)),
        ("calls", pipeline.get("calls", 0)),
        ("unpriced", pipeline.get("calls.unpriced", 0)),
        ("skipped", skipped),
        ("open_connections", status.get("open_connections", 0)),
        ("rows_written", store.get("rows_written", 0)),
        ("rows_pending", store.get("pending", 0)),
        ("rows_dropped", store.get("dropped", 0)),
    ]
