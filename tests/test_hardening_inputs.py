"""Items 4 and 5 of the hardening issue: linear and bounded paths, clean
errors for bad configuration, bad databases and bad recordings."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest
from builders import exchange_events, request_bytes, response_bytes
from typer.testing import CliRunner

from lumen_agent import config as config_mod
from lumen_agent.cli import app
from lumen_agent.outputs import schema
from lumen_agent.outputs.metrics import MetricsServer
from lumen_agent.pipeline.core import Pipeline
from lumen_agent.pipeline.counters import Counters
from lumen_agent.pipeline.exchange import MAX_NDJSON_LINE
from lumen_agent.pricing.table import PriceTable

ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
LUMEN = str(Path(sys.executable).parent / "lumen-agent")
SALT = b"s" * 32


@pytest.fixture(scope="module")
def prices():
    return PriceTable.load()


# -- item 4: NDJSON, SSE bombs, log throttle, replay input ----------------------------


def test_ndjson_line_past_the_limit_is_skipped_and_counted(prices):
    request = request_bytes("POST", "http://localhost:11434/api/chat",
                            {"model": "llama3.2", "messages": [{"role": "user", "content": "hi"}]})
    huge = b'{"junk":"' + b"x" * (MAX_NDJSON_LINE + 1024) + b'"}\n'
    final = (b'{"model":"llama3.2","done":true,"prompt_eval_count":26,"eval_count":298}\n')
    response = response_bytes(huge + final, content_type="application/x-ndjson", chunked=True,
                              chunk_size=64 * 1024)
    calls = []
    pipeline = Pipeline(prices, calls.append, salt=SALT)
    pipeline.feed_all(exchange_events(request, response, piece=64 * 1024 + 20, close=True))
    pipeline.close()
    assert [(c.input_tokens, c.output_tokens) for c in calls] == [(26, 298)]
    assert pipeline.counters["skipped.response_body"] == 1


BOMB_SCRIPT = """
import resource, sys, brotli
sys.path.insert(0, {tests!r})
from builders import exchange_events, request_bytes, response_bytes
from lumen_agent.pipeline.core import Pipeline
from lumen_agent.pricing.table import PriceTable
prices = PriceTable.load()
body = brotli.compress(b"data: {{}}\\n\\n" * (24 * 1024 * 1024), quality=11)  # 240 MiB of SSE
request = request_bytes("POST", "https://api.anthropic.com/v1/messages",
                        {{"model": "claude-sonnet-4-5", "max_tokens": 5, "stream": True, "messages": []}})
