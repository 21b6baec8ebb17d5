"""`lumen-agent run` continues in a fresh interpreter (run_process): same pid, its errors, its name."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

LUMEN = str(Path(sys.executable).parent / "lumen-agent")


def _env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "LUMEN_STATE_DIR": str(tmp_path / "state"), "LUMEN_RUNTIME_DIR": str(tmp_path / "run"),
            "LUMEN_CONFIG_DIR": str(tmp_path / "config")}


def test_an_error_of_the_run_loop_is_still_one_line_and_exit_2(tmp_path):
    config = tmp_path / "config.toml"
    config.write_text("[capture]\nplain_http_ports = []\n")
    out = subprocess.run([LUMEN, "run", "--capture", "plain", "--config", str(config), "--db", str(tmp_path / "x.duckdb")],
                         env=_env(tmp_path), capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert out.stderr.startswith("error: --capture plain has no ports to sniff"), out.stderr
    assert "Traceback" not in out.stderr


def test_a_bad_option_is_refused_before_the_exec(tmp_path):
    out = subprocess.run([LUMEN, "run", "--capture", "bogus", "--db", str(tmp_path / "x.duckdb")],
                         env=_env(tmp_path), capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert out.stderr.startswith("error: ") and "bogus" in out.stderr


def test_started_by_hand_it_says_what_starts_it():
    out = subprocess.run([sys.executable, "-m", "lumen_agent.run_process"], capture_output=True, text=True, timeout=60,
                         env={k: v for k, v in os.environ.items() if k != "LUMEN_AGENT_RUN"})
    assert (out.returncode, out.stderr) == (2, "error: lumen_agent.run_process is started by `lumen-agent run`, "
                                                "not by hand\n")


@pytest.mark.skipif(os.geteuid() != 0, reason="the hook-only agent still opens root's sockets here")
def test_the_running_agent_keeps_its_pid_and_is_named_lumen_agent(tmp_path):
    proc = subprocess.Popen([LUMEN, "run", "--capture", "hook", "--db", str(tmp_path / "x.duckdb")],
                            env=_env(tmp_path), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        status = tmp_path / "run" / "status.json"
        deadline = time.monotonic() + 60
        while not status.exists():
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read() if proc.poll() else "slow"
            time.sleep(0.1)
        assert Path(f"/proc/{proc.pid}/comm").read_text() == "lumen-agent\n"
        cmdline = Path(f"/proc/{proc.pid}/cmdline").read_bytes().split(b"\0")
        assert cmdline[1:6] == [b"-m", b"lumen_agent.run_process", b"lumen-agent", b"run", b"--capture"]
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
