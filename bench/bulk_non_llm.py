"""What bulk non-LLM TLS traffic costs the agent (run as root).

A local TLS server sends a large body; curl downloads it over one keep-alive
connection, several times.  Measured in one run: the download time with no
agent and with the agent running, and the agent's own CPU time and the events
and bytes its user space received meanwhile.  The first request is a plain
GET to a non-LLM host, so the pipeline marks the connection as not ours and
the kernel stops copying it: user space should see almost nothing.

    sudo .venv/bin/python bench/bulk_non_llm.py [--mib 256] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from e2e_agent import AgentProcess  # noqa: E402
from support.certs import ensure_certs  # noqa: E402

SERVER = textwrap.dedent("""
    import http.server, ssl, sys
    SIZE = int(sys.argv[3])
    BLOCK = b"x" * 65536
    class H(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(SIZE))
            self.end_headers()
            left = SIZE
            while left:
                n = min(left, len(BLOCK))
                self.wfile.write(BLOCK[:n])
                left -= n
        def log_message(self, *a):
            pass
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(sys.argv[1], sys.argv[2])
    httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True)
    print(httpd.server_address[1], flush=True)
    httpd.serve_forever()
""")


def download(port: int, ca: Path, mib: int, count: int) -> float:
    url = f"https://localhost:{port}/big"
    argv = ["curl", "-sS", "--http1.1", "--cacert", str(ca), "-o", "/dev/null"]
    for _ in range(count):
        argv += [url, "-o", "/dev/null"]
    start = time.perf_counter()
    subprocess.run(argv, check=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mib", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        certs = ensure_certs(Path(tmp) / "certs")
        server = subprocess.Popen([sys.executable, "-c", SERVER, str(certs.cert), str(certs.key),
                                   str(args.mib * 1024 * 1024)], stdout=subprocess.PIPE, text=True)
        port = int(server.stdout.readline())
        try:
            no_agent = [download(port, certs.ca, args.mib, 2) for _ in range(args.rounds)]
            agent = AgentProcess.start(Path(tmp) / "agent", args=["--exclude-pid", str(server.pid)])
            try:
                agent.wait_ready(need_node=False)
                proc = psutil.Process(agent.pid)
                before = agent.status_file()
                cpu0 = sum(proc.cpu_times()[:2])
                with_agent = [download(port, certs.ca, args.mib, 2) for _ in range(args.rounds)]
                cpu = sum(proc.cpu_times()[:2]) - cpu0
                time.sleep(1.5)
                after = agent.status_file()
            finally:
                agent.stop()
        finally:
            server.terminate()
            server.wait()
    cap0, cap1 = before["capture"], after["capture"]
    total_mib = args.mib * 2 * args.rounds
    base, loaded = statistics.median(no_agent), statistics.median(with_agent)
    print(f"bulk non-LLM TLS download: {args.rounds} rounds x 2 x {args.mib} MiB over one keep-alive connection")
    print(f"  curl, no agent    median {base:.2f} s ({2 * args.mib / base:.0f} MiB/s)")
    print(f"  curl, agent on    median {loaded:.2f} s ({2 * args.mib / loaded:.0f} MiB/s)  ratio {loaded / base:.2f}")
    print(f"  agent CPU during the {total_mib} MiB: {cpu * 1000:.0f} ms "
          f"({cpu / sum(with_agent) * 100:.1f} % of the download time)")
    print(f"  agent user space received: {cap1.get('events', 0) - cap0.get('events', 0)} events, "
          f"{cap1.get('bytes', 0) - cap0.get('bytes', 0)} bytes; "
          f"kernel ignored {cap1.get('ignored_calls', 0) - cap0.get('ignored_calls', 0)} SSL calls; "
          f"lost {cap1.get('lost', 0) - cap0.get('lost', 0)}")


if __name__ == "__main__":
    main()
