"""The systemd unit and the sd_notify protocol.

* ``systemd-analyze security --offline=yes`` rates the unit 3.5 or lower, and
  ``systemd-analyze verify`` has nothing to say about it;
* agent/service.py speaks sd_notify over a real AF_UNIX datagram socket (path
  and abstract ``@name``), in process and from a real ``lumen-agent run``;
* (root, real probes) the unit's ExecStart, run under exactly the unit's user
  model and capability set with ``setpriv``, captures a real curl call.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import pytest

from lumen_agent import service

ROOT = Path(__file__).resolve().parent.parent
UNIT = ROOT / "systemd" / "lumen-agent.service"
INSTALL_PREFIX = "/opt/lumen-agent/venv"
VENV_BIN = Path(sys.executable).parent
MAX_EXPOSURE = 3.5

needs_analyze = pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                                   reason="systemd-analyze missing (apt-get install systemd)")


# -- the unit file ----------------------------------------------------------


def unit_values(key: str, path: Path = UNIT) -> list[str]:
    """Every value of ``key=`` in the unit, in order (continuation lines are not used)."""
    values = []
    for line in path.read_text().splitlines():
        name, sep, value = line.partition("=")
        if sep and name.strip() == key:
            values.append(value.strip())
    return values


def unit_caps() -> list[str]:
    (bounding,) = unit_values("CapabilityBoundingSet")
    return bounding.split()


def test_unit_capabilities_ambient_equal_bounding() -> None:
    """The process holds every capability it may have from the start, and no other."""
    (ambient,) = unit_values("AmbientCapabilities")
    assert sorted(ambient.split()) == sorted(unit_caps())
    assert set(unit_caps()) == {"CAP_BPF", "CAP_PERFMON", "CAP_SYS_ADMIN", "CAP_SYS_PTRACE",
                                "CAP_DAC_READ_SEARCH"}


def test_unit_runs_the_installed_agent() -> None:
    assert unit_values("ExecStart") == [f"{INSTALL_PREFIX}/bin/lumen-agent run"]
    assert unit_values("ExecStartPre") == [f"+{INSTALL_PREFIX}/bin/python -m lumen_agent.service prepare"]
    assert unit_values("Type") == ["notify"]
    assert unit_values("NotifyAccess") == ["main"]
    assert unit_values("WatchdogSec") == ["30s"]
    for key in ("StateDirectory", "ConfigurationDirectory", "RuntimeDirectory"):
        assert unit_values(key) == ["lumen-agent"]


def _exposure(text: str) -> float:
    m = re.search(r"Overall exposure level for \S+: (\d+(?:\.\d+)?) ", text)
    assert m, text
    return float(m.group(1))


@needs_analyze
def test_security_exposure_at_most_3_5() -> None:
    r = subprocess.run(["systemd-analyze", "security", "--offline=yes", str(UNIT)],
                       capture_output=True, text=True, timeout=60)
    out = r.stdout + r.stderr
    exposure = _exposure(out)
    print(out)
    assert exposure <= MAX_EXPOSURE, out


@needs_analyze
def test_verify_is_clean(tmp_path: Path) -> None:
    """``systemd-analyze verify`` checks that ExecStart= binaries exist, so the
    copy verified here points at this test's virtualenv, which holds the same
    two commands (``python``, ``lumen-agent``) the installed one does."""
    for name in ("python", "lumen-agent"):
        assert (VENV_BIN / name).exists(), f"{VENV_BIN / name} missing: pip install -e . first"
    text = UNIT.read_text()
    assert text.count(INSTALL_PREFIX) == 2
    copy = tmp_path / "lumen-agent.service"
    copy.write_text(text.replace(INSTALL_PREFIX, str(VENV_BIN.parent)))
    r = subprocess.run(["systemd-analyze", "verify", str(copy)], capture_output=True, text=True, timeout=60)
    out = (r.stdout + r.stderr).strip()
    assert r.returncode == 0, out
    assert out == "", out


# -- sd_notify ----------------------------------------------------------------


class NotifySocket:
    """A service manager's end: an AF_UNIX datagram socket collecting messages."""

    def __init__(self, directory: Path | None = None, abstract: bool = False) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        if abstract:
            name = f"lumen-test-notify-{uuid.uuid4().hex}"
            self.sock.bind("\0" + name)
            self.env_value = "@" + name
        else:
            assert directory is not None
            path = directory / "notify.sock"
            self.sock.bind(str(path))
            os.chmod(path, 0o666)  # as /run/systemd/notify: any service user may send
            self.env_value = str(path)
        self.messages: list[dict[str, str]] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while True:
            try:
                data = self.sock.recv(65536)
            except OSError:
                return
            fields = dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line)
            with self._lock:
                self.messages.append(fields)

    def received(self) -> list[dict[str, str]]:
        with self._lock:
            return list(self.messages)

    def wait_for(self, key: str, timeout: float, alive: subprocess.Popen | None = None) -> dict[str, str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for m in self.received():
                if key in m:
                    return m
            if alive is not None and alive.poll() is not None:
                raise AssertionError(f"exited with {alive.returncode} before {key}")
            time.sleep(0.05)
        raise AssertionError(f"no {key} within {timeout}s; got {self.received()}")

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def notify_socket(tmp_path: Path):
    ns = NotifySocket(tmp_path)
    yield ns
    ns.close()


class FakeAgent:
    """The part of runner.Agent that service.install uses."""

    def __init__(self) -> None:
        self.ready_at: float | None = None
        self.outputs: list = []
        self.stop_listeners: list = []
        self.shut_down = False

    def add_output(self, output) -> None:
        self.outputs.append(output)

    def add_ready_listener(self, fn) -> None:
        pass

    def add_stop_listener(self, fn) -> None:
        self.stop_listeners.append(fn)

    def tick(self) -> None:
        for output in self.outputs:
            output.on_tick(time.monotonic())

    def status(self) -> dict:
        return {"targets": ["a", "b"], "pipeline": {"calls": 3}, "store": {"rows_written": 2}}

    def shutdown(self) -> None:
        for fn in self.stop_listeners:
            fn()
        self.shut_down = True


def _wait_count(ns: NotifySocket, n: int, timeout: float = 5) -> list[dict[str, str]]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and len(ns.received()) < n:
        time.sleep(0.01)
    return ns.received()


def test_socket_address() -> None:
    assert service.socket_address("/run/systemd/notify") == "/run/systemd/notify"
    assert service.socket_address("@abc") == "\0abc"
    for bad in ("", "@", "relative/path", "vsock:2:1234"):
        with pytest.raises(service.NotifyError):
            service.socket_address(bad)


@pytest.mark.parametrize("abstract", [False, True], ids=["path", "abstract"])
def test_ready_watchdog_stopping(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, abstract: bool) -> None:
    ns = NotifySocket(tmp_path, abstract=abstract)
    monkeypatch.setenv("NOTIFY_SOCKET", ns.env_value)
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    agent = FakeAgent()
    hooks = service.install(agent, None)
    assert hooks is not None and hooks.watchdog_s == 30.0
    # Unset like sd_notify(unset_environment=1): children do not speak for us.
    for name in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
        assert name not in os.environ

    agent.tick()  # probes not attached yet: only the watchdog ping
    assert _wait_count(ns, 1) == [{"WATCHDOG": "1"}]
    agent.ready_at = time.time()
    agent.tick()
    messages = _wait_count(ns, 3)
    assert messages[1] == {"READY": "1", "STATUS": "capturing: 2 targets, 3 calls, 2 rows written"}
    assert messages[2] == {"WATCHDOG": "1"}
    agent.tick()
    assert _wait_count(ns, 4)[3] == {"WATCHDOG": "1"}  # READY only once

    agent.shutdown()
    assert agent.shut_down
    messages = _wait_count(ns, 5)
    assert messages[4] == {"STOPPING": "1", "STATUS": "stopping: detaching probes, flushing rows"}
    ns.close()


def test_status_updates_when_changed(notify_socket: NotifySocket, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", notify_socket.env_value)
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    agent = FakeAgent()
    agent.ready_at = time.time()
    now = [100.0]
    hooks = service.install(agent, None)
    hooks._clock = lambda: now[0]
    agent.tick()
    assert _wait_count(notify_socket, 1)[0]["READY"] == "1"
    now[0] += service.STATUS_EVERY_S
    agent.tick()  # same summary: nothing sent
    agent.status = lambda: {"targets": ["a"], "pipeline": {"calls": 9}, "store": {"rows_written": 9}}
    now[0] += service.STATUS_EVERY_S
    agent.tick()
    assert _wait_count(notify_socket, 2)[1:] == [{"STATUS": "capturing: 1 targets, 9 calls, 9 rows written"}]


def test_ready_waits_for_the_status_file(tmp_path: Path, notify_socket: NotifySocket,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """READY means `lumen-agent status` answers: the run loop writes the status
    file just after the tick listeners, so READY comes one tick later."""
    monkeypatch.setenv("NOTIFY_SOCKET", notify_socket.env_value)
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)

    class Config:
        status_path = tmp_path / "status.json"

    agent = FakeAgent()
    service.install(agent, Config())
    agent.ready_at = time.time()
    agent.tick()
    time.sleep(0.2)
    assert notify_socket.received() == []
    Config.status_path.write_text("{}")
    agent.tick()
    assert _wait_count(notify_socket, 1)[0]["READY"] == "1"

    # A status file that cannot be written delays READY by a few ticks only.
    other = FakeAgent()
    Config.status_path = tmp_path / "never-written.json"
    monkeypatch.setenv("NOTIFY_SOCKET", notify_socket.env_value)
    service.install(other, Config())
    other.ready_at = time.time()
    for _ in range(service.READY_AFTER_TICKS):
        other.tick()
    time.sleep(0.2)
    assert len(notify_socket.received()) == 1
    other.tick()
    assert _wait_count(notify_socket, 2)[1]["READY"] == "1"


def test_runner_hooks_used_when_offered(notify_socket: NotifySocket, monkeypatch: pytest.MonkeyPatch) -> None:
    """With the proposed Agent.add_ready_listener/add_stop_listener, no polling and no wrapping."""
    monkeypatch.setenv("NOTIFY_SOCKET", notify_socket.env_value)
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)

    class HookedAgent(FakeAgent):
        def __init__(self) -> None:
            super().__init__()
            self.ready_listeners: list = []
            self.stop_listeners: list = []

        def add_ready_listener(self, fn) -> None:
            self.ready_listeners.append(fn)

        def add_stop_listener(self, fn) -> None:
            self.stop_listeners.append(fn)

    agent = HookedAgent()
    service.install(agent, None)
    assert "shutdown" not in vars(agent)  # not wrapped
    (ready,) = agent.ready_listeners
    (stop,) = agent.stop_listeners
    ready()
    stop()
    messages = _wait_count(notify_socket, 2)
    assert [m.get("READY") or m.get("STOPPING") for m in messages] == ["1", "1"]
    assert "READY" in messages[0] and "STOPPING" in messages[1]


def test_no_socket_no_hooks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    agent = FakeAgent()
    assert service.install(agent, None) is None
    assert agent.outputs == []
    assert service.notify("READY=1") is False


def test_watchdog_for_another_pid_is_ignored() -> None:
    env = {"WATCHDOG_USEC": "5000000", "WATCHDOG_PID": "1"}
    assert service.watchdog_interval(env, pid=2) is None
    assert env == {}
    assert service.watchdog_interval({"WATCHDOG_USEC": "5000000", "WATCHDOG_PID": "2"}, pid=2) == 5.0
    assert service.watchdog_interval({"WATCHDOG_USEC": "5000000"}, pid=2) == 5.0
    assert service.watchdog_interval({"WATCHDOG_USEC": "x"}, pid=2) is None


def test_manager_gone_does_not_raise(tmp_path: Path) -> None:
    n = service.Notifier(str(tmp_path / "nobody-listens.sock"))
    assert n.send("WATCHDOG=1") is False
    assert n.send("WATCHDOG=1") is False
    n.close()


def test_prepare_command(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """ExecStartPre's command: fixes what it can, reports the rest, never fails the start itself."""
    from lumen_agent.capture import kernel_setup

    calls = []

    def headers() -> None:
        calls.append("headers")
        raise kernel_setup.CaptureError("no kernel headers", "apt-get install linux-headers-amd64")

    monkeypatch.setattr(kernel_setup, "ensure_kernel_headers", headers)
    monkeypatch.setattr(kernel_setup, "ensure_tracefs", lambda: calls.append("tracefs"))
    assert service.main(["prepare"]) == 0
    assert calls == ["headers", "tracefs"]
    assert "no kernel headers (fix: apt-get install linux-headers-amd64)" in capsys.readouterr().err
    assert service.main(["bogus"]) == 2


def _agent_dirs(base: Path, uid: int | None = None) -> dict[str, str]:
    env = {}
    for name, sub in (("LUMEN_STATE_DIR", "state"), ("LUMEN_RUNTIME_DIR", "run"), ("LUMEN_CONFIG_DIR", "config")):
        d = base / sub
        d.mkdir(mode=0o700)
        if uid is not None:
            os.chown(d, uid, uid)
        env[name] = str(d)
    return env


def test_real_agent_notifies(tmp_path: Path, notify_socket: NotifySocket) -> None:
    """``lumen-agent run`` (hook capture: no probes, any user) as systemd starts it."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path),
           "NOTIFY_SOCKET": notify_socket.env_value, "WATCHDOG_USEC": "2000000",
           **_agent_dirs(tmp_path)}
    db = tmp_path / "state" / "calls.duckdb"
    proc = subprocess.Popen([str(VENV_BIN / "lumen-agent"), "run", "--capture", "hook", "--db", str(db)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        ready = notify_socket.wait_for("READY", 60, alive=proc)
        assert ready["STATUS"].startswith("capturing: 1 targets")
        assert (tmp_path / "run" / "status.json").exists()  # capturing means status is up too
        deadline = time.monotonic() + 10
        while sum("WATCHDOG" in m for m in notify_socket.received()) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert sum("WATCHDOG" in m for m in notify_socket.received()) >= 2
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    out = proc.stdout.read().decode(errors="replace")
    stopping = [i for i, m in enumerate(notify_socket.received()) if m.get("STOPPING") == "1"]
    assert stopping, (notify_socket.received(), out)
    assert "READY" not in str(notify_socket.received()[stopping[0]:])


# -- the unit's capability set is enough for real capture ---------------------------


def _ebpf_skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "needs root (setpriv drops to the unit's identity and capabilities)"
    if shutil.which("setpriv") is None or shutil.which("curl") is None:
        return "setpriv (util-linux) or curl missing"
    from lumen_agent.capture.kernel_setup import bcc_importable

    ok, detail = bcc_importable()
    return None if ok else f"bcc missing ({detail})"


# DynamicUser= picks a uid in 61184..65519; one no account uses.
def _free_dynamic_uid() -> int:
    import pwd

    used = {p.pw_uid for p in pwd.getpwall()}
    return next(u for u in range(65519, 61183, -1) if u not in used)


def _setpriv_argv(uid: int, caps: list[str]) -> list[str]:
    """What systemd does for DynamicUser=yes + the unit's capability lines + NoNewPrivileges=yes."""
    spec = "-all," + ",".join("+" + c.lower().removeprefix("cap_") for c in caps)
    return ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups",
            f"--inh-caps={spec}", f"--ambient-caps={spec}", f"--bounding-set={spec}", "--no-new-privs"]


def _cap_mask(caps: list[str]) -> int:
    numbers = {"CAP_DAC_READ_SEARCH": 2, "CAP_SYS_PTRACE": 19, "CAP_SYS_ADMIN": 21,
               "CAP_PERFMON": 38, "CAP_BPF": 39}
    return sum(1 << numbers[c] for c in caps)


def _unit_exec_start() -> list[str]:
    (line,) = unit_values("ExecStart")
    argv = line.split()
    argv[0] = argv[0].replace(INSTALL_PREFIX, str(VENV_BIN.parent))
    return argv


class SandboxedAgent:
    """The unit's ExecStart under setpriv, with its own folders and a notify socket."""

    def __init__(self, caps: list[str]) -> None:
        self.base = Path(tempfile.mkdtemp(prefix="lumen-systemd-"))
        os.chmod(self.base, 0o755)  # as /var/lib, /run: traversable without privileges
        self.uid = _free_dynamic_uid()
        self.caps = caps
        self.notify = NotifySocket(self.base)
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": "/", "LANG": "C.UTF-8",
               "NOTIFY_SOCKET": self.notify.env_value, "WATCHDOG_USEC": "30000000",
               "PYTHONDONTWRITEBYTECODE": "1", **_agent_dirs(self.base, self.uid)}
        self.db = self.base / "state" / "lumen.duckdb"
        self.log = self.base / "agent.log"
        argv = _setpriv_argv(self.uid, caps) + _unit_exec_start() + ["--db", str(self.db)]
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, umask=0o077)  # UMask=0077

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]

    def proc_status(self) -> dict[str, str]:
        text = Path(f"/proc/{self.proc.pid}/status").read_text()
        return dict(line.split(":\t", 1) for line in text.splitlines() if ":\t" in line)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def cleanup(self) -> None:
        self.stop()
        self.notify.close()
        shutil.rmtree(self.base, ignore_errors=True)


