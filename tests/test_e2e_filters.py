"""Process filters with real probes: an excluded program makes no row, an included one does."""

from __future__ import annotations

import pytest
from ebpf_env import ebpf_skip_reason

pytestmark = pytest.mark.ebpf

_reason = ebpf_skip_reason("openssl", "curl")
if _reason:
    pytest.skip(_reason, allow_module_level=True)

from e2e_agent import AgentProcess  # noqa: E402
from support import certs as certs_mod  # noqa: E402
from support import clients  # noqa: E402
from support import fake_provider as fp  # noqa: E402


def test_excluded_process_is_not_captured(tmp_path):
    certs = certs_mod.ensure_certs(tmp_path / "certs")
    server = fp.spawn(certs, workdir=tmp_path / "fp")
    workdir = tmp_path / "agent"
    (workdir / "config").mkdir(parents=True)
    (workdir / "config" / "config.toml").write_text('[filters]\nexclude_process = ["curl"]\n')
    agent = AgentProcess.start(workdir)
    try:
        agent.wait_ready(need_node=False)
        excluded = clients.curl(server.url, certs, "openai.chat")
        included = clients.sdk(server.url, certs, "openai.chat")
        assert excluded.returncode == 0 and included.returncode == 0
        rows = agent.wait_rows("pid = ?", [included.pid], count=1)
        assert rows[0]["process"] != "curl" and rows[0]["input_tokens"] == fp.EXPECTED["openai.chat"]["input_tokens"]
        status = agent.status_file() or {}
        assert status["pipeline"].get("processes.excluded", 0) >= 1
    finally:
        assert agent.stop() == 0
        server.stop()
    assert agent.rows("pid = ?", [excluded.pid]) == []
