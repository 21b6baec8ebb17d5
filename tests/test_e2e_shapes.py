"""End to end with real probes for the Bedrock and Vertex AI shapes:
``lumen-agent run``, a real AWS SDK (boto3 bedrock-runtime: Converse,
ConverseStream, InvokeModel, InvokeModelWithResponseStream, SigV4-signed with
fake credentials) and curl (Vertex AI paths, Bedrock with an API key) against
the fake provider over TLS.  Each call: exactly one row, exact tokens and cost.

Costs are worked out here by hand from the published prices (USD per 1M):
us.anthropic.claude-sonnet-4-5 on Bedrock (US geographic profile, +10%):
$3.30 in, $0.33 cache read, $4.125 cache write, $16.50 out;
Claude Sonnet 4.5 on Vertex: $3, $0.30, $15;  Gemini 2.5 Flash: $0.30, $0.03, $2.50.

Run under the global probe lock:
    flock /tmp/lumen-ebpf.lock .venv/bin/python -m pytest tests/test_e2e_shapes.py -m ebpf
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from ebpf_env import ebpf_skip_reason  # noqa: E402
from support import clients
from support import fake_provider as fp

pytestmark = [pytest.mark.ebpf, pytest.mark.slow]

_reason = ebpf_skip_reason("openssl", "curl")
if _reason:
    pytest.skip(_reason, allow_module_level=True)
pytest.importorskip("boto3")

from e2e_agent import AgentProcess, running_agent  # noqa: E402

# scenario -> (input, cache_read, cache_write, output, cost)
EXPECTED: dict[str, tuple[int, int, int, int, Decimal]] = {
    # 2 x 3.3 + 1322 x 0.33 + 5 x 16.5 = 6.6 + 436.26 + 82.5 = 525.36
    "bedrock.converse": (1324, 1322, 0, 5, Decimal("0.00052536")),
    # 25 x 3.3 + 300 x 4.125 + 10 x 16.5 = 82.5 + 1237.5 + 165 = 1485
    "bedrock.converse-stream": (325, 0, 300, 10, Decimal("0.00148500")),
    # 50 x 3.3 + 400 x 0.33 + 20 x 16.5 = 165 + 132 + 330 = 627
    "bedrock.invoke": (450, 400, 0, 20, Decimal("0.00062700")),
    # 60 x 3.3 + 10 x 16.5 = 198 + 165 = 363
    "bedrock.invoke-with-response-stream": (60, 0, 0, 10, Decimal("0.00036300")),
    # (1200 - 1024) x 0.3 + 1024 x 0.03 + 104 x 2.5 = 52.8 + 30.72 + 260 = 343.52
    "vertex.generateContent": (1200, 1024, 0, 104, Decimal("0.00034352")),
    # 18 x 0.3 + 115 x 2.5 = 5.4 + 287.5 = 292.9
    "vertex.streamGenerateContent": (18, 0, 0, 115, Decimal("0.00029290")),
    # 40 x 3 + 1000 x 0.3 + 30 x 15 = 120 + 300 + 450 = 870
    "vertex.rawPredict": (1040, 1000, 0, 30, Decimal("0.00087000")),
    # 33 x 3 + 12 x 15 = 99 + 180 = 279
    "vertex.streamRawPredict": (33, 0, 0, 12, Decimal("0.00027900")),
}


@pytest.fixture(scope="module")
def agent(server, tmp_path_factory):
    yield from running_agent(tmp_path_factory.mktemp("agent"), need_node=False)


def rows_of(agent: AgentProcess, pid: int, count: int, describe: str) -> list[dict[str, Any]]:
    rows = agent.wait_rows("pid = ?", [pid], count=count)
    assert len(rows) == count, f"{len(rows)} rows for pid {pid}, want {count}\n{describe}\n{rows}\n" \
                               f"{agent.log_tail(2500)}"
    return rows


def check(row: dict[str, Any], scenario: str, port: int) -> None:
    s, e = fp.SCENARIOS[scenario], fp.EXPECTED[scenario]
    inp, read, write, out, cost = EXPECTED[scenario]
    want = {
        "provider": s.provider,  # bedrock, or google for both Vertex shapes (x-goog-* headers)
        "endpoint": s.endpoint,
        "server_port": port,
        "request_model": s.request_model,
        "model": e["model"],
        "streaming": s.streaming,
        "status_code": 200,
        "outcome": "success",
        "input_tokens": inp,
        "cache_read_tokens": read,
        "cache_write_tokens": write,
        "output_tokens": out,
        "cost_usd": cost,
        "unpriced": False,
        "usage_missing": False,
        "http_version": "1.1",
    }
    got = {k: row[k] for k in want}
    assert got == want, f"{scenario}:\n got  {got}\n want {want}"
    assert row["api_key_hash"]


def test_boto3_bedrock_all_four_apis(agent, server, certs):
    r = clients.bedrock(server.url, certs)
    assert r.returncode == 0, r.describe()
    lines = r.json_lines()
    assert [line["scenario"] for line in lines] == list(clients.BEDROCK_SCENARIOS)
    rows = rows_of(agent, r.pid, len(lines), r.describe())
    by_id = {row["request_id"]: row for row in rows}
    for line in lines:
        check(by_id[line["request_id"]], line["scenario"], server.port)


@pytest.mark.parametrize("scenario", [
    "bedrock.converse-stream",  # a Bedrock API key (bearer) with curl: the event stream as curl reads it
    "vertex.generateContent", "vertex.streamGenerateContent", "vertex.rawPredict", "vertex.streamRawPredict",
])
def test_curl_vertex_and_bedrock(agent, server, certs, scenario):
    r = clients.curl(server.url, certs, scenario)
    assert r.returncode == 0 and r.statuses == [200], r.describe()
    [row] = rows_of(agent, r.pid, 1, r.describe())
    check(row, scenario, server.port)
