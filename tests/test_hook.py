"""The user-space hook (lumen_agent.hook), no root or eBPF needed.

In-process: the ssl wrappers record exactly the plaintext that went over
the wire (sendall not counted twice, recv_into only the bytes read), for
SSLSocket and SSLObject (asyncio).  End to end: the real openai and
anthropic SDKs, sync and async, streaming and not, run under
``lumen-agent exec`` against the local TLS fake provider, and the rows in
DuckDB carry the exact tokens and hand-computed costs, capture 'hook' and
the client's pid; the same through a running ``lumen-agent run --capture
hook`` over its ingest socket; several hooked processes sharing one file;
and faults in the hook never fail the program.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import textwrap
import time
from decimal import Decimal
from pathlib import Path

import duckdb
import pytest
from support import clients
from support import fake_provider as fp

from lumen_agent.hook import patch
from lumen_agent.hook.buffer import EventBuffer
from lumen_agent.hook.launch import hook_env, pth_line, site_dir

VENV_BIN = Path(sys.executable).parent
LUMEN = str(VENV_BIN / "lumen-agent")
PYTHON = sys.executable

# Published prices, USD per 1M tokens (not read from lumen_agent).
M = Decimal(1_000_000)
GPT_4O_MINI = {"input": Decimal("0.15"), "cache_read": Decimal("0.075"), "output": Decimal("0.60")}
SONNET_4_5 = {"input": Decimal("3"), "cache_read": Decimal("0.30"), "write_5m": Decimal("3.75"),
              "write_1h": Decimal("6"), "output": Decimal("15")}


def q(value: Decimal) -> Decimal:
    return (value / M).quantize(Decimal("0.00000001"))


# Worked by hand from fp.SCENARIOS' token counts:
EXPECTED_COST = {
    # 1300 input of which 1024 cached, 12 output
    "openai.chat": q((1300 - 1024) * GPT_4O_MINI["input"] + 1024 * GPT_4O_MINI["cache_read"]
                     + 12 * GPT_4O_MINI["output"]),  # 0.00012540
    # 78 input, 9 output
    "openai.chat.stream": q(78 * GPT_4O_MINI["input"] + 9 * GPT_4O_MINI["output"]),  # 0.00001710
    # 25 uncached + 2000 read + 500 5m write + 200 1h write, 60 output
    "anthropic.messages": q(25 * SONNET_4_5["input"] + 2000 * SONNET_4_5["cache_read"]
                            + 500 * SONNET_4_5["write_5m"] + 200 * SONNET_4_5["write_1h"]
                            + 60 * SONNET_4_5["output"]),  # 0.00465000
    # 20 uncached + 1500 read + 300 5m write, 12 output
    "anthropic.messages.stream": q(20 * SONNET_4_5["input"] + 1500 * SONNET_4_5["cache_read"]
                                   + 300 * SONNET_4_5["write_5m"] + 12 * SONNET_4_5["output"]),  # 0.00181500
}
assert EXPECTED_COST == {"openai.chat": Decimal("0.00012540"), "openai.chat.stream": Decimal("0.00001710"),
                         "anthropic.messages": Decimal("0.00465000"),
                         "anthropic.messages.stream": Decimal("0.00181500")}

# The client every end-to-end test runs: real SDKs, sync and async, one JSON line per call.
CLIENT = textwrap.dedent(r'''
    import asyncio, json, os, sys
    url = sys.argv[1]
    calls = sys.argv[2].split(",")
    fault = os.environ.get("HOOK_TEST_FAULT")
    if fault == "record":
        # Fault injection: every recording inside the ssl wrappers raises.
        from lumen_agent.hook import patch
        def boom(*a, **k):
            raise RuntimeError("injected fault")
        patch._copy = boom
        patch._emit = boom
    elif fault == "queue":
        from lumen_agent.hook import bootstrap
        def boom(*a, **k):
            raise MemoryError("injected queue fault")
        bootstrap.shipper().buffer.put = boom
        from lumen_agent.hook import patch
        patch._sink = boom
    import openai, anthropic
    MESSAGES = [{"role": "user", "content": "What is the capital of the UK?"}]
    OK, AK = "sk-test-fake-0000", "sk-ant-test-fake-0000"

    def out(name, scenario, request_id, usage_ok=True):
        print(json.dumps({"call": name, "scenario": scenario, "request_id": request_id, "pid": os.getpid()}),
              flush=True)

    def sync_call(name):
        if name.startswith("openai"):
            c = openai.OpenAI(api_key=OK, base_url=url + "/v1", max_retries=0)
            if name == "openai.sync":
                r = c.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
                out(name, "openai.chat", r._request_id)
            else:
                s = c.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True,
                                              stream_options={"include_usage": True})
                usage = None
                for chunk in s:
                    usage = chunk.usage or usage
                assert usage.prompt_tokens == 78
                out(name, "openai.chat.stream", s.response.headers.get("x-request-id"))
            c.close()
        else:
            c = anthropic.Anthropic(api_key=AK, base_url=url, max_retries=0)
            if name == "anthropic.sync":
                m = c.messages.create(model="claude-sonnet-4-5", max_tokens=256, messages=MESSAGES)
                out(name, "anthropic.messages", m._request_id)
            else:
                with c.messages.stream(model="claude-sonnet-4-5", max_tokens=256, messages=MESSAGES) as s:
                    for _ in s.text_stream:
                        pass
                    s.get_final_message()
                    out(name, "anthropic.messages.stream", s.response.headers.get("request-id"))
            c.close()

    async def async_call(name):
        if name.startswith("openai"):
            c = openai.AsyncOpenAI(api_key=OK, base_url=url + "/v1", max_retries=0)
            if name == "openai.async":
                r = await c.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
                out(name, "openai.chat", r._request_id)
            else:
                s = await c.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True,
                                                    stream_options={"include_usage": True})
                async for chunk in s:
                    pass
                out(name, "openai.chat.stream", s.response.headers.get("x-request-id"))
            await c.close()
        else:
            c = anthropic.AsyncAnthropic(api_key=AK, base_url=url, max_retries=0)
            if name == "anthropic.async":
                m = await c.messages.create(model="claude-sonnet-4-5", max_tokens=256, messages=MESSAGES)
                out(name, "anthropic.messages", m._request_id)
            else:
                async with c.messages.stream(model="claude-sonnet-4-5", max_tokens=256, messages=MESSAGES) as s:
                    async for _ in s.text_stream:
                        pass
                    await s.get_final_message()
                    out(name, "anthropic.messages.stream", s.response.headers.get("request-id"))
            await c.close()

    for name in calls:
        if ".async" in name:
            asyncio.run(async_call(name))
        else:
            sync_call(name)
''')

ALL_CALLS = ("openai.sync", "openai.sync.stream", "openai.async", "openai.async.stream",
             "anthropic.sync", "anthropic.sync.stream", "anthropic.async", "anthropic.async.stream")
TOKEN_COLUMNS = ("input_tokens", "cache_read_tokens", "cache_write_tokens", "cache_write_1h_tokens",
                 "output_tokens", "reasoning_tokens")
# A token part the API does not have is 0 once usage is reported (cache writes
# on OpenAI); only what the API never reports apart stays NULL (Anthropic's
# thinking tokens), exactly as the eBPF path stores them.
NOT_REPORTED = {"messages": {"reasoning_tokens"}}
CACHE_WRITE_1H = {"anthropic.messages": 200, "anthropic.messages.stream": 0}


def expected_tokens(scenario: str) -> dict[str, int | None]:
    want = fp.EXPECTED[scenario]
    out = {c: want[c] for c in fp.TOKEN_FIELDS}
    out["cache_write_1h_tokens"] = CACHE_WRITE_1H.get(scenario, 0)
    for c in NOT_REPORTED.get(want["endpoint"], ()):
        out[c] = None
    return out


# ------------------------------------------------------------------ fixtures


@pytest.fixture()
def dirs(tmp_path: Path) -> dict[str, str]:
    """Private state/runtime/config folders: no agent or config of the host is seen."""
    out = {}
    for name, var in (("state", "LUMEN_STATE_DIR"), ("run", "LUMEN_RUNTIME_DIR"), ("config", "LUMEN_CONFIG_DIR")):
        (tmp_path / name).mkdir()
        out[var] = str(tmp_path / name)
    return out


def client_script(tmp_path: Path) -> Path:
    path = tmp_path / "client.py"
    path.write_text(CLIENT)
    return path


def run_hooked(certs, server, tmp_path: Path, env: dict[str, str], calls=ALL_CALLS, exec_args=(),
               timeout: float = 180) -> tuple[subprocess.CompletedProcess[str], list[dict]]:
    argv = [LUMEN, "exec", *exec_args, "--", PYTHON, str(client_script(tmp_path)), server.url, ",".join(calls)]
    proc = subprocess.run(argv, env=clients.client_env(certs, env), capture_output=True, text=True, timeout=timeout)
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    return proc, lines


def rows_by_request_id(db: Path) -> dict[str, dict]:
    with duckdb.connect(str(db), read_only=True) as con:
        cur = con.execute("SELECT * EXCLUDE (ts_start, ts_end) FROM llm_calls")  # TIMESTAMPTZ needs pytz
        names = [d[0] for d in cur.description]
        return {row["request_id"]: row for row in (dict(zip(names, r, strict=False)) for r in cur.fetchall())}


def report(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def assert_row(row: dict, scenario: str, pid: int) -> None:
    want = fp.EXPECTED[scenario]
    assert row["capture"] == "hook"
    assert row["pid"] == pid
    assert row["model"] == want["model"]
    assert row["request_model"] == want["request_model"]
    assert row["endpoint"] == want["endpoint"]
    assert row["streaming"] == want["streaming"]
    assert row["status_code"] == 200 and row["outcome"] == "success"
    assert {c: row[c] for c in TOKEN_COLUMNS} == expected_tokens(scenario), scenario
    assert row["cost_usd"] == EXPECTED_COST[scenario], scenario
    assert row["unpriced"] is False
    # localhost names no provider; the fake provider's OpenAI headers (openai-organization) do
    assert row["provider"] == want["provider"]
    if want["streaming"]:
        assert row["ttft_ms"] is not None and 0 <= row["ttft_ms"] <= row["latency_ms"]


# ------------------------------------------------------------------ the wrappers, in process


class Recorded:
    def __init__(self) -> None:
        self.items: list[tuple] = []
        self.faults: list[BaseException] = []

    def sink(self, item: tuple, nbytes: int) -> None:
        assert nbytes == len(item[4])
        self.items.append(item)

    def data(self, direction: int) -> bytes:
        return b"".join(i[4] for i in self.items if i[3] == direction)

    def closes(self) -> list[tuple]:
        return [i for i in self.items if i[5] & patch.FLAG_CLOSE]


@pytest.fixture()
def recorded():
    if patch.installed():
        pytest.skip("the hook is already on in this test process")
    rec = Recorded()
    patch.install(rec.sink, rec.faults.append)
    try:
        yield rec
    finally:
        patch.uninstall()


def client_context(certs) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(certs.ca))


def raw_request(scenario: str, port: int) -> tuple[bytes, int]:
    path, body, headers = clients.request_for(scenario)
    payload = json.dumps(body).encode()
    head = [f"POST {path} HTTP/1.1", f"Host: localhost:{port}", f"Content-Length: {len(payload)}",
            "Connection: close"] + [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + payload, len(payload)


def test_sslsocket_sendall_once_and_recv_into_only_bytes_read(recorded, server, certs) -> None:
    request, _ = raw_request("openai.chat", server.port)
    with socket.create_connection(("127.0.0.1", server.port)) as plain:
        with client_context(certs).wrap_socket(plain, server_hostname="localhost") as tls:
            tls.sendall(request)  # sendall -> send: recorded once
            buf = bytearray(b"\xee" * 65536)
            got = bytearray()
            while True:
                n = tls.recv_into(memoryview(buf)[:300])  # small reads, a reused buffer
                if not n:
                    break
                got += buf[:n]
    assert recorded.faults == []
    assert recorded.data(patch.SEND) == request
    assert recorded.data(patch.RECV) == bytes(got)
    assert got.startswith(b"HTTP/1.1 200") and b'"prompt_tokens":1300' in got.replace(b" ", b"")
    assert b"\xee" not in recorded.data(patch.RECV)  # never the stale tail of the buffer
    assert len({i[2] for i in recorded.items}) == 1  # one connection id
    assert len(recorded.closes()) >= 1  # EOF, then the real close
    assert all(i[1] == __import__("threading").get_native_id() for i in recorded.items)


def test_sslsocket_read_recv_and_write(recorded, server, certs) -> None:
    request, _ = raw_request("anthropic.messages.stream", server.port)
    with socket.create_connection(("127.0.0.1", server.port)) as plain:
        with client_context(certs).wrap_socket(plain, server_hostname="localhost") as tls:
            half = len(request) // 2
            assert tls.write(request[:half]) == half
            tls.send(memoryview(request)[half:])
            got = bytearray()
            buf = bytearray(1000)
            while True:
                piece = tls.recv(700) if len(got) % 2 == 0 else None
                if piece is None:
                    n = tls.read(500, buf)
                    piece = bytes(buf[:n])
                if not piece:
                    break
                got += piece
    assert recorded.faults == []
    assert recorded.data(patch.SEND) == request
    assert recorded.data(patch.RECV) == bytes(got)
    assert b"message_stop" in got


def test_sslobject_asyncio_stream(recorded, server, certs) -> None:
    request, _ = raw_request("openai.chat.stream", server.port)

    async def call() -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port, ssl=client_context(certs),
                                                       server_hostname="localhost")
        writer.write(request)
        await writer.drain()
        data = await reader.read()
        writer.close()
        await writer.wait_closed()
        return data

    got = asyncio.run(call())
    assert recorded.faults == []
    assert recorded.data(patch.SEND) == request
    assert recorded.data(patch.RECV) == got
    assert b"data: [DONE]" in got


def test_server_side_connections_are_not_recorded(recorded, certs) -> None:
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(str(certs.cert), str(certs.key))
    client_bio_in, client_bio_out = ssl.MemoryBIO(), ssl.MemoryBIO()
    server_bio_in, server_bio_out = ssl.MemoryBIO(), ssl.MemoryBIO()
    c = client_context(certs).wrap_bio(client_bio_in, client_bio_out, server_hostname="localhost")
    s = server_ctx.wrap_bio(server_bio_in, server_bio_out, server_side=True)

    def pump() -> None:
        server_bio_in.write(client_bio_out.read())
        client_bio_in.write(server_bio_out.read())

    for _ in range(10):
        for obj in (c, s):
            try:
                obj.do_handshake()
            except ssl.SSLWantReadError:
                pass
        pump()
    c.write(b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n")
    pump()
    assert s.read(1000) == b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n"
    s.write(b"HTTP/1.1 204 No Content\r\n\r\n")
    pump()
    assert c.read(1000) == b"HTTP/1.1 204 No Content\r\n\r\n"
    # only the client's side: one SEND and one RECV
    assert [(i[3], i[4]) for i in recorded.items] == [(patch.SEND, b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n"),
                                                       (patch.RECV, b"HTTP/1.1 204 No Content\r\n\r\n")]


def test_a_failing_recording_never_reaches_the_caller(server, certs) -> None:
    if patch.installed():
        pytest.skip("the hook is already on in this test process")
    faults: list[BaseException] = []

    def broken_sink(item, nbytes):
        raise MemoryError("sink exploded")

    patch.install(broken_sink, faults.append)
    try:
        request, _ = raw_request("openai.chat", server.port)
        with socket.create_connection(("127.0.0.1", server.port)) as plain:
            with client_context(certs).wrap_socket(plain, server_hostname="localhost") as tls:
                tls.sendall(request)
                got = b""
                while piece := tls.recv(4096):
                    got += piece
    finally:
        patch.uninstall()
    assert got.startswith(b"HTTP/1.1 200")
    assert faults and all(isinstance(f, MemoryError) for f in faults)
    assert ssl.SSLSocket.send.__qualname__ == "SSLSocket.send" and not hasattr(ssl.SSLSocket.send, "__wrapped__")


def test_event_buffer_is_bounded_and_counts_drops() -> None:
    buf = EventBuffer(max_events=3, max_bytes=10)
    for _i in range(5):
        buf.put((0, 0, 1, 0, b"ab", 0), 2)
    assert (len(buf), buf.dropped, buf.accepted) == (3, 2, 3)
    buf.take(10)
    buf.put((0, 0, 1, 0, b"x" * 11, 0), 11)  # over the byte bound
    assert (len(buf), buf.dropped, buf.dropped_bytes) == (0, 3, 15)
    assert buf.queued_bytes == 0


# ------------------------------------------------------------------ exec: no agent, in-process pipeline


@pytest.mark.slow
def test_exec_sdks_sync_async_stream_rows_exact(server, certs, tmp_path, dirs) -> None:
    db = tmp_path / "x.duckdb"
    rep = tmp_path / "hook.jsonl"
    proc, lines = run_hooked(certs, server, tmp_path, {**dirs, "LUMEN_HOOK_REPORT": str(rep)},
                             exec_args=("--db", str(db)))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "lumen hook" not in proc.stderr
    assert [line["call"] for line in lines] == list(ALL_CALLS)
    pid = lines[0]["pid"]
    rows = rows_by_request_id(db)
    assert len(rows) == len(ALL_CALLS)
    for line in lines:
        assert_row(rows[line["request_id"]], line["scenario"], pid)
    # No agent: `exec` hosts the pipeline and the program's hook ships to it.
    [stats] = report(rep)
    assert stats["sink"] == "agent" and stats["dropped"] == stats["faults"] == stats["lost"] == 0
    assert stats["shipped"] == stats["events"] > 0


@pytest.mark.slow
def test_exec_exit_code_and_missing_command(tmp_path, dirs) -> None:
    env = {**os.environ, **dirs}
    r = subprocess.run([LUMEN, "exec", "--", PYTHON, "-c", "import sys; sys.exit(7)"], env=env)
    assert r.returncode == 7
    r = subprocess.run([LUMEN, "exec", "--", "no-such-program-lumen"], env=env, capture_output=True, text=True)
    assert r.returncode == 127 and r.stderr.strip() == "error: command not found: no-such-program-lumen"
    # the program gets the hook and its own arguments untouched; with no agent
    # `lumen-agent exec` stays as its parent (it hosts the pipeline)
    p = subprocess.Popen([LUMEN, "exec", "--", PYTHON, "-c",
                          "import os, sys, lumen_agent.hook as h; print(os.getppid(), h.stats() is not None, "
                          "sys.argv[1:])", "--db", "x"], env=env, stdout=subprocess.PIPE, text=True)
    out, _ = p.communicate(timeout=60)
    assert out.split(" ", 2) == [str(p.pid), "True", "['--db', 'x']\n"]


@pytest.mark.slow
def test_existing_sitecustomize_is_chained(tmp_path, dirs) -> None:
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "sitecustomize.py").write_text("MARK = 'their sitecustomize ran'\n")
    env = {**os.environ, **dirs, "PYTHONPATH": str(theirs)}
    r = subprocess.run([LUMEN, "exec", "--", PYTHON, "-c",
                        "import sitecustomize, lumen_agent.hook as h; print(sitecustomize.MARK, h.stats() is not None)"],
                       env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "their sitecustomize ran True"
    env2 = hook_env(env)
    assert env2["PYTHONPATH"].split(os.pathsep) == [str(site_dir()), str(theirs)]
    # PYTHONPATH alone, without LUMEN_HOOK=1, only chains
    env3 = {**env2, "LUMEN_HOOK": "0"}
    r = subprocess.run([PYTHON, "-c", "import sys, sitecustomize; print(sitecustomize.MARK, "
                        "'lumen_agent.hook.bootstrap' in sys.modules)"], env=env3, capture_output=True, text=True)
    assert r.stdout.strip() == "their sitecustomize ran False"


@pytest.mark.slow
def test_hooked_processes_share_one_database_without_an_agent(server, certs, tmp_path, dirs) -> None:
    """DuckDB has one writer at a time: four hooked programs append to one file
    at once (each retries while another holds it); every row lands."""
    db = tmp_path / "shared.duckdb"
    env = clients.client_env(certs, dirs)
    calls = ("openai.sync.stream", "anthropic.async", "openai.async")
    procs = []
    for i in range(4):
        (tmp_path / f"c{i}").mkdir()
        argv = [LUMEN, "exec", "--db", str(db), "--", PYTHON, str(client_script(tmp_path / f"c{i}")), server.url,
                ",".join(calls)]
        procs.append(subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    # a reader holding the file for a while, as `lumen-agent sql` would
    time.sleep(1.0)
    if db.exists():
        with duckdb.connect(str(db), read_only=True):
            time.sleep(1.5)
    lines = []
    for p in procs:
        out, err = p.communicate(timeout=180)
        assert p.returncode == 0, err[-3000:]
        lines += [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    rows = rows_by_request_id(db)
    assert len(lines) == 12 and len(rows) == 12
    for line in lines:
        assert_row(rows[line["request_id"]], line["scenario"], line["pid"])


# ------------------------------------------------------------------ with a running agent


class Agent:
    def __init__(self, tmp_path: Path, dirs: dict[str, str]) -> None:
        self.db = tmp_path / "agent.duckdb"
        self.env = {**os.environ, **dirs}
        self.log = open(tmp_path / "agent.log", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen([LUMEN, "run", "--capture", "hook", "--db", str(self.db)], env=self.env,
                                     stdout=self.log, stderr=subprocess.STDOUT)
        self.ingest = Path(dirs["LUMEN_RUNTIME_DIR"]) / "ingest.sock"
        self.tmp = tmp_path
        deadline = time.monotonic() + 30
        while not self.ingest.exists():
            assert self.proc.poll() is None, self.log_text()
            assert time.monotonic() < deadline, self.log_text()
            time.sleep(0.05)

    def log_text(self) -> str:
        return (self.tmp / "agent.log").read_text(errors="replace")[-3000:]

    def wait_rows(self, n: int, timeout: float = 20) -> dict[str, dict]:
        deadline = time.monotonic() + timeout
        rows: dict[str, dict] = {}
        while time.monotonic() < deadline:
            try:
                rows = rows_by_request_id(self.db)
            except duckdb.Error:  # the agent is appending right now
                rows = {}
            if len(rows) >= n:
                return rows
            time.sleep(0.2)
        raise AssertionError(f"{len(rows)} rows, wanted {n}\n{self.log_text()}")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(30)
        self.log.close()
        return code


@pytest.mark.slow
def test_with_running_agent_events_go_over_the_ingest_socket(server, certs, tmp_path, dirs) -> None:
    agent = Agent(tmp_path, dirs)
    try:
        rep = tmp_path / "hook.jsonl"
        local_db = tmp_path / "not-used.duckdb"
        proc, lines = run_hooked(certs, server, tmp_path, {**dirs, "LUMEN_HOOK_REPORT": str(rep)},
                                 calls=("openai.sync.stream", "anthropic.async.stream", "openai.async",
                                        "anthropic.sync"),
                                 exec_args=("--db", str(local_db)))
        assert proc.returncode == 0, proc.stderr[-3000:]
        rows = agent.wait_rows(4)
        for line in lines:
            assert_row(rows[line["request_id"]], line["scenario"], line["pid"])
        [stats] = report(rep)
        assert stats["sink"] == "agent" and stats["shipped"] == stats["events"] > 0
        assert stats["stood_aside"] is False  # a hook-only agent: capture_mode "hook"
        assert stats["dropped"] == stats["lost"] == stats["faults"] == 0
        assert not local_db.exists()  # --db is only for when no agent runs
    finally:
        assert agent.stop() == 0, agent.log_text()


# ------------------------------------------------------------------ faults never fail the program


@pytest.mark.slow
@pytest.mark.parametrize("fault", ["agent-socket-garbage", "record", "queue", "unwritable-db"])
def test_faults_in_the_hook_never_fail_the_program(server, certs, tmp_path, dirs, fault) -> None:
    rep = tmp_path / "hook.jsonl"
    env = {**dirs, "LUMEN_HOOK_REPORT": str(rep)}
    exec_args: tuple[str, ...] = ("--db", str(tmp_path / "x.duckdb"))
    if fault == "agent-socket-garbage":
        garbage = tmp_path / "garbage.sock"
        garbage.write_bytes(os.urandom(64))  # not a socket at all
        env.update(LUMEN_HOOK_SOCKET=str(garbage), LUMEN_HOOK_MODE="agent")
    elif fault == "unwritable-db":
        exec_args = ("--db", "/dev/null/cannot/x.duckdb", "--mode", "local")
    else:
        env["HOOK_TEST_FAULT"] = fault
    calls = ("openai.sync.stream", "anthropic.async.stream")
    proc, lines = run_hooked(certs, server, tmp_path, env, calls=calls, exec_args=exec_args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert [line["call"] for line in lines] == list(calls)
    # logged once, not per event
    assert proc.stderr.count("lumen hook:") <= 1, proc.stderr
    if fault == "unwritable-db":
        # `exec` hosts the pipeline, cannot here, says so once and runs the program without the hook.
        assert proc.stderr.count("lumen-agent exec: cannot record") == 1, proc.stderr
        assert report(rep) == []
        return
    [stats] = report(rep)
    if fault == "agent-socket-garbage":
        assert stats["sink"] is None and stats["lost"] == stats["events"] > 0
        assert "events are dropped until one answers" in proc.stderr
    elif fault == "record":
        assert stats["faults"] > 0 and stats["events"] == 0
        assert "recording a TLS call failed" in proc.stderr
    elif fault == "queue":
        assert stats["faults"] > 0
    else:
        raise AssertionError(fault)


# ------------------------------------------------------------------ .pth in another venv


@pytest.mark.slow
def test_install_pth_in_another_venv(tmp_path, dirs) -> None:
    venv = tmp_path / "venv"
    subprocess.run([PYTHON, "-m", "venv", "--without-pip", str(venv)], check=True)
    py = str(venv / "bin" / "python")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "LUMEN_HOOK")}
    env.update(dirs)
    r = subprocess.run([LUMEN, "hook", "install-pth", "--python", py], env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    pth = Path(r.stdout.split(" ", 1)[1].strip())
    assert pth.name == "lumen_agent_hook.pth" and pth.read_text() == pth_line()
    probe = "import sys; print('lumen_agent.hook.bootstrap' in sys.modules)"
    # that venv does not have lumen_agent installed: the hook loads from our tree, on by default
    assert subprocess.run([py, "-c", probe], env=env, capture_output=True, text=True).stdout.strip() == "True"
    off = {**env, "LUMEN_HOOK": "0"}
    assert subprocess.run([py, "-c", probe], env=off, capture_output=True, text=True).stdout.strip() == "False"
    r = subprocess.run([LUMEN, "hook", "uninstall-pth", "--python", py], env=env, capture_output=True, text=True)
    assert r.returncode == 0 and not pth.exists()
    assert subprocess.run([py, "-c", probe], env=env, capture_output=True, text=True).stdout.strip() == "False"


# ------------------------------------------------------------------ next to an eBPF agent


@pytest.mark.slow
def test_hook_stands_aside_when_the_agent_captures_with_ebpf(server, certs, tmp_path, dirs) -> None:
    """An eBPF agent already sees the program's OpenSSL calls: the hook must not
    send them a second time (every call would count twice)."""
    run_dir = Path(dirs["LUMEN_RUNTIME_DIR"])
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(run_dir / "ingest.sock"))
    listener.listen(8)
    listener.settimeout(0.2)
    def publish_status() -> None:  # as a live agent does, about once a second
        (run_dir / "status.json").write_text(json.dumps({
            "pid": os.getpid(), "updated": time.time(), "capture_mode": "ebpf",
            "targets": ["/usr/lib/x86_64-linux-gnu/libssl.so.3 (file, global, 3 processes)"]}))

    publish_status()
    received = bytearray()
    rep = tmp_path / "hook.jsonl"
    db = tmp_path / "x.duckdb"
    argv = [LUMEN, "exec", "--db", str(db), "--", PYTHON, str(client_script(tmp_path)), server.url,
            "openai.sync.stream"]
    proc = subprocess.Popen(argv, env=clients.client_env(certs, {**dirs, "LUMEN_HOOK_REPORT": str(rep)}),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    conns = []
    while proc.poll() is None:
        publish_status()
        try:
            conn, _ = listener.accept()
            conn.settimeout(5)
            conns.append(conn)
        except TimeoutError:
            pass
    for conn in conns:
        while piece := conn.recv(65536):
            received += piece
        conn.close()
    listener.close()
    assert proc.returncode == 0, proc.stderr.read()
    [stats] = report(rep)
    assert stats["stood_aside"] is True and stats["shipped"] == 0 and stats["sink"] is None
    assert bytes(received) == b""
    assert not db.exists()


def test_config_filters_hold_without_an_agent(server, certs, tmp_path, dirs) -> None:
    """A program the configuration excludes keeps working and leaves no row."""
    comm = Path(PYTHON).name[:15]
    (Path(dirs["LUMEN_CONFIG_DIR"]) / "config.toml").write_text(f'[filters]\nexclude_process = ["{comm}"]\n')
    db = tmp_path / "x.duckdb"
    proc, lines = run_hooked(certs, server, tmp_path, dirs, calls=("openai.sync",), exec_args=("--db", str(db)))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert [line["call"] for line in lines] == ["openai.sync"]
    assert not db.exists() or rows_by_request_id(db) == {}
    # The same call with no filter does leave its row.
    (Path(dirs["LUMEN_CONFIG_DIR"]) / "config.toml").unlink()
    proc, lines = run_hooked(certs, server, tmp_path, dirs, calls=("openai.sync",), exec_args=("--db", str(db)))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert list(rows_by_request_id(db)) == [lines[0]["request_id"]]
