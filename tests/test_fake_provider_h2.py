"""The fake provider over HTTP/2 (ALPN h2): real HTTP/2 clients (curl --http2, the
SDKs on an httpx client with http2=True, Node's http2 module) read the same bodies
and usage as over HTTP/1.1."""

from __future__ import annotations

import json
import socket
import ssl

import pytest
from support import clients
from support import fake_provider as fp

pytest.importorskip("h2")


@pytest.fixture(scope="module")
def server(certs, tmp_path_factory):
    proc = fp.spawn(certs, workdir=tmp_path_factory.mktemp("fake-provider-h2"), http2=True)
    yield proc
    assert proc.stop() == 0


def ok(result: clients.ClientResult) -> clients.ClientResult:
    assert result.returncode == 0, result.describe()
    return result


def test_negotiates_h2_and_still_serves_http11(server, certs):
    ctx = ssl.create_default_context(cafile=str(certs.ca))
    ctx.set_alpn_protocols(["h2", "http/1.1"])
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost") as tls:
            assert tls.selected_alpn_protocol() == "h2"
    r = ok(clients.curl(server.url, certs, "openai.chat"))  # --http1.1
    assert clients.usage_from_body(r.stdout) == clients.expected_usage("openai.chat")
    assert server.served()[-1]["transfer"] == "length"


@pytest.mark.parametrize("scenario,encoding", [("openai.chat", None), ("openai.chat.stream", "gzip"),
                                               ("anthropic.messages.stream", "br"),
                                               ("gemini.streamGenerateContent", None)])
def test_curl_http2(server, certs, scenario, encoding):
    r = ok(clients.curl(server.url, certs, scenario, encoding=encoding, http2=True))
    assert r.statuses == [200]
    assert clients.usage_from_body(r.stdout) == clients.expected_usage(scenario)
    last = server.served()[-1]
    assert (last["http_version"], last["scenario"], last["encoding"]) == ("2", scenario, encoding or "identity")


def test_curl_http2_rate_limited(server, certs):
    r = ok(clients.curl(server.url, certs, "openai.chat", status=429, http2=True))
    assert r.statuses == [429]
    assert json.loads(r.stdout)["error"]["code"] == "rate_limit_exceeded"


@pytest.mark.parametrize("scenario", ["openai.chat", "openai.chat.stream", "anthropic.messages",
                                      "anthropic.messages.stream"])
def test_sdk_on_http2_client(server, certs, scenario):
    r = ok(clients.sdk(server.url, certs, scenario, calls=2, http2=True))
    lines = r.json_lines()
    assert [line["usage"] for line in lines] == [clients.expected_usage(scenario)] * 2
    served = {s["request_id"]: s for s in server.served()}
    assert all(served[line["request_id"]]["http_version"] == "2" for line in lines)
    # Both calls on one connection, as two streams.
    assert len({served[line["request_id"]]["connection_id"] for line in lines}) == 1


def test_node_http2_concurrent_streams(server, certs):
    r = ok(clients.node_http2(server.url, certs, "openai.chat.stream", calls=20, concurrent=True))
    lines = r.json_lines()
    assert len(lines) == 20 and all(line["status"] == 200 for line in lines)
    assert all(clients.usage_from_body(line["body"]) == clients.expected_usage("openai.chat.stream")
               for line in lines)
    served = [s for s in server.served() if s["request_id"] in {line["request_id"] for line in lines}]
    assert len({s["connection_id"] for s in served}) == 1
    assert len({s["stream_id"] for s in served}) == 20
