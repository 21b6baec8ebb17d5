"""Delivery off the capture thread: a bounded queue, a worker, batches, backoff.

Every exporter that talks to something remote (an OTLP collector, Redis, a
webhook) needs the same contract, so it is written once here:

* ``put(item)`` never blocks: it appends to a bounded queue, or drops the
  item and counts it when the queue is full;
* a worker thread takes up to ``batch`` items from the head and calls
  ``send(items)``; the items leave the queue only when ``send`` returned
  without raising, so what waits while the other end is down is delivered
  when it is back, in order;
* a failed ``send`` is retried with exponential backoff;
* ``close()`` keeps delivering for up to ``close_timeout`` seconds, then
  counts what is left as dropped.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")

BACKOFF_START_S = 0.5
BACKOFF_MAX_S = 30.0


class DeliveryQueue(Generic[T]):
    def __init__(self, name: str, send: Callable[[Sequence[T]], None], *, max_queued: int, batch: int,
                 close_timeout: float = 5.0) -> None:
        self.name = name
        self._send = send
        self._max = max_queued
        self._batch = batch
        self._close_timeout = close_timeout
        self._queue: collections.deque[T] = collections.deque()
        self._cond = threading.Condition()
        self._closing = False
        self.sent = 0
        self.dropped = 0
        self.failures = 0
        self.reconnects = 0  # failures that ended in a delivery again
        self.connected = True
        self._worker = threading.Thread(target=self._run, name=f"lumen-{name}", daemon=True)
        self._worker.start()

    def put(self, item: T) -> None:
        with self._cond:
            if len(self._queue) >= self._max:
                self.dropped += 1
                return
            self._queue.append(item)
            if len(self._queue) == 1 or len(self._queue) >= self._batch:
                self._cond.notify()

    def close(self) -> None:
        with self._cond:
            self._closing = True
            self._cond.notify()
        self._worker.join(self._close_timeout + 30)
        with self._cond:
            left = len(self._queue)
            self._queue.clear()
        if left:
            self.dropped += left
            log.warning("%s export: %d items not delivered at stop", self.name, left)

    def stats(self) -> dict[str, Any]:
        with self._cond:
            queued = len(self._queue)
        return {"sent": self.sent, "queued": queued, "dropped": self.dropped, "failures": self.failures,
                "reconnects": self.reconnects, "connected": self.connected}

    def _run(self) -> None:
        backoff = BACKOFF_START_S
        deadline: float | None = None
        while True:
            with self._cond:
                while not self._queue and not self._closing:
                    self._cond.wait(1.0)
                if self._closing and deadline is None:
                    deadline = time.monotonic() + self._close_timeout
                if not self._queue or (deadline is not None and time.monotonic() > deadline):
                    return
                items = [self._queue[i] for i in range(min(self._batch, len(self._queue)))]
            try:
                self._send(items)
            except Exception as exc:  # noqa: BLE001 - whatever the other end says, keep the items
                self.failures += 1
                if self.connected or self.failures % 100 == 0:
                    log.warning("%s export: %s; %d items wait, retrying with backoff (failures=%d)",
                                self.name, exc, len(self._queue), self.failures)
                self.connected = False
                wait = backoff if deadline is None else min(backoff, max(0.0, deadline - time.monotonic()))
                with self._cond:
                    self._cond.wait(wait)
                backoff = min(backoff * 2, BACKOFF_MAX_S)
                continue
            with self._cond:
                for _ in items:
                    self._queue.popleft()
            if not self.connected:
                self.reconnects += 1
                log.info("%s export: delivering again", self.name)
            self.connected = True
            self.sent += len(items)  # last: a reader that sees the items sent sees the state they left
            backoff = BACKOFF_START_S
