"""OTLP export with the real OpenTelemetry SDK and its OTLP/HTTP exporter,
into a receiver that decodes the protobuf (tests/support/otlp_receiver.py)."""

from __future__ import annotations

import socket
import time
from dataclasses import replace
from decimal import Decimal

import pytest
from support.otlp_receiver import Receiver
from test_export_parquet import recording
from test_store_support import make_call
from typer.testing import CliRunner

from lumen_agent.cli import app
from lumen_agent.outputs.otlp import OtlpExport


def wait_for(predicate, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not predicate():
        time.sleep(0.05)
    assert predicate()


def test_replayed_calls_arrive_as_log_records_with_genai_attributes(tmp_path, monkeypatch):
    monkeypatch.setenv("LUMEN_STATE_DIR", str(tmp_path / "state"))
    receiver = Receiver()
    try:
        recording(tmp_path / "r.jsonl", [0, 0, 1])
        config = tmp_path / "config.toml"
        config.write_text('[agent]\nhostname = "web-1"\n[attribution]\ntenant = "team-a"\n'
                          '[export.otlp]\nheaders = { "x-tenant-token" = "fake-token" }\n')
        result = CliRunner().invoke(app, ["replay", str(tmp_path / "r.jsonl"), "--db", str(tmp_path / "x.duckdb"),
                                          "--config", str(config), "--export-otlp", receiver.url])
        assert result.exit_code == 0, result.output
        # replay closes its outputs before it returns: every record is delivered by then
        assert len(receiver.records) == 3
        record = receiver.records[0]
        assert record["event_name"] == "lumen.llm_call"
        assert record["resource"]["service.name"] == "lumen-agent"
        assert record["resource"]["host.name"] == "web-1"
        attrs = record["attributes"]
        assert {k: attrs[k] for k in (
            "gen_ai.provider.name", "gen_ai.operation.name", "gen_ai.request.model", "gen_ai.response.model",
            "gen_ai.usage.input_tokens", "gen_ai.usage.output_tokens", "gen_ai.usage.cache_read.input_tokens",
            "gen_ai.usage.cache_creation.input_tokens", "lumen.cost_usd_exact", "lumen.outcome", "host.name",
            "lumen.tenant", "lumen.capture", "lumen.unpriced")} == {
            "gen_ai.provider.name": "anthropic",
            "gen_ai.operation.name": "chat",
            "gen_ai.request.model": "claude-sonnet-4-5",
            "gen_ai.response.model": "claude-sonnet-4-5-20250929",
            "gen_ai.usage.input_tokens": 20,
            "gen_ai.usage.output_tokens": 5,
            "gen_ai.usage.cache_read.input_tokens": 0,
            "gen_ai.usage.cache_creation.input_tokens": 0,
            # 20 x $3/1M + 5 x $15/1M
            "lumen.cost_usd_exact": "0.00013500",
            "lumen.outcome": "success",
            "host.name": "web-1",
            "lumen.tenant": "team-a",
            "lumen.capture": "replay",
            "lumen.unpriced": False,
        }
        assert attrs["lumen.cost_usd"] == 0.000135
        # A recording holds no key (redacted at capture), so no hash either; never the key itself.
        assert "lumen.api_key_hash" not in attrs and "sk-test" not in str(receiver.records)
        assert all(h.get("x-tenant-token") == "fake-token" for h in receiver.headers)
        assert {"gen_ai.client.token.usage", "gen_ai.client.operation.duration", "lumen.cost"} <= \
            receiver.metric_names()
    finally:
        receiver.stop()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_collector_down_then_back_buffers_delivers_and_counts_the_overflow():
    port = free_port()
    export = OtlpExport(f"http://127.0.0.1:{port}", max_queued=20, metrics_interval_ms=600_000)
    try:
        calls = [replace(make_call(i), cost_usd=Decimal("0.001")) for i in range(30)]
        for call in calls:  # nobody listens: capture goes on, 20 wait, 10 are refused
            export.on_call(call)
        assert export.stats()["dropped"] == 10
        wait_for(lambda: export.stats()["failures"] >= 1)  # the SDK retried within its timeout, then gave up
        assert export.stats()["queued"] == 20
        receiver = Receiver(port)  # the collector comes back
        try:
            wait_for(lambda: len(receiver.records) == 20, timeout=40)
            assert [r["attributes"]["lumen.call.id"] for r in receiver.records] == [c.id for c in calls[:20]]
            # The receiver holds the records a moment before the sender has its reply and counts them.
            wait_for(lambda: export.stats()["sent"] == 20)
            assert export.stats() | {"failures": 0} == {"sent": 20, "queued": 0, "dropped": 10, "failures": 0,
                                                         "reconnects": 1, "connected": True}
        finally:
            export.close()
            receiver.stop()
    finally:
        export.close()


def test_direct_proto_records_equal_the_sdk_records():
    """Over HTTP the request is built from the proto classes, not from SDK
    LogRecords (outputs/otlp.py says why): both give the collector the same record."""
    receiver = Receiver()
    try:
        call = replace(make_call(7), cost_usd=Decimal("0.00123456"))
        received = []
        for direct in (True, False):
            export = OtlpExport(receiver.url, host="web-1", metrics_interval_ms=600_000)
            assert export._direct  # the installed SDK has the HTTP client this path needs
            export._direct = direct
            export.on_call(call)
            export.close()
            wait_for(lambda n=len(received): len(receiver.records) == n + 1)
            received.append(receiver.records[-1])
        direct_record, sdk_record = received
        assert direct_record == sdk_record
        assert direct_record["attributes"]["lumen.cost_usd_exact"] == "0.00123456"
        assert direct_record["attributes"]["lumen.call.id"] == call.id
    finally:
        receiver.stop()


def test_records_from_cached_attribute_pieces_are_the_proto_classes_bytes(monkeypatch):
    """RecordPieces joins each attribute's serialised form (outputs/otlp.py):
    parsed, they must be the record built whole (and so serialise to its very
    bytes in the request), cache cold or warm, and a bool stays a bool next
    to an int of equal value."""
    from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord as LogRecordProto

    from lumen_agent.outputs import otlp

    pieces = otlp.RecordPieces()
    calls = [replace(make_call(i), cost_usd=Decimal("0.00123456"), input_tokens=i) for i in range(3)]
    attribute_sets = [otlp.call_attributes(c) for c in calls] + [{"a": True, "b": 1, "c": 1.0, "d": "1"},
                                                                 {"a": 1, "b": True, "c": 1, "d": 1.0}]
    for round_ in range(3):  # cold, warm, then a cache that keeps emptying itself
        if round_ == 2:
            monkeypatch.setattr(otlp, "MAX_CACHED_ATTRIBUTES", 5)
        for n, attributes in enumerate(attribute_sets):
            whole = LogRecordProto(time_unix_nano=n, observed_time_unix_nano=n, event_name=otlp.EVENT_NAME,
                                   body={"string_value": "openai gpt-4o"},
                                   attributes=[{"key": k, "value": otlp._value(v)} for k, v in attributes.items()])
            parsed = LogRecordProto.FromString(pieces.record(n, "openai gpt-4o", attributes))
            assert parsed == whole, (round_, n)
            assert parsed.SerializeToString() == whole.SerializeToString()
    decoded = LogRecordProto.FromString(pieces.record(0, "x", attribute_sets[-1]))
    assert [(a.key, a.value.WhichOneof("value")) for a in decoded.attributes] == [
        ("a", "int_value"), ("b", "bool_value"), ("c", "int_value"), ("d", "double_value")]


def last_points(receiver: Receiver) -> dict:
    """The last exported data point of each metric and series: {(name, token type, response model): point}."""
    from support.otlp_receiver import any_value

    points = {}
    for request in receiver.metrics:
        for rm in request.resource_metrics:
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    data = metric.histogram if metric.HasField("histogram") else metric.sum
                    for point in data.data_points:
                        attrs = {a.key: any_value(a.value) for a in point.attributes}
                        points[(metric.name, attrs.get("gen_ai.token.type"),
                                attrs["gen_ai.response.model"])] = point
    return points


@pytest.mark.parametrize("fast", [True, False], ids=["batched", "record-each"])
def test_metrics_arrive_with_exact_counts_sums_and_buckets_per_series(fast):
    """Five calls in two series, one batch: the token and duration histograms
    and the cost counter at the decoding receiver, to the last bucket, from
    the batched path into the SDK's aggregations and from record() per value."""
    receiver = Receiver()
    try:
        export = OtlpExport(receiver.url, metrics_interval_ms=600_000)
        histograms = export._histograms
        assert histograms.fast  # the installed SDK's internals are where otlp_histograms.py expects
        histograms.fast = fast
        found = []
        aggregations = histograms._aggregations
        histograms._aggregations = lambda *args: found.append(aggregations(*args)) or found[-1]
        big = "gpt-4o-2024-08-06"
        mini = "gpt-4o-mini-2024-07-18"
        calls = [
            replace(make_call(0), input_tokens=1000, output_tokens=200, latency_ms=750.0),
            replace(make_call(1), input_tokens=1000, output_tokens=5, latency_ms=2500.0),
            replace(make_call(2), input_tokens=20, output_tokens=800, latency_ms=100.0, cost_usd=None),
            replace(make_call(3), input_tokens=6000, output_tokens=None, latency_ms=None,
                    cost_usd=Decimal("0.25")),
            replace(make_call(4), request_model="gpt-4o-mini", model=mini, input_tokens=7, output_tokens=3,
                    latency_ms=12000.0, cost_usd=Decimal("0.00000300")),
        ]
        for call in calls:
            export.on_call(call)
        export.close()  # the meters' shutdown exports the cumulative points once more
        points = last_points(receiver)
        assert len(receiver.records) == 5
        # Default boundaries (0, 5, 10, 25, 50, 75, 100, 250, 500, 750, 1000, 2500, 5000, 7500, 10000):
        # bucket i counts values in (b[i-1], b[i]].
        def buckets(*pairs):
            counts = [0] * 16
            for index, n in pairs:
                counts[index] = n
            return counts

        def histogram(point):
            return (point.count, point.sum, point.min, point.max, list(point.bucket_counts))

        # input, big: 1000, 1000, 20, 6000 -> (750,1000] x2, (10,25], (5000,7500]
        assert histogram(points[("gen_ai.client.token.usage", "input", big)]) == (
            4, 8020, 20, 6000, buckets((10, 2), (3, 1), (13, 1)))
        # output, big: 200, 5, 800 (the fourth call has none) -> (100,250], (0,5], (750,1000]
        assert histogram(points[("gen_ai.client.token.usage", "output", big)]) == (
            3, 1005, 5, 800, buckets((7, 1), (1, 1), (10, 1)))
        # seconds, big: 0.75, 2.5, 0.1 -> all in (0,5]
        assert histogram(points[("gen_ai.client.operation.duration", None, big)]) == (
            3, 3.35, 0.1, 2.5, buckets((1, 3)))
        assert histogram(points[("gen_ai.client.token.usage", "input", mini)]) == (1, 7, 7, 7, buckets((2, 1)))
        assert histogram(points[("gen_ai.client.token.usage", "output", mini)]) == (1, 3, 3, 3, buckets((1, 1)))
        # 12 s -> (10,25]
        assert histogram(points[("gen_ai.client.operation.duration", None, mini)]) == (
            1, 12.0, 12.0, 12.0, buckets((3, 1)))
        # cost, big: 0.0045 + 0.0045 + 0.25 (one unpriced); mini: 0.000003
        assert points[("lumen.cost", None, big)].as_double == 0.0045 + 0.0045 + 0.25
        assert points[("lumen.cost", None, mini)].as_double == 0.000003
        assert len(points) == 8
        # batched: the values after a series' first went straight to its aggregation
        assert (bool(found) and all(found)) if fast else not found
    finally:
        receiver.stop()
