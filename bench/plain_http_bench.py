"""What the plain-HTTP sniffer costs, and how many calls a second it turns into rows (run as root).

One agent (``run --capture plain``) sniffs one port, S.  Measured in one run,
each phase the same length, traffic only to 127.0.0.1:

1. idle: the agent's CPU with no traffic (the baseline);
2. unsniffed: ~RATE MB/s of non-LLM bytes (an HTTP download) on another
   port -- the kernel filter should keep every packet from user space;
3. sniffed: the same download on port S -- every packet reaches scapy until
   the pipeline calls the connection non-LLM and the sniffer drops its bytes;
4. calls: plain-HTTP chat calls to the fake provider on port S: keep-alive,
   one new connection each (from CLIENTS threads of this process), and one
   new curl process each: calls/s into rows, and how many rows carry the
   client's pid (the SYN thread's work, syn_watch.py).

``--capture ebpf`` runs the agent as ``run`` does by default, eBPF beside
the sniffer: owners then come from the kernel's record of each connect()
(connect_owner.py) first.  Rows are counted by ``capture = 'plain'`` (the TLS
probes also see other processes' calls on a shared host).

``--baseline-agent PATH`` runs the same phases first with another build's
``lumen-agent`` (e.g. /work/main/.venv/bin/lumen-agent), so before and after
come from one run.

    sudo .venv/bin/python bench/plain_http_bench.py [--seconds 5] [--rate 100] [--clients 4] [--baseline-agent PATH]
        [--capture plain|ebpf]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from e2e_agent import LUMEN, AgentProcess  # noqa: E402
from support import fake_provider as fp  # noqa: E402

BLOCK = b"x" * 65536


def bulk_server() -> tuple[socket.socket, int]:
    """Answers one GET per connection with a body sent as fast as the client reads."""
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", 0))
    srv.listen()

    def serve(conn: socket.socket) -> None:
        with conn:
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                         b"Content-Length: 100000000000\r\n\r\n")
            try:
                while True:
                    conn.sendall(BLOCK)
            except OSError:
                pass

    def accept() -> None:
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    return srv, srv.getsockname()[1]


def download(port: int, seconds: float, rate_mb: float) -> float:
    """Read from the bulk server at about ``rate_mb`` MB/s for ``seconds``; MB/s achieved."""
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(b"GET /big.iso HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    start = time.monotonic()
    got = 0
    while (now := time.monotonic()) - start < seconds:
        allowed = rate_mb * 1e6 * (now - start)
        if got > allowed:
            time.sleep(min(0.01, (got - allowed) / (rate_mb * 1e6)))
            continue
        got += len(sock.recv(1 << 20))
    sock.close()
    return got / 1e6 / (time.monotonic() - start)


def agent_cpu(agent: AgentProcess) -> float:
    t = psutil.Process(agent.pid).cpu_times()
    return t.user + t.system


def phase(agent: AgentProcess, seconds: float, work) -> tuple[float, float, object]:
    """(agent CPU % of one core, wall seconds, what ``work`` returned)."""
    c0, t0 = agent_cpu(agent), time.monotonic()
    result = work()
    c1, t1 = agent_cpu(agent), time.monotonic()
    return 100 * (c1 - c0) / (t1 - t0), t1 - t0, result


def dissect_cost(n: int = 2000) -> tuple[float, float]:
    """Microseconds per packet: scapy's dissection vs the direct header reader (a 1 KB HTTP segment)."""
    from scapy.layers.inet import IP, TCP
    from scapy.layers.l2 import Ether
    from scapy.packet import Raw

    from lumen_agent.capture.frames import ethernet_segment
    from lumen_agent.capture.packets import dissect_to_tcp_only, to_segment

    dissect_to_tcp_only()
    frame = bytes(Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / IP(src="127.0.0.1", dst="127.0.0.1")
                  / TCP(sport=40000, dport=11434, flags="PA") / Raw(b"x" * 1024))
    t0 = time.perf_counter()
    for _ in range(n):
        to_segment(Ether(frame), 1)
    t1 = time.perf_counter()
    for _ in range(n):
        ethernet_segment(frame, 1)
    t2 = time.perf_counter()
    return (t1 - t0) / n * 1e6, (t2 - t1) / n * 1e6


