"""End to end with real probes: ``lumen-agent run`` as a subprocess, real clients
(curl, the openai / anthropic SDKs, Node fetch) calling the fake provider over
TLS, and the rows read back from the agent's DuckDB file.

One agent and one fake provider run for the whole module (the provider is
started first, so it is a process that was already running when the agent
came up).  Every client process is started after the agent, so every test
also checks that a new process is captured from its very first call.  Rows
are told apart by the client's pid.  Each test records how many rows its
pids must have; the last test stops the agent (SIGTERM flushes) and checks,
over the whole module, that every call the fake provider answered is in the
file exactly once and the server's own side never made a row.

Expected numbers are fake_provider.EXPECTED (the tokens on the wire) and
costs computed here from the published prices, not from lumen_agent.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from collections import Counter
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from ebpf_env import ebpf_skip_reason  # noqa: E402
from support import clients
from support import fake_provider as fp

pytestmark = pytest.mark.ebpf


_reason = ebpf_skip_reason("openssl", "curl", "node")
if _reason:
    pytest.skip(_reason, allow_module_level=True)

from e2e_agent import NODE_PATH, AgentProcess, running_agent  # noqa: E402

# -------------------------------------------------------------------- prices
# USD per 1M tokens, as published by the providers (typed in by hand, so the
# agent's price table is checked rather than trusted).
M = Decimal(1_000_000)
PRICES: dict[str, dict[str, Decimal]] = {
    "gpt-4o-mini": {"input": Decimal("0.15"), "cache_read": Decimal("0.075"), "output": Decimal("0.60")},
    "gpt-5-mini": {"input": Decimal("0.25"), "cache_read": Decimal("0.025"), "output": Decimal("2")},
    "text-embedding-3-small": {"input": Decimal("0.02"), "output": Decimal("0")},
    "claude-sonnet-4-5": {"input": Decimal("3"), "cache_read": Decimal("0.30"), "cache_write_5m": Decimal("3.75"),
                          "cache_write_1h": Decimal("6"), "output": Decimal("15")},
}
# The 1h part of Anthropic cache writes (fake_provider.Tokens.cache_write_1h).
CACHE_WRITE_1H = {name: (s.tokens.cache_write_1h if s.tokens else None) for name, s in fp.SCENARIOS.items()}


def expected_cost(scenario: str) -> Decimal | None:
    e = fp.EXPECTED[scenario]
    if e["input_tokens"] is None:
        return None
    p = PRICES[fp.SCENARIOS[scenario].request_model]
    read, write, w1h = e["cache_read_tokens"], e["cache_write_tokens"], CACHE_WRITE_1H[scenario]
    uncached = e["input_tokens"] - read - write
    cost = uncached * p["input"] + e["output_tokens"] * p["output"]
    if read:
        cost += read * p["cache_read"]
    if write:
        cost += (write - w1h) * p["cache_write_5m"] + w1h * p["cache_write_1h"]
    return (cost / M).quantize(Decimal("0.00000001"))


# Token parts an API does not have for a call are 0 once usage is reported
# (cache writes on OpenAI, cache reads on embeddings); only a part the API
# never reports apart stays NULL (Anthropic's thinking tokens).
NOT_REPORTED: dict[str, set[str]] = {
    "messages": {"reasoning_tokens"},
}
TOKEN_COLUMNS = (*fp.TOKEN_FIELDS, "cache_write_1h_tokens")


def expected_tokens(scenario: str) -> dict[str, int | None]:
    e = fp.EXPECTED[scenario]
    if e["input_tokens"] is None:
        return dict.fromkeys(TOKEN_COLUMNS)
    out = {k: e[k] for k in fp.TOKEN_FIELDS}
    out["cache_write_1h_tokens"] = CACHE_WRITE_1H[scenario]
    for k in NOT_REPORTED.get(e["endpoint"], ()):
        out[k] = None
    return out


def expected_provider(scenario: str, host: str | None = None) -> str:
    """Provider the agent names: on a host that names none (localhost), the
    response headers do, and the fake provider sends OpenAI's
    (``openai-organization``), so OpenAI-shaped calls are ``openai`` there too
    (served_by.py)."""
    return fp.SCENARIOS[scenario].provider


PYTHON_COMM = Path(sys.executable).name[:15]  # /proc/PID/comm of an SDK client
PYTHON_EXE = os.path.realpath(sys.executable)
CURL_EXE = os.path.realpath(shutil.which("curl"))
NODE_EXE = os.path.realpath(NODE_PATH)

# pid -> rows it must have in the end; filled by every test, checked by the last.
EXPECTED_ROWS: dict[int, int] = {}


# -------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def agent(server, tmp_path_factory):
    yield from running_agent(tmp_path_factory.mktemp("agent"), need_node=True)


# -------------------------------------------------------------------- helpers


def ok(result: clients.ClientResult) -> clients.ClientResult:
    assert result.returncode == 0, result.describe()
    return result


def diagnose(agent: AgentProcess, request_ids: list[str] | None = None) -> str:
    """What the agent says about itself, and rows of these request ids under any pid."""
    st = agent.status_file() or agent.last_status or {}
    skipped = {k: v for k, v in (st.get("pipeline") or {}).items() if k.startswith("skipped.")}
    out = [f"capture: {st.get('capture')}", f"skipped: {skipped}", f"store: {st.get('store')}"]
    if request_ids:
        marks = ",".join("?" * len(request_ids))
        found = agent.query(f"SELECT pid, process, request_id, outcome FROM llm_calls WHERE request_id IN ({marks})",
                            request_ids)
        out.append(f"rows with these request ids (any pid): {found}")
    out.append(f"agent log: {agent.log_tail(2500)}")
    return "\n".join(out)


def rows_of(agent: AgentProcess, result: clients.ClientResult, count: int) -> list[dict[str, Any]]:
    """The client's rows, once ``count`` of them are in the file; registers the count."""
    EXPECTED_ROWS[result.pid] = count
    rows = agent.wait_rows("pid = ?", [result.pid], count=count)
    if len(rows) != count:
        ids = [line.get("request_id") for line in result.json_lines() if line.get("request_id")]
        pytest.fail(f"{len(rows)} rows for pid {result.pid}, want {count}\n{result.describe()}\n"
                    f"rows: {rows}\n{diagnose(agent, ids)}")
    return rows