response = response_bytes(body, content_type="text/event-stream", encoding="br")
events = exchange_events(request, response, close=True)
calls = []
pipeline = Pipeline(prices, calls.append, salt=b"s" * 32)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
pipeline.feed_all(events)
pipeline.close()
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(len(body), (after - before) // 1024, len(calls))
"""


def test_sse_brotli_bomb_is_decoded_in_bounded_steps():
    """A few KB of brotli that grows to 240 MiB of SSE: parsed a step at a
    time, so peak memory stays under 64 MiB (the old code held it whole)."""
    out = subprocess.run([PYTHON, "-c", BOMB_SCRIPT.format(tests=str(ROOT / "tests"))],
                         capture_output=True, text=True, timeout=600, check=True).stdout.split()
    compressed, grown_mib, calls = map(int, out)
    assert compressed < 4096
    assert calls == 1
    assert grown_mib < 64, f"RSS grew {grown_mib} MiB"


def test_skip_log_is_throttled_by_occurrences_per_reason(caplog):
    counters = Counters()
    with caplog.at_level(logging.WARNING, logger="lumen_agent"):
        for _ in range(1999):
            counters.skip("http1_response_bytes", "junk header", n=1000)  # bytes counted, one occurrence
        counters.skip("other", "once")
    lines = [r.getMessage() for r in caplog.records]
    # First and 1000th occurrence of the first reason, first of the second: 3 lines, not ~2000.
    assert len(lines) == 3
    assert lines[1] == "skipped http1_response_bytes (junk header) count=1000000 occurrences=1000"
    assert counters["skipped.http1_response_bytes"] == 1_999_000


def test_replay_of_deep_nesting_is_a_counted_bad_line(tmp_path, monkeypatch):
    monkeypatch.setenv("LUMEN_STATE_DIR", str(tmp_path / "state"))
    good = json.dumps({"ts": 1, "pid": 1, "conn": 1, "dir": "send", "data": ""})
    recording = tmp_path / "deep.jsonl"
    recording.write_text(good + "\n" + "[" * 100_000 + "\n")
    result = CliRunner().invoke(app, ["replay", str(recording), "--db", str(tmp_path / "r.duckdb")])
    assert result.exit_code == 0, result.output
    assert result.stdout.endswith(", 1 bad lines\n")
    assert "Traceback" not in result.output


def test_replay_of_a_binary_file_that_is_no_capture_is_one_error_line(tmp_path):
    pcap = tmp_path / "capture.bin"
    # A PNG header and noise: binary, not UTF-8, not JSON lines, not a pcap
    # (pcap and pcapng files are read as packet captures: test_pcap_replay.py).
    pcap.write_bytes(bytes.fromhex("89504e470d0a1a0a") + os.urandom(2000) + b"\n\xff\xfe\n")
    env = dict(os.environ, LUMEN_STATE_DIR=str(tmp_path / "state"))
    proc = subprocess.run([LUMEN, "replay", str(pcap), "--db", str(tmp_path / "r.duckdb")],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2
    error_lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert error_lines == [f"error: {pcap} is not a recording: no line of it is a recorded event "
                           "(see docs/recording.md; pcap and pcapng files are read as packet captures)"]
    assert "Traceback" not in proc.stderr


# -- item 5: configuration values ------------------------------------------------------


@pytest.mark.parametrize(("text", "message"), [
    (b"[agent]\ndb = \"/tmp/\xff\xfe.duckdb\"\n", "not UTF-8 text (byte 19); save the file as UTF-8"),
    (b"[agent]\nflush_interval_s = nan\n", "[agent] flush_interval_s must be between 0.05 and 3600 seconds, not nan"),
    (b"[agent]\nflush_interval_s = -5\n", "[agent] flush_interval_s must be between 0.05 and 3600 seconds, not -5"),
    (b"[agent]\nflush_interval_s = 1e9\n",
     "[agent] flush_interval_s must be between 0.05 and 3600 seconds, not 1000000000.0"),
    (b"[agent]\ndb = 42\n", "[agent] db must be a path (a string), not 42"),
    (b"[agent]\nmax_call_bytes = 1.5\n", "[agent] max_call_bytes must be a whole number, not 1.5"),
    (b"[attribution]\ntenant = 7\n", "[attribution] tenant must be a string, not 7"),
])
def test_bad_config_values_give_one_line_naming_file_and_key(tmp_path, text, message):
    path = tmp_path / "config.toml"
    path.write_bytes(text)
    with pytest.raises(config_mod.ConfigError) as info:
        config_mod.load(path)
    assert str(info.value) == f"{path}: {message}"


def test_bad_config_through_the_cli(tmp_path):
    path = tmp_path / "config.toml"
    path.write_bytes(b"[agent]\nflush_interval_s = nan\n")
    result = CliRunner().invoke(app, ["run", "--config", str(path), "--capture", "hook"])
    assert result.exit_code == 2
    assert result.stderr == (f"error: {path}: [agent] flush_interval_s must be between 0.05 and 3600 seconds, "
                             "not nan\n")


# -- item 5: the database at start -------------------------------------------------------


def run_agent(tmp_path, db, *extra, timeout=60):
    env = dict(os.environ, LUMEN_STATE_DIR=str(tmp_path / "state"), LUMEN_RUNTIME_DIR=str(tmp_path / "run"),
               LUMEN_CONFIG_DIR=str(tmp_path / "etc"))
    return subprocess.run([LUMEN, "run", "--capture", "hook", "--db", str(db), *extra],
                          capture_output=True, text=True, env=env, timeout=timeout)


def test_run_refuses_a_file_that_is_not_duckdb(tmp_path):
    db = tmp_path / "calls.duckdb"
    db.write_text("these are my notes, not a database\n" * 100)
    proc = run_agent(tmp_path, db)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == (
        f"error: {db} is not a DuckDB database (or one from an incompatible DuckDB version)")
    assert "capturing" not in proc.stderr


def test_run_refuses_a_future_schema_and_reprice_does_too(tmp_path):
    db = tmp_path / "calls.duckdb"
    con = duckdb.connect(str(db))
    schema.migrate(con)
    con.execute("INSERT INTO lumen_meta VALUES (?, now(), '99.0', 'from the future')", [schema.SCHEMA_VERSION + 1])
    con.close()
    proc = run_agent(tmp_path, db)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == (
        f"error: {db} has schema version {schema.SCHEMA_VERSION + 1}, newer than this lumen-agent knows "
        f"({schema.SCHEMA_VERSION}): it is not written; upgrade lumen-agent or choose another --db")
    result = CliRunner().invoke(app, ["reprice", "--db", str(db)])
    assert result.exit_code == 2
    assert result.stderr == (f"error: {db} has schema version {schema.SCHEMA_VERSION + 1}, newer than this "
                             f"lumen-agent knows ({schema.SCHEMA_VERSION}): not repriced; upgrade lumen-agent\n")


def test_run_refuses_a_foreign_duckdb_file_unless_init(tmp_path):
    db = tmp_path / "theirs.duckdb"
    con = duckdb.connect(str(db))
    con.execute("CREATE TABLE invoices (id INTEGER, total DECIMAL(10,2))")
    con.close()
    proc = run_agent(tmp_path, db)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == (
        f"error: {db} is a DuckDB file of another program (tables: invoices); pass --init to add "
        "lumen-agent's tables to it, or choose another --db")
    con = duckdb.connect(str(db), read_only=True)
    tables = sorted(r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall())
    con.close()
    assert tables == ["invoices"]  # nothing added
    # With --init the agent adopts it: stopped right after start, the tables are there.
    env = dict(os.environ, LUMEN_STATE_DIR=str(tmp_path / "state"), LUMEN_RUNTIME_DIR=str(tmp_path / "run"),
               LUMEN_CONFIG_DIR=str(tmp_path / "etc"))
    agent = subprocess.Popen([LUMEN, "run", "--capture", "hook", "--db", str(db), "--init"],
                             stderr=subprocess.PIPE, text=True, env=env)
    for line in agent.stderr:
        if "capturing" in line:
            break
    agent.terminate()
    assert agent.wait(timeout=60) == 0
    con = duckdb.connect(str(db), read_only=True)
    tables = {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
    con.close()
    assert {"invoices", "llm_calls", "lumen_meta"} <= tables


@pytest.mark.skipif(os.geteuid() != 0, reason="mounts a read-only file system")
def test_run_refuses_a_read_only_folder(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(folder)], check=True)
    try:
        proc = run_agent(tmp_path, folder / "calls.duckdb")
    finally:
        subprocess.run(["umount", str(folder)], check=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == (
        f"error: cannot write the database folder {folder}: Read-only file system")
    assert "capturing" not in proc.stderr


def test_non_loopback_metrics_address_warns(caplog):
    with caplog.at_level(logging.WARNING, logger="lumen_agent"):
        server = MetricsServer("0.0.0.0:0", lambda: "")
        server._server.server_close()
        local = MetricsServer("127.0.0.1:0", lambda: "")
        local._server.server_close()
    warnings = [r.getMessage() for r in caplog.records]
    assert warnings == ["metrics are served on a non-loopback address 0.0.0.0 (metrics_addr 0.0.0.0:0): anyone "
                        "who can reach this host can read them; use 127.0.0.1:PORT unless that is intended"]


def test_stream_of_too_many_events_is_given_up_and_counted(prices, monkeypatch):
    """Millions of tiny events cost seconds of CPU each: past the limit the
    stream is dropped (counted) instead of stalling the run loop."""
    from lumen_agent.pipeline import exchange

    monkeypatch.setattr(exchange, "MAX_STREAM_EVENTS", 1000)
    request = request_bytes("POST", "https://api.anthropic.com/v1/messages",
                            {"model": "claude-sonnet-4-5", "max_tokens": 5, "stream": True, "messages": []})
    body = b"data: {}\n\n" * 2000
    calls = []
    pipeline = Pipeline(prices, calls.append, salt=SALT)
    pipeline.feed_all(exchange_events(request, response_bytes(body, content_type="text/event-stream"), close=True))
    pipeline.close()
    assert len(calls) == 1 and calls[0].output_tokens is None
    assert pipeline.counters["skipped.response_body"] == 1
