"""End to end with real probes: batch results downloaded by the real SDKs.

``lumen-agent run``; the openai SDK's ``client.files.content(...)`` (a batch
output file, then a fine-tuning file) and the anthropic SDK's
``client.messages.batches.results(...)`` (which first retrieves the batch for
its ``results_url``) against the fake provider over TLS, everything
downloaded twice.  Rows: exactly one per billed line, at the batch tier,
none for the downloads, the batch retrieval or the fine-tuning file, and
none more for the second download.

Costs by hand (batch rates, USD per 1M):
gpt-4o-mini-2024-07-18 $0.075 in / $0.30 out; text-embedding-3-small $0.01;
claude-sonnet-4-5 $1.50 in / $7.50 out.

Run under the global probe lock:
    flock /tmp/lumen-ebpf.lock .venv/bin/python -m pytest tests/test_e2e_batch.py -m ebpf
"""

from __future__ import annotations

import sys
import uuid
from decimal import Decimal

import pytest
from ebpf_env import ebpf_skip_reason  # noqa: E402
from support import clients

pytestmark = [pytest.mark.ebpf, pytest.mark.slow]

_reason = ebpf_skip_reason("openssl")
if _reason:
    pytest.skip(_reason, allow_module_level=True)
pytest.importorskip("openai")
pytest.importorskip("anthropic")

from e2e_agent import running_agent  # noqa: E402

# (request_id, provider, endpoint, model, input, output, cost), in line order
EXPECTED = [
    # 24 x 0.075 + 15 x 0.30 = 1.8 + 4.5 = 6.3
    ("req_aaaa0001", "openai", "chat.completions", "gpt-4o-mini-2024-07-18", 24, 15, Decimal("0.00000630")),
    # 1200 x 0.075 + 80 x 0.30 = 90 + 24 = 114
    ("req_aaaa0002", "openai", "chat.completions", "gpt-4o-mini-2024-07-18", 1200, 80, Decimal("0.00011400")),
    # batch_req_...0003 expired: not billed, no row.  8 x 0.01 = 0.08
    ("req_aaaa0004", "openai", "embeddings", "text-embedding-3-small", 8, 0, Decimal("0.00000008")),
    # Anthropic: 11 x 1.5 + 36 x 7.5 = 16.5 + 270 = 286.5 (errored and expired lines: no rows)
    (None, "anthropic", "messages", "claude-sonnet-4-5-20250929", 11, 36, Decimal("0.00028650")),
]


@pytest.fixture(scope="module")
def agent(server, tmp_path_factory):
    yield from running_agent(tmp_path_factory.mktemp("agent"), need_node=False)


def test_sdk_batch_downloads_one_row_per_billed_line(agent, server, certs):
    argv = [sys.executable, str(clients.SUPPORT_DIR / "batch_client.py"), "--url", server.url.rstrip("/"),
            "--twice"]
    r = clients._spawn("batch_client", argv, clients.client_env(certs)).finish()
    assert r.returncode == 0, r.describe()
    lines = r.json_lines()
    # What the SDKs read: 4 + 1 + 3 lines, twice.
    assert [line["lines"] for line in lines] == [4, 1, 3] * 2, r.describe()

    rows = agent.wait_rows("pid = ?", [r.pid], count=len(EXPECTED), settle=2.0)
    got = sorted(((row["request_id"], row["provider"], row["endpoint"], row["model"], row["input_tokens"],
                   row["output_tokens"], row["cost_usd"]) for row in rows), key=lambda g: (g[1], g[0] or ""))
    assert got == sorted(EXPECTED, key=lambda g: (g[1], g[0] or "")), f"{rows}\n{agent.log_tail(2500)}"
    assert {(row["service_tier"], row["outcome"], row["streaming"], row["server_port"]) for row in rows} == {
        ("batch", "success", False, server.port)}
    # The Anthropic row's id comes from the batch id and custom_id: the same on every download.
    key = "anthropic:msgbatch_01HkcTjaV5uDC8jWR4ZsDV8d:my-second-request"
    assert uuid.uuid5(uuid.UUID("6f1c1d52-4a83-4c1e-9a53-0b2f6a3d7c41"), key).hex in {row["id"] for row in rows}
    # 6.3 + 114 + 0.08 + 286.5 = 406.88 / 1M
    assert sum(row["cost_usd"] for row in rows) == Decimal("0.00040688")
