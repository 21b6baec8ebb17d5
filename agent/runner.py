"""The agent's run loop: capture -> pipeline -> store, until told to stop.

One thread owns the pipeline and does everything in short turns: drain the
capture and the events that hooked processes hand in over the ingest socket,
then once a second expire idle connections, flush the store when due and
publish the status.  SIGTERM and SIGINT end the loop; the capture is detached
first so nothing new arrives, then every open exchange is closed out and the
store flushed.

An idle agent sleeps: the capture waits in one epoll_wait on its ring
buffer, the sniffer's sockets and a wake-up pipe (signals, ingested events),
for as long as nothing is due (the next housekeeping, a source's own
deadline from ``next_due_s``), instead of waking every ``POLL_MS``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import queue
import select
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, Protocol

from lumen_agent import paths
from lumen_agent.capture.conversations import capture_of_conn
from lumen_agent.config import Config
from lumen_agent.control import ControlServer
from lumen_agent.outputs.base import Output
from lumen_agent.outputs.store import CallStore
from lumen_agent.pipeline.attribution import Attribution
from lumen_agent.pipeline.build import build
from lumen_agent.pipeline.call import Call
from lumen_agent.pipeline.core import Origin
from lumen_agent.pipeline.events import DataEvent
from lumen_agent.pipeline.gate import ProcessGate
from lumen_agent.recording import Recorder, open_private
from lumen_agent.status_file import StatusFile

log = logging.getLogger("lumen_agent")

POLL_MS = 100  # longest wait of a capture that cannot wait on the wake-up pipe
HOUSEKEEPING_S = 1.0
# A status file older than this means the agent is gone or stuck.
STATUS_STALE_S = 5.0
# Ingested events handled per turn, so capture is never starved.
MAX_INGEST_PER_TURN = 10_000


class CaptureSource(Protocol):
    def start(self) -> None: ...
    def poll(self, timeout_ms: int = POLL_MS) -> None: ...
    def ignore_connection(self, pid: int, conn: int) -> None: ...
    def exclude_pid(self, pid: int) -> None: ...
    def include_pid(self, pid: int) -> None: ...
    def stats(self) -> dict[str, int]: ...
    def targets(self) -> list[Any]: ...
    def close(self) -> None: ...


class IngestOnly:
    """No capture of our own: events come only from hooks over the ingest socket."""

    def __init__(self) -> None:
        self._fds: list[int] = []

    def start(self) -> None:
        pass

    def poll(self, timeout_ms: int = POLL_MS) -> None:
        # The wake-up pipe ends the wait (an ingested event, a signal).
        select.select(self._fds, [], [], timeout_ms / 1000)

    def watch_fds(self, fds: set[int]) -> bool:
        self._fds = sorted(fds)
        return True

    def ignore_connection(self, pid: int, conn: int) -> None:
        pass

    def exclude_pid(self, pid: int) -> None:
        pass

    def include_pid(self, pid: int) -> None:
        pass

    def stats(self) -> dict[str, int]:
        return {}

    def targets(self) -> list[Any]:
        return ["ingest socket"]

    def close(self) -> None:
        pass


MakeCapture = Callable[[Callable[[DataEvent], None], Callable[[int], None]], CaptureSource]


class Agent:
    def __init__(self, config: Config, make_capture: MakeCapture, capture_name: str = "ebpf") -> None:
        self.config = config
        self.capture_name = capture_name
        self._stop = False
        self._started = time.time()
        self._record_file: IO[str] | Any | None = None
        self._recorder: Recorder | Any | None = None
        self._status: dict[str, Any] = {}
        self._status_file = StatusFile(config.status_path)
        self._ready_listeners: list[Callable[[], None]] = []
        self._stop_listeners: list[Callable[[], None]] = []
        self.ready_at: float | None = None
        self.store = CallStore(config.db, flush_interval=config.flush_interval_s, adopt=config.adopt_db,
                               background_flush=True)
        self.outputs: list[Output] = [self.store]
        self.attribution = Attribution()
        self.gate = ProcessGate(config.filters, self.attribution, on_exclude=self._exclude)
        self.pipeline = build(config, capture=capture_name, on_call=self._on_call, attribution=self.attribution,
                              on_ignore=self._ignore, capture_of_conn=capture_of_conn)
        self.control = ControlServer(config.runtime_dir, ingest_group=config.ingest_group)
        self.control.register("status", lambda _request: self._status)
        self.capture = make_capture(self._on_event, self._on_exec)
        # Written to wake the run loop: by the signal machinery and when an
        # ingested event is queued (one byte until the loop drains it).
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._wake_pending = False
        self._waits_on_wake = False  # the capture's wait ends on _wake_r
        self.control.on_queued = self._wake

    # -- extension points -----------------------------------------------------

    def add_output(self, output: Output) -> None:
        """Register what receives every finished call (see outputs/base.py)."""
        self.outputs.append(output)

    def add_ready_listener(self, listener: Callable[[], None]) -> None:
        """Called once when capture is attached and the status is published."""
        self._ready_listeners.append(listener)

    def add_stop_listener(self, listener: Callable[[], None]) -> None:
        """Called once when the agent starts shutting down, before the capture is detached."""
        self._stop_listeners.append(listener)

    @property
    def last_status(self) -> dict[str, Any]:
        """The status as of the last housekeeping turn (a fresh dict each second; read-only)."""
        return self._status

    # -- the loop -------------------------------------------------------------

    def _on_call(self, call: Call) -> None:
        for output in self.outputs:
            try:
                output.on_call(call)
            except Exception:  # noqa: BLE001 - a broken output must not stop capture
                log.exception("output failed on a call output=%s", output.name)

    def _on_event(self, event: DataEvent, origin: Origin | None = None) -> None:
        if not self.gate.allows(event.pid):  # _captured, one call less: this runs per record
            return
        if self._recorder is not None:
            self._recorder.write(event)
        self.pipeline.feed(event, origin)

    def _on_exec(self, pid: int) -> None:
        # A new program in the same process: same pid and start time, so
        # what we knew of it (name, exe, filter verdict) is stale.
        self.attribution.forget(pid)
        if self.gate.forget(pid):
            self.capture.include_pid(pid)
        self._captured(pid)

    def _captured(self, pid: int) -> bool:
        """Apply the process filters once per process; excluded ones are dropped in the kernel."""
        return self.gate.allows(pid)

    def _exclude(self, pid: int) -> None:
        self.pipeline.counters.add("processes.excluded")
        self.capture.exclude_pid(pid)

    def _ignore(self, pid: int, conn: int) -> None:
        self.capture.ignore_connection(pid, conn)

    def request_stop(self, *_: object) -> None:
        self._stop = True
        self._wake()

    def _wake(self) -> None:
        """End the run loop's wait (any thread)."""
        if not self._wake_pending:
            self._wake_pending = True
            try:
                os.write(self._wake_w, b"w")
            except (BlockingIOError, OSError):
                pass  # full (it is woken anyway) or closed (stopping)

    def _wait_ms(self, next_housekeeping: float) -> int:
        """How long the capture may wait for data: until something is due."""
        if not self.control.events.empty():
            return 0
        wait = next_housekeeping - time.monotonic()
        if not self._waits_on_wake:
            wait = min(wait, POLL_MS / 1000)
        next_due = getattr(self.capture, "next_due_s", None)
        due = next_due() if next_due is not None else POLL_MS / 1000
        if due is not None:
            wait = min(wait, due)
        return max(0, math.ceil(wait * 1000))

    def run(self, ready: Callable[[], None] | None = None) -> None:
        # Before anything is captured: a database that cannot take rows ends
        # the run now with one line, not at stop with every row lost.
        self.store.check()
        if self.config.record is not None and self.config.record.suffix.lower() == ".pcapng":
            from lumen_agent.capture.pcapng_record import PcapngRecorder

            # A packet capture of the decrypted traffic (docs/plain-http.md); closed like the file below.
            self._recorder = self._record_file = PcapngRecorder(self.config.record, describe=self.attribution.lookup)
        elif self.config.record is not None:
            self._record_file = open_private(self.config.record)
            self._recorder = Recorder(self._record_file, describe=self.attribution.lookup)
        signal.signal(signal.SIGTERM, self.request_stop)
        signal.signal(signal.SIGINT, self.request_stop)
        try:
            self.capture.start()
            watch = getattr(self.capture, "watch_fds", None)
            self._waits_on_wake = bool(watch is not None and watch({self._wake_r}))
            self.control.start()
            self.ready_at = time.time()
            self._housekeeping()
            log.info("capturing db=%s targets=%d", self.config.db, len(self.capture.targets()))
            for listener in self._ready_listeners + ([ready] if ready is not None else []):
                try:
                    listener()
                except Exception:  # noqa: BLE001
                    log.exception("ready listener failed")
            next_housekeeping = time.monotonic() + HOUSEKEEPING_S
            while not self._stop:
                self.capture.poll(self._wait_ms(next_housekeeping))
                self._drain_ingest()
                now = time.monotonic()
                if now >= next_housekeeping:
                    next_housekeeping = now + HOUSEKEEPING_S
                    self._housekeeping()
        finally:
            self.shutdown()

    def _drain_ingest(self) -> None:
        if self._wake_pending:
            self._wake_pending = False  # before draining: an event queued after this wakes us again
            try:
                os.read(self._wake_r, 4096)
            except (BlockingIOError, OSError):
                pass
        events = self.control.events
        for _ in range(MAX_INGEST_PER_TURN):
            try:
                event, origin = events.get_nowait()
            except queue.Empty:
                return
            self._on_event(event, origin)

    def _housekeeping(self) -> None:
        self.pipeline.tick(time.time_ns())
        now = time.monotonic()
        for output in self.outputs:
            try:
                output.on_tick(now)
            except Exception:  # noqa: BLE001
                log.exception("output failed on a tick output=%s", output.name)
        if self._recorder is not None:
            self._recorder.flush()
        self._status = self.status()
        self._status_file.write(self._status)

    def shutdown(self) -> None:
        started = time.monotonic()
        for listener in self._stop_listeners:
            try:
                listener()
            except Exception:  # noqa: BLE001
                log.exception("shutdown listener failed")
        try:
            self.capture.close()
        finally:
            self.control.close()
            self._drain_ingest()
            self.pipeline.close(time.time_ns())
            for output in self.outputs:
                try:
                    output.close()
                except Exception:  # noqa: BLE001 - the others still close
                    log.exception("output failed to close output=%s", output.name)
            if self._record_file is not None:
                self._record_file.close()
            self._status_file.remove(os.getpid())
            for fd in (self._wake_r, self._wake_w):
                try:
                    os.close(fd)
                except OSError:
                    pass
            log.info("stopped rows_written=%d shutdown_s=%.2f",
                     self.store.stats().get("rows_written", 0), time.monotonic() - started)

    def status(self) -> dict[str, Any]:
        return {
            "pid": os.getpid(),
            "started": self._started,
            "ready": self.ready_at,
            "updated": time.time(),
            "db": str(self.config.db),
            "capture_mode": self.capture_name,
            "targets": [_describe_target(t) for t in self.capture.targets()],
            "capture": self.capture.stats(),
            # Go/Bun executables whose TLS functions could not be located (runtimes.py)
            "tls_not_found": getattr(self.capture, "tls_not_found", list)(),
            "pipeline": self.pipeline.counters.snapshot(),
            "ingest": {"events": self.control.ingested, "bad_lines": self.control.bad_lines,
                       "refused": self.control.refused},
            "open_connections": self.pipeline.open_connections,
            "store": self.store.stats(),
            "outputs": {o.name: o.stats() for o in self.outputs if o is not self.store},
        }


