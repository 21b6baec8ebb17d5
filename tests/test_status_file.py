"""The status file: written at every turn (tests and `status` without the
socket read counters from it), never half-written, 0644 whatever the umask,
and its folder made again if it vanished."""

from __future__ import annotations

import json
import os
import stat

import pytest

from lumen_agent import runner
from lumen_agent.config import Config
from lumen_agent.runner import HOUSEKEEPING_S, Agent, IngestOnly


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
    assert not agent.config.status_path.with_suffix(".tmp").exists()


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
    agent.config.status_path.unlink()
    agent.config.status_path.parent.rmdir()
    turns(agent, now, HOUSEKEEPING_S)
    assert json.loads(agent.config.status_path.read_text())["pid"] == os.getpid()
