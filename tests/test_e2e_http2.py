"""End to end over HTTP/2 with real probes: ``lumen-agent run`` as a subprocess, real
HTTP/2 clients (curl --http2, the openai / anthropic SDKs on an httpx client with
http2=True, Node's http2 module) calling the fake provider with ALPN h2, and the
rows read back from the agent's DuckDB file.

Laid out as test_e2e_ebpf.py: one agent and one fake provider for the module,
rows told apart by the client's pid, and a last test that stops the agent and
checks every call the provider answered is one row and the server made none.
Costs are worked by hand from the published prices (test_e2e_ebpf.PRICES).
"""

from __future__ import annotations

from collections import Counter
from decimal import Decimal
from typing import Any

import pytest
from ebpf_env import ebpf_skip_reason
from support import clients
from support import fake_provider as fp

pytestmark = [pytest.mark.ebpf, pytest.mark.slow]

_reason = ebpf_skip_reason("openssl", "curl", "node")
if _reason:
    pytest.skip(_reason, allow_module_level=True)
pytest.importorskip("h2")

from e2e_agent import AgentProcess, running_agent  # noqa: E402
from test_e2e_ebpf import (  # noqa: E402
    CURL_EXE,
    NODE_EXE,
    PYTHON_COMM,
    PYTHON_EXE,
    expected_cost,
    expected_provider,
    expected_tokens,
)

EXPECTED_ROWS: dict[int, int] = {}


@pytest.fixture(scope="module")
def server(certs, tmp_path_factory):
    proc = fp.spawn(certs, workdir=tmp_path_factory.mktemp("fake-provider-h2"), http2=True)
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def agent(server, tmp_path_factory):
    yield from running_agent(tmp_path_factory.mktemp("agent"), need_node=True)


def ok(result: clients.ClientResult) -> clients.ClientResult:
    assert result.returncode == 0, result.describe()
    return result


def rows_of(agent: AgentProcess, result: clients.ClientResult, count: int) -> list[dict[str, Any]]:
    EXPECTED_ROWS[result.pid] = count
    rows = agent.wait_rows("pid = ?", [result.pid], count=count, timeout=30)
    if len(rows) != count:
        st = agent.status_file() or {}
        skipped = {k: v for k, v in (st.get("pipeline") or {}).items() if k.startswith(("skipped.", "h2", "conn"))}
        pytest.fail(f"{len(rows)} rows for pid {result.pid}, want {count}\n{result.describe()}\n"
                    f"rows: {rows}\nskipped: {skipped}\nagent log: {agent.log_tail(2500)}")
    return rows


def check_row(row: dict[str, Any], scenario: str, *, pid: int, process: str, exe: str, port: int) -> None:
    e = fp.EXPECTED[scenario]
    want = {
        "pid": pid, "process": process, "exe": exe,
        "provider": expected_provider(scenario, "localhost"), "endpoint": e["endpoint"],
        "server_address": "localhost", "server_port": port,
        "request_model": e["request_model"], "model": e["model"], "streaming": e["streaming"],
        "status_code": 200, "outcome": "success",
        **expected_tokens(scenario),
        "cost_usd": expected_cost(scenario), "unpriced": False, "usage_missing": e["input_tokens"] is None,
        "capture": "ebpf", "http_version": "2",
    }
    got = {k: row[k] for k in want}
    assert got == want, f"row differs for {scenario}:\n got  {got}\n want {want}"
    assert row["request_id"]


