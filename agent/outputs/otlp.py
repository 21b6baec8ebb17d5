"""OTLP export: one log record per call, and GenAI client metrics.

Why log records and not spans: a span is an operation *this* process timed,
inside a trace it belongs to.  The agent observes other processes' calls
from outside; it has no trace context to join, and a span without one is an
orphan root in every tracing UI.  A log record (an event, ``lumen.llm_call``)
carries the same attributes, lands in the collector's logs pipeline, and is
what GenAI dashboards built on events query.

Attributes follow the OpenTelemetry GenAI semantic conventions where one
exists (``gen_ai.provider.name``, ``gen_ai.usage.input_tokens``, ...); our
own (cost, attribution that has no convention) are under ``lumen.*``.

Metrics: ``gen_ai.client.token.usage`` (histogram by ``gen_ai.token.type``),
``gen_ai.client.operation.duration`` (histogram, seconds) and
``lumen.cost`` (counter, USD).  Cumulative, so a collector that was down
misses no spend: the next export carries the totals.

Capture never waits on the collector: calls wait in a bounded queue that a
worker thread exports in batches through the SDK's OTLP exporter.  (In the
agent this runs in the exporter process, export_process.py.)

Over HTTP the worker builds the ``ExportLogsServiceRequest`` itself from the
official opentelemetry-proto classes and hands the bytes to the SDK
exporter's HTTP client, which still does the endpoint and headers (also
from ``OTEL_EXPORTER_OTLP_*``), compression, timeout and retries.  Why not
one SDK ``LogRecord`` per call: the SDK checks and copies every attribute
on emit and its encoder walks them again in Python, ~250 us of CPU per
call, more than the whole pipeline spends on the call; the attributes here
are already clean (our own types, no sequences, no user input as keys).
gRPC keeps the SDK's record path.  A batch the collector did not take is kept and retried with
backoff, so what arrived while it was down is delivered when it is back;
records that find the queue full are dropped and counted (``status``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

from opentelemetry._logs import LogRecord
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord as LogRecordProto
from opentelemetry.proto.logs.v1.logs_pb2 import ResourceLogs, ScopeLogs
from opentelemetry.proto.resource.v1.resource_pb2 import Resource as ResourceProto
from opentelemetry.sdk._logs import LoggerProvider, LogRecordProcessor
from opentelemetry.sdk._logs.export import LogRecordExportResult
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource

from lumen_agent import __version__
from lumen_agent.errors import LumenError
from lumen_agent.outputs.base import Output
from lumen_agent.outputs.delivery import DeliveryQueue
from lumen_agent.outputs.otlp_histograms import BatchedHistograms
from lumen_agent.pipeline.call import Call

log = logging.getLogger(__name__)

# Records held while the collector is unreachable (a few minutes of a busy
# host; ~1-2 KB each).
MAX_QUEUED = 50_000
BATCH = 512
# Per export request; the SDK's own retries stay within it.
EXPORT_TIMEOUT_S = 5.0
CLOSE_TIMEOUT_S = 5.0
METRICS_INTERVAL_MS = 10_000

EVENT_NAME = "lumen.llm_call"

# Our endpoint names -> gen_ai.operation.name.
OPERATIONS = {
    "chat.completions": "chat",
    "messages": "chat",
    "responses": "chat",
    "converse": "chat",
    "converseStream": "chat",
    "chat": "chat",
    "completions": "text_completion",
    "embeddings": "embeddings",
    "embed": "embeddings",
    "generateContent": "generate_content",
    "streamGenerateContent": "generate_content",
}


def operation_name(endpoint: str | None) -> str:
    return OPERATIONS.get(endpoint or "", "chat")


def call_attributes(call: Call) -> dict[str, Any]:
    """The record's attributes; NULL fields are left out (OTLP has no null)."""
    a: dict[str, Any] = {
        "gen_ai.provider.name": call.provider,
        "gen_ai.operation.name": operation_name(call.endpoint),
        "gen_ai.request.model": call.request_model,
        "gen_ai.response.model": call.model,
        "gen_ai.usage.input_tokens": call.input_tokens,
        "gen_ai.usage.output_tokens": call.output_tokens,
        "gen_ai.usage.cache_read.input_tokens": call.cache_read_tokens,
        "gen_ai.usage.cache_creation.input_tokens": call.cache_write_tokens,
        "gen_ai.usage.reasoning.output_tokens": call.reasoning_tokens,
        "server.address": call.server_address,
        "server.port": call.server_port,
        "http.response.status_code": call.status_code,
        "error.type": None if call.outcome.value == "success" else call.outcome.value,
        "host.name": call.host,
        "process.pid": call.pid,
        "process.executable.name": call.process,
        "process.executable.path": call.exe,
        "process.owner": call.user,
        "container.id": call.container_id,
        "lumen.call.id": call.id,
        "lumen.endpoint": call.endpoint,
        "lumen.outcome": call.outcome.value,
        "lumen.streaming": call.streaming,
        "lumen.request_id": call.request_id,
        "lumen.cost_usd": float(call.cost_usd) if call.cost_usd is not None else None,
        # The exact decimal too: a double cannot hold every DECIMAL(18,8).
        "lumen.cost_usd_exact": format(call.cost_usd, "f") if call.cost_usd is not None else None,
        "lumen.price_id": call.price_id,
        "lumen.unpriced": call.unpriced,
        "lumen.usage_missing": call.usage_missing,
        "lumen.latency_ms": call.latency_ms,
        "lumen.ttft_ms": call.ttft_ms,
        "lumen.unit": call.unit,
        "lumen.tenant": call.tenant,
        "lumen.feature": call.feature,
        "lumen.api_key_hash": call.api_key_hash,
        "lumen.capture": call.capture,
    }
    return {k: v for k, v in a.items() if v is not None}


