"""Real probes, real clients: EbpfCapture against curl, Python and Node.

One EbpfCapture runs in this (excluded) test process for the whole module; a
TLS HTTP/1.1 server runs in a subprocess on 127.0.0.1 so its pid differs from
the clients'.  Every client is started after the capture, so each test also
checks that a new process is captured from its very first call.
"""

from __future__ import annotations

import os
import shutil
import ssl
import subprocess
import sys
import textwrap
import time
import urllib.request
import uuid
from pathlib import Path

import pytest
from ebpf_env import ebpf_skip_reason  # noqa: E402

from lumen_agent.pipeline.events import DataEvent, Direction, EventFlag

pytestmark = pytest.mark.ebpf


_reason = ebpf_skip_reason("openssl")
if _reason:
    pytest.skip(_reason, allow_module_level=True)

from lumen_agent.capture.ebpf import CaptureOptions, EbpfCapture  # noqa: E402

SERVER = textwrap.dedent(
    """
    import http.server, ssl, sys
    class H(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        def _reply(self, body):
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        def do_GET(self):
            self._reply(b"hello " + self.path.encode())
        def do_POST(self):
            n = int(self.headers.get("Content-Length", "0"))
            data = self.rfile.read(n)
            self._reply(b"got %d bytes for %s" % (len(data), self.path.encode()))
        def log_message(self, *a):
            pass
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(sys.argv[1], sys.argv[2])
    srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    print(srv.server_address[1], flush=True)
    srv.serve_forever()
    """
)

# Makes a request, waits for a line on stdin, makes a second request on the
# same keep-alive connection (used by the ignore-map test).
KEEPALIVE_CLIENT = textwrap.dedent(
    """
    import http.client, ssl, sys
    ctx = ssl.create_default_context(cafile=sys.argv[2])
    c = http.client.HTTPSConnection("127.0.0.1", int(sys.argv[1]), context=ctx)
    for i in range(2):
        c.request("POST", "/keepalive/%d" % i, body=b"ka-body-%d" % i)
        print(c.getresponse().read().decode(), flush=True)
        if i == 0:
            sys.stdin.readline()
    c.close()
    """
)


class Collector:
    def __init__(self) -> None:
        self.events: list[DataEvent] = []
        self.cap: EbpfCapture | None = None

    def __call__(self, ev: DataEvent) -> None:
        self.events.append(ev)

    def poll_until(self, pred, timeout: float = 5.0) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            self.cap.poll(50)
            if pred():
                return True
        return False

    def of(self, pid: int, direction: Direction | None = None) -> list[DataEvent]:
        return [
            e
            for e in self.events
            if e.pid == pid and (direction is None or e.direction == direction) and e.data
        ]

    def joined(self, pid: int, direction: Direction) -> bytes:
        return b"".join(e.data for e in self.of(pid, direction))


@pytest.fixture(scope="module")
def tls_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("tls")
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
            "-keyout", str(d / "key.pem"), "-out", str(d / "cert.pem"),
            "-days", "2", "-subj", "/CN=localhost",
            "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )
    return d


@pytest.fixture(scope="module")
def collector():
    col = Collector()
    cap = EbpfCapture(col, CaptureOptions())
    cap.start()
    col.cap = cap
    yield col
    t0 = time.monotonic()
    cap.close()
    print(f"close took {time.monotonic() - t0:.2f}s")


@pytest.fixture(scope="module")
def server(tls_dir, collector):
    script = tls_dir / "server.py"
    script.write_text(SERVER)
    proc = subprocess.Popen(
        [sys.executable, str(script), str(tls_dir / "cert.pem"), str(tls_dir / "key.pem")],
        stdout=subprocess.PIPE,
        text=True,
    )
    port = int(proc.stdout.readline())
    yield proc, port
    proc.kill()
    proc.wait()


def _popen_wait(col: Collector, argv, poll: bool = True, **kw) -> tuple[int, bytes]:
    """Run a client to completion, polling meanwhile as the agent's loop does
    (exec events are handled, and new TLS executables attached, meanwhile);
    with poll=False nothing in user space reacts until the client is done."""
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)
    if poll:
        col.poll_until(lambda: p.poll() is not None, timeout=60)
    out, err = p.communicate(timeout=10)
    assert p.returncode == 0, err.decode()
    return p.pid, out


# --------------------------------------------------------------------------

def test_targets_and_stats(collector):
    targets = collector.cap.targets()
    assert any("libssl.so" in t.path and t.mode == "global" for t in targets), targets
    s = collector.cap.stats()
    for k in ("events", "bytes", "lost", "truncated", "targets_attached", "attach_errors"):
        assert k in s
    assert s["targets_attached"] >= 1
    assert s["attach_errors"] == 0


