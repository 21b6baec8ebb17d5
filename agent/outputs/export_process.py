"""OTLP and Redis delivery in one exporter process of its own.

Why a process: turning a call into an OTLP log record (the SDK builds and
checks ~35 attributes) or into 36 Redis stream fields is Python work, and
on a worker thread it holds the GIL that the capture pipeline needs.  With
both exporters on, capture ran ~3x slower (bench/export_bench.py).  Here the
capture process only keeps a compact row tuple per call and, every
``FORWARD_INTERVAL_S`` or full batch, pickles a batch down a pipe; the
records and fields are made, batched, retried and sent in the child
(``python -m lumen_agent.outputs.export_child``), which runs the very same
:class:`~lumen_agent.outputs.otlp.OtlpExport` and
:class:`~lumen_agent.outputs.redis_stream.RedisStreamExport` the agent would
run in-process.

The contract of every output still holds, for each exporter (a *sink*):

* ``on_call`` never blocks.  The queue bound is the parent's: rows waiting
  here plus rows handed to the child and not yet delivered; a row beyond it
  is dropped and counted, as in-process.
* The child reports its counters (sent, failures, reconnects, connected)
  about every ``REPORT_INTERVAL_S``; ``stats()`` adds them to the parent's,
  so ``status`` shows one set of counters per exporter.
* A child that dies is started again with backoff; the rows it held are
  counted as dropped (``lost_in_crash`` too), and rows meanwhile wait here.
* ``close()`` sends what is left and closes the pipe; the child drains its
  queues (up to their close timeout), reports, and exits.
"""

from __future__ import annotations

import logging
import operator
import pickle
import select
import subprocess
import sys
import threading
import time
from typing import Any, BinaryIO

from lumen_agent.errors import LumenError
from lumen_agent.outputs.base import Output
from lumen_agent.outputs.redis_stream import FIELDS
from lumen_agent.pipeline.call import Call

log = logging.getLogger(__name__)

# The call fields the child needs: the stream's fields, which the OTLP
# attributes are a subset of (export_child.Row names them).
ROW_FIELDS = FIELDS
row_of = operator.attrgetter(*ROW_FIELDS)

# How often rows go down the pipe, and how many at most per message: often
# enough that the exporters' own batching (500) decides the request sizes,
# seldom enough that the per-message cost stays small.
FORWARD_INTERVAL_S = 0.1
FORWARD_BATCH = 500
REPORT_INTERVAL_S = 0.1
# The child imports the OTel SDK and connects nothing yet: a few seconds at most.
START_TIMEOUT_S = 60.0
RESTART_BACKOFF_START_S = 0.5
RESTART_BACKOFF_MAX_S = 30.0
# A child that lived this long was healthy: the next crash starts the backoff afresh.
HEALTHY_AFTER_S = 60.0
# close(): the child's own queues drain for up to their close timeout (5 s);
# beyond this it is killed and what it held counted as dropped.
CLOSE_WAIT_S = 30.0


class _Child:
    """One incarnation of the exporter process, and what it last reported."""

    def __init__(self, sinks: dict[str, dict[str, Any]]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "lumen_agent.outputs.export_child"], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE)
        self.started = time.monotonic()
        self.forwarded = dict.fromkeys(sinks, 0)
        self.report: dict[str, dict[str, Any]] = {name: {} for name in sinks}
        self.cpu_s = self.cpu_at_start = 0.0
        self.finished = threading.Event()  # its stdout is at EOF
        pickle.dump({"sinks": sinks, "log_level": logging.getLogger().getEffectiveLevel()}, self.proc.stdin)
        self.proc.stdin.flush()
        ready, _, _ = select.select([self.proc.stdout], [], [], START_TIMEOUT_S)
        first = _load(self.proc.stdout) if ready else None
        if first is not None and "ready" in first:
            self.cpu_s = self.cpu_at_start = first.get("cpu_s", 0.0)
        if first is None or "error" in first:
            problem, fix = (first or {}).get("error") or ("the exporter process did not start", "see the log")
            self.proc.kill()
            self.proc.wait()
            raise LumenError(problem, fix)

    def outstanding(self, sink: str) -> int:
        """Rows handed to this child that it has neither delivered nor dropped."""
        r = self.report[sink]
        return self.forwarded[sink] - r.get("sent", 0) - r.get("dropped", 0)


