"""Item 2 of the hardening issue: who may hand events to the ingest socket,
and what rows made from them say.

Real processes throughout: the agent runs in its own process (eBPF capture
replaced by the ingest-only source, so no probes are needed, but the agent
labels its own rows ``ebpf`` as a probing agent would), and the senders are
separate processes under real second and third uids made with ``useradd``:
one outside the ingest group (refused and counted), one inside it.
"""

from __future__ import annotations

import base64
import grp
import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path

import duckdb
import pytest
from builders import request_bytes, response_bytes

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("useradd") is None,
                                reason="needs root to add users (useradd)")

PYTHON = sys.executable
SYSTEM_PYTHON = "/usr/bin/python3"  # readable by every uid; the senders need only its standard library
GROUP = "lumen-ingest-test"
OUTSIDER = "lumen-outsider"
MEMBER = "lumen-member"

AGENT = """
import sys
from pathlib import Path
from lumen_agent import config
from lumen_agent.logs import setup_logging
from lumen_agent.runner import Agent, IngestOnly
cfg = config.load(Path(sys.argv[1]))
setup_logging("info")
Agent(cfg, lambda on_event, on_exec: IngestOnly(), capture_name="ebpf").run()
"""

# Stdlib only: run by /usr/bin/python3 under another uid.  argv: socket,
# file of event lines, trusted_pids (0/1).  Prints the agent's reply, if any.
SENDER = """
import socket, sys
sock = socket.socket(socket.AF_UNIX)
sock.connect(sys.argv[1])
sock.sendall(b'{"op":"events","trusted_pids":%s}\\n' % (b"true" if sys.argv[3] == "1" else b"false"))
try:  # a refused sender may be cut off while it still writes
    sock.sendall(open(sys.argv[2], "rb").read())
    sock.shutdown(socket.SHUT_WR)
except OSError:
    pass
sock.settimeout(5)
reply = b""
try:
    while piece := sock.recv(4096):
        reply += piece
except (ConnectionResetError, TimeoutError):
    pass
print(reply.decode().strip())
"""


def ensure_user(name: str, groups: str | None = None) -> int:
    try:
        pwd.getpwnam(name)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
                       check=True)
    if groups:
        subprocess.run(["usermod", "-a", "-G", groups, name], check=True)
    return pwd.getpwnam(name).pw_uid


def ensure_group(name: str) -> None:
    try:
        grp.getgrnam(name)
    except KeyError:
        subprocess.run(["groupadd", "--system", name], check=True)


def call_lines(pid: int, conn: int, model_json: str, usage_json: str, tenant: str) -> str:
    request = request_bytes("POST", "https://api.openai.com/v1/chat/completions",
                            {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]},
                            {"x-lumen-tenant": tenant})
    body = ('{"id":"c1","object":"chat.completion","model":' + model_json + ',"choices":[],"usage":'
            + usage_json + '}').encode()
    response = response_bytes(body)
    ts = time.time_ns()
    lines = []
    for i, (direction, data, flags) in enumerate((("send", request, None), ("recv", response, None),
                                                  ("recv", b"", ["close"]))):
        record = {"ts": ts + i, "pid": pid, "conn": conn, "dir": direction,
                  "data": base64.b64encode(data).decode()}
        if flags:
            record["flags"] = flags
        lines.append(json.dumps(record))
    return "\n".join(lines) + "\n"


