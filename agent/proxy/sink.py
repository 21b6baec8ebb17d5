"""Where the proxy's DataEvents go, off the forwarding path.

The proxy sees each upstream connection as its client would: ``SEND`` is the
request exactly as written upstream, ``RECV`` each piece read back.  The
forwarding code only appends a tuple to a bounded queue (``put_nowait``); one
worker thread turns the tuples into ``DataEvent``s and hands them on:

- ``LocalSink``: runs ``Pipeline`` + ``CallStore`` itself (no agent running),
  rows with ``capture='proxy'``, and the real client's pid (looked up from
  the TCP peer as soon as the client connects, so a client that exits right
  after its call is still described);
- ``AgentSink``: writes the events to a running agent's ``ingest.sock``
  with the real client pids (a trusted sender: root or the agent's user;
  otherwise the agent replaces every pid with the proxy's own, see
  control.py);
- ``NullSink``: nothing (a running agent already sees the proxy's TLS
  traffic through its eBPF probes).

When the queue is full the event is dropped and counted, and the next event
of that connection carries ``EventFlag.GAP`` so the pipeline resynchronises
instead of misparsing; forwarding never waits for accounting.
"""

from __future__ import annotations

import logging
import os
import queue
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lumen_agent.pipeline.events import DataEvent, Direction, EventFlag
from lumen_agent.proxy.peers import PeerResolver
from lumen_agent.recording import event_to_json

log = logging.getLogger("lumen_agent")

# Events waiting for the worker; past this they are dropped (and counted).
MAX_QUEUED = 100_000
# The worker's housekeeping period (idle connections, store flushes).
HOUSEKEEPING_S = 1.0
# How long to wait between attempts to reach the agent's ingest socket.
RECONNECT_S = 2.0

_CLIENT, _DATA, _STOP = 0, 1, 2


class EventSink:
    """Base: the queue and the worker thread.  Subclasses implement ``_handle``."""

    name = "base"
    # What refuses requests of spent "block" budgets (outputs/alerts/guard.py):
    # only a sink that runs the pipeline here knows the spend.
    guard = None

    def __init__(self, resolve_pids: bool = True) -> None:
        self._resolve_pids = resolve_pids
        self._resolver = PeerResolver()
        self._queue: queue.Queue[tuple] = queue.Queue(MAX_QUEUED)
        self._thread: threading.Thread | None = None
        self._gapped: set[int] = set()  # upstream connections that lost an event
        self._pids: dict[int, int] = {}  # client id -> pid
        self.dropped = 0
        self.events = 0
        self._own_pid = os.getpid()

    # -- called on the event loop (must stay cheap) ---------------------------

    def client(self, client_id: int, peer: Any, local: Any) -> None:
        """A client connected; its pid is looked up on the worker."""
        self._put((_CLIENT, client_id, peer, local))

    def client_closed(self, client_id: int) -> None:
        self._put((_CLIENT, client_id, None, None))

    def send(self, client_id: int, conn: int, data: bytes, ts_ns: int | None = None) -> None:
        self._put((_DATA, ts_ns or time.time_ns(), client_id, conn, Direction.SEND, data, EventFlag.NONE))

    def recv(self, client_id: int, conn: int, data: bytes) -> None:
        self._put((_DATA, time.time_ns(), client_id, conn, Direction.RECV, data, EventFlag.NONE))

    def closed(self, client_id: int, conn: int) -> None:
        self._put((_DATA, time.time_ns(), client_id, conn, Direction.RECV, b"", EventFlag.CLOSE))

    def _put(self, item: tuple) -> None:
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            self.dropped += 1
            if item[0] == _DATA:
                self._gapped.add(item[3])
            if self.dropped == 1 or self.dropped % 1000 == 0:
                log.warning("proxy event queue full: accounting dropped %d events", self.dropped)
            return

    # -- the worker -------------------------------------------------------------

    def start(self) -> None:
        self._open()
        self._thread = threading.Thread(target=self._run, name=f"lumen-proxy-{self.name}", daemon=True)
        self._thread.start()

    def close(self, timeout: float = 30.0) -> None:
        if self._thread is None:
            return
        self._queue.put((_STOP,))
        self._thread.join(timeout)
        self._thread = None

    def _run(self) -> None:
        next_tick = time.monotonic() + HOUSEKEEPING_S
        try:
            while True:
                try:
                    item = self._queue.get(timeout=HOUSEKEEPING_S)
                except queue.Empty:
                    item = None
                if item is not None:
                    if item[0] == _STOP:
                        break
                    try:
                        self._item(item)
                    except Exception:  # noqa: BLE001 - accounting must never stop the proxy
                        log.exception("proxy accounting failed on one event")
                now = time.monotonic()
                if now >= next_tick:
                    next_tick = now + HOUSEKEEPING_S
                    self._tick()
        finally:
            self._finish()

    def _item(self, item: tuple) -> None:
        if item[0] == _CLIENT:
            _, client_id, peer, local = item
            if peer is None and local is None:
                self._pids.pop(client_id, None)
            else:
                self._pids[client_id] = self._client_pid(peer, local)
            return
        _, ts, client_id, conn, direction, data, flags = item
        if conn in self._gapped:
            self._gapped.discard(conn)
            flags |= EventFlag.GAP
        pid = self._pids.get(client_id, self._own_pid)
        self.events += 1
        self._handle(DataEvent(ts, pid, pid, conn, direction, data, flags))

    def _client_pid(self, peer: Any, local: Any) -> int:
        """The local process at the other end of a client connection (or ours)."""
        pid = None
        if self._resolve_pids and isinstance(peer, tuple) and isinstance(local, tuple):
            pid = self._resolver.pid_of(peer, local)
        return self._own_pid if pid is None else pid

    # -- subclass hooks ---------------------------------------------------------

    def _open(self) -> None:
        pass

    def _handle(self, event: DataEvent) -> None:
        raise NotImplementedError

    def _tick(self) -> None:
        pass

    def _finish(self) -> None:
        pass

    def stats(self) -> dict[str, int]:
        return {"events": self.events, "dropped": self.dropped}


