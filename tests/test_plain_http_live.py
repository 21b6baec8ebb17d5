"""Live plain-HTTP capture: `lumen-agent run --capture plain` sniffing the fake provider's port.

Real clients (curl, the openai SDK, an Ollama-native NDJSON stream via curl)
call the fake provider over plain HTTP on an ephemeral port that the agent's
config lists in ``[capture] plain_http_ports``.  Each call: one row, exact
tokens, the client's pid and process name.  tcpdump records the same session,
and ``replay`` of that file gives the same rows.
"""

import os
import shutil
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest
from e2e_agent import AgentProcess
from pcap_tools import Tcpdump
from support import clients
from support import fake_provider as fp
from typer.testing import CliRunner

from lumen_agent.cli import app

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="packet sockets need root (CAP_NET_RAW)"),
]

# Real LLM calls take hundreds of milliseconds; so do these, which keeps a
# short-lived client alive while the agent looks up its socket.
SLOW = {"x-fake-ttft-ms": "300"}

ROW_COLUMNS = ("provider", "endpoint", "request_model", "model", "streaming", "status_code", "input_tokens",
               "cache_read_tokens", "output_tokens", "reasoning_tokens", "cost_usd", "unpriced", "server_port")


@pytest.fixture(scope="module")
def session(tmp_path_factory, certs):
    """An agent sniffing the fake provider's port, three real calls, and a tcpdump of them."""
    work = tmp_path_factory.mktemp("live")
    with fp.spawn(None, plain=True, workdir=work / "provider") as server:
        (work / "config").mkdir()
        (work / "config" / "config.toml").write_text(f"[capture]\nplain_http_ports = [{server.port}]\n")
        agent = AgentProcess.start(work, args=["--capture", "plain", "--record", str(work / "agent.pcapng")])
        try:
            agent.wait_ready(need_node=False)
            status = agent.status()
            with Tcpdump(work / "session.pcap", server.port):
                calls = {
                    "curl": clients.curl(server.url, certs, "openai.chat", headers=SLOW),
                    "sdk": clients.sdk(server.url, certs, "openai.chat.stream", headers=SLOW),
                    "ollama": clients.curl(server.url, certs, "ollama.chat.stream", headers=SLOW),
                }
            for result in calls.values():
                assert result.ok, result.describe()
            rows = agent.wait_rows("true", count=3, settle=1.5)
            final_status = agent.status()
        finally:
            assert agent.stop() == 0, agent.log_tail()
    return {"agent": agent, "port": server.port, "calls": calls, "rows": rows, "status": status,
            "final_status": final_status, "pcap": work / "session.pcap", "work": work,
            "recorded": work / "agent.pcapng"}


def by_pid(session, name):
    pid = session["calls"][name].pid
    rows = [r for r in session["rows"] if r["pid"] == pid]
    assert len(rows) == 1, (name, pid, session["rows"])
    return rows[0]


def test_status_names_the_sniffer(session):
    status = session["status"]
    assert status["capture"] == "plain"
    assert status["targets"].startswith("plain HTTP on lo")
    assert status["targets"].endswith(f" ports {session['port']}")
    final = session["final_status"]
    assert final["plain_connections"] == 3
    assert final["plain_packets"] > 0 and final["plain_bytes"] > 0
    assert final["plain_reorder_drops"] == 0
    assert final["plain_unattributed_connections"] == 0  # each call has its client


def test_three_calls_three_rows(session):
    assert len(session["rows"]) == 3
    assert {r["capture"] for r in session["rows"]} == {"plain"}


def test_curl_row(session):
    row = by_pid(session, "curl")
    # gpt-4o-mini: 276 x $0.15/M + 1024 cached x $0.075/M + 12 x $0.60/M = $0.0001254
    assert (row["process"], row["provider"], row["endpoint"], row["model"], row["streaming"]) == (
        "curl", "openai", "chat.completions", "gpt-4o-mini-2024-07-18", False)
    assert (row["input_tokens"], row["cache_read_tokens"], row["output_tokens"]) == (1300, 1024, 12)
    assert row["cost_usd"] == Decimal("0.00012540")
    assert row["server_port"] == session["port"]


