"""A real Prometheus scrapes a real agent: the spend it stores is the spend the rows say.

The agent runs with ``--capture hook`` (no eBPF): the test hands it three
OpenAI chat calls over its ingest socket, as a hooked process would, then
starts Debian's ``prometheus`` with a 1 s scrape of the agent and asks its
HTTP API for the sums.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from decimal import Decimal
from pathlib import Path

import duckdb
import pytest
from builders import exchange_events, request_bytes, response_bytes

from lumen_agent.recording import event_to_json

pytestmark = pytest.mark.slow

PROMETHEUS = shutil.which("prometheus")
N_CALLS = 3
# gpt-4o-mini: $0.15 input, $0.60 output per 1M tokens
COST_EACH = Decimal(1000) * Decimal("0.15") / 1_000_000 + Decimal(100) * Decimal("0.6") / 1_000_000
WAIT_S = 60


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(url: str, timeout: float = 5) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.read().decode()


def wait_for(what: str, check, proc_logs: list[tuple[subprocess.Popen, Path]], timeout: float = WAIT_S):
    deadline = time.monotonic() + timeout
    last_error = None
    while time.monotonic() < deadline:
        for proc, log in proc_logs:
            if proc.poll() is not None:
                pytest.fail(f"{what}: {proc.args[0]} exited {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            result = check()
            if result:
                return result
        except (OSError, ValueError, KeyError, IndexError) as exc:
            last_error = exc
        time.sleep(0.2)
    logs = "\n".join(f"--- {log.name}\n{log.read_text()[-3000:]}" for _, log in proc_logs)
    pytest.fail(f"timed out waiting for {what} (last error: {last_error})\n{logs}")


def scraped_sum(text: str, name: str, contains: str = "") -> float:
    total = 0.0
    for line in text.splitlines():
        if (line.startswith(name + "{") or line.startswith(name + " ")) and contains in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def openai_call_events(conn: int) -> list:
    body = {"id": f"chatcmpl-{conn}", "object": "chat.completion", "model": "gpt-4o-mini",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1000, "completion_tokens": 100, "total_tokens": 1100}}
    request = request_bytes("POST", "https://api.openai.com/v1/chat/completions",
                            {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]})
    return exchange_events(request, response_bytes(json.dumps(body).encode()), conn=conn, close=True)


def send_events(ingest: Path, events: list) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.connect(str(ingest))
        payload = b'{"op":"events"}\n' + b"".join(event_to_json(e).encode() + b"\n" for e in events)
        sock.sendall(payload)


def prom_query(port: int, query: str) -> list:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": query})
    reply = json.loads(http_get(url))
    assert reply["status"] == "success", reply
    return reply["data"]["result"]


def stop(proc: subprocess.Popen, timeout: float = 30) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            pytest.fail(f"{proc.args[0]} did not stop on SIGTERM within {timeout}s")
    return proc.returncode


def agent_command() -> list[str]:
    script = Path(sys.executable).parent / "lumen-agent"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from lumen_agent.cli import main; main()"]


@pytest.mark.skipif(PROMETHEUS is None, reason="prometheus binary not installed (apt-get install prometheus; "
                                               "scripts/install.sh --test installs it)")
def test_prometheus_scrapes_the_exact_spend(tmp_path):
    runtime, state, config_dir = tmp_path / "run", tmp_path / "state", tmp_path / "etc"
    for d in (runtime, state, config_dir):
        d.mkdir()
    env = {**os.environ, "LUMEN_RUNTIME_DIR": str(runtime), "LUMEN_STATE_DIR": str(state),
           "LUMEN_CONFIG_DIR": str(config_dir)}
    db = tmp_path / "x.duckdb"
    agent_port, prom_port = free_port(), free_port()
    agent_log, prom_log = tmp_path / "agent.log", tmp_path / "prometheus.log"
    procs: list[tuple[subprocess.Popen, Path]] = []
    try:
        with open(agent_log, "wb") as out:
            agent = subprocess.Popen(
                agent_command() + ["run", "--capture", "hook", "--metrics-addr", f"127.0.0.1:{agent_port}",
                                   "--db", str(db)],
                env=env, stdout=out, stderr=subprocess.STDOUT)
        procs.append((agent, agent_log))
        metrics_url = f"http://127.0.0.1:{agent_port}/metrics"
        wait_for("the agent's ingest socket and /metrics",
                 lambda: (runtime / "ingest.sock").exists() and http_get(metrics_url), procs)

        events = [e for conn in range(1, N_CALLS + 1) for e in openai_call_events(conn)]
        send_events(runtime / "ingest.sock", events)

        def three_calls():
            text = http_get(metrics_url)
            return text if scraped_sum(text, "lumen_calls_total") == N_CALLS else None

        text = wait_for("3 calls on the agent's /metrics", three_calls, procs)
        assert scraped_sum(text, "lumen_calls_total", 'outcome="success"') == N_CALLS

        config = tmp_path / "prometheus.yml"
        config.write_text(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
            "scrape_configs:\n  - job_name: lumen\n    static_configs:\n"
            f"      - targets: ['127.0.0.1:{agent_port}']\n")
        with open(prom_log, "wb") as out:
            prom = subprocess.Popen(
                [PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                 f"--web.listen-address=127.0.0.1:{prom_port}"],
                stdout=out, stderr=subprocess.STDOUT, cwd=tmp_path)
        procs.append((prom, prom_log))

        up = wait_for("Prometheus to scrape the agent",
                      lambda: prom_query(prom_port, 'up{job="lumen"}'), procs)
        assert up[0]["value"][1] == "1", up  # a scrape the parser rejected would be up=0
        cost = wait_for("lumen_cost_usd_total in Prometheus",
                        lambda: prom_query(prom_port, "sum(lumen_cost_usd_total)"), procs)
        assert abs(float(cost[0]["value"][1]) - 0.00063) < 1e-12, cost
        assert float(N_CALLS * COST_EACH) == 0.00063
        calls = prom_query(prom_port, 'sum(lumen_calls_total{outcome="success"})')
        assert float(calls[0]["value"][1]) == N_CALLS, calls
        tokens = prom_query(prom_port, "sum by (type) (lumen_tokens_total)")
        assert {r["metric"]["type"]: float(r["value"][1]) for r in tokens if r["metric"]["type"] != "cache_read"} \
            == {"input": 3000.0, "output": 300.0, "cache_write": 0.0, "reasoning": 0.0}  # 0 is not NULL
        by_model = prom_query(prom_port, "sum by (model, provider) (lumen_cost_usd_total)")
        assert [r["metric"] for r in by_model] == [{"model": "gpt-4o-mini", "provider": "openai"}]
        build = prom_query(prom_port, "lumen_build_info")
        assert build[0]["metric"]["version"] and build[0]["value"][1] == "1"

        assert stop(prom) == 0, prom_log.read_text()[-3000:]
        assert stop(agent) == 0, agent_log.read_text()[-3000:]
    finally:
        for proc, _ in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()

    # the exported spend is the stored spend
    with duckdb.connect(str(db), read_only=True) as con:
        count, total = con.execute("SELECT count(*), sum(cost_usd) FROM llm_calls").fetchone()
    assert (count, total) == (N_CALLS, N_CALLS * COST_EACH)


def test_metrics_port_in_use_is_a_one_line_error(tmp_path):
    env = {**os.environ, "LUMEN_RUNTIME_DIR": str(tmp_path / "run"), "LUMEN_STATE_DIR": str(tmp_path / "state"),
           "LUMEN_CONFIG_DIR": str(tmp_path / "etc")}
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = subprocess.run(
            agent_command() + ["run", "--capture", "hook", "--metrics-addr", f"127.0.0.1:{port}",
                               "--db", str(tmp_path / "x.duckdb")],
            env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [
        f"error: cannot serve metrics on 127.0.0.1:{port}: Address already in use "
        "(set another metrics_addr, or stop what listens there)"]
