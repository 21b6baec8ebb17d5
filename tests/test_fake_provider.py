"""The fake provider speaks the real wire formats: real clients (curl, the openai and
anthropic SDKs, Node.js fetch) call it over TLS and read the exact usage we expect."""

from __future__ import annotations

import json
import socket
import ssl
import subprocess

import pytest
from support import certs as certs_mod
from support import clients
from support import fake_provider as fp

SDK_SCENARIOS = clients.SDK_SCENARIOS
ALL_SCENARIOS = tuple(fp.SCENARIOS)
# Bodies curl can print as text (the Bedrock streams are binary event streams: boto3 reads those).
CURL_SCENARIOS = tuple(s for s in fp.SCENARIOS
                       if s not in ("bedrock.converse-stream", "bedrock.invoke-with-response-stream"))
# The sync openai SDK stops reading a chat stream at `data: [DONE]` and closes the
# response before the chunked body's last chunk, so httpcore drops the connection:
# each such call opens a new TLS connection (real client behaviour, not a server bug).
SYNC_OPENAI_SDK_DROPS_CONNECTION = {"openai.chat.stream", "openai.chat.stream_no_usage"}


def served_by_request_id(server: fp.FakeProviderProcess) -> dict[str, dict]:
    return {e["request_id"]: e for e in server.served() if e.get("request_id")}


def assert_ok(result: clients.ClientResult) -> None:
    assert result.returncode == 0, result.describe()


# ------------------------------------------------------------------ the table itself


def test_expected_table_is_consistent() -> None:
    for name, e in fp.EXPECTED.items():
        s = fp.SCENARIOS[name]
        assert e["model"] == fp.response_model(s.request_model, s.endpoint)
        if e["input_tokens"] is None:
            assert name == "openai.chat.stream_no_usage"
            continue
        assert e["cache_read_tokens"] + e["cache_write_tokens"] <= e["input_tokens"]
        assert e["reasoning_tokens"] <= e["output_tokens"]
    a = fp.EXPECTED["anthropic.messages"]
    # Anthropic's wire input_tokens exclude cache reads and writes; the row's include them.
    assert a["wire_usage"]["input_tokens"] == 25
    assert a["input_tokens"] == 25 + 2000 + 700
    assert a["wire_usage"]["cache_creation"] == {"ephemeral_5m_input_tokens": 500, "ephemeral_1h_input_tokens": 200}
    assert fp.expected("openai.chat.stream", chunks=100)["output_tokens"] == 100
    assert fp.expected("openai.responses.stream", chunks=10)["output_tokens"] == 128 + 10
    assert fp.expected("openai.chat", usage={"input": 50, "cache_read": 10})["input_tokens"] == 50
    assert fp.expected("openai.chat", request_model="gpt-4o")["model"] == "gpt-4o-2024-08-06"
    with pytest.raises(ValueError):
        fp.expected("openai.chat", usage={"input": 5, "cache_read": 10})


