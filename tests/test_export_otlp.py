"""OTLP export with the real OpenTelemetry SDK and its OTLP/HTTP exporter,
into a receiver that decodes the protobuf (tests/support/otlp_receiver.py)."""

from __future__ import annotations

import socket
import time
from dataclasses import replace
from decimal import Decimal

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
