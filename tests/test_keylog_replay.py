"""`lumen-agent replay FILE.pcap --keylog KEYS`: TLS decrypted with an NSS key log (scapy's TLS layer).

curl writes SSLKEYLOGFILE while calling the TLS fake provider; tcpdump
records the session on lo; replay with the key log gives the rows.  TLS 1.3
(curl's default with the fake provider) and TLS 1.2 (``tls-max = 1.2`` in a
.curlrc).  The round trip against the eBPF agent runs a real agent, so it is
marked ``ebpf`` and runs under the shared lock.
"""

import os
from decimal import Decimal
from pathlib import Path

import duckdb
import pytest
from e2e_agent import AgentProcess
from ebpf_env import ebpf_skip_reason
from pcap_tools import Tcpdump
from support import clients
from support import fake_provider as fp
from typer.testing import CliRunner

from lumen_agent.cli import app

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="tcpdump on lo needs root")

COLUMNS = ("provider", "endpoint", "request_model", "model", "streaming", "status_code", "request_id",
           "input_tokens", "cache_read_tokens", "output_tokens", "reasoning_tokens", "cost_usd", "server_address",
           "server_port", "http_version")


def record_tls(work: Path, certs, *, tls12: bool, scenarios=("openai.chat", "openai.chat.stream")):
    """tcpdump of curl calling the TLS fake provider, and curl's key log."""
    keylog = work / "keys.log"
    env = {"SSLKEYLOGFILE": str(keylog)}
    if tls12:
        (work / ".curlrc").write_text("tls-max = 1.2\n")
        env["CURL_HOME"] = str(work)
    pcap = work / "tls.pcap"
    with fp.spawn(certs, workdir=work / "provider") as server, Tcpdump(pcap, server.port):
        results = [clients.curl(server.url, certs, s, env=env) for s in scenarios]
    for r in results:
        assert r.ok, r.describe()
    return pcap, keylog, server, results


def replay(path: Path, tmp_path: Path, monkeypatch, *extra: str):
    monkeypatch.setenv("LUMEN_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("LUMEN_CONFIG_DIR", str(tmp_path / "config"))
    db = tmp_path / "replayed.duckdb"
    result = CliRunner().invoke(app, ["replay", str(path), "--db", str(db), *extra])
    assert result.exit_code == 0, result.output
    if not db.exists():
        return result, []
    with duckdb.connect(str(db), read_only=True) as con:
        rows = con.execute(f"SELECT {', '.join(COLUMNS)} FROM llm_calls ORDER BY ts_start").fetchall()
    return result, [dict(zip(COLUMNS, row, strict=True)) for row in rows]


@pytest.mark.parametrize("tls12", [False, True], ids=["tls1.3", "tls1.2"])
def test_keylog_decrypts_curl_calls(tls12, certs, tmp_path, monkeypatch):
    pcap, keylog, server, _ = record_tls(tmp_path, certs, tls12=tls12)
    secrets = keylog.read_text()
    assert ("CLIENT_RANDOM " in secrets) == tls12
    assert ("CLIENT_TRAFFIC_SECRET_0 " in secrets) != tls12
    result, rows = replay(pcap, tmp_path, monkeypatch, "--keylog", str(keylog))
    assert "2 calls (0 unpriced), 2 rows written, 0 bytes/items skipped" in result.stdout
    served = {s["request_id"] for s in server.served()}
    assert {r["request_id"] for r in rows} == served
    chat, stream = rows
    # gpt-4o-mini: 276 x $0.15/M + 1024 cached x $0.075/M + 12 x $0.60/M = $0.0001254
    assert (chat["streaming"], chat["input_tokens"], chat["cache_read_tokens"], chat["output_tokens"],
            chat["cost_usd"]) == (False, 1300, 1024, 12, Decimal("0.00012540"))
    # The recorded stream: 78 x $0.15/M + 9 x $0.60/M = $0.0000171
    assert (stream["streaming"], stream["input_tokens"], stream["output_tokens"], stream["cost_usd"]) == (
        True, 78, 9, Decimal("0.00001710"))
    assert {r["server_address"] for r in rows} == {"localhost"}
    assert {r["server_port"] for r in rows} == {server.port}


def test_without_the_right_key_log_nothing_is_invented(certs, tmp_path, monkeypatch):
    pcap, _, _, _ = record_tls(tmp_path, certs, tls12=False, scenarios=("openai.chat",))
    other = tmp_path / "other.log"
    other.write_text("CLIENT_RANDOM " + "00" * 32 + " " + "11" * 48 + "\n")
    result, rows = replay(pcap, tmp_path, monkeypatch, "--keylog", str(other))
    assert rows == []
    assert "0 calls (0 unpriced), 0 rows written, 1 bytes/items skipped" in result.stdout
    assert "skipped tls_no_secrets" in result.stderr
    # Without --keylog the TLS bytes are not HTTP: no row either.
    _, rows = replay(pcap, tmp_path / "again", monkeypatch)
    assert rows == []


@pytest.mark.ebpf
@pytest.mark.slow
def test_keylog_replay_gives_the_rows_the_ebpf_agent_made(certs, tmp_path, monkeypatch):
    """One agent: eBPF probes for TLS and, beside them, the plain-HTTP sniffer on a configured port."""
    reason = ebpf_skip_reason("openssl", "curl")
    if reason:
        pytest.skip(reason)
    with fp.spawn(None, plain=True, workdir=tmp_path / "plain-provider") as plain:
        (tmp_path / "agent" / "config").mkdir(parents=True)
        (tmp_path / "agent" / "config" / "config.toml").write_text(
            f"[capture]\nplain_http_ports = [{plain.port}]\n")
        agent = AgentProcess.start(tmp_path / "agent")
        try:
            agent.wait_ready(need_node=False, timeout=60)
            status = agent.status()
            pcap, keylog, server, results = record_tls(tmp_path, certs, tls12=False)
            local = clients.curl(plain.url, certs, "ollama.chat.stream", headers={"x-fake-ttft-ms": "300"})
            assert local.ok, local.describe()
            pids = [r.pid for r in results]
            live = agent.wait_rows(f"pid IN ({pids[0]}, {pids[1]})", count=2, settle=1.0)
            sniffed = agent.wait_rows("pid = ?", [local.pid], count=1)
        finally:
            assert agent.stop() == 0, agent.log_tail()
    assert status["capture"] == "ebpf"
    assert "plain HTTP on lo" in status["targets"] and f"ports {plain.port}" in status["targets"]
    assert len(live) == 2, agent.log_tail()
    assert {r["capture"] for r in live} == {"ebpf"}
    # The plain-HTTP call, seen by the sniffer in the same agent.
    assert [(r["capture"], r["process"], r["provider"], r["input_tokens"], r["output_tokens"]) for r in sniffed] == [
        ("plain", "curl", "ollama", 31, 12)]
    _, replayed = replay(pcap, tmp_path, monkeypatch, "--keylog", str(keylog))
    assert replayed == [{c: r[c] for c in COLUMNS} for r in live]
