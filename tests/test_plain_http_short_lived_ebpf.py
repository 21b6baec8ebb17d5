"""Short-lived plain-HTTP clients answered at once keep their pid and name: the kernel recorded them at connect().

`lumen-agent run` (eBPF and the sniffer, the default) sniffs the fake provider's
port, which answers without delay (no ``x-fake-ttft-ms``): each curl lives a
few milliseconds and may exit before any user-space lookup.  Real curls:

1. 100 one after the other;
2. 50 at once;
3. with the run loop held up (its ``--record`` FIFO is not read, as in
   test_plain_http_short_lived.py), 50 at once and 20 one after the other.

Every call must be one row with its curl's pid and the process name ``curl``,
every owner given by the kernel's map (``plain.owner_kernel``), none by
sock_diag or /proc.  The map files a connection when the client's handshake
ends, which can be milliseconds after its SYN is read (a curl descheduled
inside connect()): those lookups are pending (``plain.owner_kernel_pending``)
and asked again, never a miss.
"""

import os
import shutil
from decimal import Decimal

import pytest
from e2e_agent import AgentProcess
from held_agent import PipeReader, assert_one_row_per_call, calls_while_held, finish_all
from support import clients
from support import fake_provider as fp

pytestmark = [
    pytest.mark.ebpf,
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="BPF and packet sockets need root"),
    pytest.mark.skipif(shutil.which("curl") is None, reason="curl not installed"),
]

SEQUENTIAL, CONCURRENT, STALLED_BURST, STALLED_SEQUENTIAL = 100, 50, 50, 20


def one_call(url, certs):
    return clients.start_curl(url, certs, "openai.chat")  # answered at once: no x-fake-ttft-ms


@pytest.fixture(scope="module")
def session(tmp_path_factory, certs):
    work = tmp_path_factory.mktemp("short-lived-ebpf")
    reader = PipeReader(work / "record.jsonl")
    with fp.spawn(None, plain=True, workdir=work / "provider") as server:
        (work / "config").mkdir()
        (work / "config" / "config.toml").write_text(f"[capture]\nplain_http_ports = [{server.port}]\n")
        agent = AgentProcess.start(work, args=["--record", str(work / "record.jsonl")])
        try:
            agent.wait_ready(need_node=False)
            sequential = [one_call(server.url, certs).finish() for _ in range(SEQUENTIAL)]
            for result in sequential:
                assert result.ok, result.describe()
            concurrent = finish_all([one_call(server.url, certs) for _ in range(CONCURRENT)])

            stall = calls_while_held(agent, reader, lambda: one_call(server.url, certs),
                                     burst=STALLED_BURST, sequential=STALLED_SEQUENTIAL)
            calls = sequential + concurrent + stall.priming + stall.stalled
            # The TLS probes see every process's calls (other tests on this host): plain rows only.
            rows = agent.wait_rows("capture = 'plain'", count=len(calls), timeout=90, settle=1.5)
            status = agent.status_file() or {}
            log = agent.log_tail(20000)
        finally:
            assert agent.stop() == 0, agent.log_tail()
            reader.close()
    return {"calls": calls, "stalled": stall.stalled, "rows": rows, "still_stuck": stall.still_stuck,
            "status": status, "log": log}


def test_the_agent_ran_ebpf_and_the_sniffer_with_owners_from_the_kernel(session):
    assert "records no owners at connect()" not in session["log"]
    assert "plain-HTTP capture not started" not in session["log"]


def test_the_run_loop_was_held_up_while_the_stalled_curls_ran(session):
    assert session["still_stuck"]


def test_every_call_is_one_row_with_its_curls_pid_and_name(session):
    assert_one_row_per_call(session["calls"], session["rows"], session["status"].get("capture"))
    assert {row["process"] for row in session["rows"]} == {"curl"}
    # exe and user are read from /proc while the curl lives, NULL when it had exited.
    curl = os.path.realpath(shutil.which("curl"))
    assert {row["exe"] for row in session["rows"]} <= {curl, None}


def test_rows_of_curls_that_exited_before_the_agent_read_them(session):
    stalled = {r.pid for r in session["stalled"]}
    assert len(stalled) == STALLED_BURST + STALLED_SEQUENTIAL
    rows = [row for row in session["rows"] if row["pid"] in stalled]
    assert len(rows) == len(stalled)
    assert {row["process"] for row in rows} == {"curl"}
    # gpt-4o-mini: 276 x $0.15/M + 1024 cached x $0.075/M + 12 x $0.60/M = $0.0001254
    assert {(row["input_tokens"], row["cache_read_tokens"], row["output_tokens"], row["cost_usd"], row["capture"])
            for row in rows} == {(1300, 1024, 12, Decimal("0.00012540"), "plain")}


def test_every_owner_came_from_the_kernel(session):
    capture = session["status"]["capture"]
    n = len(session["calls"])
    print("owner counters", n, {k: v for k, v in capture.items() if "owner" in k})  # shown with -s
    assert capture["plain.connections"] == n
    assert capture["plain.unattributed_connections"] == 0
    assert capture["plain.owner_misses"] == 0
    # The kernel's map answered for every connection, at the SYN or once the handshake
    # had ended: no lookup after the handshake missed it, none went to sock_diag.
    assert capture["plain.owner_kernel"] >= n
    assert capture["plain.owner_kernel_misses"] == 0
    assert capture["plain.owner_early"] == capture["plain.owner_fast"] == capture["plain.owner_scans"] == 0