# Costs of the scenarios used below, by hand (USD per 1M tokens):
# openai.chat, gpt-4o-mini: (1300 - 1024) * 0.15 + 1024 * 0.075 + 12 * 0.60 = 41.4 + 76.8 + 7.2 = 125.4
# openai.chat.stream, gpt-4o-mini: 78 * 0.15 + 9 * 0.60 = 11.7 + 5.4 = 17.1
# anthropic.messages, claude-sonnet-4-5: 25 * 3 + 2000 * 0.30 + 500 * 3.75 + 200 * 6 + 60 * 15
#     = 75 + 600 + 1875 + 1200 + 900 = 4650
# anthropic.messages.stream: 20 * 3 + 1500 * 0.30 + 300 * 3.75 + 12 * 15 = 60 + 450 + 1125 + 180 = 1815
HAND_COSTS = {
    "openai.chat": Decimal("0.00012540"),
    "openai.chat.stream": Decimal("0.00001710"),
    "anthropic.messages": Decimal("0.00465000"),
    "anthropic.messages.stream": Decimal("0.00181500"),
}


def test_hand_costs_agree_with_the_e2e_table():
    assert {name: expected_cost(name) for name in HAND_COSTS} == HAND_COSTS


# -------------------------------------------------------------------- curl --http2


@pytest.mark.parametrize("scenario,encoding", [
    ("openai.chat", None),
    ("openai.chat.stream", None),
    ("openai.chat", "gzip"),
    ("openai.chat.stream", "gzip"),
    ("anthropic.messages.stream", "gzip"),
])
def test_curl_http2(agent, server, certs, scenario, encoding):
    r = ok(clients.curl(server.url, certs, scenario, encoding=encoding, http2=True))
    assert r.statuses == [200]
    [row] = rows_of(agent, r, 1)
    check_row(row, scenario, pid=r.pid, process="curl", exe=CURL_EXE, port=server.port)
    served = [s for s in server.served() if s["request_id"] == row["request_id"]]
    assert [(s["http_version"], s["encoding"]) for s in served] == [("2", encoding or "identity")]


def test_curl_http2_three_calls_on_one_connection(agent, server, certs):
    r = ok(clients.curl(server.url, certs, "openai.chat.stream", calls=3, http2=True))
    rows = rows_of(agent, r, 3)
    for row in rows:
        check_row(row, "openai.chat.stream", pid=r.pid, process="curl", exe=CURL_EXE, port=server.port)
    assert len({row["request_id"] for row in rows}) == 3


def test_curl_http2_rate_limited(agent, server, certs):
    r = clients.curl(server.url, certs, "openai.chat", status=429, http2=True)
    assert r.returncode == 0 and r.statuses == [429], r.describe()
    [row] = rows_of(agent, r, 1)
    # localhost says nothing; the response's openai-organization header names who served it
    want = {"provider": "openai", "endpoint": "chat.completions", "request_model": "gpt-4o-mini",
            "status_code": 429, "outcome": "rate_limited", "input_tokens": None, "output_tokens": None,
            "cost_usd": None, "unpriced": False, "usage_missing": True, "http_version": "2"}
    assert {k: row[k] for k in want} == want


# -------------------------------------------------------------------- SDKs on httpx http2=True


@pytest.mark.parametrize("scenario", ["openai.chat", "openai.chat.stream", "anthropic.messages",
                                      "anthropic.messages.stream"])
def test_sdk_http2(agent, server, certs, scenario):
    """Two calls per client: two streams of one HTTP/2 connection."""
    r = ok(clients.sdk(server.url, certs, scenario, calls=2, http2=True))
    lines = r.json_lines()
    assert [line["ok"] for line in lines] == [True, True], r.describe()
    rows = rows_of(agent, r, 2)
    for row in rows:
        check_row(row, scenario, pid=r.pid, process=PYTHON_COMM, exe=PYTHON_EXE, port=server.port)
    assert [row["request_id"] for row in rows] == [line["request_id"] for line in lines]


# -------------------------------------------------------------------- Node's http2 module


def test_node_http2_stream(agent, server, certs):
    r = ok(clients.node_http2(server.url, certs, "openai.chat.stream"))
    [line] = r.json_lines()
    [row] = rows_of(agent, r, 1)
    check_row(row, "openai.chat.stream", pid=r.pid, process="node", exe=NODE_EXE, port=server.port)
    assert row["request_id"] == line["request_id"]


