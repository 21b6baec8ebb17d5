"""Item 3 of the hardening issue: no API key in a recording, the database,
the logs or the status output, whatever form it travelled in; files 0600.

A real agent process (``run --capture hook --record``, debug logging,
started under umask 022) is handed calls over its ingest socket carrying a
key in every form: the Authorization, x-api-key, x-goog-api-key and api-key
headers, the ``?key=`` and ``?api-key=`` query parameters, a header split
across two writes, and a local server's view of a request (the headers it
*reads*).  Then every artefact is searched for every key.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest
from builders import FAKE_KEY, response_bytes

from lumen_agent.pipeline.keyhash import hash_credential
from lumen_agent.recording import Recorder
from lumen_agent.redaction import Redactor, redact_credentials

LUMEN = str(Path(sys.executable).parent / "lumen-agent")
KEYS = {
    "bearer": "sk-test-fake-bearer-0001",
    "x-api-key": "sk-ant-test-fake-0002",
    "x-goog-api-key": "AIzaTestFakeHeader0003",
    "api-key": "azuretestfakeheader0004",
    "?key=": "AIzaTestFakeQuery0005",
    "?api-key=": "testfakeapikeyquery0006",
    "server": "sk-test-fake-server-0007",
    "split": "sk-test-fake-split-0008",
}
BODY = json.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}).encode()
RESPONSE = response_bytes(b'{"id":"c","object":"chat.completion","model":"gpt-4o-mini","choices":[],'
                          b'"usage":{"prompt_tokens":10,"completion_tokens":20}}')


def raw_request(target: str, headers: dict[str, str]) -> bytes:
    lines = [f"POST {target} HTTP/1.1", "Host: api.openai.com", "Content-Type: application/json",
             f"Content-Length: {len(BODY)}", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + BODY


def events_of(conn: int, writes: list[bytes], reads: list[bytes], *, pid: int = 1) -> list[dict]:
    ts = time.time_ns()
    out = []
    for direction, pieces in (("send", writes), ("recv", reads)):
        for piece in pieces:
            ts += 1000
            out.append({"ts": ts, "pid": pid, "conn": conn, "dir": direction,
                        "data": base64.b64encode(piece).decode()})
    out.append({"ts": ts + 1000, "pid": pid, "conn": conn, "dir": "recv", "data": "", "flags": ["close"]})
    return out


def all_events() -> list[dict]:
    path = "/v1/chat/completions"
    split = raw_request(path, {"Authorization": f"Bearer {KEYS['split']}"})
    cut = split.index(b"Bearer ") + 3  # "Authorization: Bea" | "rer sk-..."
    server_view = raw_request(path, {"Authorization": f"Bearer {KEYS['server']}"})
    return [
        *events_of(1, [raw_request(path, {"Authorization": f"Bearer {KEYS['bearer']}"})], [RESPONSE]),
        *events_of(2, [raw_request(path, {"x-api-key": KEYS["x-api-key"]})], [RESPONSE]),
        *events_of(3, [raw_request(path, {"x-goog-api-key": KEYS["x-goog-api-key"]})], [RESPONSE]),
        *events_of(4, [raw_request(path, {"api-key": KEYS["api-key"]})], [RESPONSE]),
        *events_of(5, [raw_request(f"{path}?alt=json&key={KEYS['?key=']}", {})], [RESPONSE]),
        *events_of(6, [raw_request(f"{path}?api-version=2024-10-21&api-key={KEYS['?api-key=']}", {})], [RESPONSE]),
        *events_of(7, [split[:cut], split[cut:]], [RESPONSE]),
        # The server process reads the request (recv) and writes the response (send).
        *events_of(8, [RESPONSE], [server_view]),
    ]


def leaks(blob: bytes) -> list[str]:
    return [form for form, key in [*KEYS.items(), ("fake", FAKE_KEY)] if key.encode() in blob]


def test_redactor_handles_every_form_and_split_headers():
    redactor = Redactor()
    out = b"".join(redactor.redact("c", piece) for piece in (b"POST /x?key=AIzaQ HTTP/1.1\r\nAuthori",
                                                            b"zation: Bearer sk-",
                                                            b"secret\r\nx-api-key", b": k2\r\n\r\n"))
    assert out == (b"POST /x?key=[redacted] HTTP/1.1\r\nAuthorization: [redacted]\r\n"
                   b"x-api-key: [redacted]\r\n\r\n")
    assert redact_credentials(b"GET /v1?api-version=1&api-key=abc&x=1") == b"GET /v1?api-version=1&api-key=[redacted]&x=1"


def test_recorder_redacts_the_direction_a_server_reads(tmp_path):
    import io

    from lumen_agent.pipeline.events import DataEvent, Direction

    out = io.StringIO()
    recorder = Recorder(out)
    request = raw_request("/v1/chat/completions", {"Authorization": f"Bearer {KEYS['server']}"})
    recorder.write(DataEvent(1, 5, 5, 9, Direction.RECV, request))
    data = base64.b64decode(json.loads(out.getvalue())["data"])
    assert leaks(data) == []
    assert b"\r\nAuthorization: [redacted]\r\n" in data


@pytest.fixture()
def agent(tmp_path):
    runtime, state = tmp_path / "run", tmp_path / "state"
    config = tmp_path / "config.toml"
    db, recording = tmp_path / "db" / "calls.duckdb", tmp_path / "capture.jsonl"
    config.write_text(f'[agent]\ndb = "{db}"\nruntime_dir = "{runtime}"\nflush_interval_s = 0.2\n')
    env = dict(os.environ, LUMEN_STATE_DIR=str(state), LUMEN_RUNTIME_DIR=str(runtime),
               LUMEN_CONFIG_DIR=str(tmp_path / "etc"))
    proc = subprocess.Popen([LUMEN, "run", "--config", str(config), "--capture", "hook", "--record", str(recording),
                             "--verbose"], stderr=subprocess.PIPE, env=env, preexec_fn=lambda: os.umask(0o022))
    deadline = time.monotonic() + 60
    while not (runtime / "status.json").exists():
        assert proc.poll() is None, proc.stderr.read()
        assert time.monotonic() < deadline
        time.sleep(0.05)
    yield proc, config, db, recording, runtime, state, env
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def test_no_key_form_reaches_any_artefact(agent):
    proc, config, db, recording, runtime, state, env = agent
    with socket.socket(socket.AF_UNIX) as sock:
        sock.connect(str(runtime / "ingest.sock"))
        sock.sendall(b'{"op":"events"}\n' + b"".join(json.dumps(e).encode() + b"\n" for e in all_events()))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        status = json.loads((runtime / "status.json").read_text())
        if status["store"]["rows_written"] >= 7:
            break
        time.sleep(0.2)
    outputs = [subprocess.run([LUMEN, "status", "--config", str(config), "--format", fmt], env=env,
                              capture_output=True, timeout=60).stdout for fmt in ("table", "json")]
    outputs.append((runtime / "status.json").read_bytes())
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr.decode()

    # The recording: raw, and every event's bytes decoded.
    raw = recording.read_bytes()
    decoded = b"".join(base64.b64decode(json.loads(line).get("data", "")) for line in raw.splitlines())
    assert decoded.count(b"[redacted]") == 8  # one per request, the split one included
    assert leaks(raw) == [] and leaks(decoded) == []
    # The database (and anything beside it), the logs, the status output.
    for path in db.parent.iterdir():
        assert leaks(path.read_bytes()) == [], path
    assert leaks(stderr) == []
    for out in outputs:
        assert b"rows_written" in out
        assert leaks(out) == []
    sql = subprocess.run([LUMEN, "sql", "--db", str(db), "SELECT * FROM llm_calls"], env=env,
                         capture_output=True, timeout=60)
    assert leaks(sql.stdout + sql.stderr) == []

    # Files are 0600 though the agent was started under umask 022.
    assert stat.S_IMODE(recording.stat().st_mode) == 0o600
    assert stat.S_IMODE(db.stat().st_mode) == 0o600
    # ?api-key= is hashed like any other credential (salted: only this host's salt matches).
    salt = (state / "key-salt").read_bytes()
    con = duckdb.connect(str(db), read_only=True)
    hashes = [r[0] for r in con.execute("SELECT api_key_hash FROM llm_calls ORDER BY ts_start").fetchall()]
    con.close()
    assert hashes == [hash_credential(KEYS[form], salt) for form in ("bearer", "x-api-key", "x-goog-api-key", "api-key", "?key=", "?api-key=",
                                                                      "split")]
    assert None not in hashes