def _exporters(endpoint: str | None, protocol: str, headers: dict[str, str] | None):
    """(log exporter, metric exporter) for ``endpoint``; the OTEL_EXPORTER_OTLP_*
    variables fill in what is not given (the SDK reads them)."""
    if protocol == "grpc":
        try:
            from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
            from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
        except ImportError:
            raise LumenError("OTLP over gRPC needs the gRPC exporter package",
                             "pip install 'lumen-agent[otlp-grpc]', or use protocol = \"http/protobuf\"") from None
        return (OTLPLogExporter(endpoint=endpoint, headers=headers, timeout=EXPORT_TIMEOUT_S),
                OTLPMetricExporter(endpoint=endpoint, headers=headers, timeout=EXPORT_TIMEOUT_S))
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

    base = endpoint.rstrip("/") if endpoint else None
    return (OTLPLogExporter(endpoint=f"{base}/v1/logs" if base else None, headers=headers,
                            timeout=EXPORT_TIMEOUT_S),
            OTLPMetricExporter(endpoint=f"{base}/v1/metrics" if base else None, headers=headers,
                               timeout=EXPORT_TIMEOUT_S))


class OtlpExport(Output):
    """Calls wait in a bounded queue; a worker thread turns a batch into log
    records and metric points and hands the records to the SDK's exporter.
    The capture thread only appends to the queue."""

    name = "otlp"

    def __init__(self, endpoint: str | None, *, protocol: str = "http/protobuf", host: str | None = None,
                 headers: dict[str, str] | None = None, max_queued: int = MAX_QUEUED,
                 metrics_interval_ms: int = METRICS_INTERVAL_MS) -> None:
        self.endpoint = endpoint or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "")
        self._exporter, metric_exporter = _exporters(endpoint, protocol, headers)
        resource = Resource.create({"service.name": "lumen-agent", "service.version": __version__,
                                    **({"host.name": host} if host else {})})
        # HTTP: requests built here from the proto classes (see the module docstring).
        # ``_client`` is the exporter's HTTP client (SDK >= 1.4x): private, so
        # checked here and covered by the receiver tests; without it, the SDK path.
        self._direct = protocol != "grpc" and callable(getattr(getattr(self._exporter, "_client", None),
                                                               "export", None))
        self._resource_proto = ResourceProto(attributes=[KeyValue(key=k, value=any_value(v))
                                                         for k, v in resource.attributes.items()])
        self._scope_proto = InstrumentationScope(name="lumen_agent", version=__version__)
        self._pieces = RecordPieces()
        # The SDK builds its records (attribute limits, resource, scope) in
        # emit(); this processor just hands each one back to the worker.
        self._converted: list = []
        self._provider = LoggerProvider(resource=resource)
        self._provider.add_log_record_processor(_Collect(self._converted))
        self._logger = self._provider.get_logger("lumen_agent", __version__)
        self._reader = PeriodicExportingMetricReader(metric_exporter, export_interval_millis=metrics_interval_ms)
        self._meters = MeterProvider(resource=resource, metric_readers=[self._reader])
        meter = self._meters.get_meter("lumen_agent", __version__)
        self._tokens = meter.create_histogram("gen_ai.client.token.usage", unit="{token}",
                                              description="Tokens used per LLM call, by token type")
        self._duration = meter.create_histogram("gen_ai.client.operation.duration", unit="s",
                                                description="Duration of LLM calls")
        self._cost = meter.create_counter("lumen.cost", unit="USD", description="Spend on LLM calls, as priced")
        self._histograms = BatchedHistograms(self._meters, self._reader)

        self._delivery = DeliveryQueue("otlp", self._send, max_queued=max_queued, batch=BATCH,
                                       close_timeout=CLOSE_TIMEOUT_S)
        # Log records of the calls at the head of the queue, in order: a batch
        # the collector refused is sent again without being converted (and
        # counted in the metrics) twice.
        self._pending_records: list = []

    def on_call(self, call: Call) -> None:
        self._delivery.put(call)  # the worker converts: capture only appends

    def close(self) -> None:
        self._delivery.close()
        self._exporter.shutdown()
        try:
            self._meters.shutdown(timeout_millis=CLOSE_TIMEOUT_S * 1000)
        except Exception as exc:  # noqa: BLE001 - a collector gone at stop must not stop the agent
            log.warning("otlp metrics at stop: %s", exc)

    def stats(self) -> dict[str, Any]:
        return self._delivery.stats()

    # -- the worker -----------------------------------------------------------

    def _records(self, calls: list[Call]) -> list:
        """Log records for ``calls`` (serialised over HTTP, SDK records over gRPC);
        their metric points are recorded here, once."""
        self._converted.clear()
        records = []
        spend: dict[tuple, float] = {}
        series: dict[tuple, dict[str, Any]] = {}
        values: dict[tuple, list] = {}
        for call in calls:
            attributes = call_attributes(call)
            timestamp = int(call.ts_end.timestamp() * 1e9)
            body = f"{call.provider} {call.model or call.request_model}"
            if self._direct:
                records.append(self._pieces.record(timestamp, body, attributes))
            else:
                self._logger.emit(LogRecord(timestamp=timestamp, event_name=EVENT_NAME, body=body,
                                            attributes=attributes))
            # One attributes dict per series and batch: the SDK hashes what it is given on every point.
            key = tuple(attributes.get(k) for k in _METRIC_DIMENSIONS)
            dims = series.get(key)
            if dims is None:
                dims = series[key] = {k: attributes[k] for k in _METRIC_DIMENSIONS if k in attributes}
                series[key + ("input",)] = {**dims, "gen_ai.token.type": "input"}
                series[key + ("output",)] = {**dims, "gen_ai.token.type": "output"}
            # Histogram values by instrument and series, in call order (otlp_histograms.py says why).
            if call.input_tokens is not None:
                values.setdefault((self._tokens, key + ("input",)), []).append(call.input_tokens)
            if call.output_tokens is not None:
                values.setdefault((self._tokens, key + ("output",)), []).append(call.output_tokens)
            if call.latency_ms is not None:
                values.setdefault((self._duration, key), []).append(call.latency_ms / 1000)
            if call.cost_usd is not None:  # one counter point per series and batch
                spend[key] = spend.get(key, 0.0) + float(call.cost_usd)
        for (histogram, series_key), points in values.items():
            self._histograms.record(histogram, points, series[series_key])
        for key, usd in spend.items():
            self._cost.add(usd, series[key])
        return records if self._direct else list(self._converted)

    def _export(self, records: list) -> bool:
        if not self._direct:
            return self._exporter.export(records) == LogRecordExportResult.SUCCESS
        request = ExportLogsServiceRequest(resource_logs=[ResourceLogs(
            resource=self._resource_proto, scope_logs=[ScopeLogs(scope=self._scope_proto)])])
        log_records = request.resource_logs[0].scope_logs[0].log_records
        for record in records:  # each parsed (in C) straight into its place in the request
            log_records.add().MergeFromString(record)
        return self._exporter._client.export(request.SerializeToString()).success

    def _send(self, calls: Sequence[Call]) -> None:
        records = self._pending_records
        if len(records) < len(calls):
            records += self._records(calls[len(records):])
        if not self._export(records[:len(calls)]):
            raise ConnectionError("the collector did not take the records")
        del records[:len(calls)]