def check_row(row: dict[str, Any], scenario: str, *, pid: int, process: str, exe: str, port: int,
              host: str = "localhost") -> None:
    e = fp.EXPECTED[scenario]
    want = {
        "pid": pid,
        "process": process,
        "exe": exe,
        "provider": expected_provider(scenario, host),
        "endpoint": e["endpoint"],
        "server_address": host,
        "server_port": port,
        "request_model": e["request_model"],
        "model": e["model"],
        "streaming": e["streaming"],
        "status_code": 200,
        "outcome": "success",
        **expected_tokens(scenario),
        "cost_usd": expected_cost(scenario),
        "unpriced": False,
        "usage_missing": e["input_tokens"] is None,
        "capture": "ebpf",
    }
    got = {k: row[k] for k in want}
    assert got == want, f"row differs for {scenario}:\n got  {got}\n want {want}"
    assert row["request_id"]
    assert row["api_key_hash"] and "test" not in row["api_key_hash"]
    assert row["ts_end"] >= row["ts_start"] and row["latency_ms"] >= 0


def _lost(agent: AgentProcess) -> int:
    """``lost`` of ``lumen-agent status --format json``, as of a fresh status file."""
    before = agent.status_file()["updated"]
    deadline = time.monotonic() + 5
    while agent.status_file()["updated"] == before and time.monotonic() < deadline:
        time.sleep(0.1)
    status = agent.status()
    assert status is not None, agent.log_tail()
    return int(status["lost"])


# -------------------------------------------------------------------- tests


def test_fresh_curl_right_after_ready_is_captured_from_its_first_call(agent, server, certs):
    """The first client of the module, started the moment the agent is ready;
    the host name goes to the real provider's (api.openai.com via --resolve)."""
    r = ok(clients.curl(server.url, certs, "openai.chat", host="api.openai.com"))
    assert r.statuses == [200]
    [row] = rows_of(agent, r, 1)
    check_row(row, "openai.chat", pid=r.pid, process="curl", exe=CURL_EXE, port=server.port,
              host="api.openai.com")
    assert row["provider"] == "openai"
    assert row["ttft_ms"] is not None


