"""Soak: the agent under steady load for minutes; memory must stay flat and nothing be lost.

    sudo .venv/bin/python bench/capture_soak.py [--minutes 10] [--rate 200] [--clients 4] [--stream-every 10]

``lumen-agent run`` (a subprocess, its own folders) captures ``--clients``
keep-alive clients calling the local TLS fake provider at ``--rate`` calls/s
in total for ``--minutes``: non-streaming chat calls, and every
``--stream-every``-th client a streaming one (``--chunks`` chunks).  Every
minute it prints the agent's RssAnon, CPU, calls, and the ring buffer
records lost.  At the end: RssAnon vs its value at minute 2 (aim: within
2 MB), records lost (aim: 0), rows in the file vs calls made (aim: equal).
Printed, not asserted: a benchmark, not a test.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

import e2e_agent  # noqa: E402
from capture_load import Load, isolated_python, spawn_server, write_isolation_config  # noqa: E402
from e2e_agent import AgentProcess  # noqa: E402
from support import certs as certs_mod  # noqa: E402


def rss_anon_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=10)
    ap.add_argument("--rate", type=float, default=200, help="calls per second, all clients together")
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--streaming", action="store_true", help="streamed calls instead of non-streaming ones")
    ap.add_argument("--chunks", type=int, default=100)
    ap.add_argument("--agent-bin", help="lumen-agent executable to measure (default: this venv's)")
    args = ap.parse_args()
    if args.agent_bin:
        e2e_agent.LUMEN = args.agent_bin
    if os.geteuid() != 0:
        raise SystemExit("run as root (BPF probes)")

    work = Path(tempfile.mkdtemp(prefix="capture-soak-"))
    certs = certs_mod.ensure_certs(work / "certs")
    server = spawn_server(certs, work / "fp")
    # Only the load's processes are captured (the host is shared; see capture_load).
    python = isolated_python(work / "bin")
    write_isolation_config(work / "agent")
    agent = AgentProcess.start(work / "agent", args=["--exclude-pid", str(server.pid)])
    try:
        agent.wait_ready(need_node=False, timeout=120, margin=1.0)
        proc = psutil.Process(agent.pid)
        seconds = args.minutes * 60
        print(f"soak: {args.minutes:g} min at {args.rate:g} calls/s ({'streamed' if args.streaming else 'non-streaming'}), "
              f"{args.clients} clients, agent {e2e_agent.LUMEN}, pid {agent.pid}, load {os.getloadavg()[0]:.1f}")
        load = Load(server, certs, n=args.clients, seconds=seconds, rate=args.rate, streaming=args.streaming,
                    chunks=args.chunks, python=python)
        pids = [p.pid for p in load.procs]
        lost0 = ((agent.status_file() or {}).get("capture") or {}).get("lost", 0)
        t0 = time.monotonic()
        cpu0 = sum(proc.cpu_times()[:2])
        load.go()
        samples: list[tuple[float, float]] = [(0.0, rss_anon_mb(agent.pid))]
        print(f"  min  {'RssAnon MB':>10s} {'CPU %':>6s} {'calls':>8s} {'lost':>6s} {'load':>5s}")
        last_cpu, last_t = cpu0, t0
        minute = 1
        while time.monotonic() - t0 < seconds:
            time.sleep(max(0.0, t0 + minute * 60 - time.monotonic()))
            now, cpu = time.monotonic(), sum(proc.cpu_times()[:2])
            st = agent.status_file() or {}
            anon = rss_anon_mb(agent.pid)
            samples.append((minute, anon))
            print(f"  {minute:3d}  {anon:10.1f} {100 * (cpu - last_cpu) / (now - last_t):6.2f} "
                  f"{(st.get('pipeline') or {}).get('calls', 0):8d} "
                  f"{(st.get('capture') or {}).get('lost', 0) - lost0:6d} {os.getloadavg()[0]:5.1f}", flush=True)
            last_cpu, last_t = cpu, now
            minute += 1
        result = load.wait()
        marks = ",".join("?" * len(pids))
        rows = 0
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            rows = agent.query(f"SELECT count(*) AS n FROM llm_calls WHERE pid IN ({marks})", pids)[0]["n"]
            if rows >= result.calls:
                break
            time.sleep(0.5)
        time.sleep(1.2)
        lost = ((agent.status_file() or {}).get("capture") or {}).get("lost", 0) - lost0
        at2 = next((m for t, m in samples if t >= 2), samples[-1][1])
        final = rss_anon_mb(agent.pid)
        print(f"calls made {result.calls} ({result.rate:.1f}/s), rows {rows}, ring buffer records lost {lost}")
        print(f"RssAnon at minute 2 {at2:.1f} MB, at the end {final:.1f} MB: {final - at2:+.2f} MB "
              f"(aim: within 2 MB); max {max(m for _, m in samples):.1f} MB")
    finally:
        agent.stop()
        server.stop()


if __name__ == "__main__":
    main()
