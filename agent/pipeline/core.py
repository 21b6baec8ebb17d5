"""The pipeline: DataEvents in, priced and attributed Calls out.

Pure apart from the /proc reads of attribution: no sockets, no clocks (time
comes from the events), so a test, a recorded file and the kernel all drive
it the same way.
"""

from __future__ import annotations

import dataclasses
import os
import random
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import urlsplit

from lumen_agent.parsers.providers.batch import BatchLine
from lumen_agent.pipeline.attribution import Attribution
from lumen_agent.pipeline.batch_rows import BatchLineMemory, batch_call_id, count_batch_download
from lumen_agent.pipeline.bounds import bounded_call, bounded_usage
from lumen_agent.pipeline.call import Call, Outcome
from lumen_agent.pipeline.connections import ConnectionTracker, TrackerResult
from lumen_agent.pipeline.counters import Counters
from lumen_agent.pipeline.events import DataEvent
from lumen_agent.pipeline.exchange import Exchange
from lumen_agent.pipeline.keyhash import credential, hash_credential
from lumen_agent.pricing.cost import Priced, price_call
from lumen_agent.pricing.table import PriceTable

REQUEST_ID_HEADERS = ("x-request-id", "request-id", "x-amzn-requestid", "apim-request-id", "x-goog-request-id")


@dataclass(frozen=True, slots=True)
class PipelineOptions:
    capture: str = "ebpf"
    capture_content: bool = False  # store prompt and completion text (opt-in)
    default_tenant: str | None = None
    default_feature: str | None = None
    hostname: str | None = None


@dataclass(frozen=True, slots=True)
class Origin:
    """Where events handed in by another process came from: its rows are
    labelled with this, never with what the sender claims."""

    capture: str  # hook or proxy
    sender_uid: int | None


# Connections whose origin is remembered; past this the oldest are forgotten
# (the tracker keeps far fewer connections open).
MAX_ORIGINS = 65536