def test_twenty_concurrent_streams_on_one_connection(agent, server, certs):
    r = ok(clients.node_http2(server.url, certs, "openai.chat.stream", calls=20, concurrent=True))
    lines = r.json_lines()
    assert len(lines) == 20
    served = [s for s in server.served() if s["request_id"] in {line["request_id"] for line in lines}]
    assert len({s["connection_id"] for s in served}) == 1 and len({s["stream_id"] for s in served}) == 20
    rows = rows_of(agent, r, 20)
    for row in rows:
        check_row(row, "openai.chat.stream", pid=r.pid, process="node", exe=NODE_EXE, port=server.port)
    assert {row["request_id"] for row in rows} == {line["request_id"] for line in lines}


# -------------------------------------------------------------------- Gemini and Bedrock


def test_gemini_generate_content_http2(agent, server, certs):
    r = ok(clients.curl(server.url, certs, "gemini.generateContent", http2=True))
    [row] = rows_of(agent, r, 1)
    want = {"provider": "google", "endpoint": "generateContent", "request_model": "gemini-2.5-flash",
            "model": "gemini-2.5-flash", "input_tokens": 1200, "cache_read_tokens": 1024, "output_tokens": 104,
            "reasoning_tokens": 64, "outcome": "success", "http_version": "2",
            # gemini-2.5-flash per 1M: $0.30 input, $0.03 cached input, $2.50 output (thinking included):
            # (1200 - 1024) * 0.30 + 1024 * 0.03 + 104 * 2.50 = 52.80 + 30.72 + 260 = 343.52
            "cost_usd": Decimal("0.00034352")}
    assert {k: row[k] for k in want} == want


@pytest.mark.parametrize("scenario,want", [
    # Claude Sonnet 4.5 on Bedrock (US profile) per 1M: $3.30 input, $0.33 cache read, $4.125 5m cache write,
    # $16.50 output.
    # 2 x 3.3 + 1322 x 0.33 + 5 x 16.5 = 6.6 + 436.26 + 82.5 = 525.36
    ("bedrock.converse", (1324, 1322, 0, 5, Decimal("0.00052536"))),
    # The event stream over h2 DATA frames: 25 x 3.3 + 300 x 4.125 + 10 x 16.5 = 82.5 + 1237.5 + 165 = 1485
    ("bedrock.converse-stream", (325, 0, 300, 10, Decimal("0.00148500"))),
])
def test_bedrock_converse_http2(agent, server, certs, scenario, want):
    r = ok(clients.curl(server.url, certs, scenario, http2=True))
    assert r.statuses == [200]
    [row] = rows_of(agent, r, 1)
    got = (row["input_tokens"], row["cache_read_tokens"], row["cache_write_tokens"], row["output_tokens"],
           row["cost_usd"])
    assert got == want
    assert (row["provider"], row["http_version"], row["outcome"]) == ("bedrock", "2", "success")


# -------------------------------------------------------------------- the whole module


def test_zz_every_h2_call_is_one_row_and_the_server_none(agent, server):
    assert agent.stop() == 0, agent.log_tail()
    pids = list(EXPECTED_ROWS)
    assert pids, "run with the other tests of this module"
    marks = ",".join("?" * len(pids))
    rows = agent.rows(f"pid IN ({marks}) OR pid = ?", [*pids, server.pid])
    assert not [row for row in rows if row["pid"] == server.pid]
    by_pid = Counter(row["pid"] for row in rows)
    assert {pid: by_pid.get(pid, 0) for pid in pids} == EXPECTED_ROWS
    served_llm = {s["request_id"] for s in server.served() if not s.get("non_llm")}
    row_ids = Counter(row["request_id"] for row in rows)
    assert max(row_ids.values()) == 1
    assert set(row_ids) == served_llm
    assert all(row["http_version"] == "2" for row in rows)