@pytest.mark.parametrize("scenario,encoding,calls", [
    ("openai.chat", None, 1),
    ("openai.chat", "gzip", 1),
    ("openai.chat.stream", None, 1),
    ("openai.chat.stream", "gzip", 1),
    ("openai.chat.stream", None, 2),  # two calls on one keep-alive connection
    ("anthropic.messages", "gzip", 1),
    ("anthropic.messages.stream", "gzip", 1),
])
def test_curl_http11(agent, server, certs, scenario, encoding, calls):
    r = ok(clients.curl(server.url, certs, scenario, encoding=encoding, calls=calls))
    assert r.statuses == [200] * calls
    served = [s for s in server.served() if s["scenario"] == scenario and s["encoding"] == (encoding or "identity")]
    rows = rows_of(agent, r, calls)
    for row in rows:
        check_row(row, scenario, pid=r.pid, process="curl", exe=CURL_EXE, port=server.port)
    assert {row["request_id"] for row in rows} <= {s["request_id"] for s in served}
    assert len({row["request_id"] for row in rows}) == calls


@pytest.mark.parametrize("scenario", clients.SDK_SCENARIOS)
def test_sdk(agent, server, certs, scenario):
    """Two calls per SDK client (one keep-alive connection, except the sync
    openai SDK's chat streams, which close after `data: [DONE]` before the end
    of the chunked body and open a new connection per call)."""
    r = ok(clients.sdk(server.url, certs, scenario, calls=2))
    lines = r.json_lines()
    assert [line["ok"] for line in lines] == [True, True], r.describe()
    rows = rows_of(agent, r, 2)
    for row in rows:
        check_row(row, scenario, pid=r.pid, process=PYTHON_COMM, exe=PYTHON_EXE, port=server.port)
    assert [row["request_id"] for row in rows] == [line["request_id"] for line in lines]
    # The row says what the SDK read.
    for row, line in zip(rows, lines, strict=False):
        want = line["usage"] or dict.fromkeys(fp.TOKEN_FIELDS)
        assert all(row[k] == want[k] for k in ("input_tokens", "output_tokens")), (row, line)


def test_stream_without_include_usage_curl(agent, server, certs):
    r = ok(clients.curl(server.url, certs, "openai.chat.stream_no_usage"))
    [row] = rows_of(agent, r, 1)
    check_row(row, "openai.chat.stream_no_usage", pid=r.pid, process="curl", exe=CURL_EXE, port=server.port)
    assert row["usage_missing"] is True and row["cost_usd"] is None and row["unpriced"] is False
    assert all(row[k] is None for k in TOKEN_COLUMNS)


@pytest.mark.parametrize("calls", [1, 3])
def test_node_fetch_chat_stream(agent, server, certs, calls):
    """``node -e`` with global fetch (Node's own OpenSSL, probed by executable);
    calls=1 is a node process making a single call right after it starts."""
    status = agent.status_file()
    assert any(t.startswith(f"{NODE_PATH} (") for t in status["targets"]), status["targets"]
    r = ok(clients.node_fetch(server.url, certs, "openai.chat.stream", calls=calls))
    lines = r.json_lines()
    assert [line["status"] for line in lines] == [200] * calls
    rows = rows_of(agent, r, calls)
    for row in rows:
        check_row(row, "openai.chat.stream", pid=r.pid, process="node", exe=NODE_EXE, port=server.port)
    assert [row["request_id"] for row in rows] == [line["request_id"] for line in lines]


