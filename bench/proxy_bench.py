"""What the proxy adds to a streamed call: time to first token and total latency.

A client streams an OpenAI chat completion from the local TLS fake provider,
``--calls`` times directly and ``--calls`` times through ``lumen-agent proxy``
(a subprocess with its full accounting on: pipeline + DuckDB store), the two
interleaved so drift hits both alike.  Two connection modes:

- ``keep-alive``: one client connection makes every call (SDKs do this), so
  the proxy's upstream TLS connection is reused too;
- ``new-connection``: a fresh connection per call (TLS handshake direct; TCP
  to the proxy plus the proxy's own TLS handshake upstream).

Time to first token is the arrival of the first SSE event carrying text;
total is the arrival of the stream's last byte.  Prints medians, p90, the
added milliseconds and the ratio proxy/direct.  Run:

    .venv/bin/python bench/proxy_bench.py [--calls 50] [--chunks 20] [--delay-ms 5]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from support import certs as certs_mod  # noqa: E402
from support import clients  # noqa: E402
from support import fake_provider as fp  # noqa: E402

LUMEN = Path(sys.executable).parent / "lumen-agent"
FIRST_TOKEN = b'"content":"'  # an SSE chunk with text (the role chunk comes first, without)


class Client:
    """A raw HTTP/1.1 client over one connection, optionally TLS."""

    def __init__(self, port: int, tls_host: str | None, ca: Path) -> None:
        self.port, self.tls_host, self.ca = port, tls_host, ca
        self.sock: socket.socket | None = None

    def connect(self) -> None:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=30)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.tls_host:
            context = ssl.create_default_context(cafile=str(self.ca))
            sock = context.wrap_socket(sock, server_hostname=self.tls_host)
        self.sock = sock

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def stream(self, request: bytes) -> tuple[float, float]:
        """(seconds to the first text event, seconds to the last byte), from before connecting."""
        started = time.perf_counter()
        if self.sock is None:
            self.connect()
        self.sock.sendall(request)
        buf = b""
        first = None
        while True:
            data = self.sock.recv(65536)
            if not data:
                raise RuntimeError("server closed mid-response")
            buf += data
            if first is None and FIRST_TOKEN in buf:
                first = time.perf_counter()
            if buf.endswith(b"\r\n0\r\n\r\n"):
                end = time.perf_counter()
                break
        if not buf.startswith(b"HTTP/1.1 200"):
            raise RuntimeError(buf[:200])
        return first - started, end - started


def request(path_prefix: str, host: str, chunks: int, delay_ms: int) -> bytes:
    path, body, headers = clients.request_for("openai.chat.stream")
    data = json.dumps(body).encode()
    lines = [f"POST {path_prefix}{path} HTTP/1.1", f"Host: {host}", f"Content-Length: {len(data)}",
             f"x-fake-chunks: {chunks}", f"x-fake-delay-ms: {delay_ms}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + data


def start_proxy(port: int, workdir: Path, env: dict[str, str], events: str) -> tuple[subprocess.Popen, int]:
    proc = subprocess.Popen(
        [str(LUMEN), "proxy", "--listen", "127.0.0.1:0", "--db", str(workdir / "bench.duckdb"), "--events", events,
         "--upstream", f"/openai=https://api.openai.com:{port}", "--resolve", f"api.openai.com:{port}:127.0.0.1"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if line.startswith("listening on "):
            return proc, int(line.rsplit(":", 1)[1])
        if not line and proc.poll() is not None:
            break
    proc.kill()
    raise RuntimeError("the proxy did not start")


def summarise(name: str, direct: list[float], proxied: list[float]) -> dict[str, float]:
    d, p = statistics.median(direct) * 1000, statistics.median(proxied) * 1000
    d90 = statistics.quantiles(direct, n=10)[-1] * 1000
    p90 = statistics.quantiles(proxied, n=10)[-1] * 1000
    print(f"  {name:<6} direct median {d:8.2f} ms (p90 {d90:8.2f})   proxy median {p:8.2f} ms (p90 {p90:8.2f})"
          f"   added {p - d:+7.2f} ms   ratio {p / d:5.3f}")
    return {"direct_ms": d, "proxy_ms": p, "added_ms": p - d, "ratio": p / d}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=50, help="calls per path and mode")
    parser.add_argument("--chunks", type=int, default=20, help="text events per stream")
    parser.add_argument("--delay-ms", type=int, default=5, help="upstream pause between events")
    parser.add_argument("--events", default="local", choices=("local", "none"),
                        help="the proxy's accounting: local (pipeline + store, the default) or none")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="proxy-bench-"))
    certs = certs_mod.ensure_certs(workdir / "certs")
    env = {**os.environ, **certs.env, "LUMEN_STATE_DIR": str(workdir / "state"),
           "LUMEN_CONFIG_DIR": str(workdir / "config"), "LUMEN_RUNTIME_DIR": str(workdir / "run")}
    server = fp.spawn(certs, workdir=workdir / "fake")
    proxy, proxy_port = start_proxy(server.port, workdir, env, args.events)
    direct_req = request("", f"api.openai.com:{server.port}", args.chunks, args.delay_ms)
    proxy_req = request("/openai", f"127.0.0.1:{proxy_port}", args.chunks, args.delay_ms)
    results = {}
    try:
        print(f"streamed chat completion, {args.chunks} text events {args.delay_ms} ms apart, "
              f"{args.calls} calls per path, interleaved")
        for mode in ("keep-alive", "new-connection"):
            direct = Client(server.port, "api.openai.com", certs.ca)
            via = Client(proxy_port, None, certs.ca)
            for client, req in ((direct, direct_req), (via, proxy_req)):  # warm-up
                client.stream(req)
                if mode == "new-connection":
                    client.close()
            timings: dict[str, list[tuple[float, float]]] = {"direct": [], "proxy": []}
            for _ in range(args.calls):
                for name, client, req in (("direct", direct, direct_req), ("proxy", via, proxy_req)):
                    timings[name].append(client.stream(req))
                    if mode == "new-connection":
                        client.close()
            direct.close()
            via.close()
            print(f"{mode}:")
            results[mode] = {
                "ttft": summarise("ttft", [t[0] for t in timings["direct"]], [t[0] for t in timings["proxy"]]),
                "total": summarise("total", [t[1] for t in timings["direct"]], [t[1] for t in timings["proxy"]]),
            }
    finally:
        proxy.terminate()
        proxy.wait(30)
        server.stop()
    rows = subprocess.run([str(LUMEN), "sql", "--db", str(workdir / "bench.duckdb"), "-f", "csv",
                           f"SELECT count(*), count(*) FILTER (WHERE output_tokens = {args.chunks}) FROM llm_calls"], capture_output=True, text=True, env=env).stdout.split()
    print(f"rows recorded by the proxy (all, with exact output tokens): {rows[-1] if rows else '?'}"
          f" of {2 * (args.calls + 1)}")
    added = results["keep-alive"]["ttft"]["added_ms"]
    print(f"aim: under 5 ms added to the first token (keep-alive): {'met' if added < 5 else 'NOT met'} "
          f"({added:+.2f} ms)")
    shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
