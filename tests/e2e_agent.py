"""Run ``lumen-agent run`` as a subprocess for end-to-end tests and benchmarks.

    agent = AgentProcess.start(tmp_dir)       # its own db, state, runtime and config folders
    agent.wait_ready(need_node=True)          # `lumen-agent status` exits 0, node found
    rows = agent.wait_rows("pid = ?", [pid], count=2)
    agent.stop()                              # SIGTERM: it flushes and exits 0

The agent gets its own ``LUMEN_STATE_DIR``, ``LUMEN_RUNTIME_DIR`` and
``LUMEN_CONFIG_DIR`` (so neither a real agent on the host nor an
/etc/lumen-agent/prices.toml changes what a test sees).  Rows are read with
duckdb read-only in a short retry loop: the agent does not hold the file
between flushes, and a flush that meets our read lock simply retries later.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import duckdb

VENV_BIN = Path(sys.executable).parent
LUMEN = str(VENV_BIN / "lumen-agent")
NODE_PATH = "/usr/bin/node"


class AgentError(RuntimeError):
    pass


def running_agent(workdir: str | os.PathLike[str], *, need_node: bool) -> Iterator[AgentProcess]:
    """Body of a module's ``agent`` fixture: an agent that is ready, stopped after."""
    agent = AgentProcess.start(workdir)
    try:
        agent.wait_ready(need_node=need_node, timeout=60, margin=0.5)
        yield agent
    finally:
        agent.stop()


class AgentProcess:
    def __init__(self, proc: subprocess.Popen[bytes], workdir: Path, db: Path, env: dict[str, str],
                 log_path: Path, started: float) -> None:
        self.proc = proc
        self.workdir = workdir
        self.db = db
        self.env = env
        self.log_path = log_path
        self.started = started  # time.monotonic() just before Popen
        self.ready_after: float | None = None  # seconds from start to `status` exit 0
        self.file_ready_after: float | None = None  # seconds until status.json named a target
        self.last_status: dict[str, Any] | None = None  # status.json just before stop()

    @property
    def pid(self) -> int:
        return self.proc.pid

    # -- lifecycle ---------------------------------------------------------

    @classmethod
    def start(cls, workdir: str | os.PathLike[str], *, db_name: str = "x.duckdb",
              args: Sequence[str] = (), wrap: Sequence[str] = (), lumen: str | None = None) -> AgentProcess:
        """``wrap``: a command prefix that execs the agent (e.g. a new mount namespace);
        ``lumen``: another build's ``lumen-agent`` (a benchmark's baseline); by default
        the module's ``LUMEN`` as it is now (``capture_bench.py --agent-bin`` sets it)."""
        lumen = lumen or LUMEN
        workdir = Path(workdir)
        for sub in ("state", "run", "config"):
            (workdir / sub).mkdir(parents=True, exist_ok=True)
        env = {**os.environ,
               "LUMEN_STATE_DIR": str(workdir / "state"),
               "LUMEN_RUNTIME_DIR": str(workdir / "run"),
               "LUMEN_CONFIG_DIR": str(workdir / "config")}
        db = workdir / db_name
        log_path = workdir / "agent.log"
        log = open(log_path, "ab")  # noqa: SIM115 - the child keeps it
        t0 = time.monotonic()
        proc = subprocess.Popen([*wrap, lumen, "run", "--db", str(db), *args], stdin=subprocess.DEVNULL,
                                stdout=log, stderr=subprocess.STDOUT, env=env)
        log.close()
        return cls(proc, workdir, db, env, log_path, t0)

    def log_tail(self, n: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def cli(self, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        return subprocess.run([LUMEN, *args], env=self.env, capture_output=True, text=True, timeout=timeout)

    def status(self) -> dict[str, Any] | None:
        """``lumen-agent status --format json`` as {what: value}; None when it exits non-zero."""
        r = self.cli("status", "--format", "json")
        if r.returncode != 0:
            return None
        return {row["what"]: row["value"] for row in json.loads(r.stdout)}

    def status_file(self) -> dict[str, Any] | None:
        try:
            return json.loads((self.workdir / "run" / "status.json").read_text())
        except (OSError, ValueError):
            return None

    def wait_ready(self, *, need_node: bool = True, timeout: float = 60, margin: float = 0.5) -> float:
        """Wait until ``lumen-agent status`` exits 0 (and node is a target); return
        seconds from start to that exit.

        The status file is watched first (cheap) and the CLI run once it names a
        target: running ``status`` back to back would take a core from the
        starting agent on a small machine.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AgentError(f"agent exited with {self.proc.returncode}:\n{self.log_tail()}")
            st = self.status_file()
            targets = (st or {}).get("targets") or []
            if targets and self.file_ready_after is None:
                self.file_ready_after = time.monotonic() - self.started
            node = any(str(t).startswith(f"{NODE_PATH} (") for t in targets)
            if targets and (node or not need_node) and self.status() is not None:
                if self.ready_after is None:
                    self.ready_after = time.monotonic() - self.started
                time.sleep(margin)
                return self.ready_after
            time.sleep(0.01)
        raise AgentError(f"agent not ready within {timeout}s:\n{self.log_tail()}")

    def stop(self, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.last_status = self.status_file()
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode

    # -- reading rows ------------------------------------------------------

    def query(self, sql: str, params: Sequence[Any] = (), *, timeout: float = 10) -> list[dict[str, Any]]:
        """Run ``sql`` on the database read-only, retrying while the agent holds the file."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                con = duckdb.connect(str(self.db), read_only=True)
            except (duckdb.IOException, duckdb.CatalogException) as exc:
                if time.monotonic() > deadline:
                    raise AgentError(f"cannot open {self.db}: {exc}") from exc
                time.sleep(0.05)
                continue
            try:
                cur = con.execute(sql, list(params))
                names = [d[0] for d in cur.description]
                return [dict(zip(names, row, strict=False)) for row in cur.fetchall()]
            except duckdb.CatalogException as exc:  # table not created yet
                if time.monotonic() > deadline:
                    raise AgentError(str(exc)) from exc
            finally:
                con.close()
            time.sleep(0.05)

    def rows(self, where: str = "true", params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        """Rows of llm_calls; ts_start/ts_end as epoch seconds (TIMESTAMPTZ values
        would need pytz in this process)."""
        return self.query("SELECT * REPLACE (epoch(ts_start) AS ts_start, epoch(ts_end) AS ts_end) "
                          f"FROM llm_calls WHERE {where} ORDER BY ts_start, id", params)

    def wait_rows(self, where: str, params: Sequence[Any] = (), *, count: int,
                  timeout: float = 20, settle: float = 0.0) -> list[dict[str, Any]]:
        """Rows matching ``where`` once at least ``count`` are in the file (or at the timeout).

        ``settle``: then keep reading that many seconds more, so a late extra
        row would show up too.
        """
        deadline = time.monotonic() + timeout
        rows = self.rows(where, params)
        while len(rows) < count and time.monotonic() < deadline:
            time.sleep(0.2)
            rows = self.rows(where, params)
        if settle:
            time.sleep(settle)
            rows = self.rows(where, params)
        return rows
