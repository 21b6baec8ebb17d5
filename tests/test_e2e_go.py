"""Go's crypto/tls with real probes: a stdlib-only Go client (built here with
Debian's Go) calls the fake provider; ``lumen-agent run`` must make one exact
row per call from uprobes at (*tls.Conn).Write's entry and at every RET of
(*tls.Conn).Read.

The agent analyses a Go executable the first time one execs (off the hot
path, once per build id); each test therefore first runs its fresh binary
once without calls and waits until ``status`` names it as a ``go`` target,
then makes the calls it checks.

Run under the probe lock:  flock /tmp/lumen-ebpf.lock .venv/bin/python -m pytest tests/test_e2e_go.py
"""

from __future__ import annotations

import inspect
import os
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from ebpf_env import ebpf_skip_reason
from support import fake_provider as fp
from support import go_client
from support.native_expected import COST, TOKENS

pytestmark = [pytest.mark.ebpf, pytest.mark.slow]

_reason = ebpf_skip_reason("openssl") or go_client.go_missing()
if _reason:
    pytest.skip(_reason, allow_module_level=True)

from e2e_agent import AgentProcess, running_agent  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
# Each client lives this long before its calls, so the agent reads its name and
# executable from /proc at exec even when a loaded machine delays the exec event
# (a process gone by then leaves process/exe NULL).  Its probes were attached
# by the warm-up run, so the wait changes nothing else.
ALIVE_S = 0.5
HTTP2_TAP = REPO / "parsers" / "http2.py"