def calls(url_port: int, seconds: float, clients: int, keep_alive: bool = False, ttft_ms: int = 0,
          curl: bool = False) -> tuple[int, set[int]]:
    """(calls made, pids of the curl processes that made them: empty unless ``curl``)."""
    body = json.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]})
    headers = {"Content-Type": "application/json", "Authorization": "Bearer sk-test-fake-bench"}
    if ttft_ms:
        headers["x-fake-ttft-ms"] = str(ttft_ms)
    done = [0] * clients
    pids: set[int] = set()
    deadline = time.monotonic() + seconds
    argv = ["curl", "--http1.1", "-sS", "-o", "/dev/null", "--data-binary", body,
            *(a for name, value in headers.items() for a in ("-H", f"{name}: {value}")),
            f"http://127.0.0.1:{url_port}/v1/chat/completions"]

    def client(i: int) -> None:
        conn = None
        while time.monotonic() < deadline:
            if curl:
                proc = subprocess.Popen(argv)
                pids.add(proc.pid)
                proc.wait()
                done[i] += 1
                continue
            if conn is None:
                conn = http.client.HTTPConnection("127.0.0.1", url_port, timeout=30)
            conn.request("POST", "/v1/chat/completions", body, headers)
            conn.getresponse().read()
            if not keep_alive:
                conn.close()
                conn = None
            done[i] += 1
        if conn is not None:
            conn.close()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(done), pids


def measure(args: argparse.Namespace, lumen: str) -> dict:
    """Every phase against one agent (``lumen``: its executable)."""
    work = Path(tempfile.mkdtemp(prefix="plain-bench-"))
    bulk_srv, bulk_sniffed = bulk_server()
    bulk_srv2, bulk_unsniffed = bulk_server()
    provider = fp.spawn(None, plain=True, workdir=work / "provider")
    (work / "config").mkdir()
    (work / "config" / "config.toml").write_text(
        f"[capture]\nplain_http_ports = [{bulk_sniffed}, {provider.port}]\n")
    agent = AgentProcess.start(work, args=["--capture", "plain"] if args.capture == "plain" else [], lumen=lumen)
    try:
        agent.wait_ready(need_node=False)
        time.sleep(1)
        idle, _, _ = phase(agent, args.seconds, lambda: time.sleep(args.seconds))
        unsniffed, _, mb1 = phase(agent, args.seconds, lambda: download(bulk_unsniffed, args.seconds, args.rate))
        sniffed, _, mb2 = phase(agent, args.seconds, lambda: download(bulk_sniffed, args.seconds, args.rate))
        results = {}
        seen: set[str] = set()
        modes = {
            "keep-alive connections (SDK-like)": (args.clients, True, 0, False),
            "a new connection per call (curl-like)": (args.clients, False, 0, False),
            "a new connection per call, 100 ms to first byte": (4 * args.clients, False, 100, False),
            "a new curl process per call": (args.clients, False, 0, True),
        }
        for how, (clients_n, keep_alive, ttft, curl) in modes.items():
            cpu_calls, wall, (made, pids) = phase(
                agent, args.seconds, lambda c=clients_n, k=keep_alive, t=ttft, u=curl: calls(
                    provider.port, args.seconds, c, k, t, u))
            rows = agent.wait_rows("capture = 'plain'", count=len(seen) + made, timeout=60)
            new_rows = [r for r in rows if r["id"] not in seen]
            seen |= {r["id"] for r in rows}
            results[how] = (clients_n, cpu_calls, wall, made, new_rows, pids)
        status = agent.status_file() or {}
    finally:
        agent.stop()
        provider.stop()
        bulk_srv.close()
        bulk_srv2.close()
    return {"idle": idle, "unsniffed": unsniffed, "sniffed": sniffed, "mb1": mb1, "mb2": mb2,
            "results": results, "status": status, "load": os.getloadavg()}


