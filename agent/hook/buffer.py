"""The bounded hand-over between the application's threads and the shipper.

``put`` runs on the application's threads inside an SSL call, so it does
the least possible: two length checks, one ``deque.append`` (atomic under the
GIL) and, only when the queue was empty, one ``Event.set`` to wake the
shipper.  When the queue is full (events or bytes) the event is dropped and
counted: the application is never slowed down or blocked to wait for us.

Counters are plain integers updated under the GIL; they are exact on
CPython with the GIL and approximate otherwise, which is enough for
statistics.
"""

from __future__ import annotations

import threading
from collections import deque

# Events waiting for the shipper.  A streamed call is ~10-1000 events; the
# shipper drains every few ms, so this is only reached when it is stuck.
MAX_QUEUED_EVENTS = 50_000
# Bytes of plaintext waiting; bounds the memory the hook can hold.
MAX_QUEUED_BYTES = 64 * 1024 * 1024


class EventBuffer:
    def __init__(self, max_events: int = MAX_QUEUED_EVENTS, max_bytes: int = MAX_QUEUED_BYTES) -> None:
        self.max_events = max_events
        self.max_bytes = max_bytes
        self.wake = threading.Event()
        self._queue: deque[tuple] = deque()
        self.queued_bytes = 0
        self.accepted = 0
        self.accepted_bytes = 0
        self.dropped = 0
        self.dropped_bytes = 0

    def put(self, item: tuple, nbytes: int) -> None:
        queue = self._queue
        if len(queue) >= self.max_events or self.queued_bytes + nbytes > self.max_bytes:
            self.dropped += 1
            self.dropped_bytes += nbytes
            return
        self.queued_bytes += nbytes
        queue.append(item)
        self.accepted += 1
        self.accepted_bytes += nbytes
        # Was empty (or two threads raced) and the shipper sleeps: wake it.
        # Event.set takes a lock; reading the flag first does not.
        if len(queue) <= 2 and not self.wake.is_set():
            self.wake.set()

    def take(self, limit: int) -> list[tuple]:
        """Up to ``limit`` events, oldest first."""
        queue = self._queue
        out: list[tuple] = []
        nbytes = 0
        pop = queue.popleft
        for _ in range(limit):
            try:
                item = pop()
            except IndexError:
                break
            out.append(item)
            nbytes += len(item[4])
        self.queued_bytes -= nbytes
        return out

    def __len__(self) -> int:
        return len(self._queue)

    def clear(self) -> None:
        self._queue.clear()
        self.queued_bytes = 0
