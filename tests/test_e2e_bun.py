"""Bun (BoringSSL linked in, no SSL_* symbols) with real probes: `bun -e` with
fetch and a `bun build --compile` executable call the fake provider; the agent
finds SSL_read/SSL_write by prologue patterns confirmed by disassembly and
makes one exact row per call.  An altered copy of bun whose prologues match no
pattern still runs, makes no row, and `doctor` names it.

Bun comes from npm (@oven/bun-linux-x64, the binary is in the tarball) into a
cache folder.  The agent analyses an executable the first time it execs (off
the hot path), so each test first runs its executable once without calls and
waits until ``status`` names it, then makes the calls it checks.

Run under the probe lock:  flock /tmp/lumen-ebpf.lock .venv/bin/python -m pytest tests/test_e2e_bun.py
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import pytest
from ebpf_env import ebpf_skip_reason
from support import bun_client, clients
from support import fake_provider as fp
from support.native_expected import COST, TOKENS

pytestmark = [pytest.mark.ebpf, pytest.mark.slow]

_reason = ebpf_skip_reason("openssl") or bun_client.bun_missing()
if _reason:
    pytest.skip(_reason, allow_module_level=True)

from e2e_agent import AgentProcess, running_agent  # noqa: E402

# Each client lives this long before its calls, so the agent reads its name and
# executable from /proc at exec even when a loaded machine delays the exec event.
ALIVE_S = 0.5
# `push rbp; mov rbp, rsp` with the other encoding of the mov (48 8b ec for
# 48 89 e5): the same instructions, but no prologue pattern matches any more.
PROLOGUE = bytes.fromhex("554889e5")
EQUIVALENT = bytes.fromhex("55488bec")


@pytest.fixture(scope="module")
def bun() -> Path:
    try:
        return bun_client.ensure_bun()
    except Exception as exc:  # noqa: BLE001
        pytest.skip(f"cannot install bun from npm: {exc}")


@pytest.fixture(scope="module")
def compiled(bun, tmp_path_factory) -> Path:
    return bun_client.compile_script(bun, tmp_path_factory.mktemp("compiled"))


@pytest.fixture(scope="module")
def altered(bun, tmp_path_factory) -> Path:
    """A copy of bun with SSL_read's and SSL_write's prologues re-encoded."""
    from lumen_agent.capture.runtime_analysis import analyse_file

    res = analyse_file(str(bun))
    assert res is not None and len(res.probes) == 2, res
    copy = tmp_path_factory.mktemp("altered") / "bun-altered"
    shutil.copy2(bun, copy)
    from elftools.elf.elffile import ELFFile

    with open(copy, "r+b") as f:
        text = ELFFile(f).get_section_by_name(".text")
        for probe in res.probes:
            off = probe.addr - text["sh_addr"] + text["sh_offset"]
            f.seek(off)
            assert f.read(4) == PROLOGUE
            f.seek(off)
            f.write(EQUIVALENT)
    return copy


@pytest.fixture(scope="module")
def agent(server, bun, compiled, tmp_path_factory):
    yield from running_agent(tmp_path_factory.mktemp("agent"), need_node=False)


def warm_up(agent: AgentProcess, exe: Path, certs, *, script: bool, want: str, timeout: float = 60) -> None:
    """Run ``exe`` once without calls (alive 1 s), then wait until ``want`` is in the status file."""
    if script:
        r = clients._spawn("bun warm-up", [str(exe), "-e", "await Bun.sleep(1000)"],
                           clients.client_env(certs)).finish(60)
    else:
        r = bun_client.run_compiled(exe, "https://127.0.0.1:1", certs, "openai.chat", calls=0, wait=1.0)
    assert r.returncode == 0, r.describe()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if want in json.dumps(agent.status_file() or {}):
            return
        time.sleep(0.1)
    pytest.fail(f"{want!r} never in the status: {agent.status_file()}\n{agent.log_tail()}")


def check_row(row: dict[str, Any], scenario: str, pid: int, process: str, exe: Path, port: int) -> None:
    e = fp.EXPECTED[scenario]
    want = {
        "pid": pid, "process": process, "exe": str(exe.resolve()), "endpoint": e["endpoint"],
        "server_port": port, "request_model": e["request_model"], "model": e["model"],
        "streaming": e["streaming"], "status_code": 200, "outcome": "success",
        "cost_usd": COST[scenario], "unpriced": False, "capture": "ebpf", **TOKENS[scenario],
    }
    got = {k: row[k] for k in want}
    assert got == want, f"row differs for {scenario}:\n got  {got}\n want {want}"


def rows_for(agent: AgentProcess, pid: int, count: int) -> list[dict[str, Any]]:
    rows = agent.wait_rows("pid = ?", [pid], count=count, timeout=30, settle=1.0)
    assert len(rows) == count, (f"{len(rows)} rows for pid {pid}, want {count}\n"
                                f"status: {agent.status_file()}\nlog: {agent.log_tail()}")
    return rows


@pytest.mark.parametrize("scenario", ["openai.chat", "openai.chat.stream", "anthropic.messages.stream"])
def test_bun_script_fetch(agent, server, certs, bun, scenario):
    warm_up(agent, bun, certs, script=True, want=f"{bun} (bun, global")
    r = bun_client.run_script(bun, server.url, certs, scenario, calls=2, wait=ALIVE_S)
    assert r.returncode == 0, r.describe()
    lines = r.json_lines()
    assert [line["status"] for line in lines] == [200, 200]
    rows = rows_for(agent, r.pid, 2)
    for row in rows:
        check_row(row, scenario, r.pid, "bun", bun, server.port)
    assert [row["request_id"] for row in rows] == [line["request_id"] for line in lines]


@pytest.mark.parametrize("scenario", ["openai.chat", "openai.chat.stream"])
def test_bun_compiled_executable(agent, server, certs, compiled, scenario):
    warm_up(agent, compiled, certs, script=False, want=f"{compiled} (bun, global")
    r = bun_client.run_compiled(compiled, server.url, certs, scenario, wait=ALIVE_S)
    assert r.returncode == 0, r.describe()
    [line] = r.json_lines()
    assert line["status"] == 200
    [row] = rows_for(agent, r.pid, 1)
    check_row(row, scenario, r.pid, compiled.name[:15], compiled, server.port)
    assert row["request_id"] == line["request_id"]


def test_altered_bun_is_reported_and_runs(agent, server, certs, altered):
    build_id = "b5188e4f53b53f3a346614bd78ba53f2ff234402"  # bun 1.4.5's, kept by the copy
    warm_up(agent, altered, certs, script=True, want=f"{altered} ({build_id})")
    # It still works (the re-encoded prologue is the same code) and makes no row:
    # nothing was probed at a guessed address.
    r = bun_client.run_script(altered, server.url, certs, "openai.chat")
    assert r.returncode == 0, r.describe()
    assert [line["status"] for line in r.json_lines()] == [200]
    time.sleep(2)
    assert agent.rows("pid = ?", [r.pid]) == []
    doctor = agent.cli("doctor")
    want = f"TLS functions not found: {altered} ({build_id}): no known BoringSSL pattern matches"
    assert want in doctor.stdout, doctor.stdout
    status = agent.status()
    assert f"TLS functions not found: {altered} ({build_id})" in status["tls_not_found"]
    assert f"{altered} (" not in status["targets"]
    assert agent.proc.poll() is None