@pytest.fixture(scope="module")
def provider(tmp_path_factory: pytest.TempPathFactory):
    from support import certs as certs_mod
    from support import fake_provider as fp

    certs = certs_mod.ensure_certs(tmp_path_factory.mktemp("certs"))
    server = fp.spawn(certs, workdir=tmp_path_factory.mktemp("fake-provider"))
    yield server, certs
    server.stop()


ROW_QUERY = ("SELECT provider, endpoint, model, input_tokens, cache_read_tokens, output_tokens, capture, "
             "outcome, cost_usd IS NOT NULL FROM llm_calls WHERE pid = ?")


def _rows_of(duckdb, agent: SandboxedAgent, pid: int, timeout: float = 30) -> list[tuple]:
    """The rows of ``pid``, waiting up to ``timeout`` for the first one.

    Waiting while the agent runs matters: EbpfCapture.close() detaches
    without draining the ring buffer, so a SIGTERM right after a call can
    lose that call's last response bytes (a row without tokens).
    """
    deadline = time.monotonic() + timeout
    while True:
        rows: list[tuple] = []
        if agent.db.exists():
            try:
                con = duckdb.connect(str(agent.db), read_only=True)
            except duckdb.IOException:  # the agent is flushing: try again
                pass
            else:
                try:
                    rows = con.execute(ROW_QUERY, [pid]).fetchall()
                finally:
                    con.close()
        if rows or time.monotonic() > deadline:
            return rows
        time.sleep(0.25)