class Pipeline:
    def __init__(
        self,
        prices: PriceTable,
        on_call: Callable[[Call], None],
        *,
        salt: bytes,
        options: PipelineOptions = PipelineOptions(),
        attribution: Attribution | None = None,
        on_ignore: Callable[[int, int], None] | None = None,
        capture_of_conn: Callable[[int], str | None] | None = None,
    ) -> None:
        """``capture_of_conn(conn)``: how a connection was seen when the pipeline
        has more than one source (None: ``options.capture``)."""
        self.counters = Counters()
        self._capture_of_conn = capture_of_conn
        self._prices = prices
        self._on_call = on_call
        self._on_ignore = on_ignore
        self._salt = salt
        self._options = options
        self._host = options.hostname or socket.gethostname()
        self._attribution = attribution or Attribution()
        self._tracker = ConnectionTracker(self.counters, capture_content=options.capture_content)
        self._last_ns = 0
        self._origins: dict[tuple[int, int], Origin] = {}
        self._batch_seen = BatchLineMemory()
        self._out = TrackerResult()

    @property
    def open_connections(self) -> int:
        return len(self._tracker)

    def feed(self, event: DataEvent, origin: Origin | None = None) -> None:
        """``origin``: the event was handed in by another process (ingest)."""
        if origin is not None and self._origins.get(event.conn_key) != origin:
            if len(self._origins) >= MAX_ORIGINS:
                self._origins.pop(next(iter(self._origins)))
            self._origins[event.conn_key] = origin
        counters = self.counters  # plain ints, added to once per event (counters.py)
        counters.events += 1
        counters.bytes += len(event.data)
        if event.ts_ns > self._last_ns:
            self._last_ns = event.ts_ns
        # Most events (a chunk of a stream) finish nothing: one result is
        # reused until one does, and a fresh one is in place before emitting.
        out = self._out
        self._tracker.feed(event, out)
        if out.exchanges or out.ignore:
            self._out = TrackerResult()
            self._emit(out)

    def feed_all(self, events: Iterable[DataEvent]) -> None:
        for event in events:
            self.feed(event)

    def tick(self, now_ns: int) -> None:
        """Forget idle connections; call about once a second."""
        out = TrackerResult()
        self._tracker.expire(now_ns, out)
        self._emit(out)
        if self._origins:
            self._origins = {k: v for k, v in self._origins.items() if k in self._tracker}

    def close(self, now_ns: int | None = None) -> None:
        """End of input: every exchange still open was cut off."""
        out = TrackerResult()
        self._tracker.close_all(now_ns or self._last_ns, out)
        self._emit(out)

    def _emit(self, out: TrackerResult) -> None:
        for pid, conn in out.ignore:
            if self._on_ignore is not None:
                self._on_ignore(pid, conn)
        for exchange in out.exchanges:
            if exchange.info is None:
                continue
            if exchange.body_problem:
                self.counters.skip("response_body", exchange.body_problem)
            lines = exchange.batch_lines()
            if lines is not None:
                self._emit_batch(exchange, lines)
                continue
            call = self._to_call(exchange)
            self.counters.add("calls")
            if call.unpriced:
                self.counters.add("calls.unpriced")
            self._on_call(call)

    def _emit_batch(self, exchange: Exchange, lines: list[BatchLine]) -> None:
        """One row per billed line of a batch results download, none for the
        download itself; a line already turned into a row (a re-download)
        is counted and dropped."""
        count_batch_download(self.counters, exchange)
        for line in lines:
            if not self._batch_seen.first_time(line.key):
                self.counters.add("batch.lines_duplicate")
                continue
            call = self._to_call(exchange, line)
            self.counters.add("calls")
            if call.unpriced:
                self.counters.add("calls.unpriced")
            self._on_call(call)

    def _to_call(self, ex: Exchange, line: BatchLine | None = None) -> Call:
        """``line``: a billed line of a batch results download, the call this row is."""
        info = ex.info
        usage = bounded_usage(ex.usage() if line is None else line.usage)
        if line is not None:
            info = dataclasses.replace(info, endpoint=line.endpoint, request_model=usage.model)
        request = ex.request
        response = ex.response
        status = response.status if response is not None else None
        ts_end_ns = ex.ts_end_ns or ex.ts_start_ns
        start = datetime.fromtimestamp(ex.ts_start_ns / 1e9, UTC)
        end = datetime.fromtimestamp(ts_end_ns / 1e9, UTC)

        model = usage.model or info.request_model
        if usage.usage_implausible:  # partial usage is not priced as if it were complete
            priced = Priced(None, None, None, None, False)
        else:
            priced = price_call(self._prices, usage, info.provider, info.request_model, start)

        headers = dict(request.headers)
        secret = credential(headers, request.target or "")
        address, port = _split_authority(ex.authority)
        who = self._attribution.lookup(ex.pid)
        origin = self._origins.get((ex.pid, ex.conn))
        return bounded_call(Call(
            id=new_call_id() if line is None else batch_call_id(line),
            ts_start=start,
            ts_end=end,
            latency_ms=(ts_end_ns - ex.ts_start_ns) / 1e6,
            ttft_ms=(ex.ts_response_ns - ex.ts_start_ns) / 1e6 if ex.ts_response_ns else None,
            host=self._host,
            pid=ex.pid,
            process=who.process,
            exe=who.exe,
            user=who.user,
            unit=who.unit,
            container_id=who.container_id,
            provider=info.provider,
            endpoint=info.endpoint,
            server_address=address,
            server_port=port,
            request_model=info.request_model,
            model=model,
            streaming=info.streaming,
            status_code=status if line is None else line.status_code or status,
            outcome=(Outcome.SUCCESS if line is not None  # a billed line succeeded, whatever became of the download
                     else Outcome.from_stream_exception(ex.stream_exception) or Outcome.from_status(status, ex.complete)),
            request_id=_first_header(response, REQUEST_ID_HEADERS) if line is None else line.request_id,
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            cache_read_tokens=usage.cache_read_tokens,
            cache_write_tokens=usage.cache_write_tokens,
            cache_write_1h_tokens=usage.cache_write_1h_tokens,
            reasoning_tokens=usage.reasoning_tokens,
            cost_usd=priced.cost_usd,
            price_id=priced.price_id,
            unpriced=priced.unpriced,
            usage_missing=usage.usage_missing,
            api_key_hash=hash_credential(secret, self._salt) if secret else None,
            tenant=headers.get("x-lumen-tenant") or self._options.default_tenant,
            feature=headers.get("x-lumen-feature") or self._options.default_feature,
            # Ingest says who sent it; a sniffed connection says plain; else the pipeline's source.
            capture=(origin.capture if origin is not None
                     else (self._capture_of_conn and self._capture_of_conn(ex.conn)) or self._options.capture),
            http_version=ex.http_version,
            request_body=ex.request_text() if line is None else None,
            response_body=ex.response_text() if line is None else None,
            token_cost_usd=priced.token_cost_usd,
            charged_usd=priced.charged_usd,
            service_tier=usage.service_tier,
            web_search_requests=usage.web_search_requests,
            input_audio_tokens=usage.input_audio_tokens,
            cache_read_audio_tokens=usage.cache_read_audio_tokens,
            usage_implausible=usage.usage_implausible,
            sender_uid=origin.sender_uid if origin is not None else None,
        ))


# Row ids come from a generator seeded from os.urandom, not from
# os.urandom per call: that syscall releases the GIL, so with another of the
# agent's threads waiting for it (the store's flush thread, the exporters'
# forwarder) every call was a GIL hand-off and a wake-up across CPUs
# (~6,000 IPIs/s at 7,000 calls/s in bench/export_bench.py).  Row ids need
# to be unique, not secret.  Reseeded in a forked child, so that two
# processes (a pre-forking server with the hook) never share a sequence.
_row_ids = random.Random()
os.register_at_fork(after_in_child=_row_ids.seed)
# uuid.UUID(version=4): version nibble 4, RFC 4122 variant bits 10.
_UUID4_CLEAR = ~((0xF000 << 64) | (0xC000 << 48))
_UUID4_SET = (0x4000 << 64) | (0x8000 << 48)


def new_call_id() -> str:
    """A random row id, the 32 hex digits of a version-4 UUID.

    The same layout as ``uuid.uuid4().hex``, without building a ``UUID``
    object (it is made once per call)."""
    return f"{_row_ids.getrandbits(128) & _UUID4_CLEAR | _UUID4_SET:032x}"


def _first_header(head, names: tuple[str, ...]) -> str | None:
    if head is None:
        return None
    for name in names:
        if value := head.header(name):
            return value
    return None


def _split_authority(authority: str | None) -> tuple[str | None, int | None]:
    if not authority:
        return None, None
    parts = urlsplit("//" + authority)
    try:
        port = parts.port
    except ValueError:
        port = None
    return parts.hostname, port or 443
