"""Load for the agent benchmarks: keep-alive clients hammering the local TLS fake provider.

Shared by bench/capture_bench.py (load phase, capacity per core) and
bench/capture_soak.py (10 minutes at a fixed rate).  Each client is one
Python process with one keep-alive TLS connection (http.client), calling as
fast as it can (``rate`` 0) or paced at ``rate`` calls per second, for
``seconds``; it prints how many calls it made.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from support import clients  # noqa: E402
from support import fake_provider as fp  # noqa: E402

# One process, one keep-alive TLS connection, calls until the deadline.
LOAD_CLIENT = textwrap.dedent(
    """
    import http.client, json, ssl, sys, time
    port, ca, seconds, rate = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
    path, body, headers = json.loads(sys.argv[5])
    body = json.dumps(body).encode()
    ctx = ssl.create_default_context(cafile=ca)
    c = http.client.HTTPSConnection("localhost", int(port), context=ctx)
    sys.stdin.readline()  # start together
    made, t0 = 0, time.monotonic()
    end = t0 + seconds
    while True:
        now = time.monotonic()
        if now >= end:
            break
        if rate:
            due = t0 + made / rate
            if due >= end:
                break
            if due > now:
                time.sleep(due - now)
        c.request("POST", path, body=body, headers=headers)
        r = c.getresponse()
        r.read()
        if r.status != 200:
            raise SystemExit(f"status {r.status}")
        made += 1
    print(json.dumps({"calls": made, "elapsed": time.monotonic() - t0}), flush=True)
    c.close()
    """
)

# The host is shared: the agent probes every process, and other people's TLS
# traffic (tests, builds) would be counted as the agent's cost per call.  So
# the load runs under its own process name (a symlink to this Python: comm is
# the name exec'd) and the agent is configured to capture only that name;
# every other process is dropped in the kernel after its first record.
ISOLATED_NAME = "lumen-load"
ISOLATION_CONFIG = f'[filters]\ninclude_process = ["{ISOLATED_NAME}"]\n'


def isolated_python(workdir: Path) -> str:
    """A path to this Python whose processes are named ``ISOLATED_NAME``."""
    workdir.mkdir(parents=True, exist_ok=True)
    link = workdir / ISOLATED_NAME
    if not link.exists():
        link.symlink_to(Path(sys.executable).resolve())
    return str(link)


def write_isolation_config(agent_workdir: Path) -> None:
    """Before AgentProcess.start(agent_workdir): capture only the load's processes."""
    (agent_workdir / "config").mkdir(parents=True, exist_ok=True)
    (agent_workdir / "config" / "config.toml").write_text(ISOLATION_CONFIG)


# The fake provider's handler writes the response head and body in two sends
# with Nagle's algorithm on, so against a client's delayed ACK every call
# waits ~40 ms.  A real provider does not; the benches run the same server
# (same wire format) with TCP_NODELAY set on its connections.
SERVER = (
    "import sys; sys.path.insert(0, {support!r}); import fake_provider as fp; "
    "fp._Handler.disable_nagle_algorithm = True; sys.exit(fp.main(sys.argv[1:]))"
)


def spawn_server(certs, workdir: Path, timeout: float = 20) -> fp.FakeProviderProcess:
    workdir.mkdir(parents=True, exist_ok=True)
    ready, log_path = workdir / "port.txt", workdir / "served.jsonl"
    code = SERVER.format(support=str(ROOT / "tests" / "support"))
    proc = subprocess.Popen([sys.executable, "-c", code, "--port", "0", "--cert", str(certs.cert),
                             "--key", str(certs.key), "--ready-file", str(ready), "--log", str(log_path)],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready.exists() and ready.read_text().strip():
            return fp.FakeProviderProcess(proc, int(ready.read_text()), log_path)
        if proc.poll() is not None:
            raise SystemExit(f"fake provider exited with {proc.returncode}")
        time.sleep(0.02)
    proc.kill()
    raise SystemExit("fake provider did not listen")


def request(streaming: bool, chunks: int = 100) -> str:
    """The (path, body, headers) a load client sends, as JSON."""
    path, body, headers = clients.request_for("openai.chat.stream" if streaming else "openai.chat")
    if streaming:
        headers = {**headers, "x-fake-chunks": str(chunks)}
    return json.dumps([path, body, headers])


@dataclass
class LoadResult:
    calls: int
    elapsed: float
    pids: list[int]

    @property
    def rate(self) -> float:
        return self.calls / self.elapsed if self.elapsed else 0.0


class Load:
    """``n`` clients started now, released by :meth:`go`, collected by :meth:`wait`."""

    def __init__(self, server, certs, *, n: int = 4, seconds: float = 10, rate: float = 0,
                 streaming: bool = False, chunks: int = 100, python: str | None = None) -> None:
        argv = [python or sys.executable, "-c", LOAD_CLIENT, str(server.port), str(certs.ca), str(seconds),
                str(rate / n if rate else 0), request(streaming, chunks)]
        env = clients.client_env(certs)
        self.procs = [subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                       stderr=subprocess.PIPE, text=True, env=env) for _ in range(n)]
        time.sleep(0.5)  # imports and TLS handshakes done before the clock starts

    def go(self) -> None:
        for p in self.procs:
            p.stdin.write("go\n")
            p.stdin.flush()

    def wait(self, timeout: float = 900) -> LoadResult:
        calls, elapsed = 0, 0.0
        for p in self.procs:
            out, err = p.communicate(timeout=timeout)
            if p.returncode != 0:
                raise SystemExit(f"load client failed: {err[-2000:]}")
            r = json.loads(out)
            calls += r["calls"]
            elapsed = max(elapsed, r["elapsed"])
        return LoadResult(calls, elapsed, [p.pid for p in self.procs])


def run_load(server, certs, **kw) -> LoadResult:
    load = Load(server, certs, **kw)
    load.go()
    return load.wait()