@pytest.fixture(scope="module")
def binaries(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("go")
    plain = go_client.build(d / "plain")
    stripped = go_client.build(d / "stripped", stripped=True)
    return {"symtab": plain, "stripped": stripped}


@pytest.fixture(scope="module")
def agent(server, binaries, tmp_path_factory):
    yield from running_agent(tmp_path_factory.mktemp("agent"), need_node=False)


def wait_go_target(agent: AgentProcess, exe: Path, certs, timeout: float = 30) -> str:
    """Run ``exe`` once (no calls) so the agent sees it exec, then wait for the target."""
    # It lives half a second: long enough for the agent to open /proc/PID/exe.
    warm = go_client.run(exe, "https://127.0.0.1:1", certs, None, calls=0, wait=0.5)
    assert warm.returncode == 0, warm.describe()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        st = agent.status_file() or {}
        for t in st.get("targets") or []:
            if t.startswith(f"{exe} (go,"):
                return t
        time.sleep(0.1)
    pytest.fail(f"{exe} never became a go target: {agent.status_file()}\n{agent.log_tail()}")


def check_row(row: dict[str, Any], scenario: str, pid: int, exe: Path, port: int) -> None:
    e = fp.EXPECTED[scenario]
    want = {
        "pid": pid,
        "process": exe.name[:15],
        "exe": str(exe),
        "endpoint": e["endpoint"],
        "server_port": port,
        "request_model": e["request_model"],
        "model": e["model"],
        "streaming": e["streaming"],
        "status_code": 200,
        "outcome": "success",
        "cost_usd": COST[scenario],
        "unpriced": False,
        "capture": "ebpf",
        **TOKENS[scenario],
    }
    got = {k: row[k] for k in want}
    assert got == want, f"row differs for {scenario}:\n got  {got}\n want {want}"
    assert row["request_id"]


def rows_for(agent: AgentProcess, pid: int, count: int) -> list[dict[str, Any]]:
    rows = agent.wait_rows("pid = ?", [pid], count=count, timeout=30, settle=1.0)
    assert len(rows) == count, (f"{len(rows)} rows for pid {pid}, want {count}\n"
                                f"status: {agent.status_file()}\nlog: {agent.log_tail()}")
    return rows


@pytest.mark.parametrize("build", ["symtab", "stripped"])
@pytest.mark.parametrize("scenario", ["openai.chat", "openai.chat.stream", "anthropic.messages.stream"])
def test_go_http11(agent, server, certs, binaries, build, scenario):
    exe = binaries[build]
    wait_go_target(agent, exe, certs)
    r = go_client.run(exe, server.url, certs, scenario, http1=True, wait=ALIVE_S)
    assert r.returncode == 0, r.describe()
    [line] = r.json_lines()
    assert (line["status"], line["proto"]) == (200, "HTTP/1.1"), line
    [row] = rows_for(agent, r.pid, 1)
    check_row(row, scenario, r.pid, exe, server.port)
    assert row["request_id"] == line["request_id"]


def test_go_20_goroutines_give_20_rows(agent, server, certs, binaries):
    exe = binaries["symtab"]
    wait_go_target(agent, exe, certs)
    r = go_client.run(exe, server.url, certs, "openai.chat.stream", http1=True, wait=ALIVE_S, concurrency=20)
    assert r.returncode == 0, r.describe()
    lines = r.json_lines()
    assert [line["status"] for line in lines] == [200] * 20
    rows = rows_for(agent, r.pid, 20)
    for row in rows:
        check_row(row, "openai.chat.stream", r.pid, exe, server.port)
    assert Counter(row["request_id"] for row in rows) == Counter(line["request_id"] for line in lines)


H2_READY = HTTP2_TAP.exists() and "http2" in inspect.signature(fp.spawn).parameters


@pytest.fixture(scope="module")
def server_h2(certs, tmp_path_factory):
    """The fake provider offering h2 first in ALPN (issue 10's fake provider)."""
    proc = fp.spawn(certs, workdir=tmp_path_factory.mktemp("fake-provider-h2"), http2=True)
    yield proc
    proc.stop()


@pytest.mark.skipif(not H2_READY, reason="needs the HTTP/2 tap (parsers/http2.py, issue 10) and the fake "
                                          "provider's http2=True; unskips itself once both are on main")
@pytest.mark.parametrize("scenario", ["openai.chat", "openai.chat.stream", "anthropic.messages.stream"])
def test_go_http2(agent, server_h2, certs, binaries, scenario):
    """Go's default: HTTP/2 negotiated by ALPN, one connection, a stream per call."""
    exe = binaries["symtab"]
    wait_go_target(agent, exe, certs)
    r = go_client.run(exe, server_h2.url, certs, scenario, http1=False, wait=ALIVE_S)
    assert r.returncode == 0, r.describe()
    [line] = r.json_lines()
    assert (line["status"], line["proto"]) == (200, "HTTP/2.0"), line
    [row] = rows_for(agent, r.pid, 1)
    check_row(row, scenario, r.pid, exe, server_h2.port)
    assert row["http_version"] == "2"


@pytest.mark.skipif(not H2_READY, reason="needs the HTTP/2 tap (parsers/http2.py, issue 10) and the fake "
                                          "provider's http2=True; unskips itself once both are on main")
def test_go_http2_20_goroutines_share_one_connection(agent, server_h2, certs, binaries):
    exe = binaries["stripped"]
    wait_go_target(agent, exe, certs)
    r = go_client.run(exe, server_h2.url, certs, "openai.chat.stream", http1=False, wait=ALIVE_S, concurrency=20)
    assert r.returncode == 0, r.describe()
    lines = r.json_lines()
    assert [(line["status"], line["proto"]) for line in lines] == [(200, "HTTP/2.0")] * 20
    rows = rows_for(agent, r.pid, 20)
    for row in rows:
        check_row(row, "openai.chat.stream", r.pid, exe, server_h2.port)
    assert len({row["request_id"] for row in rows}) == 20


def test_go_status_names_the_target_and_no_crash(agent, binaries):
    st = agent.status()
    assert st is not None
    for exe in binaries.values():
        assert f"{exe} (go, global" in st["targets"], st["targets"]
    assert st["tls_not_found"] == ""
    assert agent.proc.poll() is None
    assert os.path.exists(f"/proc/{agent.pid}")