def test_certificate_names_and_chain(certs: certs_mod.Certs) -> None:
    text = subprocess.run(["openssl", "x509", "-in", str(certs.cert), "-noout", "-ext", "subjectAltName"],
                          capture_output=True, text=True, check=True).stdout
    for name in ("localhost", "api.openai.com", "api.anthropic.com", "generativelanguage.googleapis.com"):
        assert f"DNS:{name}" in text
    assert "IP Address:127.0.0.1" in text
    verify = subprocess.run(["openssl", "verify", "-CAfile", str(certs.ca), str(certs.cert)],
                            capture_output=True, text=True)
    assert verify.returncode == 0, verify.stderr
    again = certs_mod.ensure_certs(certs.directory)  # made once, reused
    assert again.cert.read_bytes() == certs.cert.read_bytes()
    assert set(certs.env) >= {"SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "NODE_EXTRA_CA_CERTS"}


# ------------------------------------------------------------------ the SDKs


@pytest.mark.parametrize("scenario", SDK_SCENARIOS)
def test_sdk_reads_expected_usage_over_one_connection(server, certs, scenario: str) -> None:
    result = clients.sdk(server.url, certs, scenario, calls=2)
    assert_ok(result)
    lines = result.json_lines()
    assert len(lines) == 2
    want = fp.EXPECTED[scenario]
    for line in lines:
        assert line["ok"] is True
        assert line["model"] == want["model"]
        assert line["usage"] == clients.expected_usage(scenario)
        assert line["request_id"]
        if want["streaming"]:
            assert line["chunks"] == want["chunks"]
    served = served_by_request_id(server)
    first, second = (served[line["request_id"]] for line in lines)
    assert first["scenario"] == second["scenario"] == scenario
    if scenario in SYNC_OPENAI_SDK_DROPS_CONNECTION:
        return
    # keep-alive: both calls of one SDK client went over the same TLS connection
    assert first["connection_id"] == second["connection_id"]
    assert (first["request_on_connection"], second["request_on_connection"]) == (1, 2)


def test_sdk_stream_with_many_chunks(server, certs) -> None:
    result = clients.sdk(server.url, certs, "anthropic.messages.stream", chunks=100)
    assert_ok(result)
    [line] = result.json_lines()
    assert line["chunks"] == 100
    assert line["usage"] == clients.expected_usage("anthropic.messages.stream", chunks=100)
    assert line["usage"]["output_tokens"] == 100


@pytest.mark.parametrize("scenario", ["openai.chat.stream", "openai.responses", "anthropic.messages.stream"])
def test_sdk_decodes_gzip(server, certs, scenario: str) -> None:
    result = clients.sdk(server.url, certs, scenario, encoding="gzip")
    assert_ok(result)
    [line] = result.json_lines()
    assert line["usage"] == clients.expected_usage(scenario)
    assert served_by_request_id(server)[line["request_id"]]["encoding"] == "gzip"


@pytest.mark.parametrize("scenario,error", [("openai.chat", "RateLimitError"),
                                            ("anthropic.messages.stream", "RateLimitError")])
def test_sdk_sees_provider_errors(server, certs, scenario: str, error: str) -> None:
    result = clients.sdk(server.url, certs, scenario, status=429)
    assert result.returncode == 1
    [line] = result.json_lines()
    assert (line["ok"], line["status"], line["error"]) == (False, 429, error)
    assert served_by_request_id(server)[line["request_id"]]["status"] == 429


def test_sdk_usage_override(server, certs) -> None:
    override = {"input": 5000, "cache_read": 4096, "output": 700, "reasoning": 600}
    knob = ",".join(f"{k}={v}" for k, v in override.items())
    result = clients.sdk(server.url, certs, "openai.responses.stream", headers={"x-fake-usage": knob})
    assert_ok(result)
    [line] = result.json_lines()
    assert line["usage"] == clients.expected_usage("openai.responses.stream", usage=override)
    assert line["usage"]["reasoning_tokens"] == 600


# ------------------------------------------------------------------ curl


@pytest.mark.parametrize("scenario", CURL_SCENARIOS)
def test_curl_reads_expected_usage(server, certs, scenario: str) -> None:
    result = clients.curl(server.url, certs, scenario)
    assert_ok(result)
    assert result.statuses == [200]
    assert clients.usage_from_body(result.stdout) == clients.expected_usage(scenario)
    named = None if scenario == "bedrock.converse" else fp.EXPECTED[scenario]["model"]  # Converse names no model
    assert clients.model_from_body(result.stdout) == named


def test_boto3_reads_expected_usage(server, certs) -> None:
    """The real AWS SDK parses every Bedrock answer (event-stream CRCs included)
    and reads the usage the scenario promises."""
    pytest.importorskip("boto3")
    result = clients.bedrock(server.url, certs)
    assert_ok(result)
    for line in result.json_lines():
        e, u = fp.EXPECTED[line["scenario"]], line["usage"]
        if "inputTokens" in u:  # Converse / ConverseStream metadata
            got = (u["inputTokens"] + u["cacheReadInputTokens"] + u["cacheWriteInputTokens"], u["outputTokens"])
        elif "inputTokenCount" in u:  # InvokeModelWithResponseStream invocation metrics
            got = (u["inputTokenCount"] + e["cache_read_tokens"] + e["cache_write_tokens"], u["outputTokenCount"])
        else:  # InvokeModel: the Anthropic body
            got = (u["input_tokens"] + u["cache_read_input_tokens"] + u["cache_creation_input_tokens"],
                   u["output_tokens"])
        assert got == (e["input_tokens"], e["output_tokens"]), line
    assert [line["scenario"] for line in result.json_lines()] == list(clients.BEDROCK_SCENARIOS)


def test_curl_keep_alive_and_real_host_name(server, certs) -> None:
    result = clients.curl(server.url, certs, "openai.chat.stream", calls=3, host="api.openai.com")
    assert_ok(result)
    assert result.statuses == [200, 200, 200]
    assert result.stdout.count("data: [DONE]") == 3
    mine = [e for e in server.served() if e["client"][1] == server.served()[-1]["client"][1]]
    assert [e["request_on_connection"] for e in mine] == [1, 2, 3]


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "br", "zstd"])
@pytest.mark.parametrize("scenario", ["openai.chat.stream", "anthropic.messages", "gemini.streamGenerateContent"])
def test_curl_content_encodings(server, certs, scenario: str, encoding: str) -> None:
    result = clients.curl(server.url, certs, scenario, encoding=encoding)
    assert_ok(result)
    assert clients.usage_from_body(result.stdout) == clients.expected_usage(scenario)
    assert server.served()[-1]["encoding"] == encoding


