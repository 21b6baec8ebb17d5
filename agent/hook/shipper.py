"""The hook's background half: one daemon thread that drains the event buffer
in batches and hands them to a sink (the agent's ingest socket, or the
pipeline in-process), plus the counters that say what was lost and why.

Nothing here runs on the application's threads except ``on_fault`` (called
by a wrapper that failed) and ``stop`` (at exit).  Every failure is caught,
counted, and logged the first time per kind; the application never sees it.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

from lumen_agent.hook import patch
from lumen_agent.hook.buffer import EventBuffer
from lumen_agent.hook.settings import HookSettings

log = logging.getLogger("lumen_agent.hook")

# After the first event of a quiet spell, wait this long so one wake ships
# a batch, not one event (bounds the wakes of a fast stream to ~50/s).
BATCH_WINDOW_S = 0.02
# Longest sleep when idle: housekeeping (idle connections, due flushes).
IDLE_WAKE_S = 0.5
# Events per sink call.
MAX_BATCH = 2_000
# Pause between attempts to reach an agent that did not answer (mode agent).
AGENT_RETRY_S = 1.0


# A status file older than this is a gone agent's (runner.STATUS_STALE_S).
STATUS_STALE_S = 5.0


def agent_captures_tls(runtime_dir: Path) -> bool:
    """True when a live agent of ``runtime_dir`` captures with eBPF (its status
    says ``capture_mode`` ebpf; older agents: it names attached TLS libraries,
    not only the ingest socket)."""
    try:
        status = json.loads((runtime_dir / "status.json").read_text())
        if time.time() - float(status.get("updated", 0)) > STATUS_STALE_S:
            return False
        os.kill(int(status["pid"]), 0)
    except PermissionError:
        pass  # alive, another user's (root's) process
    except (OSError, ValueError, KeyError, TypeError):
        return False
    mode = status.get("capture_mode")
    if mode is not None:
        return mode == "ebpf"
    targets = status.get("targets") or []  # an agent from before capture_mode
    return any(not str(t).startswith("ingest socket") for t in targets)


class Shipper:
    def __init__(self, settings: HookSettings) -> None:
        self.settings = settings
        self.buffer = EventBuffer()
        self.pid = os.getpid()
        self.sink: Any = None
        self.faults = 0  # failures of the wrappers, on the application's threads
        self.ship_errors = 0  # failures of a sink
        self.lost = 0  # events taken from the buffer that no sink took
        self._local_unusable = False
        self.stood_aside = False
        self._agent_retry_at = 0.0
        self._logged: set[str] = set()
        self._stopping = False
        self._thread: threading.Thread | None = None

    # -- the application's side ------------------------------------------------

    def on_fault(self, exc: BaseException) -> None:
        self.faults += 1
        self._log_once("record", "lumen hook: recording a TLS call failed (%r); the application is unaffected, "
                       "further faults are only counted", exc)

    # -- lifecycle -------------------------------------------------------------

    def start(self) -> None:
        thread = threading.Thread(target=self._run, name="lumen-hook", daemon=True)
        self._thread = thread
        thread.start()

    def stop(self, timeout: float | None = None) -> None:
        """Ship what is queued, close the sink (the last append), wait at most ``timeout``."""
        self._stopping = True
        self.buffer.wake.set()
        thread = self._thread
        if thread is not None and thread.is_alive() and thread is not threading.current_thread():
            thread.join(self.settings.exit_timeout_s if timeout is None else timeout)
            if thread.is_alive():
                self._log_once("exit", "lumen hook: gave up waiting %.1f s for the last events at exit",
                               self.settings.exit_timeout_s if timeout is None else timeout)

    def after_fork_in_child(self) -> None:
        """A forked child: its own buffer, counters, sink and thread; the parent's stay the parent's."""
        old = self.sink
        self.sink = None
        if old is not None:
            try:
                old.abandon()
            except Exception:  # noqa: BLE001
                pass
        self.pid = os.getpid()
        self.buffer = EventBuffer()
        self.faults = self.ship_errors = self.lost = 0
        self._stopping = False
        self._thread = None
        patch.reset_after_fork()
        patch.install(self.buffer.put, self.on_fault)
        self.start()

    # -- the thread ------------------------------------------------------------

    def _run(self) -> None:
        buffer = self.buffer
        try:
            while True:
                buffer.wake.wait(IDLE_WAKE_S)
                buffer.wake.clear()
                if len(buffer) and not self._stopping:
                    time.sleep(BATCH_WINDOW_S)
                self._drain()
                self._tick()
                if self._stopping and not len(buffer):
                    break
        except BaseException as exc:  # noqa: BLE001 - the thread must end quietly
            self.ship_errors += 1
            self._log_once("thread", "lumen hook: shipper stopped (%r); further events are dropped", exc)
            patch.ignored.clear()
        finally:
            self._close_sink()
            self._write_report()

    def _drain(self) -> None:
        while True:
            batch = self.buffer.take(MAX_BATCH)
            if not batch:
                return
            self._deliver(batch)

    def _deliver(self, batch: list[tuple]) -> None:
        sink = self._sink()
        if sink is None:
            self.lost += len(batch)
            return
        try:
            sink.ship(batch)
            return
        except Exception as exc:  # noqa: BLE001
            from lumen_agent.hook.sinks import SinkError

            self.ship_errors += 1
            if not isinstance(exc, SinkError):
                self.lost += len(batch)
                self._log_once("ship", "lumen hook: handling events failed (%r); they are dropped", exc)
                return
            self._log_once("agent-lost", "lumen hook: %s", exc)
            self._drop_sink()
        # The agent went away: try once more (a restarted agent), else per mode.
        sink = self._sink()
        if sink is None:
            self.lost += len(batch)
            return
        try:
            sink.ship(batch)
        except Exception as exc:  # noqa: BLE001
            self.ship_errors += 1
            self.lost += len(batch)
            self._log_once("ship", "lumen hook: handling events failed (%r); they are dropped", exc)
            self._drop_sink()

    def _tick(self) -> None:
        sink = self.sink
        if sink is None:
            return
        try:
            sink.tick()
        except Exception as exc:  # noqa: BLE001
            self.ship_errors += 1
            self._log_once("tick", "lumen hook: housekeeping failed (%r)", exc)

    # -- choosing the sink -------------------------------------------------------

    def _sink(self) -> Any:
        if self.sink is not None:
            return self.sink
        from lumen_agent.hook.sinks import AgentSink, SinkError

        mode = self.settings.mode
        if self.stood_aside:
            return None
        if mode in ("auto", "agent") and time.monotonic() >= self._agent_retry_at:
            if agent_captures_tls(self.settings.socket_path.parent):
                self._stand_aside()
                return None
            try:
                sink = AgentSink(self.settings.socket_path, self.pid)
            except SinkError as exc:
                if mode == "agent":
                    self._agent_retry_at = time.monotonic() + AGENT_RETRY_S
                    self._log_once("no-agent", "lumen hook: %s; events are dropped until one answers", exc)
                    return None
            else:
                self.sink = sink
                return sink
        if mode == "agent":
            return None
        return self._local()

    def _stand_aside(self) -> None:
        """An eBPF agent already sees this process's TLS: recording it here too
        would count every call twice.  Stop recording; drop what was queued."""
        self.stood_aside = True
        patch.stop_recording()
        self.buffer.take(len(self.buffer) + MAX_BATCH)
        log.info("lumen hook: the running agent captures TLS with eBPF; the hook stands aside")

    def _local(self) -> Any:
        if self._local_unusable:
            return None
        from lumen_agent.hook.sinks import LocalSink

        try:
            self.sink = LocalSink(self.settings, self.pid, self._ignore)
        except Exception as exc:  # noqa: BLE001
            self._local_unusable = True
            self.ship_errors += 1
            self._log_once("local", "lumen hook: no agent is running and the in-process pipeline cannot run "
                           "here (%r); start `lumen-agent run --capture hook`. Events are dropped.", exc)
            return None
        self.settings = self.settings  # (db chosen in LocalSink)
        return self.sink

    def _drop_sink(self) -> None:
        sink, self.sink = self.sink, None
        if sink is not None:
            try:
                sink.close()
            except Exception:  # noqa: BLE001
                pass
        # A new agent connection is tried at once; local mode stays chosen.

    def _close_sink(self) -> None:
        sink = self.sink
        if sink is None:
            return
        try:
            if hasattr(sink, "count"):
                sink.count(self._persisted_counters())
            sink.close()
        except Exception as exc:  # noqa: BLE001
            self.ship_errors += 1
            self._log_once("close", "lumen hook: final flush failed (%r)", exc)

    @staticmethod
    def _ignore(pid: int, conn: int) -> None:
        patch.ignored.add(conn)

    # -- counters ----------------------------------------------------------------

    def _persisted_counters(self) -> dict[str, int]:
        b = self.buffer
        return {"hook.events_dropped": b.dropped, "hook.faults": self.faults, "hook.events_lost": self.lost}

    def stats(self) -> dict[str, Any]:
        b = self.buffer
        sink = self.sink
        out: dict[str, Any] = {
            "pid": self.pid,
            "mode": self.settings.mode,
            "sink": getattr(sink, "name", None),
            "events": b.accepted,
            "bytes": b.accepted_bytes,
            "queued": len(b),
            "dropped": b.dropped,
            "dropped_bytes": b.dropped_bytes,
            "faults": self.faults,
            "ship_errors": self.ship_errors,
            "lost": self.lost,
            "shipped": getattr(sink, "shipped", 0),
            "ignored_connections": len(patch.ignored),
            "stood_aside": self.stood_aside,
        }
        if sink is not None and hasattr(sink, "stats"):
            try:
                out.update(sink.stats())
            except Exception:  # noqa: BLE001
                pass
        if sink is not None and hasattr(sink, "db"):
            out["db"] = str(sink.db)
        return out

    def _write_report(self) -> None:
        path = self.settings.report
        if path is None:
            return
        try:
            with open(path, "a", encoding="utf-8") as f:
                f.write(json.dumps(self.stats(), default=str) + "\n")
        except Exception:  # noqa: BLE001
            pass

    def _log_once(self, kind: str, message: str, *args: Any) -> None:
        if kind in self._logged:
            return
        self._logged.add(kind)
        try:
            log.warning(message, *args)
        except Exception:  # noqa: BLE001
            pass