def test_curl_send_recv_exact_bytes_from_first_call(collector, server, tls_dir):
    srv, port = server
    tag = uuid.uuid4().hex
    body = f'{{"model":"gpt-test","tag":"{tag}"}}'.encode()
    p = subprocess.Popen(
        ["curl", "-sS", "--cacert", str(tls_dir / "cert.pem"), "--data-binary", body,
         "-H", "Content-Type: application/json", f"https://127.0.0.1:{port}/v1/curl/{tag}"],
        stdout=subprocess.PIPE,
    )
    out, _ = p.communicate(timeout=30)  # no polling meanwhile: libssl is attached already
    expected_resp = f"got {len(body)} bytes for /v1/curl/{tag}".encode()
    assert out == expected_resp
    assert collector.poll_until(lambda: expected_resp in collector.joined(p.pid, Direction.RECV))
    sends = collector.of(p.pid, Direction.SEND)
    # The very first SSL call of a process started after the capture.
    assert sends[0].data.startswith(f"POST /v1/curl/{tag} HTTP/1.1\r\n".encode())
    assert collector.joined(p.pid, Direction.SEND).endswith(b"\r\n\r\n" + body)
    recv = collector.joined(p.pid, Direction.RECV)
    assert recv.startswith(b"HTTP/1.1 200 OK\r\n")
    assert recv.endswith(b"\r\n\r\n" + expected_resp)
    for e in collector.of(p.pid):
        assert e.flags == EventFlag.NONE
        assert e.tid == p.pid  # curl is single-threaded here
        assert abs(e.ts_ns - time.time_ns()) < 60e9
    # Same conn for the whole exchange, and the server saw the other side.
    assert len({e.conn for e in collector.of(p.pid)}) == 1
    assert f"POST /v1/curl/{tag}".encode() in collector.joined(srv.pid, Direction.RECV)
    assert expected_resp in collector.joined(srv.pid, Direction.SEND)
    # curl frees its SSL: one CLOSE, after the data.
    conn = sends[0].conn
    assert collector.poll_until(
        lambda: any(e.flags & EventFlag.CLOSE and e.pid == p.pid and e.conn == conn
                    for e in collector.events)
    )
    closes = [e for e in collector.events if e.pid == p.pid and e.flags & EventFlag.CLOSE]
    assert len(closes) == 1 and closes[0].data == b""


PY_CLIENT = textwrap.dedent(
    """
    import ssl, sys, urllib.request
    ctx = ssl.create_default_context(cafile=sys.argv[2])
    body = open(sys.argv[3], "rb").read() if len(sys.argv) > 3 else None
    req = urllib.request.Request(sys.argv[1], data=body, method="POST" if body else "GET")
    sys.stdout.buffer.write(urllib.request.urlopen(req, context=ctx).read())
    """
)


def test_python_client_ex_functions(collector, server, tls_dir):
    srv, port = server
    tag = uuid.uuid4().hex
    pid, out = _popen_wait(
        collector,
        [sys.executable, "-c", PY_CLIENT, f"https://127.0.0.1:{port}/py/{tag}", str(tls_dir / "cert.pem")]
    )
    assert out == f"hello /py/{tag}".encode()
    assert collector.poll_until(lambda: out in collector.joined(pid, Direction.RECV))
    send = collector.joined(pid, Direction.SEND)
    assert send.startswith(f"GET /py/{tag} HTTP/1.1\r\n".encode())
    assert collector.joined(pid, Direction.RECV).endswith(b"\r\n\r\n" + out)


def test_large_body_complete_and_unflagged(collector, server, tls_dir, tmp_path):
    srv, port = server
    body = (uuid.uuid4().hex.encode() * 7000)[: 200 * 1024]  # 200 KiB, > 12 chunks
    f = tmp_path / "body.bin"
    f.write_bytes(body)
    pid, out = _popen_wait(
        collector,
        [sys.executable, "-c", PY_CLIENT, f"https://127.0.0.1:{port}/big", str(tls_dir / "cert.pem"), str(f)]
    )
    assert out == f"got {len(body)} bytes for /big".encode()
    assert collector.poll_until(lambda: out in collector.joined(pid, Direction.RECV))
    sends = collector.of(pid, Direction.SEND)
    # Python's sendall hands the whole body to one SSL_write_ex call.
    big = [e for e in sends if len(e.data) >= len(body)]
    assert big, [len(e.data) for e in sends]
    assert big[0].data == body
    assert big[0].flags == EventFlag.NONE
    # ...and the server read all of it (in 16 KiB SSL_read_ex calls).
    assert body in collector.joined(srv.pid, Direction.RECV)