def test_encoding_needs_accept_encoding(server, certs) -> None:
    result = clients.curl(server.url, certs, "openai.chat", encoding="gzip", compressed=False)
    assert_ok(result)
    assert json.loads(result.stdout)["usage"]["prompt_tokens"] == 1300
    assert server.served()[-1]["encoding"] == "identity"


@pytest.mark.parametrize("transfer", ["chunked", "length", "close"])
@pytest.mark.parametrize("scenario", ["openai.chat", "openai.responses.stream"])
def test_curl_transfer_modes(server, certs, scenario: str, transfer: str) -> None:
    result = clients.curl(server.url, certs, scenario, transfer=transfer, encoding="gzip")
    assert_ok(result)
    assert clients.usage_from_body(result.stdout) == clients.expected_usage(scenario)
    entry = server.served()[-1]
    assert (entry["transfer"], entry["encoding"]) == (transfer, "gzip")


def test_curl_stream_chunk_count(server, certs) -> None:
    result = clients.curl(server.url, certs, "openai.chat.stream", chunks=100)
    assert_ok(result)
    deltas = [line for line in result.stdout.splitlines() if '"delta":{"content"' in line]
    assert len(deltas) == 100
    assert clients.usage_from_body(result.stdout) == clients.expected_usage("openai.chat.stream", chunks=100)


def test_stream_without_include_usage_has_no_usage(server, certs) -> None:
    result = clients.curl(server.url, certs, "openai.chat.stream_no_usage")
    assert_ok(result)
    assert clients.usage_from_body(result.stdout) is None
    assert "usage" not in result.stdout
    assert result.stdout.rstrip().endswith("data: [DONE]")


@pytest.mark.parametrize("scenario,shape", [
    ("openai.chat", lambda b: b["error"]["code"] == "rate_limit_exceeded"),
    ("anthropic.messages", lambda b: b["type"] == "error" and b["error"]["type"] == "rate_limit_error"),
    ("gemini.generateContent", lambda b: b["error"]["status"] == "RESOURCE_EXHAUSTED"),
])
def test_curl_error_status(server, certs, scenario: str, shape) -> None:
    result = clients.curl(server.url, certs, scenario, status=429)
    assert_ok(result)
    assert result.statuses == [429]
    assert shape(json.loads(result.stdout))


def test_missing_credentials_get_401(server, certs) -> None:
    result = clients.curl(server.url, certs, None, path="/v1/chat/completions", body={"model": "gpt-4o-mini"})
    assert result.statuses == [401]
    assert json.loads(result.stdout)["error"]["code"] == "invalid_api_key"


def test_non_llm_paths_answer_plain_text(server, certs) -> None:
    for path in ("/healthz", "/", "/v1/models"):
        result = clients.curl_get(server.url, certs, path)
        assert_ok(result)
        assert (result.statuses, result.stdout) == ([200], "ok\n")
        entry = server.served()[-1]
        assert entry["scenario"] is None and entry.get("non_llm") is True


