"""The status file: written at every turn (tests and `status` without the
socket read counters from it), never half-written, 0644 whatever the umask,
and its folder made again if it vanished (agent/status_file.py)."""

from __future__ import annotations

import json
import os
import shutil
import stat

import pytest

from lumen_agent import runner
from lumen_agent.config import Config
from lumen_agent.runner import HOUSEKEEPING_S, Agent, IngestOnly
from lumen_agent.status_file import StatusFile


class Targets(IngestOnly):
    def __init__(self) -> None:
        super().__init__()
        self.attached: list[str] = []

    def targets(self) -> list[str]:
        return list(self.attached)


@pytest.fixture
def agent_and_clock(tmp_path, monkeypatch):
    now = [1000.0]
    monkeypatch.setattr(runner.time, "monotonic", lambda: now[0])
    config = Config(db=tmp_path / "x.duckdb", runtime_dir=tmp_path / "run", price_overrides=tmp_path / "none.toml")
    capture = Targets()
    agent = Agent(config, lambda on_event, on_exec: capture, capture_name="test")
    yield agent, capture, now
    agent.control.close()


def turns(agent, now, seconds: float) -> None:
    for _ in range(round(seconds / HOUSEKEEPING_S)):
        now[0] += HOUSEKEEPING_S
        agent._housekeeping()


def written(agent) -> float:
    return json.loads(agent.config.status_path.read_text())["updated"]


def test_rewritten_at_every_turn_0644_whatever_the_umask(agent_and_clock) -> None:
    agent, _capture, now = agent_and_clock
    old = os.umask(0o077)
    try:
        agent._housekeeping()
    finally:
        os.umask(old)
    first = written(agent)
    assert stat.S_IMODE(agent.config.status_path.stat().st_mode) == 0o644
    turns(agent, now, HOUSEKEEPING_S)
    assert written(agent) == agent.last_status["updated"] > first
    assert stat.S_IMODE(agent.config.status_path.stat().st_mode) == 0o644  # the other of the two files


def test_a_new_target_is_in_the_file_at_the_next_turn(agent_and_clock) -> None:
    agent, capture, now = agent_and_clock
    agent._housekeeping()
    assert json.loads(agent.config.status_path.read_text())["targets"] == []
    capture.attached.append("libssl.so.3")
    turns(agent, now, HOUSEKEEPING_S)
    assert json.loads(agent.config.status_path.read_text())["targets"] == ["libssl.so.3"]
    capture.attached.clear()
    turns(agent, now, HOUSEKEEPING_S)
    assert json.loads(agent.config.status_path.read_text())["targets"] == []


def test_a_removed_runtime_folder_is_made_again(agent_and_clock) -> None:
    agent, _capture, now = agent_and_clock
    agent._housekeeping()
    shutil.rmtree(agent.config.status_path.parent)
    turns(agent, now, HOUSEKEEPING_S)
    assert json.loads(agent.config.status_path.read_text())["pid"] == os.getpid()


READER = """
import json, sys, time
path, deadline = sys.argv[1], time.monotonic() + float(sys.argv[2])
reads = torn = 0
while time.monotonic() < deadline:
    raw = open(path, "rb").read()
    try:
        json.loads(raw)
        reads += 1
    except ValueError:
        torn += 1
print(reads, torn)
"""


@pytest.mark.parametrize("exchange", [True, False], ids=["names exchanged", "write and rename"])
def test_a_reader_never_sees_a_half_written_file(tmp_path, exchange) -> None:
    """Statuses of different lengths, written a turn apart (here 20 ms, the
    agent's is 1 s), while another process reads the file as fast as it can:
    every read is one whole status."""
    import subprocess
    import sys
    import time

    status_file = StatusFile(tmp_path / "status.json")
    if not exchange:
        status_file._exchange = None  # as on a filesystem that cannot exchange names
    status_file.write({"n": 0, "pad": ""})
    reader = subprocess.Popen([sys.executable, "-c", READER, str(tmp_path / "status.json"), "3"],
                              stdout=subprocess.PIPE, text=True)
    for n in range(1, 121):
        status_file.write({"n": n, "pad": "x" * (n % 7 * 500)})
        time.sleep(0.02)
    reads, torn = map(int, reader.communicate(timeout=30)[0].split())
    assert (torn, reads > 1000) == (0, True)
    assert json.loads((tmp_path / "status.json").read_text()) == {"n": 120, "pad": "x" * (120 % 7 * 500)}


def test_a_replaced_file_is_written_afresh_and_remove_leaves_nothing(tmp_path) -> None:
    path = tmp_path / "run" / "status.json"
    status_file = StatusFile(path)
    status_file.write({"pid": os.getpid(), "n": 1})
    path.unlink()
    path.write_text("{}")  # somebody else's file under the name now
    status_file.write({"pid": os.getpid(), "n": 2})
    assert json.loads(path.read_text()) == {"pid": os.getpid(), "n": 2}
    status_file.write({"pid": os.getpid(), "n": 3})
    assert json.loads(path.read_text())["n"] == 3
    status_file.remove(os.getpid())
    assert list(path.parent.iterdir()) == []


def test_remove_keeps_another_agents_status(tmp_path) -> None:
    path = tmp_path / "status.json"
    status_file = StatusFile(path)
    status_file.write({"pid": os.getpid() + 1})
    status_file.remove(os.getpid())
    assert [p.name for p in tmp_path.iterdir()] == ["status.json"]