@pytest.mark.ebpf
@pytest.mark.slow
def test_unit_capabilities_are_enough_for_capture(provider) -> None:
    reason = _ebpf_skip_reason()
    if reason:
        pytest.skip(reason)
    import duckdb
    from support import clients
    from support import fake_provider as fp

    server, certs = provider
    # ExecStartPre=+: with full privileges, before the sandboxed agent starts.
    pre = subprocess.run([str(VENV_BIN / "python"), "-m", "lumen_agent.service", "prepare"],
                         capture_output=True, text=True, timeout=60)
    assert pre.returncode == 0, pre.stderr

    caps = unit_caps()
    agent = SandboxedAgent(caps)
    try:
        ready = agent.notify.wait_for("READY", 180, alive=agent.proc)
        assert ready["STATUS"].startswith("capturing"), ready
        st = agent.proc_status()
        # It runs as the unprivileged user with exactly the unit's capabilities, no more.
        assert st["Uid"].split() == [str(agent.uid)] * 4, st["Uid"]
        for field in ("CapEff", "CapPrm", "CapBnd", "CapAmb"):
            assert int(st[field], 16) == _cap_mask(caps), (field, st[field])
        assert st["NoNewPrivs"] == "1"

        # As the real API host (resolved to the fake provider), so it is priced as OpenAI.
        result = clients.curl(server.url, certs, "openai.chat", host="api.openai.com")
        assert result.returncode == 0, result.describe()
        # The row lands at a flush (every 2 s) while the agent runs; stopping
        # first could lose the response's last events (see _rows_of).
        rows = _rows_of(duckdb, agent, result.pid)
        assert agent.stop() == 0, agent.log_tail()
        assert any(m.get("STOPPING") == "1" for m in agent.notify.received())
        assert any("WATCHDOG" in m for m in agent.notify.received())
        assert _rows_of(duckdb, agent, result.pid, timeout=0) == rows  # and kept at shutdown
        want = fp.EXPECTED["openai.chat"]
        assert len(rows) == 1, (rows, agent.log_tail())
        provider_name, endpoint, model, input_tokens, cache_read, output_tokens, capture, outcome, priced = rows[0]
        assert (input_tokens, cache_read, output_tokens) == (
            want["input_tokens"], want["cache_read_tokens"], want["output_tokens"])
        assert (provider_name, endpoint, model, capture, outcome, priced) == (
            want["provider"], want["endpoint"], want["model"], "ebpf", "success", True)
    finally:
        agent.cleanup()


@pytest.mark.ebpf
@pytest.mark.slow
def test_cap_sys_admin_is_needed_for_uprobes() -> None:
    """Linux 6.16 (and stable kernels with the fix) went back to CAP_SYS_ADMIN
    for creating uprobes ("perf: Revert to requiring CAP_SYS_ADMIN for
    uprobes"); CAP_PERFMON alone is refused.  On an older kernel this skips:
    there the unit could drop CAP_SYS_ADMIN."""
    reason = _ebpf_skip_reason()
    if reason:
        pytest.skip(reason)
    caps = [c for c in unit_caps() if c != "CAP_SYS_ADMIN"]
    agent = SandboxedAgent(caps)
    try:
        try:
            agent.notify.wait_for("READY", 180, alive=agent.proc)
        except AssertionError:
            assert agent.proc.poll() not in (None, 0)
            assert "lacks CAP_BPF,CAP_PERFMON,CAP_SYS_PTRACE,CAP_DAC_READ_SEARCH,CAP_SYS_ADMIN" in agent.log_tail(), \
                agent.log_tail()
            return
        pytest.skip(f"kernel {os.uname().release} lets CAP_PERFMON create uprobes")
    finally:
        agent.cleanup()