@pytest.fixture()
def world(tmp_path):
    """A folder every uid can reach (pytest's tmp_path is 0700 root)."""
    folder = Path(tempfile.mkdtemp(prefix="lumen-ingest-", dir="/tmp"))
    os.chmod(folder, 0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def send_as(user: str | None, script: Path, sock: Path, lines: Path, trusted: bool = False) -> str:
    prefix = [] if user is None else ["runuser", "-u", user, "--"]
    proc = subprocess.run([*prefix, SYSTEM_PYTHON, str(script), str(sock), str(lines), "1" if trusted else "0"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def test_only_allowed_senders_are_heard_and_rows_say_who_sent_them(world):
    ensure_group(GROUP)
    outsider_uid = ensure_user(OUTSIDER)
    member_uid = ensure_user(MEMBER, GROUP)
    db = world / "state" / "calls.duckdb"
    runtime = world / "run"
    config = world / "config.toml"
    config.write_text(f'[agent]\ndb = "{db}"\nruntime_dir = "{runtime}"\nflush_interval_s = 0.2\n'
                      f'ingest_group = "{GROUP}"\n')
    sender = world / "sender.py"
    sender.write_text(SENDER)
    env = dict(os.environ, LUMEN_STATE_DIR=str(world / "state"), LUMEN_RUNTIME_DIR=str(runtime))
    agent = subprocess.Popen([PYTHON, "-c", AGENT, str(config)], stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.monotonic() + 60
        while not (runtime / "status.json").exists():  # written once the sockets listen
            assert agent.poll() is None, agent.stderr.read()
            assert time.monotonic() < deadline
            time.sleep(0.05)
        sock = runtime / "ingest.sock"
        good = '{"prompt_tokens":10,"completion_tokens":20}'
        forged = world / "forged.jsonl"  # the $1.25 billion row of the issue, for a victim tenant
        forged.write_text(call_lines(1, 1, '"gpt-4o-mini"', '{"prompt_tokens":1,"completion_tokens":'
                                     + str(2 * 10**12) + '}', "victim-team"))
        os.chmod(forged, 0o644)
        reply = send_as(OUTSIDER, sender, sock, forged, trusted=True)
        assert reply == ('{"error": "not allowed to send events: only root, the agent\'s user and members of '
                         f'group {GROUP} may"}}')
        # A member of the group is heard; it asks for trusted pids and gets none.
        member_calls = world / "member.jsonl"
        member_calls.write_text(call_lines(99999, 2, '"gpt-4o-mini"', good, "team-a")
                                + call_lines(99999, 3, '"gpt-\\udfff"', '{"prompt_tokens":-5,"completion_tokens":'
                                             + str(10**15) + '}', "team-a")
                                + call_lines(99999, 4, '"gpt-4o-mini"', good, "team-a"))
        os.chmod(member_calls, 0o644)
        assert send_as(MEMBER, sender, sock, member_calls, trusted=True) == ""
        # Root (as the proxy does) may name the processes: its rows say proxy.
        root_calls = world / "root.jsonl"
        root_calls.write_text(call_lines(4242, 5, '"gpt-4o-mini"', good, "team-b"))
        assert send_as(None, sender, sock, root_calls, trusted=True) == ""
        deadline = time.monotonic() + 30
        status = {}
        while time.monotonic() < deadline:
            try:
                status = json.loads((runtime / "status.json").read_text())
            except (OSError, ValueError):
                pass
            if status.get("pipeline", {}).get("calls", 0) >= 4:
                break
            time.sleep(0.2)
        assert status["ingest"]["refused"] == 1
    finally:
        agent.send_signal(signal.SIGTERM)
        _, stderr = agent.communicate(timeout=60)
    assert agent.returncode == 0, stderr
    assert stderr.count("ingest refused") == 1
    assert f"uid {outsider_uid}" in stderr
    con = duckdb.connect(str(db), read_only=True)
    rows = con.execute("SELECT capture, sender_uid, tenant, model, input_tokens, output_tokens, cost_usd, "
                       "usage_implausible, pid = 99999 FROM llm_calls ORDER BY ts_start").fetchall()
    con.close()
    cost = (10 * Decimal("0.15") + 20 * Decimal("0.6")) / Decimal(1_000_000)  # gpt-4o-mini $0.15/$0.60 per 1M
    assert rows == [
        ("hook", member_uid, "team-a", "gpt-4o-mini", 10, 20, cost, False, False),
        ("hook", member_uid, "team-a", "gpt-\\udfff", None, None, None, True, False),
        ("hook", member_uid, "team-a", "gpt-4o-mini", 10, 20, cost, False, False),
        ("proxy", 0, "team-b", "gpt-4o-mini", 10, 20, cost, False, False),
    ]
    assert "victim-team" not in str(rows)
