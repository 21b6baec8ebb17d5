"""Redis Streams export against a real redis-server (Debian) that the test starts."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from dataclasses import replace
from decimal import Decimal

import pytest
from test_export_parquet import recording
from test_store_support import make_call
from typer.testing import CliRunner

from lumen_agent.cli import app
from lumen_agent.outputs.redis_stream import RedisStreamExport

redis = pytest.importorskip("redis")
REDIS_SERVER = shutil.which("redis-server")
pytestmark = pytest.mark.skipif(REDIS_SERVER is None, reason="redis-server not installed (apt-get install redis-server)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    def __init__(self, workdir, port: int) -> None:
        self.port = port
        self.url = f"redis://127.0.0.1:{port}/0"
        self.proc = subprocess.Popen([REDIS_SERVER, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                      "--appendonly", "no", "--dir", str(workdir)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis(port=port)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        self.client = client

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def wait_for(predicate, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not predicate():
        time.sleep(0.05)
    assert predicate()


def test_replayed_calls_reach_a_consumer_group_exactly(tmp_path, monkeypatch):
    monkeypatch.setenv("LUMEN_STATE_DIR", str(tmp_path / "state"))
    server = RedisServer(tmp_path, free_port())
    try:
        server.client.xgroup_create("lumen:calls", "billing", id="0", mkstream=True)
        recording(tmp_path / "r.jsonl", [0, 0, 1])
        config = tmp_path / "config.toml"
        config.write_text('[attribution]\ntenant = "team-a"\n[export.redis]\nper_tenant = true\n')
        result = CliRunner().invoke(app, ["replay", str(tmp_path / "r.jsonl"), "--db", str(tmp_path / "x.duckdb"),
                                          "--config", str(config), "--export-redis", server.url])
        assert result.exit_code == 0, result.output
        [(stream, entries)] = server.client.xreadgroup("billing", "worker-1", {"lumen:calls": ">"}, count=100)
        assert stream == b"lumen:calls" and len(entries) == 3
        fields = {k.decode(): v.decode() for k, v in entries[0][1].items()}
        assert {k: fields[k] for k in ("provider", "model", "input_tokens", "output_tokens", "cost_usd", "tenant",
                                       "outcome", "capture", "unpriced")} == {
            "provider": "anthropic", "model": "claude-sonnet-4-5-20250929", "input_tokens": "20",
            "output_tokens": "5", "cost_usd": "0.00013500", "tenant": "team-a", "outcome": "success",
            "capture": "replay", "unpriced": "false"}
        assert "request_body" not in fields and "api_key_hash" not in fields  # no key in a recording
        assert server.client.xlen("lumen:calls:team-a") == 3
    finally:
        server.stop()


def test_stream_is_capped_and_capture_goes_on_while_redis_restarts(tmp_path):
    port = free_port()
    server = RedisServer(tmp_path, port)
    export = RedisStreamExport(server.url, maxlen=100, max_queued=50)
    try:
        for i in range(1000):
            export.on_call(replace(make_call(i), cost_usd=Decimal("0.001")))
            if i % 40 == 39:
                wait_for(lambda: export.stats()["queued"] == 0)
        wait_for(lambda: export.stats()["sent"] == 1000)
        # MAXLEN ~ trims whole macro nodes: never far above the cap, never below it.
        assert 100 <= server.client.xlen("lumen:calls") < 300
        server.stop()
        for i in range(1000, 1080):  # Redis is gone: 50 wait, 30 are refused, nothing blocks
            started = time.monotonic()
            export.on_call(make_call(i))
            assert time.monotonic() - started < 0.4  # under the first retry backoff (0.5 s): capture never waits on it
        assert export.stats()["dropped"] == 30
        wait_for(lambda: not export.stats()["connected"])
        server = RedisServer(tmp_path, port)  # back, empty
        wait_for(lambda: export.stats()["sent"] == 1050, timeout=60)
        ids = [fields[b"id"].decode() for _, fields in server.client.xrange("lumen:calls")]
        assert ids == [make_call(i).id for i in range(1000, 1050)]
        assert export.stats()["reconnects"] == 1
    finally:
        export.close()
        server.stop()


def test_stream_fields_of_every_type_as_text():
    """Each field's text, for a call and for the exporter process's row
    (outputs/export_child.Row): strings as they are, numbers by str(), bools
    true/false, the decimal exact, times ISO 8601, the outcome's value; NULLs left out."""
    from lumen_agent.outputs.export_child import Row
    from lumen_agent.outputs.export_process import row_of
    from lumen_agent.outputs.redis_stream import stream_fields

    call = replace(make_call(3), streaming=True, reasoning_tokens=17, http_version="2")
    expected = {
        "id": "call-000003", "ts_start": "2026-03-01T12:00:03+00:00", "ts_end": "2026-03-01T12:00:03.750000+00:00",
        "latency_ms": "750.25", "ttft_ms": "120.5", "host": "host-a", "pid": "4242", "process": "python3",
        "exe": "/usr/bin/python3.12", "user": "alice", "unit": "app.service", "provider": "openai",
        "endpoint": "chat.completions", "server_address": "api.openai.com", "server_port": "443",
        "request_model": "gpt-4o", "model": "gpt-4o-2024-08-06", "streaming": "true", "status_code": "200",
        "outcome": "success", "request_id": "req_3", "input_tokens": "1000", "output_tokens": "200",
        "cache_read_tokens": "0", "cache_write_tokens": "0", "reasoning_tokens": "17", "cost_usd": "0.00450000",
        "price_id": "openai/gpt-4o-2024-08-06@2024-08-06", "unpriced": "false", "usage_missing": "false",
        "api_key_hash": "k-1234abcd", "tenant": "acme", "feature": "chat", "capture": "ebpf", "http_version": "2",
    }  # container_id is NULL: left out
    assert stream_fields(call) == expected
    assert stream_fields(Row._make(row_of(call))) == expected


def test_an_error_reply_keeps_the_batch_and_the_connection_in_step(tmp_path):
    """XADD into a key of another type: Redis answers WRONGTYPE for each call
    of the pipelined batch.  The batch stays queued and is retried; once the
    key is gone it is delivered whole, in order, on a connection whose replies
    were not left half read (a stale reply would be taken for the next one)."""
    server = RedisServer(tmp_path, free_port())
    server.client.set("lumen:calls", "not a stream")
    export = RedisStreamExport(server.url, per_tenant=True)
    try:
        for i in range(5):
            export.on_call(make_call(i))
        wait_for(lambda: export.stats()["failures"] >= 1)
        assert export.stats()["sent"] == 0 and export.stats()["queued"] == 5
        server.client.delete("lumen:calls")
        wait_for(lambda: export.stats()["sent"] == 5)
        ids = [fields[b"id"].decode() for _, fields in server.client.xrange("lumen:calls")]
        assert ids == [make_call(i).id for i in range(5)]
        # Per tenant (make_call's tenant is acme): those XADDs succeeded in the failed
        # rounds too, so at least once, as documented; the last round whole and in order.
        tenant = [fields[b"id"].decode() for _, fields in server.client.xrange("lumen:calls:acme")]
        assert set(tenant) == set(ids) and tenant[-5:] == ids
        assert export.stats() | {"failures": 0} == {"sent": 5, "queued": 0, "dropped": 0, "failures": 0,
                                                     "reconnects": 1, "connected": True}
    finally:
        export.close()
        server.stop()
