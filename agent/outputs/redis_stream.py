"""Redis Streams export: ``XADD lumen:calls`` for every call.

A consumer group on the stream then aggregates a fleet in real time
(docs/export.md has a ten-line reader).  The stream is capped with
``MAXLEN ~`` so Redis memory stays bounded whoever reads it.

Capture never waits on Redis: calls go to a bounded in-memory queue that a
worker thread drains in pipelined batches.  While Redis is down the worker
reconnects with exponential backoff and the queue holds what arrives; calls
that find the queue full are dropped and counted.  Delivery is at least
once: a batch cut off by a lost connection is sent again whole, so a reader
that must not double count keys on the call's ``id``.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from decimal import Decimal
from typing import Any

from lumen_agent.outputs.base import Output
from lumen_agent.pipeline.call import Call

log = logging.getLogger(__name__)

# Calls held while Redis is unreachable: ~100k calls is a few minutes of a
# busy gateway and ~100 MB at worst; beyond it the oldest wait, the newest drop.
MAX_QUEUED = 100_000
# Calls per pipelined XADD round trip.
BATCH = 500
BACKOFF_START_S = 0.5
BACKOFF_MAX_S = 30.0
# How long close() keeps trying to deliver what is queued.
CLOSE_TIMEOUT_S = 5.0

# Row fields sent to the stream (prompt and completion text never are).
FIELDS = (
    "id", "ts_start", "ts_end", "latency_ms", "ttft_ms", "host", "pid", "process", "exe", "user", "unit",
    "container_id", "provider", "endpoint", "server_address", "server_port", "request_model", "model",
    "streaming", "status_code", "outcome", "request_id", "input_tokens", "output_tokens", "cache_read_tokens",
    "cache_write_tokens", "reasoning_tokens", "cost_usd", "price_id", "unpriced", "usage_missing",
    "api_key_hash", "tenant", "feature", "capture", "http_version",
)


def stream_fields(call: Call) -> dict[str, str]:
    """A call as stream fields: strings, NULLs left out, decimals exact."""
    out: dict[str, str] = {}
    for name in FIELDS:
        value = getattr(call, name, None)
        if value is None:
            continue
        if isinstance(value, bool):
            out[name] = "true" if value else "false"
        elif isinstance(value, Decimal):
            out[name] = format(value, "f")
        elif hasattr(value, "isoformat"):
            out[name] = value.isoformat()
        elif hasattr(value, "value"):  # enums (outcome)
            out[name] = str(value.value)
        else:
            out[name] = str(value)
    return out


class RedisStreamExport(Output):
    name = "redis"

    def __init__(self, url: str, *, stream: str = "lumen:calls", maxlen: int = 1_000_000,
                 per_tenant: bool = False, max_queued: int = MAX_QUEUED) -> None:
        import redis  # imported here: only agents that export need the client

        self._redis = redis
        self._client = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
        self.url = url
        self.stream = stream
        self.maxlen = maxlen
        self.per_tenant = per_tenant
        self._queue: collections.deque[Call] = collections.deque()
        self._max_queued = max_queued
        self._cond = threading.Condition()
        self._closing = False
        self._sent = 0
        self._dropped = 0
        self._errors = 0
        self._reconnects = 0
        self._connected = True
        self._worker = threading.Thread(target=self._run, name="lumen-redis", daemon=True)
        self._worker.start()

    def on_call(self, call: Call) -> None:
        with self._cond:  # the worker makes the fields: capture only appends
            if len(self._queue) >= self._max_queued:
                self._dropped += 1
                return
            self._queue.append(call)
            if len(self._queue) >= BATCH or len(self._queue) == 1:
                self._cond.notify()

    def close(self) -> None:
        with self._cond:
            self._closing = True
            self._cond.notify()
        self._worker.join(CLOSE_TIMEOUT_S + 1)
        with self._cond:
            left = len(self._queue)
            self._queue.clear()
        if left:
            self._dropped += left
            log.warning("redis export: %d calls not delivered at stop url=%s", left, self.url)

    def stats(self) -> dict[str, Any]:
        with self._cond:
            queued = len(self._queue)
        return {"sent": self._sent, "queued": queued, "dropped": self._dropped, "errors": self._errors,
                "reconnects": self._reconnects, "connected": self._connected}

    # -- the worker -----------------------------------------------------------

    def _run(self) -> None:
        backoff = BACKOFF_START_S
        deadline = None
        while True:
            with self._cond:
                while not self._queue and not self._closing:
                    self._cond.wait(1.0)
                if self._closing and deadline is None:
                    deadline = time.monotonic() + CLOSE_TIMEOUT_S
                if not self._queue or (deadline is not None and time.monotonic() > deadline):
                    if self._closing:
                        return
                    continue
                batch = [self._queue[i] for i in range(min(BATCH, len(self._queue)))]
            try:
                self._send(batch)
            except self._redis.RedisError as exc:
                self._errors += 1
                if self._connected:
                    log.warning("redis export: %s; retrying with backoff url=%s", exc, self.url)
                self._connected = False
                wait = min(backoff, max(0.0, deadline - time.monotonic())) if deadline is not None else backoff
                with self._cond:
                    self._cond.wait(wait)
                backoff = min(backoff * 2, BACKOFF_MAX_S)
                continue
            with self._cond:
                for _ in batch:
                    self._queue.popleft()
            self._sent += len(batch)
            if not self._connected:
                self._reconnects += 1
                log.info("redis export: connected again url=%s", self.url)
            self._connected = True
            backoff = BACKOFF_START_S

    def _send(self, batch: list[Call]) -> None:
        pipe = self._client.pipeline(transaction=False)
        for fields in map(stream_fields, batch):
            pipe.xadd(self.stream, fields, maxlen=self.maxlen, approximate=True)
            if self.per_tenant and fields.get("tenant"):
                pipe.xadd(f"{self.stream}:{fields['tenant']}", fields, maxlen=self.maxlen, approximate=True)
        pipe.execute()