def _load(stream: BinaryIO) -> dict | None:
    try:
        return pickle.load(stream)
    except (EOFError, pickle.UnpicklingError, OSError):
        return None


class ExportProcess:
    """The parent's side: per-sink bounded queues, the pipe, the child's lifecycle."""

    def __init__(self, sinks: dict[str, dict[str, Any]], *, max_queued: dict[str, int]) -> None:
        self._sinks = sinks
        self._max = max_queued
        self._cond = threading.Condition()
        self._pending: dict[str, list[tuple]] = {name: [] for name in sinks}
        self._dropped = dict.fromkeys(sinks, 0)  # queue full, here
        self._lost = dict.fromkeys(sinks, 0)  # held by a child that died
        self._earlier = {name: {"sent": 0, "dropped": 0, "failures": 0, "reconnects": 0} for name in sinks}
        self._earlier_cpu_s = 0.0
        self.restarts = 0
        self._closing = False
        self._users = 0
        # Both sinks see the same call one after the other: make its row once.
        self._last_call: Call | None = None
        self._last_row: tuple | None = None
        self._child: _Child | None = _Child(sinks)
        self._start_reader(self._child)
        self._sender = threading.Thread(target=self._send_loop, name="lumen-export-forward", daemon=True)
        self._sender.start()

    # -- the capture thread ---------------------------------------------------

    def submit(self, sink: str, call: Call) -> None:
        with self._cond:
            if call is not self._last_call:
                self._last_call, self._last_row = call, row_of(call)
            pending = self._pending[sink]
            child = self._child
            if len(pending) + (child.outstanding(sink) if child else 0) >= self._max[sink]:
                self._dropped[sink] += 1
                return
            pending.append(self._last_row)
            if len(pending) >= FORWARD_BATCH:
                self._cond.notify()

    def stats(self, sink: str) -> dict[str, Any]:
        with self._cond:
            child = self._child
            report = child.report[sink] if child else {}
            earlier = self._earlier[sink]
            return {
                "sent": earlier["sent"] + report.get("sent", 0),
                "queued": len(self._pending[sink]) + (child.outstanding(sink) if child else 0),
                "dropped": (self._dropped[sink] + self._lost[sink] + earlier["dropped"]
                            + report.get("dropped", 0)),
                "failures": earlier["failures"] + report.get("failures", 0),
                "reconnects": earlier["reconnects"] + report.get("reconnects", 0),
                "connected": bool(child and report.get("connected", True)),
                "lost_in_crash": self._lost[sink],
                "process_restarts": self.restarts,
            }

    def cpu_seconds(self) -> float:
        """CPU time (user + system) the exporter processes used since they were
        ready (their start-up, mostly imports, is left out), as last reported."""
        with self._cond:
            return self._earlier_cpu_s + (self._child.cpu_s - self._child.cpu_at_start if self._child else 0.0)

    def child_pid(self) -> int | None:
        child = self._child
        return child.proc.pid if child else None

    def open(self) -> ExportProcess:
        self._users += 1
        return self

    def release(self) -> None:
        """One facade closed; the last one stops the process (after draining)."""
        self._users -= 1
        if self._users <= 0:
            self.close()

    def close(self) -> None:
        with self._cond:
            if self._closing:
                return
            self._closing = True
            self._cond.notify()
        self._sender.join(CLOSE_WAIT_S + 10)

    # -- the forwarding thread ------------------------------------------------

    def _send_loop(self) -> None:
        backoff = RESTART_BACKOFF_START_S
        while True:
            with self._cond:
                if not self._closing and max(map(len, self._pending.values())) < FORWARD_BATCH:
                    self._cond.wait(FORWARD_INTERVAL_S)
                closing = self._closing
                child = self._child
                batch = {}
                if child is not None:
                    for sink, pending in self._pending.items():
                        if pending:
                            batch[sink] = pending[:FORWARD_BATCH]
                            del pending[:FORWARD_BATCH]
                            child.forwarded[sink] += len(batch[sink])
            if child is None:  # restarting
                if closing:
                    self._drop_pending("exporter process down at stop")
                    return
                time.sleep(backoff)
                backoff = self._restart(backoff)
                continue
            if batch:
                try:
                    pickle.dump(batch, child.proc.stdin, protocol=pickle.HIGHEST_PROTOCOL)
                    child.proc.stdin.flush()
                except (BrokenPipeError, OSError, ValueError):
                    self._child_died(child)
                    continue
            elif child.finished.is_set():
                self._child_died(child)
                continue
            if closing and not any(self._pending.values()):
                self._stop_child(child)
                return
            if time.monotonic() - child.started > HEALTHY_AFTER_S:
                backoff = RESTART_BACKOFF_START_S

    def _restart(self, backoff: float) -> float:
        try:
            child = _Child(self._sinks)
        except (LumenError, OSError) as exc:
            log.warning("export process: restart failed: %s", exc)
            return min(backoff * 2, RESTART_BACKOFF_MAX_S)
        with self._cond:
            self._child = child
            self.restarts += 1
        self._start_reader(child)
        log.info("export process: restarted pid=%d restarts=%d", child.proc.pid, self.restarts)
        return min(backoff * 2, RESTART_BACKOFF_MAX_S)

    def _child_died(self, child: _Child) -> None:
        child.proc.kill()
        child.proc.wait()
        child.finished.wait(5)
        with self._cond:
            for sink in self._sinks:
                self._lost[sink] += max(0, child.outstanding(sink))
                for key in self._earlier[sink]:
                    self._earlier[sink][key] += child.report[sink].get(key, 0)
            self._earlier_cpu_s += child.cpu_s - child.cpu_at_start
            self._child = None
            lost = dict(self._lost)
        log.warning("export process pid=%d died (exit %s); rows it held are counted as dropped, lost=%s; "
                    "restarting with backoff", child.proc.pid, child.proc.returncode, lost)

    def _stop_child(self, child: _Child) -> None:
        try:
            child.proc.stdin.close()  # end of input: the child drains its queues and exits
        except OSError:
            pass
        try:
            child.proc.wait(CLOSE_WAIT_S)
        except subprocess.TimeoutExpired:
            log.warning("export process pid=%d did not finish within %.0f s; killed", child.proc.pid, CLOSE_WAIT_S)
            child.proc.kill()
            child.proc.wait()
        child.finished.wait(5)
        with self._cond:  # whatever it did not report as delivered is dropped
            for sink in self._sinks:
                left = max(0, child.outstanding(sink))
                if left:
                    child.report[sink]["dropped"] = child.report[sink].get("dropped", 0) + left

    def _drop_pending(self, why: str) -> None:
        with self._cond:
            for sink, pending in self._pending.items():
                if pending:
                    log.warning("%s export: %d rows not delivered: %s", sink, len(pending), why)
                    self._dropped[sink] += len(pending)
                    pending.clear()

    def _start_reader(self, child: _Child) -> None:
        def read() -> None:
            while (message := _load(child.proc.stdout)) is not None:
                with self._cond:
                    child.report.update(message.get("stats", {}))
                    child.cpu_s = message.get("cpu_s", child.cpu_s)
            child.finished.set()
            with self._cond:
                self._cond.notify()

        threading.Thread(target=read, name="lumen-export-reports", daemon=True).start()


class ForwardedExport(Output):
    """One exporter (``otlp`` or ``redis``) as the agent sees it: its calls go
    to the shared exporter process, its counters come back from it."""

    def __init__(self, name: str, process: ExportProcess) -> None:
        self.name = name
        self._process = process.open()

    @property
    def process(self) -> ExportProcess:
        return self._process

    def on_call(self, call: Call) -> None:
        self._process.submit(self.name, call)

    def close(self) -> None:
        self._process.release()

    def stats(self) -> dict[str, Any]:
        return self._process.stats(self.name)


def os_cpu_seconds() -> float:
    """This process's CPU time (all threads), for the benchmark's per-call figure."""
    return time.process_time()