def test_abort_mid_stream(server, certs) -> None:
    result = clients.curl(server.url, certs, "anthropic.messages.stream", headers={"x-fake-abort-after": "3"})
    assert result.returncode == 18, result.describe()  # CURLE_PARTIAL_FILE
    assert "message_stop" not in result.stdout
    assert server.served()[-1]["aborted"] is True


def test_server_never_negotiates_h2(server, certs) -> None:
    ctx = ssl.create_default_context(cafile=str(certs.ca))
    ctx.set_alpn_protocols(["h2", "http/1.1"])
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost") as tls:
            assert tls.selected_alpn_protocol() == "http/1.1"
    result = clients.curl(server.url, certs, "openai.chat")  # curl offers h2 only without --http1.1
    assert_ok(result)


# ------------------------------------------------------------------ Node.js fetch


@pytest.mark.parametrize("scenario", ["openai.chat", "openai.chat.stream", "openai.responses.stream",
                                      "anthropic.messages.stream", "gemini.streamGenerateContent"])
def test_node_fetch_reads_expected_usage(server, certs, scenario: str) -> None:
    result = clients.node_fetch(server.url, certs, scenario, calls=2)
    assert_ok(result)
    lines = result.json_lines()
    assert len(lines) == 2
    for line in lines:
        assert line["status"] == 200
        assert clients.usage_from_body(line["body"]) == clients.expected_usage(scenario)
    if not scenario.startswith("gemini"):
        served = served_by_request_id(server)
        assert [served[line["request_id"]]["scenario"] for line in lines] == [scenario] * 2
    # No keep-alive assertion: undici often opens a second connection for a call made
    # right after the previous body was read (the first socket is reused later).


def test_node_fetch_gzip_and_plain_get(server, certs) -> None:
    result = clients.node_fetch(server.url, certs, "anthropic.messages.stream", encoding="gzip", chunks=50)
    assert_ok(result)
    [line] = result.json_lines()
    assert line["content_encoding"] == "gzip"
    assert clients.usage_from_body(line["body"]) == clients.expected_usage("anthropic.messages.stream", chunks=50)
    result = clients.node_fetch(server.url, certs, None, path="/healthz")
    assert_ok(result)
    assert result.json_lines()[0]["body"] == "ok\n"


# ------------------------------------------------------------------ in process, and many at once


def test_in_process_server(certs) -> None:
    with fp.FakeProvider(certs.cert, certs.key) as server:
        result = clients.curl(server.url, certs, "anthropic.messages")
        assert_ok(result)
        assert clients.usage_from_body(result.stdout) == clients.expected_usage("anthropic.messages")
        assert [e["scenario"] for e in server.served] == ["anthropic.messages"]


def _check_concurrent(results: list[clients.ClientResult], procs: int, calls: int, scenario: str) -> None:
    assert len({r.pid for r in results}) == procs
    want = clients.expected_usage(scenario)
    for r in results:
        assert_ok(r)
        lines = r.json_lines()
        assert len(lines) == calls, r.describe()
        assert all(line["ok"] and line["usage"] == want for line in lines)


def test_concurrent_clients_small(server, certs) -> None:
    results = clients.run_concurrent(server.url, certs, procs=4, calls=3, scenario="openai.chat.stream")
    _check_concurrent(results, 4, 3, "openai.chat.stream")


@pytest.mark.slow
def test_concurrent_clients_20_by_10(server, certs) -> None:
    results = clients.run_concurrent(server.url, certs, procs=20, calls=10, scenario="anthropic.messages.stream")
    _check_concurrent(results, 20, 10, "anthropic.messages.stream")


def test_timing_knobs(server, certs) -> None:
    result = clients.curl(server.url, certs, "openai.chat.stream", chunks=5,
                          headers={"x-fake-ttft-ms": "200", "x-fake-delay-ms": "50"})
    assert_ok(result)
    entry = server.served()[-1]
    # role chunk, 5 deltas, stop chunk, usage chunk, [DONE]: 8 delays between 9 events
    assert entry["ts_end"] - entry["ts_start"] >= 0.2 + 8 * 0.05 - 0.02
    assert result.seconds >= 0.6
    assert clients.usage_from_body(result.stdout) == clients.expected_usage("openai.chat.stream", chunks=5)