_VALUE_FIELD = {str: "string_value", bool: "bool_value", int: "int_value", float: "double_value"}

# Serialised attributes kept for reuse: a host's calls repeat most of their
# ~35 attributes (provider, models, host, process, tenant...); the unique ones
# (call id, request id) would fill it, so it starts afresh when full.
MAX_CACHED_ATTRIBUTES = 4096


class RecordPieces:
    """A log record as bytes, from the serialised form of each attribute.

    Protobuf's wire format makes concatenated messages one merged message,
    repeated fields appended in order: ``LogRecord(attributes=[a])`` bytes
    for each attribute, after the record's own fields, parse as exactly the
    record with all of them (which the request then serialises to the same
    bytes as before).  Each piece is serialised by the proto
    classes once and then reused, instead of converting ~35 nested dicts per
    call (~95 -> ~35 us per call measured, with this host's repeats).
    """

    def __init__(self) -> None:
        self._cache: dict[tuple, bytes] = {}

    def record(self, timestamp: int, body: str, attributes: dict[str, Any]) -> bytes:
        cache = self._cache
        if len(cache) > MAX_CACHED_ATTRIBUTES:
            cache.clear()
        parts = [LogRecordProto(time_unix_nano=timestamp, observed_time_unix_nano=timestamp,
                                event_name=EVENT_NAME, body={"string_value": body}).SerializeToString()]
        for k, v in attributes.items():
            key = (k, type(v), v)  # the type too: True == 1 == 1.0, but not in OTLP
            piece = cache.get(key)
            if piece is None:
                piece = cache[key] = LogRecordProto(
                    attributes=[{"key": k, "value": _value(v)}]).SerializeToString()
            parts.append(piece)
        return b"".join(parts)


def _value(value: Any) -> dict[str, Any]:
    """An AnyValue as the dict upb takes (by exact type: a bool is no int in OTLP)."""
    field = _VALUE_FIELD.get(type(value))
    return {field: value} if field else {"string_value": str(value)}


def any_value(value: Any) -> AnyValue:
    # bool before int: a bool is an int in Python, not in OTLP.
    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, int):
        return AnyValue(int_value=value)
    if isinstance(value, float):
        return AnyValue(double_value=value)
    return AnyValue(string_value=str(value))


_METRIC_DIMENSIONS = ("gen_ai.provider.name", "gen_ai.operation.name", "gen_ai.request.model",
                      "gen_ai.response.model")


class _Collect(LogRecordProcessor):
    """Hands each record the SDK built back to the exporting worker."""

    def __init__(self, into: list) -> None:
        self._into = into

    def on_emit(self, log_record) -> None:
        self._into.append(log_record)

    emit = on_emit  # older SDKs call emit()

    def enabled(self, *args: Any, **kwargs: Any) -> bool:
        return True

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True

    def shutdown(self) -> None:
        pass
