"""One agent per database (lumen_agent.instance), and a runtime directory
that follows the database (lumen_agent.paths.runtime_dir).

Real processes: a second ``lumen-agent run`` on the same database exits 2
with one line naming the running agent's pid and the database, and leaves
the first agent's sockets and status file alone; with real probes, two
agents on one database no longer record every call twice.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest

from lumen_agent import paths
from lumen_agent.config import Config, load
from lumen_agent.control import ControlServer, request
from lumen_agent.hook.settings import HookSettings
from lumen_agent.instance import AlreadyRunning, InstanceLock

VENV_BIN = Path(sys.executable).parent
LUMEN = str(VENV_BIN / "lumen-agent")


# ------------------------------------------------------------------ where the runtime directory is


def test_runtime_dir_follows_the_database(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("LUMEN_RUNTIME_DIR", raising=False)
    monkeypatch.setenv("LUMEN_STATE_DIR", str(tmp_path / "state"))
    state_db = tmp_path / "state" / "lumen.duckdb"
    other = tmp_path / "elsewhere" / "x.duckdb"
    # LUMEN_STATE_DIR moves the default database, and its sockets with it.
    assert paths.runtime_dir() == tmp_path / "state" / "lumen.duckdb.run"
    assert paths.runtime_dir(state_db) == tmp_path / "state" / "lumen.duckdb.run"
    # --db anywhere else: a runtime directory of its own, beside it.
    assert paths.runtime_dir(other) == tmp_path / "elsewhere" / "x.duckdb.run"
    # Every command that looks for the agent of a database computes the same.
    assert load(Path("/dev/null"), {"db": other}).socket_path == tmp_path / "elsewhere" / "x.duckdb.run" / "agent.sock"
    assert Config(db=other).status_path == tmp_path / "elsewhere" / "x.duckdb.run" / "status.json"
    assert HookSettings(db=other).socket_path == tmp_path / "elsewhere" / "x.duckdb.run" / "ingest.sock"
    assert HookSettings().socket_path == tmp_path / "state" / "lumen.duckdb.run" / "ingest.sock"
    # A database too deep for a socket path (108 bytes) gets a short folder named by a hash.
    deep = tmp_path / ("d" * 120) / "x.duckdb"
    far = paths.runtime_dir(deep)
    assert far.parent.name == "lumen-agent-db" and len(far.name) == 16
    assert len(os.fsencode(far / "ingest.sock")) <= 107
    # LUMEN_RUNTIME_DIR, and the configuration's runtime_dir, still name it outright.
    monkeypatch.setenv("LUMEN_RUNTIME_DIR", str(tmp_path / "run"))
    assert paths.runtime_dir(other) == tmp_path / "run"
    monkeypatch.delenv("LUMEN_RUNTIME_DIR")
    assert load(Path("/dev/null"), {"db": other, "runtime_dir": tmp_path / "r2"}).runtime_dir == tmp_path / "r2"


@pytest.mark.skipif(os.geteuid() != 0, reason="the standard folders of root")
def test_the_standard_database_keeps_the_standard_runtime_dir(monkeypatch) -> None:
    for var in ("LUMEN_RUNTIME_DIR", "LUMEN_STATE_DIR"):
        monkeypatch.delenv(var, raising=False)
    assert paths.runtime_dir() == Path("/run/lumen-agent")
    assert paths.runtime_dir(Path("/var/lib/lumen-agent/lumen.duckdb")) == Path("/run/lumen-agent")


# ------------------------------------------------------------------ the lock, in process


def test_lock_refuses_a_second_holder_and_names_the_first(tmp_path) -> None:
    db = tmp_path / "x.duckdb"
    with InstanceLock(db, tmp_path / "run"):
        # flock is per open file: a second open in this very process conflicts too.
        with pytest.raises(AlreadyRunning) as info:
            InstanceLock(db, tmp_path / "run2").acquire()
        assert info.value.problem == (f"another lumen-agent is already running on this database "
                                      f"(pid {os.getpid()}, db {db}; lock {db}.lock)")
        # Another database in the same runtime directory: the sockets are shared, so no.
        with pytest.raises(AlreadyRunning, match=f"lock {tmp_path / 'run' / 'agent.lock'}"):
            InstanceLock(tmp_path / "y.duckdb", tmp_path / "run").acquire()
    # Released: the next agent takes it (and a refused attempt held nothing).
    with InstanceLock(db, tmp_path / "run"):
        pass


def test_stopping_agent_never_removes_another_agents_socket(tmp_path) -> None:
    first = ControlServer(tmp_path)
    first.register("status", lambda _r: "first")
    first.start()
    second = ControlServer(tmp_path)  # took the paths over (an agent started without the lock)
    second.register("status", lambda _r: "second")
    second.start()
    try:
        first.close()
        assert request(tmp_path / "agent.sock", "status") == "second"
        assert (tmp_path / "ingest.sock").exists()
    finally:
        second.close()
    assert not (tmp_path / "agent.sock").exists() and not (tmp_path / "ingest.sock").exists()


def test_stopping_agent_never_removes_another_agents_status_file(tmp_path) -> None:
    from lumen_agent.runner import Agent, IngestOnly

    config = Config(db=tmp_path / "x.duckdb", runtime_dir=tmp_path / "run",
                    price_overrides=tmp_path / "none.toml")
    agent = Agent(config, lambda on_event, on_exec: IngestOnly(), capture_name="hook")
    config.status_path.parent.mkdir()
    config.status_path.write_text(json.dumps({"pid": os.getpid() + 1}))  # another agent's
    agent._status_file.remove(os.getpid())
    assert config.status_path.exists()
    config.status_path.write_text(json.dumps({"pid": os.getpid()}))
    agent._status_file.remove(os.getpid())
    assert not config.status_path.exists()


# ------------------------------------------------------------------ real agents


def _env(tmp_path: Path) -> dict[str, str]:
    """No LUMEN_RUNTIME_DIR: the runtime directory must follow the database."""
    env = {k: v for k, v in os.environ.items() if k != "LUMEN_RUNTIME_DIR"}
    for name, var in (("state", "LUMEN_STATE_DIR"), ("config", "LUMEN_CONFIG_DIR")):
        (tmp_path / name).mkdir(exist_ok=True)
        env[var] = str(tmp_path / name)
    return env


def _status(env: dict[str, str], db: Path) -> dict | None:
    r = subprocess.run([LUMEN, "status", "--db", str(db), "-f", "json"], env=env, capture_output=True, text=True,
                       timeout=30)
    return {row["what"]: row["value"] for row in json.loads(r.stdout)} if r.returncode == 0 else None


def _wait_status(env: dict[str, str], db: Path, proc: subprocess.Popen, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"agent exited with {proc.returncode}: {proc.stderr.read()}"
        if (st := _status(env, db)) is not None:
            return st
        time.sleep(0.2)
    raise AssertionError("agent did not answer `status`")


def test_second_agent_on_the_same_database_refuses_and_leaves_the_first_alone(tmp_path) -> None:
    env = _env(tmp_path)
    db = tmp_path / "data" / "x.duckdb"
    run_dir = tmp_path / "data" / "x.duckdb.run"
    first = subprocess.Popen([LUMEN, "run", "--capture", "hook", "--db", str(db)], env=env,
                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        assert _wait_status(env, db, first)["pid"] == first.pid
        assert {p.name for p in run_dir.iterdir()} >= {"agent.sock", "ingest.sock", "status.json", "agent.lock"}
        second = subprocess.run([LUMEN, "run", "--capture", "hook", "--db", str(db)], env=env,
                                stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
        assert second.returncode == 2
        assert second.stderr == (f"error: another lumen-agent is already running on this database "
                                 f"(pid {first.pid}, db {db}; lock {db}.lock) (fix: one agent per database: "
                                 "stop that one first, or give this one another --db)\n")
        # The refused agent bound nothing and removed nothing: the first still answers.
        time.sleep(1.5)  # past one status write of the first agent
        st = _status(env, db)
        assert st is not None and st["pid"] == first.pid
        assert json.loads((run_dir / "status.json").read_text())["pid"] == first.pid
        # `exec --db` finds this agent through the same runtime directory and hands
        # the program over to it (exec replaces itself: the program's parent is us).
        probe = "import os; print(os.getppid(), os.environ['LUMEN_HOOK_SOCKET'])"
        r = subprocess.run([LUMEN, "exec", "--db", str(db), "--", sys.executable, "-c", probe], env=env,
                           capture_output=True, text=True, timeout=60)
        assert r.stdout.split() == [str(os.getpid()), str(run_dir / "ingest.sock")], r.stderr
    finally:
        first.send_signal(signal.SIGTERM)
        _, err = first.communicate(timeout=30)
    assert first.returncode == 0, err
    assert not (run_dir / "agent.sock").exists() and not (run_dir / "status.json").exists()
    assert _status(env, db) is None
    # The lock went with the agent: the next one starts.
    third = subprocess.Popen([LUMEN, "run", "--capture", "hook", "--db", str(db)], env=env,
                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        assert _wait_status(env, db, third)["pid"] == third.pid
    finally:
        third.send_signal(signal.SIGTERM)
        third.communicate(timeout=30)
    assert third.returncode == 0


@pytest.mark.ebpf
@pytest.mark.slow
def test_two_ebpf_agents_on_one_database_record_each_call_once(tmp_path) -> None:
    from ebpf_env import ebpf_skip_reason

    if reason := ebpf_skip_reason("openssl", "curl"):
        pytest.skip(reason)
    from e2e_agent import AgentProcess
    from support import certs as certs_mod
    from support import clients
    from support import fake_provider as fp

    certs = certs_mod.ensure_certs(tmp_path / "certs")
    server = fp.spawn(certs, workdir=tmp_path / "fake-provider")
    first = AgentProcess.start(tmp_path / "agent")
    try:
        first.wait_ready(need_node=False, timeout=120)
        # The same state, runtime folder and database: before the lock, this
        # one attached probes too and every call below became two rows.
        second = subprocess.run([LUMEN, "run", "--db", str(first.db)], env=first.env, stdin=subprocess.DEVNULL,
                                capture_output=True, text=True, timeout=120)
        assert second.returncode == 2, second.stderr
        assert second.stderr.startswith(f"error: another lumen-agent is already running on this database "
                                        f"(pid {first.pid}, db {first.db}; ")
        result = clients.curl(server.url, certs, "openai.chat")
        assert result.returncode == 0, result.describe()
        rows = first.wait_rows("pid = ?", [result.pid], count=1, settle=2.0)
        assert len(rows) == 1, rows
        assert rows[0]["input_tokens"] == fp.EXPECTED["openai.chat"]["input_tokens"]  # 1300
        assert first.status() is not None  # still answering on its own socket
    finally:
        assert first.stop() == 0, first.log_tail()
        server.stop()
    with duckdb.connect(str(first.db), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM llm_calls WHERE pid = ?", [result.pid]).fetchone() == (1,)