class NullSink(EventSink):
    name = "none"

    def _put(self, item: tuple) -> None:
        pass

    def _handle(self, event: DataEvent) -> None:
        pass


class LocalSink(EventSink):
    """Pipeline + CallStore in this process: rows with capture='proxy'."""

    name = "local"

    def __init__(self, config: Any, *, db: Path | None = None, resolve_pids: bool = True,
                 on_call: Callable[[Any], None] | None = None) -> None:
        super().__init__(resolve_pids)
        self._config = config
        self._db = db or config.db
        self._on_call = on_call
        self.pipeline = None
        self.store = None
        self.alerts = None

    def _open(self) -> None:
        from lumen_agent.outputs.store import CallStore
        from lumen_agent.pipeline.attribution import Attribution
        from lumen_agent.pipeline.build import build
        from lumen_agent.pipeline.gate import ProcessGate

        config = self._config
        self.store = CallStore(self._db, flush_interval=config.flush_interval_s)
        self.store.flush()  # create the file and schema now: a bad path fails at start
        self.attribution = Attribution()
        self.gate = ProcessGate(config.filters, self.attribution)
        self.pipeline = build(config, capture="proxy", on_call=self._call, attribution=self.attribution)
        self._start_alerts()

    def _start_alerts(self) -> None:
        """Budgets and alert rules on the proxy's calls, and the guard of "block" budgets."""
        from lumen_agent.outputs.alerts.guard import BudgetGuard
        from lumen_agent.outputs.alerts.output import AlertsOutput, wanted

        self.alerts = None
        if not wanted(self._config):
            return
        # batch=1: a "block" budget must see each call before the next request.
        self.alerts = AlertsOutput(self._db, self._config.alerts, self._config.budgets, batch=1)
        self.alerts.start()
        guard = BudgetGuard(self.alerts, config=self._config, describe=self._describe_client)
        self.guard = guard if guard else None

    def _describe_client(self, client_id: int) -> Any:
        pid = self._pids.get(client_id)
        return None if pid is None or pid == self._own_pid else self.attribution.lookup(pid)

    def _call(self, call: Any) -> None:
        self.store.add(call)
        if self.alerts is not None:
            self.alerts.on_call(call)
        if self._on_call is not None:
            self._on_call(call)

    def _client_pid(self, peer: Any, local: Any) -> int:
        pid = super()._client_pid(peer, local)
        if pid == self._own_pid:
            return pid
        self.gate.allows(pid)  # decided now, while the client still runs
        return pid

    def _handle(self, event: DataEvent) -> None:
        # Our own pid stands for a client that could not be identified: the
        # filters cannot judge it, so it is kept.
        if event.pid != self._own_pid and not self.gate.allows(event.pid):
            return
        self.pipeline.feed(event)

    def _tick(self) -> None:
        self.pipeline.tick(time.time_ns())
        self.store.maybe_flush(time.monotonic())
        if self.alerts is not None:
            self.alerts.on_tick(time.monotonic())

    def _finish(self) -> None:
        if self.pipeline is not None:
            self.pipeline.close(time.time_ns())
        if self.store is not None:
            self.store.close()
        if getattr(self, "alerts", None) is not None:
            self.alerts.close()

    def flush(self) -> None:
        """Tests: write what is pending now (only safe once the worker is idle)."""
        if self.store is not None:
            self.store.flush()

    def stats(self) -> dict[str, int]:
        out = super().stats()
        if self.pipeline is not None:
            out["calls"] = self.pipeline.counters.snapshot().get("calls", 0)
        return out


class AgentSink(EventSink):
    """Event lines to a running agent's ingest socket (reconnecting if it restarts)."""

    name = "agent"

    def __init__(self, ingest_path: Path, resolve_pids: bool = True) -> None:
        super().__init__(resolve_pids)
        self._path = ingest_path
        self._sock: socket.socket | None = None
        self._next_attempt = 0.0
        self._lost_while_down = 0

    def _open(self) -> None:
        self._connect(raise_errors=True)

    def _connect(self, raise_errors: bool = False) -> bool:
        try:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.connect(str(self._path))
            sock.sendall(b'{"op":"events","trusted_pids":true}\n')
        except OSError as exc:
            if raise_errors:
                raise OSError(f"cannot reach the agent's ingest socket {self._path}: {exc.strerror or exc}") from None
            self._next_attempt = time.monotonic() + RECONNECT_S
            return False
        self._sock = sock
        if self._lost_while_down:
            log.warning("agent ingest socket back; %d events were lost meanwhile", self._lost_while_down)
            self._lost_while_down = 0
        return True

    def _handle(self, event: DataEvent) -> None:
        if self._sock is None and (time.monotonic() < self._next_attempt or not self._connect()):
            self._lost_while_down += 1
            self._gapped.add(event.conn)
            return
        try:
            self._sock.sendall(event_to_json(event).encode() + b"\n")
        except OSError as exc:
            log.warning("agent ingest socket failed: %s; reconnecting", exc)
            self._sock.close()
            self._sock = None
            self._lost_while_down += 1
            self._gapped.add(event.conn)
            self._next_attempt = time.monotonic() + RECONNECT_S

    def _finish(self) -> None:
        if self._sock is not None:
            try:
                self._sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass
            self._sock.close()
            self._sock = None
