"""`lumen-agent proxy`: real clients (curl, Node fetch, the openai/anthropic SDKs) call the
fake provider through the proxy; every call becomes one exact row with capture='proxy',
the bytes the client reads are the provider's, and streams are not held back."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from decimal import Decimal
from pathlib import Path

import duckdb
import pytest
from support import certs as certs_mod
from support import clients
from support import fake_provider as fp

from lumen_agent.config import load
from lumen_agent.control import ControlServer
from lumen_agent.pipeline.events import Direction
from lumen_agent.proxy import ProxyThread, Routes
from lumen_agent.proxy.sink import AgentSink, LocalSink

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
LUMEN = Path(sys.executable).parent / "lumen-agent"

# Cost by hand, USD per 1M tokens.
# gpt-4o-mini: $0.15 input, $0.075 cached input, $0.60 output.
# claude-sonnet-4-5: $3 input, $0.30 cache read, $3.75 5-minute write, $6 1-hour write, $15 output.
M = Decimal(1_000_000)
EXPECTED_COST = {
    # 1300 in of which 1024 cached, 12 out
    "openai.chat": (Decimal("0.15") * (1300 - 1024) + Decimal("0.075") * 1024 + Decimal("0.60") * 12) / M,
    # 78 in, 9 out
    "openai.chat.stream": (Decimal("0.15") * 78 + Decimal("0.60") * 9) / M,
    # 25 uncached + 2000 read + 500 5m write + 200 1h write, 60 out
    "anthropic.messages": (Decimal(3) * 25 + Decimal("0.30") * 2000 + Decimal("3.75") * 500 + Decimal(6) * 200
                           + Decimal(15) * 60) / M,
    # 20 uncached + 1500 read + 300 5m write, 12 out
    "anthropic.messages.stream": (Decimal(3) * 20 + Decimal("0.30") * 1500 + Decimal("3.75") * 300
                                  + Decimal(15) * 12) / M,
}
assert EXPECTED_COST["openai.chat"] == Decimal("0.0001254")
assert EXPECTED_COST["anthropic.messages.stream"] == Decimal("0.001815")
assert EXPECTED_COST["anthropic.messages"] == Decimal("0.00465")


# A token part the provider does not have for a call is 0, not NULL (OpenAI
# has no cache writes); only what is unknown stays NULL: Anthropic does not
# split thinking out of its output tokens.  Anthropic reports its 1-hour cache
# writes apart.
NOT_REPORTED = {"messages": {"reasoning_tokens"}}


def expected_tokens(scenario: str) -> dict[str, int | None]:
    want = fp.EXPECTED[scenario]
    out = {k: want[k] for k in fp.TOKEN_FIELDS}
    out["cache_write_1h_tokens"] = fp.SCENARIOS[scenario].tokens.cache_write_1h
    for k in NOT_REPORTED.get(want["endpoint"], ()):
        out[k] = None
    return out


# ------------------------------------------------------------------ fixtures


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def isolated(tmp_path_factory, certs):
    """State, configuration and runtime folders of our own; the proxy trusts the test CA."""
    base = tmp_path_factory.mktemp("lumen")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LUMEN_STATE_DIR", str(base / "state"))
        mp.setenv("LUMEN_CONFIG_DIR", str(base / "config"))
        mp.setenv("LUMEN_RUNTIME_DIR", str(base / "run"))
        mp.setenv("SSL_CERT_FILE", str(certs.ca))
        yield base


def _routes(server) -> Routes:
    port = server.port
    return Routes.build({}, [f"/openai=https://api.openai.com:{port}", f"/anthropic=https://api.anthropic.com:{port}",
                             f"/local=https://localhost:{port}", f"/down=https://127.0.0.1:{_closed_port()}"])


def _resolve(server) -> dict:
    return {("api.openai.com", server.port): "127.0.0.1", ("api.anthropic.com", server.port): "127.0.0.1"}


class Calls:
    """Every Call the proxy's pipeline produced, as it is handed to the store."""

    def __init__(self) -> None:
        self._calls: list = []
        self._cond = threading.Condition()

    def __call__(self, call) -> None:
        with self._cond:
            self._calls.append(call)
            self._cond.notify_all()

    def of(self, pid: int, n: int, timeout: float = 15.0) -> list:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                found = [c for c in self._calls if c.pid == pid]
                if len(found) >= n or time.monotonic() > deadline:
                    return found
                self._cond.wait(0.1)


