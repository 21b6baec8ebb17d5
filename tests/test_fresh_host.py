"""A fresh host: tracefs unmounted, no /lib/modules/$(uname -r)/build link.
The agent fixes both itself and captures.

The agent runs in a private mount namespace (``unshare --mount``) in which
tracefs is unmounted and /lib/modules is an empty tmpfs, as on a host that
just booted with only the linux-headers package installed; the test asserts
inside that namespace that both really are gone before the agent starts.
A real curl call must then become exactly one priced row.
"""

from __future__ import annotations

import shutil
from decimal import Decimal

import pytest
from ebpf_env import ebpf_skip_reason
from support import certs as certs_mod
from support import clients
from support import fake_provider as fp

pytestmark = [pytest.mark.ebpf, pytest.mark.slow]

_reason = ebpf_skip_reason("openssl", "curl") or (None if shutil.which("unshare") else "unshare not found")
if _reason:
    pytest.skip(_reason, allow_module_level=True)

from e2e_agent import AgentProcess  # noqa: E402

TRACEFS = "/sys/kernel/tracing"
# In the new mount namespace only: unmount tracefs (and the debugfs twin that
# may carry it), hide /lib/modules, prove both are gone, then exec the agent.
FRESH_HOST = [
    "unshare", "--mount", "--propagation", "private", "sh", "-c",
    f"umount -l {TRACEFS} 2>/dev/null; umount -l /sys/kernel/debug 2>/dev/null; "
    "mount -t tmpfs tmpfs /lib/modules || exit 96; "
    f"if [ -e {TRACEFS}/uprobe_events ]; then echo 'tracefs still mounted' >&2; exit 97; fi; "
    'if [ -e "/lib/modules/$(uname -r)/build" ]; then echo "headers link still there" >&2; exit 98; fi; '
    'echo "fresh host: tracefs unmounted, no headers link" >&2; exec "$@"', "sh",
]


def test_agent_sets_up_a_fresh_host_itself_and_captures(tmp_path):
    certs = certs_mod.ensure_certs(tmp_path / "certs")
    server = fp.spawn(certs, workdir=tmp_path / "fake-provider")
    agent = AgentProcess.start(tmp_path / "agent", wrap=FRESH_HOST)
    try:
        agent.wait_ready(need_node=False, timeout=60)
        assert "fresh host: tracefs unmounted, no headers link" in agent.log_tail()
        r = clients.curl(server.url, certs, "openai.chat")
        assert r.returncode == 0, r.describe()
        [row] = agent.wait_rows("pid = ?", [r.pid], count=1, settle=0.5)
    finally:
        assert agent.stop() == 0, agent.log_tail()
        server.stop()
    expected = fp.EXPECTED["openai.chat"]
    assert (row["input_tokens"], row["output_tokens"]) == (expected["input_tokens"], expected["output_tokens"])
    # gpt-4o-mini: $0.15 / 1M input (cached reads $0.075), $0.60 / 1M output.
    read = expected["cache_read_tokens"] or 0
    cost = ((expected["input_tokens"] - read) * Decimal("0.15") + read * Decimal("0.075")
            + expected["output_tokens"] * Decimal("0.60")) / Decimal(1_000_000)
    assert row["cost_usd"] == cost.quantize(Decimal("0.00000001"))
    assert row["process"] == "curl"
