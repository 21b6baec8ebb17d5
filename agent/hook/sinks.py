"""Where the hook's events go, on the shipper thread.

``AgentSink``
    a running agent's ``ingest.sock``: ``{"op":"events"}`` then one recorded
    event a line (the replay format), over one connection kept for the life
    of the process.  The agent stamps the pid itself (SO_PEERCRED).
``LocalSink``
    no agent: the pipeline and a ``CallStore`` run here, on the shipper
    thread, and append to the database (``CallStore`` opens the file only to
    append and retries while another process holds it, so many hooked
    processes can share one file).

Both take batches of the hook's event tuples (see ``patch``).  Their
modules are imported only here, on the shipper thread, never on the
application's import path.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lumen_agent.hook.settings import HookSettings

log = logging.getLogger("lumen_agent.hook")

# How long a send to the agent may block before we give up on it.
AGENT_SEND_TIMEOUT_S = 5.0
CONNECT_TIMEOUT_S = 1.0


class SinkError(Exception):
    """The sink cannot take events any more."""


def to_event(item: tuple, pid: int):
    from lumen_agent.pipeline.events import DataEvent, Direction, EventFlag

    ts_ns, tid, conn, direction, data, flags = item
    return DataEvent(ts_ns, pid, tid, conn, Direction.SEND if direction == 0 else Direction.RECV, data,
                     EventFlag(flags))


class AgentSink:
    name = "agent"

    def __init__(self, path: Path, pid: int) -> None:
        self.path = path
        self.pid = pid
        self.shipped = 0
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(CONNECT_TIMEOUT_S)
            sock.connect(str(path))
            sock.settimeout(AGENT_SEND_TIMEOUT_S)
            sock.sendall(b'{"op":"events"}\n')
        except OSError as exc:
            sock.close()
            raise SinkError(f"no agent at {path}: {exc}") from None
        self._sock = sock

    def ship(self, batch: list[tuple]) -> None:
        from lumen_agent.recording import event_to_json

        pid = self.pid
        payload = "".join(event_to_json(to_event(item, pid)) + "\n" for item in batch).encode()
        try:
            self._sock.sendall(payload)
        except OSError as exc:
            raise SinkError(f"agent at {self.path} stopped taking events: {exc}") from None
        self.shipped += len(batch)

    def tick(self) -> None:
        pass

    def close(self) -> None:
        try:
            self._sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        self._sock.close()

    def abandon(self) -> None:
        """In a forked child: close our copy of the descriptor only (no shutdown,
        which would end the parent's connection too)."""
        try:
            self._sock.close()
        except OSError:
            pass


class LocalSink:
    name = "local"

    def __init__(self, settings: HookSettings, pid: int, on_ignore: Callable[[int, int], None]) -> None:
        from lumen_agent import config as config_mod
        from lumen_agent.outputs.store import CallStore
        from lumen_agent.pipeline.attribution import Attribution
        from lumen_agent.pipeline.build import build
        from lumen_agent.pipeline.gate import ProcessGate

        try:
            config = config_mod.load()
        except Exception as exc:  # noqa: BLE001 - a bad config file must not cost the rows
            log.warning("lumen hook: configuration unusable (%s); using defaults", exc)
            config = config_mod.Config()
        self.pid = pid
        self.db = settings.db or config.db
        self.shipped = 0
        attribution = Attribution()
        # The configuration's process filters hold here too: an excluded
        # program's traffic is dropped before the pipeline sees it.
        self.excluded = not ProcessGate(config.filters, attribution).allows(pid)
        self.store = CallStore(self.db, flush_interval=config.flush_interval_s, lock_retry=settings.lock_retry_s)
        self.pipeline = build(config, capture="hook", on_call=self.store.add, attribution=attribution,
                              on_ignore=on_ignore)
        self._next_tick = 0.0

    def ship(self, batch: list[tuple]) -> None:
        if self.excluded:
            return
        pid = self.pid
        feed = self.pipeline.feed
        for item in batch:
            feed(to_event(item, pid))
        self.shipped += len(batch)

    def tick(self) -> None:
        now = time.monotonic()
        if now >= self._next_tick:
            self._next_tick = now + 1.0
            self.pipeline.tick(time.time_ns())
        self.store.maybe_flush(now)

    def count(self, counters: dict[str, int]) -> None:
        for name, n in counters.items():
            if n:
                self.store.count(name, n)

    def close(self) -> None:
        self.pipeline.close(time.time_ns())
        self.store.close()

    def abandon(self) -> None:
        """In a forked child: the parent writes its own rows; this copy is never flushed."""

    def stats(self) -> dict[str, Any]:
        return {"store": self.store.stats(), "pipeline": self.pipeline.counters.snapshot()}