@pytest.fixture(scope="module")
def proxy(isolated, server):
    calls = Calls()
    config = load(None, {"db": isolated / "proxy.duckdb", "flush_interval_s": 0.2})
    sink = LocalSink(config, on_call=calls)
    with ProxyThread(_routes(server), sink, resolve=_resolve(server)) as p:
        p.calls = calls
        p.db = isolated / "proxy.duckdb"
        yield p


def assert_ok(result: clients.ClientResult) -> None:
    assert result.returncode == 0, result.describe()


def assert_row(call, scenario: str, result: clients.ClientResult, process: str, port: int) -> None:
    want = fp.EXPECTED[scenario]
    assert call.capture == "proxy"
    assert call.pid == result.pid
    assert call.process == process
    assert (call.provider, call.endpoint, call.streaming) == (want["provider"], want["endpoint"], want["streaming"])
    assert (call.server_address, call.server_port) == (f"api.{want['provider']}.com", port)
    assert (call.request_model, call.model) == (want["request_model"], want["model"])
    assert (call.status_code, call.outcome.value) == (200, "success")
    tokens = {field: getattr(call, field) for field in (*fp.TOKEN_FIELDS, "cache_write_1h_tokens")}
    assert tokens == expected_tokens(scenario)
    assert call.cost_usd == EXPECTED_COST[scenario]
    assert call.unpriced is False and call.usage_missing is False
    assert call.api_key_hash and call.request_id
    assert call.ttft_ms is not None and 0 <= call.ttft_ms <= call.latency_ms


def served_by_request_id(server) -> dict[str, dict]:
    return {e["request_id"]: e for e in server.served() if e.get("request_id")}


# ------------------------------------------------------------------ real clients


@pytest.mark.parametrize("scenario", ["openai.chat", "openai.chat.stream"])
def test_curl_two_calls_on_one_connection(proxy, server, certs, scenario) -> None:
    result = clients.curl(proxy.url + "/openai", certs, scenario, calls=2)
    assert_ok(result)
    assert result.statuses == [200, 200]
    got = proxy.calls.of(result.pid, 2)
    assert len(got) == 2, got
    for call in got:
        assert_row(call, scenario, result, "curl", server.port)
    # keep-alive on both sides: one upstream connection served both requests
    served = served_by_request_id(server)
    first, second = (served[c.request_id] for c in got)
    assert first["connection_id"] == second["connection_id"]
    assert (first["request_on_connection"], second["request_on_connection"]) == (1, 2)
    # the provider saw its own Host, not the proxy's
    assert first["path"] == fp.SCENARIOS[scenario].path


@pytest.mark.parametrize("scenario", ["openai.chat.stream", "anthropic.messages"])
def test_node_fetch(proxy, server, certs, scenario) -> None:
    prefix = "/openai" if scenario.startswith("openai") else "/anthropic"
    result = clients.node_fetch(proxy.url + prefix, certs, scenario)
    assert_ok(result)
    [line] = result.json_lines()
    assert line["status"] == 200
    assert clients.usage_from_body(line["body"]) == clients.expected_usage(scenario)
    [call] = proxy.calls.of(result.pid, 1)
    assert_row(call, scenario, result, "node", server.port)
    assert call.request_id == line["request_id"]


@pytest.mark.parametrize("scenario", ["openai.chat", "openai.chat.stream", "anthropic.messages",
                                      "anthropic.messages.stream"])
def test_sdk(proxy, server, certs, scenario) -> None:
    prefix = "/openai" if scenario.startswith("openai") else "/anthropic"
    result = clients.sdk(proxy.url + prefix, certs, scenario, calls=2)
    assert_ok(result)
    lines = result.json_lines()
    assert len(lines) == 2
    for line in lines:
        assert line["ok"] is True
        assert line["usage"] == clients.expected_usage(scenario)
    got = proxy.calls.of(result.pid, 2)
    assert len(got) == 2
    assert sorted(c.request_id for c in got) == sorted(line["request_id"] for line in lines)
    for call in got:
        assert_row(call, scenario, result, Path(sys.executable).name[:15], server.port)