def test_call_over_max_is_flagged_truncated(collector, server, tls_dir, tmp_path):
    srv, port = server
    limit = collector.cap.max_call_bytes
    body = os.urandom(limit + 50_000)
    f = tmp_path / "huge.bin"
    f.write_bytes(body)
    pid, out = _popen_wait(
        collector,
        [sys.executable, "-c", PY_CLIENT, f"https://127.0.0.1:{port}/huge", str(tls_dir / "cert.pem"), str(f)]
    )
    assert collector.poll_until(lambda: out in collector.joined(pid, Direction.RECV))
    trunc = [e for e in collector.of(pid, Direction.SEND) if e.flags & EventFlag.TRUNCATED]
    assert len(trunc) == 1
    assert len(trunc[0].data) == limit
    assert trunc[0].data == body[:limit]
    assert collector.cap.stats()["truncated"] >= 1


@pytest.mark.skipif(shutil.which("node") is None, reason="node missing (apt-get install nodejs)")
def test_node_fetch_static_openssl(collector, server, tls_dir):
    srv, port = server
    tag = uuid.uuid4().hex
    js = (
        f"fetch('https://127.0.0.1:{port}/node/{tag}', {{method: 'POST', body: 'node-body-{tag}'}})"
        ".then(r => r.text()).then(t => process.stdout.write(t))"
    )
    env = {**os.environ, "NODE_EXTRA_CA_CERTS": str(tls_dir / "cert.pem")}
    # node's OpenSSL is found by the start-up executable search; once that is
    # in, node is probed by inode like libssl (no race with its first call).
    assert collector.poll_until(lambda: collector.cap.executables_scanned, timeout=60)
    pid, out = _popen_wait(collector, ["node", "-e", js], poll=False, env=env)
    body = f"node-body-{tag}".encode()
    assert out == f"got {len(body)} bytes for /node/{tag}".encode()
    assert collector.poll_until(lambda: out in collector.joined(pid, Direction.RECV))
    send = collector.joined(pid, Direction.SEND)
    assert send.startswith(f"POST /node/{tag} HTTP/1.1\r\n".encode())
    assert send.endswith(body)
    assert any(t.kind == "exe" and t.path.endswith("node") for t in collector.cap.targets())


def test_ignore_connection_stops_events(collector, server, tls_dir):
    srv, port = server
    p = subprocess.Popen(
        [sys.executable, "-c", KEEPALIVE_CLIENT, str(port), str(tls_dir / "cert.pem")],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        first = p.stdout.readline().strip()
        assert first == "got 9 bytes for /keepalive/0"
        assert collector.poll_until(lambda: first.encode() in collector.joined(p.pid, Direction.RECV))
        conn = collector.of(p.pid, Direction.SEND)[0].conn
        before = collector.cap.stats()["ignored_calls"]
        collector.cap.ignore_connection(p.pid, conn)
        n_before = len(collector.of(p.pid))
        p.stdin.write("go\n")
        p.stdin.flush()
        assert p.stdout.readline().strip() == "got 9 bytes for /keepalive/1"
        p.wait(timeout=30)
        # the server side of the same exchange still shows up...
        assert collector.poll_until(
            lambda: b"/keepalive/1" in collector.joined(srv.pid, Direction.RECV)
        )
        collector.poll_until(lambda: False, timeout=0.5)
        # ...but nothing more from the ignored client connection, not even CLOSE.
        after = [e for e in collector.events if e.pid == p.pid and e.conn == conn]
        assert len(collector.of(p.pid)) == n_before
        assert not any(e.flags & EventFlag.CLOSE for e in after)
        assert collector.cap.stats()["ignored_calls"] > before
    finally:
        p.kill()


def test_own_process_is_excluded(collector, server, tls_dir):
    srv, port = server
    ctx = ssl.create_default_context(cafile=str(tls_dir / "cert.pem"))
    tag = uuid.uuid4().hex
    body = urllib.request.urlopen(f"https://127.0.0.1:{port}/self/{tag}", context=ctx).read()
    assert body == f"hello /self/{tag}".encode()
    assert collector.poll_until(lambda: f"/self/{tag}".encode() in collector.joined(srv.pid, Direction.RECV))
    assert not [e for e in collector.events if e.pid == os.getpid()]


def test_no_records_lost(collector):
    assert collector.cap.stats()["lost"] == 0
