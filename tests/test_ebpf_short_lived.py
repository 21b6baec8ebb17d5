"""Short-lived TLS clients keep their pid and process name under eBPF capture,
even when the run loop reads their records only after they exited.

`lumen-agent run` (real uprobes on libssl) and real curl processes calling the
fake provider over TLS with no added latency, each one new process:

1. 50 one after the other, the agent idle otherwise;
2. then the agent's run loop is held up -- its ``--record`` file is a pipe
   whose reader stops reading, so the loop blocks in a write -- and 50 curls
   run at once, then 30 one after the other, every one of them exiting before
   the loop reads a record of theirs.  /proc has nothing of them by then.

Every call must be one row with the pid of the curl that made it and the
process name ``curl``: the kernel put each process's comm in its EXEC record
(bpf/ssl_probes.c), which is what names a process gone from /proc.  Exe and
user are read from /proc only, so a stalled curl's are NULL.
"""

from __future__ import annotations

import os
import shutil
from decimal import Decimal

import pytest
from ebpf_env import ebpf_skip_reason
from support import clients
from support import fake_provider as fp

pytestmark = [pytest.mark.ebpf, pytest.mark.slow]

_reason = ebpf_skip_reason("openssl", "curl")
if _reason:
    pytest.skip(_reason, allow_module_level=True)

from e2e_agent import AgentProcess  # noqa: E402
from held_agent import PipeReader, assert_one_row_per_call, calls_while_held  # noqa: E402

# The stall is kept short: the probes are global, and every TLS call on the
# host (another engineer's load generator, a package download) fills the
# 16 MiB ring buffer while the loop does not read it (a call over 1 KiB takes
# a 16 KiB record); a lost record is a missing row here.
SEQUENTIAL, BURST, STALLED_SEQUENTIAL = 50, 50, 30


def one_call(url, certs):
    return clients.start_curl(url, certs, "openai.chat")  # 0 ms: the curl exits milliseconds after it starts


@pytest.fixture(scope="module")
def session(tmp_path_factory, certs):
    work = tmp_path_factory.mktemp("ebpf-short-lived")
    reader = PipeReader(work / "record.jsonl")
    with fp.spawn(certs, workdir=work / "provider") as server:
        # The provider's side is dropped in the kernel: its copies would take
        # half the ring buffer the stalled curls' records need.
        agent = AgentProcess.start(work, args=["--record", str(work / "record.jsonl"), "--exclude-pid", str(server.pid)])
        try:
            agent.wait_ready(need_node=False)
            sequential = [one_call(server.url, certs).finish() for _ in range(SEQUENTIAL)]
            for result in sequential:
                assert result.ok, result.describe()

            stall = calls_while_held(agent, reader, lambda: one_call(server.url, certs),
                                     burst=BURST, sequential=STALLED_SEQUENTIAL)
            stalled = stall.stalled
            # Every curl of the stall has exited (and left /proc), and the run loop had not moved.
            gone = not any(os.path.exists(f"/proc/{r.pid}") for r in stalled)
            still_stuck = stall.still_stuck
            calls = sequential + stall.priming + stalled
            pids = {r.pid for r in calls}
            rows = agent.wait_rows(f"pid IN ({','.join(map(str, pids))})", count=len(calls), timeout=60, settle=1.5)
            status = agent.status_file() or {}
        finally:
            assert agent.stop() == 0, agent.log_tail()
            reader.close()
    return {"calls": calls, "stalled": stalled, "rows": rows, "still_stuck": still_stuck, "gone": gone,
            "status": status}


def test_the_run_loop_was_held_up_while_the_stalled_curls_ran_and_exited(session):
    assert session["still_stuck"]
    assert session["gone"]


def test_every_call_is_one_row_with_its_curls_pid(session):
    assert_one_row_per_call(session["calls"], session["rows"], session["status"].get("capture"))


def test_every_row_names_curl(session):
    assert {row["process"] for row in session["rows"]} == {"curl"}
    # Exe and user come from /proc: right while the curl ran, missing after (a
    # 0 ms curl can exit within the reader's 4 ms linger even on an idle agent),
    # and one without the other when it exits between the two reads (an exiting
    # process loses its exe link first; its status stays until it is reaped).
    curl = os.path.realpath(shutil.which("curl"))
    assert {row["exe"] for row in session["rows"]} <= {curl, None}
    assert {row["user"] for row in session["rows"]} <= {"root", None}
    assert any(row["exe"] == curl and row["user"] == "root" for row in session["rows"])


def test_rows_of_curls_that_exited_before_the_agent_read_them(session):
    stalled = {r.pid for r in session["stalled"]}
    assert len(stalled) == BURST + STALLED_SEQUENTIAL
    rows = [row for row in session["rows"] if row["pid"] in stalled]
    assert len(rows) == len(stalled)
    # The kernel's comm; exe and user came from /proc, which had nothing of them.
    assert {(row["process"], row["exe"], row["user"]) for row in rows} == {("curl", None, None)}
    # gpt-4o-mini: 276 x $0.15/M + 1024 cached x $0.075/M + 12 x $0.60/M = $0.0001254
    assert {(row["input_tokens"], row["cache_read_tokens"], row["output_tokens"], row["cost_usd"], row["capture"])
            for row in rows} == {(1300, 1024, 12, Decimal("0.00012540"), "ebpf")}


def test_no_record_was_lost(session):
    capture = session["status"]["capture"]
    assert capture["lost"] == 0, "ring buffer full while the loop was held up: other processes' TLS traffic?"
    assert capture["partial_dropped"] == 0