def report(name: str, m: dict) -> None:
    idle = m["idle"]
    print(f"== {name} (load average at its end {' '.join(f'{x:.2f}' for x in m['load'])})")
    print(f"idle agent CPU:                 {idle:6.2f}% of a core (baseline)")
    print(f"bulk {m['mb1']:6.1f} MB/s unsniffed port: {m['unsniffed']:6.2f}% of a core  "
          f"(+{m['unsniffed'] - idle:.2f} vs idle)")
    print(f"bulk {m['mb2']:6.1f} MB/s sniffed port:   {m['sniffed']:6.2f}% of a core  "
          f"(+{m['sniffed'] - idle:.2f} vs idle)")
    for how, (clients_n, cpu_calls, wall, made, new_rows, pids) in m["results"].items():
        attributed = sum(1 for r in new_rows if r["pid"])
        right = f", {sum(1 for r in new_rows if r['pid'] in pids and r['process'] == 'curl')} with its curl's " \
                "pid and name" if pids else ""
        print(f"plain-HTTP calls, {how}: {made} in {wall:.1f}s = {made / wall:.1f} calls/s from {clients_n} "
              f"clients; rows {len(new_rows)} ({attributed} with the client's pid{right}); "
              f"agent CPU {cpu_calls:.1f}% of a core")
    cap = m["status"].get("capture", {})
    pipe = m["status"].get("pipeline", {})
    print(f"sniffer: packets={cap.get('plain.packets')} bytes={cap.get('plain.bytes')} "
          f"connections={cap.get('plain.connections')} ignored_bytes_dropped="
          f"{pipe.get('connections.non_http_connection', 0) + pipe.get('connections.non_llm_connection', 0)} conns "
          f"owner_scans={cap.get('plain.owner_scans')} refused={cap.get('plain.owner_scans_refused')} "
          f"reorder_drops={cap.get('plain.reorder_drops')} kernel_drops={cap.get('plain.kernel_drops')} "
          f"owner_fast={cap.get('plain.owner_fast')} owner_early={cap.get('plain.owner_early')} "
          f"owner_misses={cap.get('plain.owner_misses')} owner_kernel={cap.get('plain.owner_kernel')} "
          f"owner_kernel_misses={cap.get('plain.owner_kernel_misses')} syn_packets={cap.get('plain.syn_packets')} "
          f"unattributed={cap.get('plain.unattributed_connections')}")
    print("pipeline:", {k: v for k, v in pipe.items() if k.startswith(("calls", "skipped", "connections", "events"))})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--rate", type=float, default=100, help="MB/s of the bulk download")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--baseline-agent", help="another build's lumen-agent, measured first in the same run")
    parser.add_argument("--capture", choices=("plain", "ebpf"), default="plain",
                        help="plain: run --capture plain; ebpf: run's default, eBPF beside the sniffer")
    args = parser.parse_args()

    baseline = measure(args, args.baseline_agent) if args.baseline_agent else None
    this = measure(args, LUMEN)
    scapy_us, direct_us = dissect_cost()
    print(f"phase seconds: {args.seconds}; capture: {args.capture}")
    print(f"per packet: scapy dissection {scapy_us:.1f} us, direct header read {direct_us:.1f} us "
          f"({scapy_us / direct_us:.0f}x)")
    if baseline is not None:
        report(f"baseline {args.baseline_agent}", baseline)
    report(f"this tree {LUMEN}", this)
    if baseline is not None:
        print("this tree vs baseline (same run):")
        for how, after in this["results"].items():
            before = baseline["results"][how]
            rate = (after[3] / after[2]) / (before[3] / before[2])
            print(f"  {how}: calls/s x{rate:.2f}; rows with a pid {sum(1 for r in before[4] if r['pid'])}/"
                  f"{len(before[4])} -> {sum(1 for r in after[4] if r['pid'])}/{len(after[4])}; "
                  f"agent CPU {before[1]:.1f}% -> {after[1]:.1f}%")


if __name__ == "__main__":
    main()
