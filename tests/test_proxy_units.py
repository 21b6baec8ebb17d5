"""The proxy's pure parts: framing (whole and byte by byte, fuzzed), routes, head rewriting,
and finding the local process behind a TCP peer."""

from __future__ import annotations

import os
import socket

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lumen_agent.proxy.framing import (
    BadRequest,
    BadResponse,
    BodyFramer,
    Framing,
    find_head_end,
    parse_request_head,
    parse_response_head,
)
from lumen_agent.proxy.peers import PeerResolver
from lumen_agent.proxy.routes import DEFAULT_UPSTREAMS, RouteError, Routes
from lumen_agent.proxy.server import error_response, rewrite_head

CHUNKED = b"5\r\nhello\r\n1a;ext=1\r\n" + b"x" * 26 + b"\r\n0\r\nTrailer: t\r\n\r\n"


def test_chunked_end_whole_and_byte_by_byte() -> None:
    tail = b"GET /next HTTP/1.1\r\n"
    framer = BodyFramer(Framing.CHUNKED)
    assert framer.feed(CHUNKED + tail) == len(CHUNKED)
    assert framer.done
    framer = BodyFramer(Framing.CHUNKED)
    used = 0
    for i in range(len(CHUNKED + tail)):
        used += framer.feed((CHUNKED + tail)[i:i + 1])
    assert used == len(CHUNKED) and framer.done


def test_length_close_none() -> None:
    framer = BodyFramer(Framing.LENGTH, 4)
    assert (framer.feed(b"abc"), framer.done) == (3, False)
    assert (framer.feed(b"defg"), framer.done) == (1, True)
    framer = BodyFramer(Framing.CLOSE)
    assert framer.feed(b"abc") == 3 and not framer.done
    assert framer.connection_closed() and framer.done
    assert BodyFramer(Framing.NONE).done
    cut = BodyFramer(Framing.CHUNKED)
    cut.feed(b"5\r\nhel")
    assert not cut.connection_closed()


@pytest.mark.parametrize("bad", [b"zz\r\n", b"5\r\nhelloXX\r\n", b"1" * 20 + b"\r\n", b"5" + b" " * 5000])
def test_bad_chunked_bodies(bad: bytes) -> None:
    with pytest.raises(BadResponse):
        BodyFramer(Framing.CHUNKED).feed(bad)


def test_request_heads() -> None:
    head = parse_request_head(b"POST /openai/v1/chat/completions HTTP/1.1\r\nHost: a\r\nContent-Length: 12\r\n\r\n")
    assert (head.method, head.target, head.version) == (b"POST", b"/openai/v1/chat/completions", b"HTTP/1.1")
    assert (head.framing, head.length, head.keep_alive) == (Framing.LENGTH, 12, True)
    head = parse_request_head(b"POST / HTTP/1.1\nTransfer-Encoding: gzip, chunked\nConnection: close\n\n")
    assert (head.framing, head.keep_alive) == (Framing.CHUNKED, False)
    assert parse_request_head(b"GET / HTTP/1.0\r\n\r\n").keep_alive is False
    assert parse_request_head(b"\r\nGET / HTTP/1.1\r\n\r\n").framing is Framing.NONE


@pytest.mark.parametrize("bad", [
    b"GET /\r\n\r\n",
    b"GET / HTTP/2.0\r\n\r\n",
    b"GET  / HTTP/1.1\r\n\r\n",
    b"G\x00T / HTTP/1.1\r\n\r\n",
    b"GET / HTTP/1.1\r\nBad Name: x\r\n\r\n",
    b"GET / HTTP/1.1\r\nX: a\r\n folded\r\n\r\n",
    b"GET / HTTP/1.1\r\nX: a\x01b\r\n\r\n",
    b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
    b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
    b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
    b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked, chunked\r\n\r\n",
])
def test_bad_request_heads(bad: bytes) -> None:
    with pytest.raises(BadRequest):
        parse_request_head(bad)