def test_rows_land_in_duckdb(proxy, server, certs) -> None:
    result = clients.curl(proxy.url + "/anthropic", certs, "anthropic.messages.stream")
    assert_ok(result)
    [call] = proxy.calls.of(result.pid, 1)
    deadline = time.monotonic() + 10
    row = None
    while row is None and time.monotonic() < deadline:
        time.sleep(0.3)
        try:
            with duckdb.connect(str(proxy.db), read_only=True) as db:
                row = db.execute("SELECT pid, process, capture, provider, input_tokens, cache_read_tokens, "
                                 "cache_write_tokens, output_tokens, cost_usd FROM llm_calls WHERE id = ?",
                                 [call.id]).fetchone()
        except (duckdb.IOException, duckdb.ConnectionException, duckdb.ResourceInUseException):
            pass  # the proxy (in this process) is appending right now: its store has the file attached
    assert row == (result.pid, "curl", "proxy", "anthropic", 1820, 1500, 300, 12, Decimal("0.00181500"))


def test_default_route_by_host_path_without_resolve(proxy, server, certs) -> None:
    """An upstream named by address: provider from the path shape, still priced."""
    result = clients.curl(proxy.url + "/local", certs, "anthropic.messages")
    assert_ok(result)
    [call] = proxy.calls.of(result.pid, 1)
    assert (call.provider, call.server_address, call.server_port) == ("anthropic", "localhost", server.port)
    assert call.cost_usd == EXPECTED_COST["anthropic.messages"]


# ------------------------------------------------------------------ bytes and timing


