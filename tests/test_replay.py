"""Recorded captures: the file format, redaction, and `lumen-agent replay` through the CLI."""

import io
import json

import duckdb
from builders import FAKE_KEY, exchange_events, load_fixture, request_bytes, response_bytes
from typer.testing import CliRunner

from lumen_agent.cli import app
from lumen_agent.pipeline.attribution import ProcessInfo
from lumen_agent.pipeline.events import DataEvent, Direction, EventFlag
from lumen_agent.recording import Recorder, event_from_json, event_to_json, read_events


def fixture_events():
    """As a client writes them: the request head in one SSL_write, the response in many reads."""
    facts, body = load_fixture("anthropic_messages_stream.txt")
    request = request_bytes("POST", facts["url"], {"model": "claude-sonnet-4-5", "max_tokens": 64,
                                                   "stream": True, "messages": [{"role": "user", "content": "hi"}]})
    response = response_bytes(body, content_type="text/event-stream", chunked=True, encoding="gzip")
    events = exchange_events(request, response, piece=100, close=True)
    first_send = [e for e in events if e.direction is Direction.SEND]
    whole = DataEvent(first_send[0].ts_ns, 4242, 4242, 0xABC, Direction.SEND, request)
    return [whole] + [e for e in events if e.direction is not Direction.SEND or e.flags]


def test_event_round_trip():
    event = DataEvent(123, 7, 8, 9, Direction.RECV, b"\x00\xffdata", EventFlag.GAP | EventFlag.TRUNCATED)
    line = event_to_json(event)
    assert json.loads(line)["flags"] == ["truncated", "gap"]
    assert event_from_json(line) == event


def test_recorder_redacts_credentials():
    out = io.StringIO()
    recorder = Recorder(out)
    for event in fixture_events():
        recorder.write(event)
    text = out.getvalue()
    events = list(read_events(io.StringIO(text)))
    head = events[0].data
    assert FAKE_KEY.encode() not in b"".join(e.data for e in events)
    assert b"Authorization: [redacted]\r\n" in head


def test_replay_cli_writes_exact_rows(tmp_path, monkeypatch):
    monkeypatch.setenv("LUMEN_STATE_DIR", str(tmp_path / "state"))
    recording = tmp_path / "capture.jsonl"
    with open(recording, "w") as f:
        recorder = Recorder(f)
        for event in fixture_events():
            recorder.write(event)
        f.write("this is not json\n")
    db = tmp_path / "replay.duckdb"
    result = CliRunner().invoke(app, ["replay", str(recording), "--db", str(db)])
    assert result.exit_code == 0, result.output
    assert result.stdout == ("replayed 8 events: 1 calls (0 unpriced), 1 rows written, "
                             "0 bytes/items skipped, 1 bad lines\n")
    assert "skipped recording line=9" in result.stderr
    with duckdb.connect(str(db), read_only=True) as con:
        row = con.execute("SELECT provider, model, input_tokens, output_tokens, cost_usd::VARCHAR, "
                          "api_key_hash, capture, outcome FROM llm_calls").fetchall()
    assert row == [("anthropic", "claude-sonnet-4-5-20250929", 20, 5, "0.00013500", None, "replay", "success")]


def test_replay_missing_file_is_one_line_error(tmp_path):
    result = CliRunner().invoke(app, ["replay", str(tmp_path / "nope.jsonl"), "--db", str(tmp_path / "x.duckdb")])
    assert result.exit_code == 2
    assert result.output.strip() == f"error: no such recording: {tmp_path / 'nope.jsonl'}"


def _record(path, events, describe=None):
    with open(path, "w") as f:
        recorder = Recorder(f, describe=describe)
        for event in events:
            recorder.write(event)


def _replay_rows(tmp_path, recording, *extra):
    db = tmp_path / "replay.duckdb"
    result = CliRunner().invoke(app, ["replay", str(recording), "--db", str(db), *extra])
    assert result.exit_code == 0, result.output
    with duckdb.connect(str(db), read_only=True) as con:
        return con.execute("SELECT pid, process, exe, \"user\", unit, container_id, tenant, feature "
                           "FROM llm_calls").fetchall()


def test_replay_attributes_from_the_recording_not_this_host(tmp_path, monkeypatch):
    """Recorded as pid 1 of another host: the row says what was known at
    capture, not what pid 1 is on the replaying machine."""
    monkeypatch.setenv("LUMEN_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("LUMEN_CONFIG_DIR", str(tmp_path / "config"))
    events = [DataEvent(e.ts_ns, 1, 1, e.conn, e.direction, e.data, e.flags) for e in fixture_events()]
    who = ProcessInfo("process_api", "/opt/app/bin/api", "app", "api.service", "c0ffee" * 8)
    _record(tmp_path / "with.jsonl", events, describe=lambda pid: who)
    text = (tmp_path / "with.jsonl").read_text()
    assert text.count('"kind":"process"') == 1  # once, before the first event
    assert _replay_rows(tmp_path, tmp_path / "with.jsonl") == [
        (1, "process_api", "/opt/app/bin/api", "app", "api.service", "c0ffee" * 8, None, None)]


def test_replay_without_process_lines_leaves_attribution_empty(tmp_path, monkeypatch):
    monkeypatch.setenv("LUMEN_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("LUMEN_CONFIG_DIR", str(tmp_path / "config"))
    events = [DataEvent(e.ts_ns, 1, 1, e.conn, e.direction, e.data, e.flags) for e in fixture_events()]
    _record(tmp_path / "old.jsonl", events)
    assert _replay_rows(tmp_path, tmp_path / "old.jsonl") == [(1, None, None, None, None, None, None, None)]


def test_replay_uses_the_configured_default_tenant_and_feature(tmp_path, monkeypatch):
    monkeypatch.setenv("LUMEN_STATE_DIR", str(tmp_path / "state"))
    config = tmp_path / "config.toml"
    config.write_text('[attribution]\ntenant = "team-a"\nfeature = "batch"\n')
    _record(tmp_path / "r.jsonl", fixture_events())
    [row] = _replay_rows(tmp_path, tmp_path / "r.jsonl", "--config", str(config))
    assert row[-2:] == ("team-a", "batch")