@pytest.mark.parametrize("client,scenario", [
    ("curl", "openai.chat"),
    ("sdk", "openai.chat"),
    ("sdk", "anthropic.messages.stream"),
])
def test_rate_limited(agent, server, certs, client, scenario):
    if client == "curl":
        r = clients.curl(server.url, certs, scenario, status=429)
        assert r.returncode == 0 and r.statuses == [429], r.describe()
        process, exe = "curl", CURL_EXE
    else:
        r = clients.sdk(server.url, certs, scenario, status=429)
        assert r.returncode == 1, r.describe()
        [line] = r.json_lines()
        assert (line["ok"], line["status"]) == (False, 429)
        process, exe = PYTHON_COMM, PYTHON_EXE
    [row] = rows_of(agent, r, 1)
    e = fp.EXPECTED[scenario]
    want = {
        "pid": r.pid, "process": process, "exe": exe,
        "provider": expected_provider(scenario), "endpoint": e["endpoint"],
        "request_model": e["request_model"], "model": e["request_model"],  # an error body names no model
        "streaming": e["streaming"], "status_code": 429, "outcome": "rate_limited",
        **dict.fromkeys(TOKEN_COLUMNS), "cost_usd": None, "unpriced": False, "usage_missing": True,
    }
    assert {k: row[k] for k in want} == want
    if client == "sdk":
        assert row["request_id"] == line["request_id"]


def test_non_llm_path_makes_no_row(agent, server, certs):
    get = ok(clients.curl_get(server.url, certs, "/healthz"))
    assert get.stdout == "ok\n"
    EXPECTED_ROWS[get.pid] = 0
    # A later LLM call: once its row is in, the GET's events were long handled.
    marker = ok(clients.curl(server.url, certs, "openai.chat"))
    rows_of(agent, marker, 1)
    assert agent.rows("pid = ?", [get.pid]) == []
    assert any(s.get("non_llm") and s["path"] == "/healthz" for s in server.served())


@pytest.mark.slow
def test_200_concurrent_streaming_calls(agent, server, certs):
    """20 SDK processes x 10 streaming chat calls, all at once: 200 rows, nothing lost."""
    lost_before = _lost(agent)
    results = clients.run_concurrent(server.url, certs, procs=20, calls=10, scenario="openai.chat.stream")
    for r in results:
        ok(r)
    pids = [r.pid for r in results]
    for pid in pids:
        EXPECTED_ROWS[pid] = 10
    marks = ",".join("?" * len(pids))
    rows = agent.wait_rows(f"pid IN ({marks})", pids, count=200, timeout=60)
    assert len(rows) == 200, Counter(row["pid"] for row in rows)
    assert Counter(row["pid"] for row in rows) == Counter({pid: 10 for pid in pids})
    for row in rows:
        check_row(row, "openai.chat.stream", pid=row["pid"], process=PYTHON_COMM, exe=PYTHON_EXE,
                  port=server.port)
    client_ids = {line["request_id"] for r in results for line in r.json_lines()}
    assert {row["request_id"] for row in rows} == client_ids and len(client_ids) == 200
    # Counted over this test: the agent probes every process on the host
    # (global mode), so another heavy TLS user elsewhere could lose records
    # before it; none of ours may be lost.
    lost = _lost(agent) - lost_before
    assert lost == 0, f"{lost} ring buffer records lost during the test; status: {agent.status()}"


def test_zz_sigterm_flushes_and_every_call_is_in_the_file_exactly_once(agent, server):
    """Stop the agent: it exits 0 after flushing.  Then, over the whole module:
    every LLM request the fake provider answered to our clients is exactly
    one row, each client pid has the rows its test counted, and the server's
    side of each call made none."""
    assert agent.stop() == 0, agent.log_tail()
    pids = list(EXPECTED_ROWS)
    assert pids, "run with the other tests of this module"
    marks = ",".join("?" * len(pids))
    rows = agent.rows(f"pid IN ({marks}) OR pid = ?", [*pids, server.pid])
    assert not [row for row in rows if row["pid"] == server.pid]
    by_pid = Counter(row["pid"] for row in rows)
    served_llm = {s["request_id"] for s in server.served() if not s.get("non_llm")}
    row_ids = Counter(row["request_id"] for row in rows)
    missing = sorted(served_llm - set(row_ids))
    assert {pid: by_pid.get(pid, 0) for pid in pids} == EXPECTED_ROWS, diagnose(agent, missing)
    assert max(row_ids.values()) == 1, [rid for rid, n in row_ids.items() if n > 1]
    assert set(row_ids) == served_llm, diagnose(agent, missing)
