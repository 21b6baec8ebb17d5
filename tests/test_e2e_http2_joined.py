"""An HTTP/2 connection that was open before the agent started, with real probes.

Two raw HTTP/2 clients (tests/support/h2_client.py on the h2 library) each make a
call, then wait while the agent starts, then make another call on the same
connection.  The agent never saw the start of either connection, so it has no
HPACK state for them:

- the client (and server) that send every header as a never-indexed literal
  leave the tables empty, so the second call decodes: exactly one row, exact
  tokens and cost;
- the one that indexes headers (every real client does) refers to table
  entries made before the agent started: its header blocks are skipped and
  counted, and no row is made up.
"""

from __future__ import annotations

import json
import subprocess
import sys
from decimal import Decimal

import pytest
from ebpf_env import ebpf_skip_reason
from support import certs as certs_mod
from support import clients
from support import fake_provider as fp

pytestmark = [pytest.mark.ebpf, pytest.mark.slow]

_reason = ebpf_skip_reason("openssl")
if _reason:
    pytest.skip(_reason, allow_module_level=True)
pytest.importorskip("h2")

from e2e_agent import AgentProcess  # noqa: E402

H2_CLIENT = str(clients.SUPPORT_DIR / "h2_client.py")


def start_client(url: str, certs, trigger, *, never_index: bool) -> subprocess.Popen[str]:
    argv = [sys.executable, H2_CLIENT, "--url", url, "--scenario", "openai.chat.stream", "--trigger", str(trigger)]
    if never_index:
        argv.append("--never-index")
    return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=clients.client_env(certs))


def test_connection_open_before_the_agent(tmp_path):
    certs = certs_mod.ensure_certs(tmp_path / "certs")
    trigger = tmp_path / "go"
    with fp.spawn(certs, workdir=tmp_path / "fake-provider", http2=True) as server:
        literal = start_client(server.url, certs, trigger, never_index=True)
        indexed = start_client(server.url, certs, trigger, never_index=False)
        procs = {"literal": literal, "indexed": indexed}
        try:
            before = {}
            for name, proc in procs.items():
                before[name] = json.loads(proc.stdout.readline())
                assert json.loads(proc.stdout.readline()) == {"waiting": True}
            agent = AgentProcess.start(tmp_path / "agent")
            try:
                agent.wait_ready(need_node=False, timeout=60, margin=0.5)
                trigger.touch()
                after = {}
                for name, proc in procs.items():
                    out, err = proc.communicate(timeout=60)
                    assert proc.returncode == 0, err
                    after[name] = json.loads(out.splitlines()[-1])
                assert all(line["status"] == 200 for line in (*before.values(), *after.values()))
                rows = agent.wait_rows("pid = ?", [literal.pid], count=1, timeout=30)
                assert len(rows) == 1, agent.log_tail()
                settled = agent.wait_rows("pid IN (?, ?)", [literal.pid, indexed.pid], count=3, timeout=3)
            finally:
                assert agent.stop() == 0, agent.log_tail()
            status = agent.last_status or {}
        finally:
            for proc in procs.values():
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
    # Only the call made after the agent started, on the connection it can read.
    assert [row["pid"] for row in settled] == [literal.pid]
    [row] = rows
    # gpt-4o-mini per 1M: $0.15 input, $0.60 output: 78 * 0.15 + 9 * 0.60 = 17.10
    want = {"request_id": after["literal"]["request_id"], "provider": "openai",
            "endpoint": "chat.completions", "model": "gpt-4o-mini-2024-07-18", "streaming": True,
            "input_tokens": 78, "output_tokens": 9, "cost_usd": Decimal("0.00001710"), "status_code": 200,
            "outcome": "success", "http_version": "2"}
    assert {k: row[k] for k in want} == want
    pipeline = status.get("pipeline") or {}
    # Both connections were seen joined; the indexed one's blocks could not be read.
    assert pipeline.get("skipped.h2_joined_midstream", 0) >= 2, pipeline
    assert pipeline.get("skipped.h2_header_block", 0) >= 1, pipeline