def test_openai_sdk_row(session):
    row = by_pid(session, "sdk")
    assert row["process"] == Path(sys.executable).name[:15]
    # The recorded gpt-4o-mini stream: 78 in, 9 out = 78 x 0.15/M + 9 x 0.60/M = $0.0000171
    assert (row["endpoint"], row["streaming"], row["input_tokens"], row["output_tokens"]) == (
        "chat.completions", True, 78, 9)
    assert row["cost_usd"] == Decimal("0.00001710")


def test_ollama_ndjson_stream_row(session):
    row = by_pid(session, "ollama")
    assert (row["process"], row["provider"], row["endpoint"], row["model"], row["streaming"]) == (
        "curl", "ollama", "chat", "llama3.2", True)
    assert (row["input_tokens"], row["output_tokens"]) == (31, 12)
    # A local model has no public price: tokens kept, cost NULL, flagged.
    assert row["cost_usd"] is None and row["unpriced"] is True


def test_replay_of_tcpdump_gives_the_same_rows(session, tmp_path, monkeypatch):
    monkeypatch.setenv("LUMEN_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("LUMEN_CONFIG_DIR", str(tmp_path / "config"))
    db = tmp_path / "replayed.duckdb"
    result = CliRunner().invoke(app, ["replay", str(session["pcap"]), "--db", str(db)])
    assert result.exit_code == 0, result.output
    import duckdb

    with duckdb.connect(str(db), read_only=True) as con:
        replayed = con.execute(f"SELECT {', '.join(ROW_COLUMNS)}, capture FROM llm_calls "
                               "ORDER BY ts_start").fetchall()
    live = sorted(session["rows"], key=lambda r: r["ts_start"])
    assert [row[:-1] for row in replayed] == [tuple(r[c] for c in ROW_COLUMNS) for r in live]
    assert {row[-1] for row in replayed} == {"pcap"}
    assert "3 calls (1 unpriced), 3 rows written" in result.stdout


def test_record_pcapng_has_one_flow_per_connection_with_pid_comments(session):
    from scapy.layers.inet import TCP
    from scapy.utils import PcapNgReader

    packets = list(PcapNgReader(str(session["recorded"])))
    flows: dict[int, list] = {}
    for p in packets:
        port = p[TCP].sport if p[TCP].dport == 80 else p[TCP].dport
        flows.setdefault(port, []).append(p)
    assert len(flows) == 3
    by_pid = {}
    for flow in flows.values():
        comments = {c.decode() for p in flow for c in (p.comments or [])}
        assert len(comments) == 1, comments
        fields = dict(part.split("=", 1) for part in comments.pop().split())
        by_pid[int(fields["pid"])] = (fields["process"], flow)
        assert str(flow[0][TCP].flags) == "S" and "F" in str(flow[-2][TCP].flags)
    calls = session["calls"]
    assert set(by_pid) == {calls[name].pid for name in calls}
    assert by_pid[calls["curl"].pid][0] == "curl"
    assert by_pid[calls["sdk"].pid][0] == Path(sys.executable).name[:15]
    request = b"".join(bytes(p[TCP].payload) for p in by_pid[calls["ollama"].pid][1] if p[TCP].dport == 80)
    assert request.startswith(b"POST /api/chat HTTP/1.1\r\n")


@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark not installed")
def test_record_pcapng_opens_in_tshark(session):
    out = subprocess.run(["tshark", "-r", str(session["recorded"]), "-Y", "http.request",
                          "-T", "fields", "-e", "frame.comment", "-e", "http.request.uri"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    lines = sorted(line.split("\t")[1] for line in out.stdout.splitlines())
    assert lines == ["/api/chat", "/v1/chat/completions", "/v1/chat/completions"]
    assert all("pid=" in line and "process=" in line for line in out.stdout.splitlines())


def test_record_pcapng_replays_into_the_same_rows(session, tmp_path, monkeypatch):
    monkeypatch.setenv("LUMEN_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("LUMEN_CONFIG_DIR", str(tmp_path / "config"))
    db = tmp_path / "from-record.duckdb"
    result = CliRunner().invoke(app, ["replay", str(session["recorded"]), "--db", str(db)])
    assert result.exit_code == 0, result.output
    import duckdb

    with duckdb.connect(str(db), read_only=True) as con:
        replayed = con.execute(f"SELECT {', '.join(ROW_COLUMNS)} FROM llm_calls ORDER BY ts_start").fetchall()
    live = sorted(session["rows"], key=lambda r: r["ts_start"])
    assert replayed == [tuple(r[c] for c in ROW_COLUMNS) for r in live]