def test_response_heads() -> None:
    ok = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n"
    assert parse_response_head(ok, b"POST").framing is Framing.LENGTH
    assert parse_response_head(ok, b"HEAD").framing is Framing.NONE
    assert parse_response_head(b"HTTP/1.1 204 No Content\r\n\r\n", b"POST").framing is Framing.NONE
    close = parse_response_head(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\n", b"POST")
    assert (close.framing, close.keep_alive) == (Framing.CLOSE, False)
    assert parse_response_head(b"HTTP/1.1 100 Continue\r\n\r\n", b"POST").status == 100
    with pytest.raises(BadResponse):
        parse_response_head(b"HTTP/1.1 OK\r\n\r\n", b"GET")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_fuzz_only_our_errors(data: bytes) -> None:
    """Any input parses or raises the proxy's own errors, nothing else (h11's invariant)."""
    end = find_head_end(data)
    if end >= 0:
        for parse, error in ((parse_request_head, BadRequest),
                             (lambda h: parse_response_head(h, b"GET"), BadResponse)):
            try:
                parse(data[:end])
            except error:
                pass
    for framing in (Framing.CHUNKED, Framing.LENGTH, Framing.CLOSE):
        framer = BodyFramer(framing, 50)
        try:
            framer.feed(data)
        except BadResponse:
            pass


def test_routes() -> None:
    routes = Routes.build({"/openrouter": "https://openrouter.ai/api"}, ["/mine=http://localhost:11434/"])
    route, target = routes.match("/openai/v1/chat/completions?x=1")
    assert (str(route.upstream), target) == ("https://api.openai.com", "/v1/chat/completions?x=1")
    route, target = routes.match("/openrouter/v1/chat/completions")
    assert (str(route.upstream), target) == ("https://openrouter.ai/api", "/api/v1/chat/completions")
    route, target = routes.match("/mine")
    assert (route.upstream.authority, route.upstream.tls, target) == ("localhost:11434", False, "/")
    assert routes.match("/openaix/v1") is None  # whole segments only
    assert routes.match("/elsewhere") is None
    assert {r.prefix for r in routes} >= set(DEFAULT_UPSTREAMS)
    only = Routes.build({}, ["https://api.anthropic.com:8443"])
    assert [r.prefix for r in only] == ["/"]
    route, target = only.match("/v1/messages")
    assert (route.upstream.authority, target) == ("api.anthropic.com:8443", "/v1/messages")
    for bad in (["ftp://x"], ["a", "b"], ["/p=https://"], ["/p=https://h:99999"]):
        with pytest.raises(RouteError):
            Routes.build({}, bad)


def test_rewrite_head_sets_the_upstream_host() -> None:
    req = parse_request_head(b"POST /openai/v1/x HTTP/1.1\r\nhost: 127.0.0.1:8787\r\nX-Api-Key: k\r\n\r\n")
    assert rewrite_head(req, "/v1/x", "api.openai.com") == (
        b"POST /v1/x HTTP/1.1\r\nhost: api.openai.com\r\nX-Api-Key: k\r\n\r\n")
    req = parse_request_head(b"GET /a HTTP/1.0\r\nAccept: */*\r\n\r\n")
    assert rewrite_head(req, "/b", "h:1") == b"GET /b HTTP/1.0\r\nHost: h:1\r\nAccept: */*\r\n\r\n"


def test_error_response_is_json() -> None:
    raw = error_response(502, "upstream_unreachable", "cannot connect")
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 502 Bad Gateway\r\n")
    assert f"Content-Length: {len(body)}".encode() in head
    assert body == b'{"error": {"type": "lumen_proxy_error", "code": "upstream_unreachable", ' \
                   b'"message": "cannot connect"}}'


@pytest.mark.parametrize("family,host", [(socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")])
def test_peer_pid_of_a_loopback_client(family, host) -> None:
    try:
        listener = socket.socket(family)
        listener.bind((host, 0))
    except OSError:
        pytest.skip(f"no {host}")
    with listener:
        listener.listen()
        client = socket.create_connection(listener.getsockname()[:2])
        accepted, peer = listener.accept()
        with client, accepted:
            resolver = PeerResolver()
            assert resolver.pid_of(peer, accepted.getsockname()) == os.getpid()
            assert resolver.pid_of(peer, accepted.getsockname()) == os.getpid()  # the recent-pid path
            assert resolver.pid_of(("203.0.113.9", 5000), accepted.getsockname()) is None


def test_choose_sink(tmp_path, monkeypatch) -> None:
    """No agent: a pipeline here.  An ingest-only agent: its socket.  An eBPF agent: nothing
    (it already sees the proxy's TLS traffic; shipping events too would count calls twice)."""
    import json
    import time

    from lumen_agent.config import load
    from lumen_agent.proxy.runner import ProxyOptions, choose_sink
    from lumen_agent.proxy.sink import AgentSink, LocalSink, NullSink

    monkeypatch.setenv("LUMEN_CONFIG_DIR", str(tmp_path))
    config = load(None, {"runtime_dir": tmp_path / "run", "db": tmp_path / "x.duckdb"})
    assert isinstance(choose_sink(config, ProxyOptions()), LocalSink)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "ingest.sock").touch()

    def agent(capture_mode, targets):
        status = {"pid": os.getpid(), "updated": time.time(), "capture_mode": capture_mode, "targets": targets}
        (tmp_path / "run" / "status.json").write_text(json.dumps(status))

    agent("hook", ["ingest socket"])
    assert isinstance(choose_sink(config, ProxyOptions()), AgentSink)
    # --db: the agent of that database, not any agent (y has none; x is the one running).
    assert isinstance(choose_sink(config, ProxyOptions(db=tmp_path / "y.duckdb")), LocalSink)
    assert isinstance(choose_sink(config, ProxyOptions(db=tmp_path / "x.duckdb")), AgentSink)
    agent("ebpf", ["/usr/lib/x86_64-linux-gnu/libssl.so.3 (libssl, global, 12 processes)"])
    assert isinstance(choose_sink(config, ProxyOptions()), NullSink)
    assert isinstance(choose_sink(config, ProxyOptions(sink="local")), LocalSink)


def test_switching_protocols_becomes_a_tunnel(tmp_path) -> None:
    """101 (a WebSocket upgrade, e.g. a realtime API): bytes flow both ways until either side closes."""
    import threading

    from lumen_agent.proxy.runner import ProxyThread
    from lumen_agent.proxy.sink import NullSink

    upstream = socket.socket()
    upstream.bind(("127.0.0.1", 0))
    upstream.listen()

    def serve() -> None:
        conn, _ = upstream.accept()
        with conn:
            data = b""
            while b"\r\n\r\n" not in data:
                data += conn.recv(4096)
            assert data.startswith(b"GET /v1/realtime HTTP/1.1\r\n")
            conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
            while chunk := conn.recv(4096):
                conn.sendall(chunk.upper())

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    routes = Routes.build({}, [f"/rt=http://127.0.0.1:{upstream.getsockname()[1]}"])
    with ProxyThread(routes, NullSink()) as proxy, upstream:
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as client:
            client.sendall(b"GET /rt/v1/realtime HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                           b"Connection: Upgrade\r\n\r\n")
            head = b""
            while b"\r\n\r\n" not in head:
                head += client.recv(4096)
            assert head.startswith(b"HTTP/1.1 101 ")
            client.sendall(b"hello frames")
            echoed = b""
            while len(echoed) < 12:
                echoed += client.recv(4096)
            assert echoed == b"HELLO FRAMES"
    thread.join(5)


def test_stale_upstream_connection_is_retried_and_counted_once(tmp_path, monkeypatch) -> None:
    """An upstream that closes a kept-alive connection when the next request arrives: the
    proxy retries it on a fresh connection, the client gets every answer, and every call
    is one row (no phantom cut call)."""
    import json
    import threading
    import time

    from lumen_agent.config import load
    from lumen_agent.proxy.runner import ProxyThread
    from lumen_agent.proxy.sink import LocalSink

    monkeypatch.setenv("LUMEN_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("LUMEN_CONFIG_DIR", str(tmp_path / "config"))
    body = json.dumps({"id": "chatcmpl-1", "object": "chat.completion", "model": "gpt-4o-mini-2024-07-18",
                       "choices": [], "usage": {"prompt_tokens": 10, "completion_tokens": 2,
                                                "total_tokens": 12}}).encode()
    answer = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    upstream = socket.socket()
    upstream.bind(("127.0.0.1", 0))
    upstream.listen()
    served, dropped = [], []

    def serve() -> None:
        while True:
            try:
                conn, _ = upstream.accept()
            except OSError:
                return
            with conn:
                for n in (1, 2):
                    data = b""
                    while not data.endswith(b"}"):
                        data += conn.recv(65536)
                    if n == 2:  # keep-alive timeout on the server just as a request arrives
                        dropped.append(data)
                        break
                    served.append(data)
                    conn.sendall(answer)

    threading.Thread(target=serve, daemon=True).start()
    calls = []
    config = load(None, {"db": tmp_path / "x.duckdb"})
    request = json.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}).encode()
    head = (b"POST /o/v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer sk-x\r\n"
            b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(request))
    routes = Routes.build({}, [f"/o=http://127.0.0.1:{upstream.getsockname()[1]}"])
    with ProxyThread(routes, LocalSink(config, on_call=calls.append)) as proxy, upstream:
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as client:
            for _ in range(3):
                client.sendall(head + request)
                got = b""
                while not got.endswith(body):
                    chunk = client.recv(65536)
                    assert chunk, got
                    got += chunk
                assert got.startswith(b"HTTP/1.1 200 OK")
        deadline = time.monotonic() + 5
        while len(calls) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.2)
    assert (len(served), len(dropped)) == (3, 2)
    assert [(c.outcome.value, c.input_tokens, c.output_tokens) for c in calls] == [("success", 10, 2)] * 3