def _request(scenario: str, path_prefix: str, host: str, headers: dict | None = None) -> bytes:
    path, body, hdrs = clients.request_for(scenario)
    data = json.dumps(body).encode()
    lines = [f"POST {path_prefix}{path} HTTP/1.1", f"Host: {host}", "Accept: */*", "Connection: close",
             f"Content-Length: {len(data)}"]
    lines += [f"{k}: {v}" for k, v in {**hdrs, **(headers or {})}.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + data


def _exchange(port: int, request: bytes, tls_host: str | None = None, ca: Path | None = None,
              timeout: float = 30) -> tuple[float, list[tuple[float, bytes]]]:
    """Send ``request`` and read until the server closes: (send time, [(arrival time, bytes)])."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    if tls_host:
        context = ssl.create_default_context(cafile=str(ca))
        sock = context.wrap_socket(sock, server_hostname=tls_host)
    pieces = []
    with sock:
        sent = time.monotonic()
        sock.sendall(request)
        while data := sock.recv(65536):
            pieces.append((time.monotonic(), data))
    return sent, pieces


_DATE = re.compile(rb"(?im)^date:[^\r\n]*\r\n")
_HEX_ID = re.compile(rb"[0-9a-f]{16,}")


def _normalise(raw: bytes) -> bytes:
    """Drop the Date header, blank out random ids (same length, so chunk sizes still hold)."""
    return _HEX_ID.sub(lambda m: b"x" * len(m.group()), _DATE.sub(b"", raw))


@pytest.mark.parametrize("scenario,knobs", [
    ("openai.chat", {}),
    ("openai.chat.stream", {}),
    ("anthropic.messages.stream", {}),
    ("openai.chat.stream", {"x-fake-transfer": "close"}),
    ("anthropic.messages", {"x-fake-transfer": "chunked"}),
    ("openai.chat", {"x-fake-encoding": "gzip", "Accept-Encoding": "gzip"}),
    ("openai.chat", {"x-fake-status": "429"}),
])
def test_client_gets_the_providers_bytes(proxy, server, certs, scenario, knobs) -> None:
    provider = fp.SCENARIOS[scenario].provider
    host = f"api.{provider}.com"
    _, direct = _exchange(server.port, _request(scenario, "", f"{host}:{server.port}", knobs), host, certs.ca)
    _, proxied = _exchange(proxy.port, _request(scenario, f"/{provider}", f"127.0.0.1:{proxy.port}", knobs))
    direct_bytes = b"".join(p for _, p in direct)
    proxied_bytes = b"".join(p for _, p in proxied)
    if "x-fake-encoding" not in knobs:  # compressed ids do not normalise; compare the framing only
        assert _normalise(proxied_bytes) == _normalise(direct_bytes)
    else:
        assert proxied_bytes.split(b"\r\n\r\n")[0].replace(b"\r\n", b"\n").count(b"\n") \
            == direct_bytes.split(b"\r\n\r\n")[0].replace(b"\r\n", b"\n").count(b"\n")
        assert len(proxied_bytes) - len(direct_bytes) in range(-8, 9)  # same headers; gzip of other ids


def test_stream_is_relayed_as_it_arrives(proxy, server) -> None:
    """200 ms between events: the first event reaches the client long before the upstream finishes."""
    knobs = {"x-fake-delay-ms": "200", "x-fake-chunks": "5"}
    sent, pieces = _exchange(proxy.port, _request("openai.chat.stream", "/openai", "127.0.0.1", knobs))
    first_event = next(t for t, data in pieces if b"data: {" in data)
    end = pieces[-1][0]
    events = b"".join(p for _, p in pieces).count(b"data: ")
    # role + 5 deltas + finish + usage + [DONE] = 9 events, 8 gaps of 200 ms
    assert events == 9
    assert end - sent >= 8 * 0.2
    assert first_event - sent < 0.15, f"first event after {first_event - sent:.3f}s"
    assert end - first_event >= 7 * 0.2
    # each event arrived on its own, not in a batch
    arrivals = [t for t, data in pieces if b"data: " in data]
    assert len(arrivals) >= 8


# ------------------------------------------------------------------ errors


def _raw(port: int, data: bytes, timeout: float = 10) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        out = b""
        while chunk := sock.recv(65536):
            out += chunk
    return out


def _json_error(response: bytes) -> tuple[int, dict]:
    head, _, body = response.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    assert b"Content-Type: application/json" in head
    return status, json.loads(body)["error"]


def test_upstream_down_is_a_clear_502(proxy, server, certs) -> None:
    status, error = _json_error(_raw(proxy.port, _request("openai.chat", "/down", "127.0.0.1")))
    assert status == 502
    assert error["code"] == "upstream_unreachable"
    assert "cannot connect to upstream https://127.0.0.1:" in error["message"]
    # and a real SDK surfaces it as an API error, not a hang
    result = clients.sdk(proxy.url + "/down", certs, "openai.chat")
    assert result.returncode == 1
    [line] = result.json_lines()
    assert (line["ok"], line["status"]) == (False, 502)
    assert_ok(clients.curl(proxy.url + "/openai", certs, "openai.chat"))  # still serving


def test_unknown_prefix_is_404(proxy) -> None:
    status, error = _json_error(_raw(proxy.port, _request("openai.chat", "/nowhere", "127.0.0.1")))
    assert status == 404 and error["code"] == "no_route"
    assert "/openai" in error["message"]


def test_tls_verification_failure_is_502(isolated, server) -> None:
    untrusting = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # trusts only another CA
    untrusting.load_verify_locations(cadata=_other_ca(isolated))
    config = load(None, {"db": isolated / "tls.duckdb"})
    with ProxyThread(_routes(server), LocalSink(config), resolve=_resolve(server), ssl_context=untrusting) as p:
        status, error = _json_error(_raw(p.port, _request("openai.chat", "/openai", "127.0.0.1")))
    assert status == 502 and error["code"] == "upstream_tls_error"
    assert error["message"] == (f"upstream https://api.openai.com:{server.port} failed TLS verification: "
                                "unable to get local issuer certificate")


def _other_ca(base: Path) -> str:
    other = certs_mod.ensure_certs(base / "other-ca")
    return other.ca.read_text()


@pytest.mark.parametrize("garbage", [
    b"this is not http\r\n\r\n",
    b"POST /openai/v1/chat/completions HTTP/1.1\r\nHost x\r\n\r\n",
    b"POST /openai/v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
    b"POST /openai/v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n",
    b"POST /openai/v1/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    b"POST http://api.openai.com/v1/chat/completions HTTP/1.1\r\nHost: api.openai.com\r\n\r\n",
    b"GET / HTTP/1.1\r\n" + b"X-Big: " + b"a" * 70_000 + b"\r\n\r\n",
])
def test_malformed_request_is_400_and_the_proxy_keeps_running(proxy, certs, garbage) -> None:
    status, error = _json_error(_raw(proxy.port, garbage))
    assert status in (400, 431)
    assert error["code"] in ("bad_request", "head_too_large")
    assert_ok(clients.curl(proxy.url + "/openai", certs, "openai.chat"))


def test_chunked_request_body_and_expect_continue(proxy, server, certs) -> None:
    result = clients.curl(proxy.url + "/openai", certs, "openai.chat.stream",
                          headers={"Transfer-Encoding": "chunked", "Expect": "100-continue"})
    assert_ok(result)
    assert result.statuses == [200]
    [call] = proxy.calls.of(result.pid, 1)
    assert_row(call, "openai.chat.stream", result, "curl", server.port)


def test_client_hanging_up_mid_stream_is_cancelled(proxy, server) -> None:
    knobs = {"x-fake-delay-ms": "100", "x-fake-chunks": "50", "x-lumen-tenant": "hangs-up"}
    with socket.create_connection(("127.0.0.1", proxy.port)) as sock:
        sock.sendall(_request("openai.chat.stream", "/openai", "127.0.0.1", knobs))
        assert b"data: " in sock.recv(65536) + sock.recv(65536)
    deadline = time.monotonic() + 10
    while not (mine := [c for c in proxy.calls.of(os.getpid(), 1) if c.tenant == "hangs-up"]):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    [call] = mine
    assert call.outcome.value == "cancelled"
    assert call.process is not None


# ------------------------------------------------------------------ a running agent, and the command


def test_events_go_to_an_agents_ingest_socket(tmp_path, server, certs, isolated) -> None:
    control = ControlServer(tmp_path / "run")
    control.start()
    try:
        with ProxyThread(_routes(server), AgentSink(control.ingest_path), resolve=_resolve(server)) as p:
            result = clients.curl(p.url + "/openai", certs, "openai.chat")
            assert_ok(result)
        deadline = time.monotonic() + 5
        events = []
        while time.monotonic() < deadline:
            while not control.events.empty():
                events.append(control.events.get()[0])
            if any(e.direction is Direction.RECV and b"usage" in e.data for e in events) and \
                    any(e.flags for e in events):
                break
            time.sleep(0.05)
    finally:
        control.close()
    sent = b"".join(e.data for e in events if e.direction is Direction.SEND)
    assert sent.startswith(b"POST /v1/chat/completions HTTP/1.1\r\n")
    assert f"\r\nHost: api.openai.com:{server.port}\r\n".encode() in sent
    assert b"prompt_tokens" in b"".join(e.data for e in events if e.direction is Direction.RECV)
    # The proxy (root, a trusted sender) names the real client; the agent keeps that pid.
    assert {e.pid for e in events} == {result.pid}


def test_command_runs_until_sigterm(tmp_path, server, certs) -> None:
    db = tmp_path / "cli.duckdb"
    env = {**os.environ, **certs.env, "LUMEN_STATE_DIR": str(tmp_path / "state"),
           "LUMEN_CONFIG_DIR": str(tmp_path / "config"), "LUMEN_RUNTIME_DIR": str(tmp_path / "run")}
    proc = subprocess.Popen(
        [str(LUMEN), "proxy", "--listen", "127.0.0.1:0", "--db", str(db),
         "--upstream", f"https://api.openai.com:{server.port}",
         "--resolve", f"api.openai.com:{server.port}:127.0.0.1"],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        url = None
        deadline = time.monotonic() + 20
        lines = []
        while url is None and time.monotonic() < deadline:
            line = proc.stderr.readline()
            lines.append(line)
            if line.startswith("listening on "):
                url = line.split()[-1]
        assert url, "".join(lines)
        # one URL for everything: no prefix
        result = clients.curl(url, certs, "openai.chat.stream")
        assert_ok(result)
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    with duckdb.connect(str(db), read_only=True) as con:
        rows = con.execute("SELECT pid, process, capture, provider, input_tokens, output_tokens, cost_usd "
                           "FROM llm_calls").fetchall()
    assert rows == [(result.pid, "curl", "proxy", "openai", 78, 9, Decimal("0.00001710"))]


def _wait_listening(proc: subprocess.Popen) -> str:
    deadline = time.monotonic() + 20
    lines = []
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        lines.append(line)
        if line.startswith("listening on "):
            return line.split()[-1]
        if not line and proc.poll() is not None:
            break
    raise AssertionError("proxy did not start: " + "".join(lines))


def test_command_with_a_running_ingest_agent(tmp_path, server, certs) -> None:
    """`lumen-agent run --capture proxy` + `lumen-agent proxy`: rows land in the agent's
    database, under the client's pid (the proxy runs as root, so the agent trusts the pids it names)."""
    env = {**os.environ, **certs.env, "LUMEN_STATE_DIR": str(tmp_path / "state"),
           "LUMEN_CONFIG_DIR": str(tmp_path / "config"), "LUMEN_RUNTIME_DIR": str(tmp_path / "run")}
    db = tmp_path / "agent.duckdb"
    agent = subprocess.Popen([str(LUMEN), "run", "--capture", "proxy", "--db", str(db)], env=env,
                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    proxy = None
    try:
        deadline = time.monotonic() + 20
        while subprocess.run([str(LUMEN), "status"], env=env, capture_output=True).returncode != 0:
            assert time.monotonic() < deadline and agent.poll() is None, "agent did not start"
            time.sleep(0.1)
        proxy = subprocess.Popen(
            [str(LUMEN), "proxy", "--listen", "127.0.0.1:0", "--upstream", f"/openai=https://api.openai.com:{server.port}",
             "--resolve", f"api.openai.com:{server.port}:127.0.0.1"],
            env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        url = _wait_listening(proxy)
        result = clients.curl(url + "/openai", certs, "openai.chat.stream", calls=2)
        assert_ok(result)
    finally:
        for proc in (proxy, agent):
            if proc is not None:
                proc.send_signal(signal.SIGTERM)
                proc.communicate(timeout=30)
    assert (proxy.returncode, agent.returncode) == (0, 0)
    with duckdb.connect(str(db), read_only=True) as con:
        rows = con.execute("SELECT pid, capture, provider, input_tokens, output_tokens, cost_usd, outcome "
                           "FROM llm_calls").fetchall()
    # The proxy is a trusted sender: the rows name the client (curl), not the proxy.
    assert rows == [(result.pid, "proxy", "openai", 78, 9, Decimal("0.00001710"), "success")] * 2


def test_command_user_errors(tmp_path) -> None:
    env = {**os.environ, "LUMEN_RUNTIME_DIR": str(tmp_path), "LUMEN_CONFIG_DIR": str(tmp_path)}
    for args, message in ((["--upstream", "ftp://x"], "must be an http:// or https:// URL"),
                          (["--listen", "nonsense"], "must be HOST:PORT"),
                          (["--events", "bogus"], "--events must be one of")):
        proc = subprocess.run([str(LUMEN), "proxy", "--db", str(tmp_path / "x.duckdb"), *args],
                              capture_output=True, text=True, env=env, timeout=30)
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.startswith("error: ") and message in proc.stderr, proc.stderr


def test_head_get_and_pipelined_requests_keep_the_connection(proxy, server) -> None:
    """HEAD has no body whatever its Content-Length; a GET is forwarded but is no call;
    requests written back to back are answered in order on the same connections."""
    host = f"127.0.0.1:{proxy.port}"
    head = f"HEAD /openai/healthz HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
    get = f"GET /openai/v1/models HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer sk-x\r\n\r\n".encode()
    chat = _request("openai.chat", "/openai", host, {"x-lumen-tenant": "pipelined"}).replace(
        b"Connection: close\r\n", b"")
    last = get.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n")
    response = _raw(proxy.port, head + get + chat + last)
    statuses = re.findall(rb"(?m)^HTTP/1\.1 (\d{3})", response)
    assert statuses == [b"200"] * 4, response[:2000]
    assert response.count(b"\r\n\r\nok") == 2  # the two GET bodies; HEAD's Content-Length: 3 sent no body
    assert b"chat.completion" in response
    deadline = time.monotonic() + 10
    while not (mine := [c for c in proxy.calls.of(os.getpid(), 1) if c.tenant == "pipelined"]):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert [c.endpoint for c in mine] == ["chat.completions"]
    served = [e for e in server.served() if e["path"] in ("/healthz", "/v1/models")]
    assert served and all(e["method"] in ("GET", "HEAD") for e in served)
