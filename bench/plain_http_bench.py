"""What the plain-HTTP sniffer costs, and how many calls a second it turns into rows (run as root).

One agent (``run --capture plain``) sniffs one port, S.  Measured in one run,
each phase the same length, traffic only to 127.0.0.1:

1. idle: the agent's CPU with no traffic (the baseline);
2. unsniffed: ~RATE MB/s of non-LLM bytes (an HTTP download) on another
   port -- the kernel filter should keep every packet from user space;
3. sniffed: the same download on port S -- every packet reaches scapy until
   the pipeline calls the connection non-LLM and the sniffer drops its bytes;
4. calls: plain-HTTP chat calls to the fake provider on port S, one new
   connection each, from CLIENTS threads: calls/s into rows.

    sudo .venv/bin/python bench/plain_http_bench.py [--seconds 5] [--rate 100] [--clients 4]
"""

from __future__ import annotations

import argparse
import http.client
import json
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from e2e_agent import AgentProcess  # noqa: E402
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

    from lumen_agent.capture.packets import dissect_to_tcp_only, ethernet_segment, to_segment

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


def calls(url_port: int, seconds: float, clients: int, keep_alive: bool = False, ttft_ms: int = 0) -> int:
    body = json.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]})
    headers = {"Content-Type": "application/json", "Authorization": "Bearer sk-test-fake-bench"}
    if ttft_ms:
        headers["x-fake-ttft-ms"] = str(ttft_ms)
    done = [0] * clients
    deadline = time.monotonic() + seconds

    def client(i: int) -> None:
        conn = None
        while time.monotonic() < deadline:
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
    return sum(done)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--rate", type=float, default=100, help="MB/s of the bulk download")
    parser.add_argument("--clients", type=int, default=4)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="plain-bench-"))
    bulk_srv, bulk_sniffed = bulk_server()
    bulk_srv2, bulk_unsniffed = bulk_server()
    provider = fp.spawn(None, plain=True, workdir=work / "provider")
    (work / "config").mkdir()
    (work / "config" / "config.toml").write_text(
        f"[capture]\nplain_http_ports = [{bulk_sniffed}, {provider.port}]\n")
    agent = AgentProcess.start(work, args=["--capture", "plain"])
    try:
        agent.wait_ready(need_node=False)
        time.sleep(1)
        idle, _, _ = phase(agent, args.seconds, lambda: time.sleep(args.seconds))
        unsniffed, _, mb1 = phase(agent, args.seconds, lambda: download(bulk_unsniffed, args.seconds, args.rate))
        sniffed, _, mb2 = phase(agent, args.seconds, lambda: download(bulk_sniffed, args.seconds, args.rate))
        results = {}
        seen: set[str] = set()
        modes = {
            "keep-alive connections (SDK-like)": (args.clients, True, 0),
            "a new connection per call (curl-like)": (args.clients, False, 0),
            "a new connection per call, 100 ms to first byte": (4 * args.clients, False, 100),
        }
        for how, (clients_n, keep_alive, ttft) in modes.items():
            cpu_calls, wall, made = phase(agent, args.seconds, lambda c=clients_n, k=keep_alive, t=ttft: calls(
                provider.port, args.seconds, c, k, t))
            rows = agent.wait_rows("true", count=len(seen) + made, timeout=60)
            new_rows = [r for r in rows if r["id"] not in seen]
            seen |= {r["id"] for r in rows}
            results[how] = (clients_n, cpu_calls, wall, made, new_rows)
        status = agent.status_file() or {}
    finally:
        agent.stop()
        provider.stop()
        bulk_srv.close()
        bulk_srv2.close()
    cap = status.get("capture", {})
    pipe = status.get("pipeline", {})
    scapy_us, direct_us = dissect_cost()
    print(f"phase seconds: {args.seconds}")
    print(f"per packet: scapy dissection {scapy_us:.1f} us, direct header read {direct_us:.1f} us "
          f"({scapy_us / direct_us:.0f}x)")
    print(f"idle agent CPU:                 {idle:6.2f}% of a core (baseline)")
    print(f"bulk {mb1:6.1f} MB/s unsniffed port: {unsniffed:6.2f}% of a core  (+{unsniffed - idle:.2f} vs idle)")
    print(f"bulk {mb2:6.1f} MB/s sniffed port:   {sniffed:6.2f}% of a core  (+{sniffed - idle:.2f} vs idle)")
    for how, (clients_n, cpu_calls, wall, made, new_rows) in results.items():
        attributed = sum(1 for r in new_rows if r["pid"])
        print(f"plain-HTTP calls, {how}: {made} in {wall:.1f}s = {made / wall:.1f} calls/s from {clients_n} "
              f"clients; rows {len(new_rows)} ({attributed} with the client's pid); "
              f"agent CPU {cpu_calls:.1f}% of a core")
    print(f"sniffer: packets={cap.get('plain.packets')} bytes={cap.get('plain.bytes')} "
          f"connections={cap.get('plain.connections')} ignored_bytes_dropped="
          f"{pipe.get('connections.non_http_connection', 0) + pipe.get('connections.non_llm_connection', 0)} conns "
          f"owner_scans={cap.get('plain.owner_scans')} refused={cap.get('plain.owner_scans_refused')} "
          f"reorder_drops={cap.get('plain.reorder_drops')} kernel_drops={cap.get('plain.kernel_drops')} "
          f"owner_fast={cap.get('plain.owner_fast')}")
    print("pipeline:", {k: v for k, v in pipe.items() if k.startswith(("calls", "skipped", "connections", "events"))})


if __name__ == "__main__":
    main()