def _describe_target(target: Any) -> str:
    path = getattr(target, "path", None)
    if path is None:
        return str(target)
    return f"{path} ({target.kind}, {target.mode}, {len(target.pids)} processes)"


def read_status(runtime_dir: Path | None = None) -> dict[str, Any] | None:
    """The running agent's last status, or None when no agent is running."""
    path = (runtime_dir or paths.runtime_dir()) / "status.json"
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
    """The status as (what, value) rows for ``lumen-agent status``."""
    capture = status.get("capture", {})
    pipeline = status.get("pipeline", {})
    store = status.get("store", {})
    skipped = sum(v for k, v in pipeline.items() if k.startswith("skipped."))
    return [
        ("pid", status.get("pid")),
        ("database", status.get("db")),
        ("capture", status.get("capture_mode")),
        ("uptime_s", round(status.get("updated", 0) - status.get("started", 0))),
        ("targets_attached", len(status.get("targets", []))),
        ("targets", "; ".join(status.get("targets", []))),
        ("tls_not_found", "; ".join(f"TLS functions not found: {x}" for x in status.get("tls_not_found", []))),
        ("events", capture.get("events", pipeline.get("events", 0))),
        ("bytes", capture.get("bytes", pipeline.get("bytes", 0))),
        ("lost", capture.get("lost", 0)),
        ("truncated", capture.get("truncated", 0)),
        ("ingested_events", status.get("ingest", {}).get("events", 0)),
        ("ingest_refused", status.get("ingest", {}).get("refused", 0)),
        ("calls", pipeline.get("calls", 0)),
        ("unpriced", pipeline.get("calls.unpriced", 0)),
        ("skipped", skipped),
        ("open_connections", status.get("open_connections", 0)),
        ("rows_written", store.get("rows_written", 0)),
        ("rows_pending", store.get("pending", 0)),
        ("rows_dropped", store.get("dropped", 0)),
        *((f"{name}.{key}", value) for name, stats in sorted(status.get("outputs", {}).items())
          for key, value in stats.items()),
    ] + _plain_http_rows(capture)


def _plain_http_rows(capture: dict[str, Any]) -> list[tuple[str, Any]]:
    """The plain-HTTP sniffer's counters, when it runs."""
    if "plain.packets" not in capture:
        return []
    return [(f"plain_{name}", capture.get(f"plain.{name}", 0))
            for name in ("packets", "bytes", "connections", "reorder_drops", "unattributed_connections")]
