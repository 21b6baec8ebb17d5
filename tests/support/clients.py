"""Run real clients against the fake provider, each as its own process.

Every helper comes in two forms: ``start_*`` returns a ``Running`` at once (its
``pid`` is known before the call is made, and ``wait=`` seconds can delay the
first call so a probe can attach), and the plain name runs to completion and
returns a ``ClientResult``(name, argv, pid, returncode, stdout, stderr, seconds).

    curl(url, certs, "openai.chat")               curl --http1.1 -sS, JSON POST
    curl(url, certs, "openai.chat.stream")        curl --http1.1 -sS -N, streaming POST
    curl(url, certs, "openai.chat", http2=True)   curl --http2 (the fake provider spawned with http2=True)
    curl_get(url, certs, "/healthz")              non-LLM traffic
    sdk(url, certs, "anthropic.messages.stream")  python tests/support/sdk_client.py (openai / anthropic SDK)
    node_fetch(url, certs, "openai.chat.stream")  node -e <fetch script>
    node_http2(url, certs, "openai.chat.stream", calls=20, concurrent=True)   Node's http2 module, one session
    run_concurrent(url, certs, procs=20, calls=10)   N processes x M streaming calls at once

``url`` is the server's base, ``https://localhost:PORT``. What each prints:
curl prints the raw response body (``usage_from_body()`` reads usage out of it;
the HTTP status of each transfer goes to stderr, see ``ClientResult.statuses``);
the SDK script prints one JSON line per call with normalised ``usage``;
the Node script prints one JSON line per call with ``status``, ``request_id`` and ``body``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from support import fake_provider as fp

SUPPORT_DIR = Path(__file__).resolve().parent
SDK_SCRIPT = SUPPORT_DIR / "sdk_client.py"

OPENAI_KEY = "sk-test-fake-0000"
ANTHROPIC_KEY = "sk-ant-test-fake-0000"
GOOGLE_KEY = "fake-google-key-0000"
ANTHROPIC_VERSION = "2023-06-01"
PROMPT = "What is the capital of the UK?"
DEFAULT_TIMEOUT = 120.0

# Scenarios the SDK script serves (Gemini has no SDK here: use curl or node;
# Bedrock has its own client, bedrock_client.py).
SDK_SCENARIOS = tuple(s for s in fp.SCENARIOS if s.startswith(("openai.", "anthropic.")))
BEDROCK_SCRIPT = SUPPORT_DIR / "bedrock_client.py"
BEDROCK_SCENARIOS = tuple(s for s in fp.SCENARIOS if s.startswith("bedrock."))
VERTEX_TOKEN = "ya29.fake-vertex-token-0000"
BEDROCK_API_KEY = "bedrock-api-key-fake-0000"
_STATUS_RE = re.compile(r"^lumen-test-status: (\d+)$", re.M)


@dataclass(frozen=True, slots=True)
class ClientResult:
    name: str
    argv: list[str]
    pid: int
    returncode: int
    stdout: str
    stderr: str
    seconds: float

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def json_lines(self) -> list[dict[str, Any]]:
        """The JSON lines the SDK and Node clients print, one per call."""
        return [json.loads(line) for line in self.stdout.splitlines() if line.startswith("{")]

    @property
    def statuses(self) -> list[int]:
        """HTTP status of each transfer (curl writes them to stderr)."""
        return [int(s) for s in _STATUS_RE.findall(self.stderr)]

    def describe(self) -> str:
        return (f"{self.name} pid={self.pid} rc={self.returncode} ({self.seconds:.2f}s)\n"
                f"argv: {self.argv}\nstdout: {self.stdout[-2000:]}\nstderr: {self.stderr[-2000:]}")


@dataclass(slots=True)
class Running:
    """A client process that has been started."""

    name: str
    argv: list[str]
    proc: subprocess.Popen[str]
    started: float = field(default_factory=time.monotonic)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def finish(self, timeout: float = DEFAULT_TIMEOUT) -> ClientResult:
        try:
            out, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, err = self.proc.communicate()
            err += f"\n[killed after {timeout}s]"
        return ClientResult(self.name, self.argv, self.proc.pid, self.proc.returncode, out, err,
                            time.monotonic() - self.started)


def client_env(certs: Any, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment plus what makes every client trust the test CA.

    Real provider credentials are dropped, so no real key can leak into a test.
    """
    env = {k: v for k, v in os.environ.items()
           if k not in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GEMINI_API_KEY", "GOOGLE_API_KEY",
                        "OPENAI_BASE_URL", "ANTHROPIC_BASE_URL", "HTTPS_PROXY", "https_proxy",
                        "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy")}
    env.update(certs.env)
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONWARNINGS"] = "ignore::DeprecationWarning"  # SDK model-deprecation notices
    if extra:
        env.update(extra)
    return env


def _spawn(name: str, argv: list[str], env: Mapping[str, str]) -> Running:
    # errors="replace": a binary body (an AWS event stream) must not break the capture of stdout.
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, errors="replace", env=dict(env))
    return Running(name, argv, proc)


# --------------------------------------------------------------------------------------
# What to send for a scenario
# --------------------------------------------------------------------------------------


def request_for(scenario: str, *, model: str | None = None) -> tuple[str, dict[str, Any], dict[str, str]]:
    """(path with query, JSON body, headers incl. credentials) a raw client sends for ``scenario``."""
    s = fp.SCENARIOS[scenario]
    model = model or s.request_model
    messages = [{"role": "user", "content": PROMPT}]
    json_type = {"Content-Type": "application/json"}
    if s.provider == "openai":
        headers = {**json_type, "Authorization": f"Bearer {OPENAI_KEY}"}
        if s.endpoint == "chat.completions":
            body: dict[str, Any] = {"model": model, "messages": messages}
            if s.streaming:
                body["stream"] = True
                if scenario == "openai.chat.stream":
                    body["stream_options"] = {"include_usage": True}
        elif s.endpoint == "responses":
            body = {"model": model, "input": PROMPT, **({"stream": True} if s.streaming else {})}
        else:
            body = {"model": model, "input": "hello world", "encoding_format": "float"}
        return s.path, body, headers
    if s.provider == "anthropic":
        headers = {**json_type, "x-api-key": ANTHROPIC_KEY, "anthropic-version": ANTHROPIC_VERSION}
        body = {"model": model, "max_tokens": 256, "messages": messages}
        if s.streaming:
            body["stream"] = True
        return s.path, body, headers
    if scenario in ("vertex.rawPredict", "vertex.streamRawPredict"):
        headers = {**json_type, "Authorization": f"Bearer {VERTEX_TOKEN}"}
        body = {"anthropic_version": "vertex-2023-10-16", "max_tokens": 256, "messages": messages}
        if s.streaming:
            body["stream"] = True
        return s.path, body, headers
    if scenario.startswith("vertex."):
        headers = {**json_type, "Authorization": f"Bearer {VERTEX_TOKEN}"}
        return s.path, {"contents": [{"role": "user", "parts": [{"text": PROMPT}]}]}, headers
    if s.provider == "bedrock":  # a Bedrock API key (bearer); boto3 signs with SigV4 instead
        headers = {**json_type, "Authorization": f"Bearer {BEDROCK_API_KEY}"}
        if s.endpoint.startswith("converse"):
            return s.path, {"messages": [{"role": "user", "content": [{"text": PROMPT}]}]}, headers
        return s.path, {"anthropic_version": "bedrock-2023-05-31", "max_tokens": 256, "messages": messages}, headers
    # google
    method = "streamGenerateContent?alt=sse" if s.streaming else "generateContent"
    headers = {**json_type, "x-goog-api-key": GOOGLE_KEY}
    return f"/v1beta/models/{model}:{method}", {"contents": [{"role": "user", "parts": [{"text": PROMPT}]}]}, headers


def _knob_headers(chunks: int | None, encoding: str | None, status: int | None,
                  transfer: str | None, headers: Mapping[str, str] | None) -> dict[str, str]:
    out: dict[str, str] = {}
    if chunks is not None:
        out["x-fake-chunks"] = str(chunks)
    if encoding:
        out["x-fake-encoding"] = encoding
    if status is not None:
        out["x-fake-status"] = str(status)
    if transfer:
        out["x-fake-transfer"] = transfer
    out.update(headers or {})
    return out


# --------------------------------------------------------------------------------------
# boto3 (the real AWS SDK) for Bedrock
# --------------------------------------------------------------------------------------


def bedrock(url: str, certs: Any, scenarios: Sequence[str] = BEDROCK_SCENARIOS, *,
            timeout: float = DEFAULT_TIMEOUT) -> ClientResult:
    """``python tests/support/bedrock_client.py``: one boto3 bedrock-runtime call
    per scenario, fake credentials; one JSON line per call."""
    argv = [sys.executable, str(BEDROCK_SCRIPT), "--url", url, *scenarios]
    env = client_env(certs, {"AWS_ACCESS_KEY_ID": "AKIAFAKEFAKEFAKEFAKE", "AWS_SECRET_ACCESS_KEY": "fake-secret",
                             "AWS_EC2_METADATA_DISABLED": "true", "AWS_CONFIG_FILE": "/dev/null",
                             "AWS_SHARED_CREDENTIALS_FILE": "/dev/null"})
    return _spawn("boto3", argv, env).finish(timeout)


# --------------------------------------------------------------------------------------
# curl
# --------------------------------------------------------------------------------------


def start_curl(url: str, certs: Any, scenario: str | None = "openai.chat", *, calls: int = 1,
               model: str | None = None, path: str | None = None, body: Any = None,
               headers: Mapping[str, str] | None = None, chunks: int | None = None,
               encoding: str | None = None, status: int | None = None, transfer: str | None = None,
               host: str | None = None, compressed: bool | None = None, method: str | None = None,
               env: Mapping[str, str] | None = None, http2: bool = False) -> Running:
    """``curl --http1.1 -sS`` making ``calls`` requests over one keep-alive connection
    (``http2``: ``curl --http2``, the calls as streams of one HTTP/2 connection).

    ``scenario`` picks path, body and credentials (None: give ``path``, e.g. a GET);
    ``host`` (e.g. "api.openai.com") is resolved to 127.0.0.1 with ``--resolve``;
    ``compressed`` (default: when ``encoding`` is set) sends Accept-Encoding and decodes.
    """
    port = int(url.rsplit(":", 1)[1].split("/", 1)[0])
    req_headers: dict[str, str] = {}
    if scenario is not None:
        spath, sbody, req_headers = request_for(scenario, model=model)
        path = path or spath
        body = sbody if body is None else body
    req_headers.update(_knob_headers(chunks, encoding, status, transfer, headers))
    base = f"https://{host}:{port}" if host else url.rstrip("/")
    target = base + (path or "/")
    argv = [shutil.which("curl") or "curl", "--http2" if http2 else "--http1.1", "-sS", "-N", "--max-time", str(int(DEFAULT_TIMEOUT)),
            "-w", "%{stderr}lumen-test-status: %{http_code}\\n"]
    if host:
        argv += ["--resolve", f"{host}:{port}:127.0.0.1"]
    if compressed if compressed is not None else bool(encoding):
        argv.append("--compressed")
    if method:
        argv += ["-X", method]
    for name, value in req_headers.items():
        argv += ["-H", f"{name}: {value}"]
    if body is not None:
        argv += ["--data-binary", body if isinstance(body, str) else json.dumps(body)]
    argv += [target] * calls
    return _spawn(f"curl {scenario or path}", argv, client_env(certs, env))


def curl(url: str, certs: Any, scenario: str | None = "openai.chat", *, timeout: float = DEFAULT_TIMEOUT,
         **kwargs: Any) -> ClientResult:
    return start_curl(url, certs, scenario, **kwargs).finish(timeout)


def curl_get(url: str, certs: Any, path: str = "/healthz", **kwargs: Any) -> ClientResult:
    """A non-LLM request (plain 200 text)."""
    return curl(url, certs, None, path=path, **kwargs)


# --------------------------------------------------------------------------------------
# The openai / anthropic SDKs
# --------------------------------------------------------------------------------------


def start_sdk(url: str, certs: Any, scenario: str, *, calls: int = 1, model: str | None = None,
              headers: Mapping[str, str] | None = None, chunks: int | None = None,
              encoding: str | None = None, status: int | None = None, transfer: str | None = None,
              max_retries: int = 0, wait: float = 0, between: float = 0,
              python: str = sys.executable, env: Mapping[str, str] | None = None,
              http2: bool = False) -> Running:
    """``python sdk_client.py SCENARIO``: one SDK client making ``calls`` calls (one connection;
    ``http2``: an ``httpx.Client(http2=True)`` under the SDK)."""
    if scenario not in SDK_SCENARIOS:
        raise ValueError(f"no SDK client for {scenario!r}")
    argv = [python, str(SDK_SCRIPT), scenario, "--url", url.rstrip("/"), "--calls", str(calls),
            "--max-retries", str(max_retries)]
    if model:
        argv += ["--model", model]
    if wait:
        argv += ["--wait", str(wait)]
    if between:
        argv += ["--between", str(between)]
    if http2:
        argv.append("--http2")
    for name, value in _knob_headers(chunks, encoding, status, transfer, headers).items():
        argv += ["--header", f"{name}: {value}"]
    return _spawn(f"sdk {scenario}", argv, client_env(certs, env))


def sdk(url: str, certs: Any, scenario: str, *, timeout: float = DEFAULT_TIMEOUT, **kwargs: Any) -> ClientResult:
    return start_sdk(url, certs, scenario, **kwargs).finish(timeout)


# --------------------------------------------------------------------------------------
# Node.js fetch
# --------------------------------------------------------------------------------------

NODE_SCRIPT = r"""
const env = process.env;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
(async () => {
  await sleep(Number(env.FAKE_WAIT_MS || 0));
  const calls = Number(env.FAKE_CALLS || 1);
  const headers = JSON.parse(env.FAKE_HEADERS || "{}");
  for (let i = 0; i < calls; i++) {
    const init = { method: env.FAKE_METHOD || "GET", headers };
    if (env.FAKE_BODY !== undefined) init.body = env.FAKE_BODY;
    const res = await fetch(env.FAKE_URL, init);
    const decoder = new TextDecoder();
    let body = "";
    let reads = 0;
    for await (const part of res.body) {
      reads += 1;
      body += decoder.decode(part, { stream: true });
    }
    body += decoder.decode();
    console.log(JSON.stringify({
      call: i,
      status: res.status,
      request_id: res.headers.get("x-request-id") || res.headers.get("request-id"),
      content_type: res.headers.get("content-type"),
      content_encoding: res.headers.get("content-encoding"),
      reads,
      body,
    }));
  }
})().catch((err) => { console.error(err); process.exit(1); });
"""


def start_node_fetch(url: str, certs: Any, scenario: str | None = "openai.chat.stream", *, calls: int = 1,
                     model: str | None = None, path: str | None = None, body: Any = None,
                     headers: Mapping[str, str] | None = None, chunks: int | None = None,
                     encoding: str | None = None, status: int | None = None, transfer: str | None = None,
                     wait: float = 0, node: str | None = None, env: Mapping[str, str] | None = None) -> Running:
    """``node -e <script>``: global fetch (undici), trusting the CA through NODE_EXTRA_CA_CERTS."""
    req_headers: dict[str, str] = {}
    if scenario is not None:
        spath, sbody, req_headers = request_for(scenario, model=model)
        path = path or spath
        body = sbody if body is None else body
    req_headers.update(_knob_headers(chunks, encoding, status, transfer, headers))
    extra = {
        "FAKE_URL": url.rstrip("/") + (path or "/"),
        "FAKE_METHOD": "POST" if body is not None else "GET",
        "FAKE_HEADERS": json.dumps(req_headers),
        "FAKE_CALLS": str(calls),
        "FAKE_WAIT_MS": str(int(wait * 1000)),
    }
    if body is not None:
        extra["FAKE_BODY"] = body if isinstance(body, str) else json.dumps(body)
    extra.update(env or {})
    argv = [node or shutil.which("node") or "node", "-e", NODE_SCRIPT]
    return _spawn(f"node {scenario or path}", argv, client_env(certs, extra))


def node_fetch(url: str, certs: Any, scenario: str | None = "openai.chat.stream", *,
               timeout: float = DEFAULT_TIMEOUT, **kwargs: Any) -> ClientResult:
    return start_node_fetch(url, certs, scenario, **kwargs).finish(timeout)


# --------------------------------------------------------------------------------------
# Node.js http2
# --------------------------------------------------------------------------------------

NODE_HTTP2_SCRIPT = r"""
const http2 = require("http2");
const env = process.env;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
(async () => {
  await sleep(Number(env.FAKE_WAIT_MS || 0));
  const session = http2.connect(env.FAKE_ORIGIN);
  session.on("error", (err) => { console.error(err); process.exit(1); });
  const calls = Number(env.FAKE_CALLS || 1);
  const headers = JSON.parse(env.FAKE_HEADERS || "{}");
  const one = (i) => new Promise((resolve, reject) => {
    const req = session.request({ ":method": env.FAKE_METHOD || "GET", ":path": env.FAKE_PATH, ...headers });
    let head = {};
    let body = "";
    req.setEncoding("utf8");
    req.on("response", (h) => { head = h; });
    req.on("data", (d) => { body += d; });
    req.on("end", () => {
      console.log(JSON.stringify({
        call: i,
        status: head[":status"],
        request_id: head["x-request-id"] || head["request-id"] || head["x-amzn-requestid"] || null,
        content_type: head["content-type"] || null,
        body,
      }));
      resolve();
    });
    req.on("error", reject);
    req.end(env.FAKE_BODY);
  });
  if (env.FAKE_CONCURRENT === "1") {
    await Promise.all([...Array(calls).keys()].map(one));  // all streams of one session at once
  } else {
    for (let i = 0; i < calls; i++) await one(i);
  }
  session.close();
})().catch((err) => { console.error(err); process.exit(1); });
"""


def start_node_http2(url: str, certs: Any, scenario: str | None = "openai.chat.stream", *, calls: int = 1,
                     concurrent: bool = False, path: str | None = None, body: Any = None,
                     headers: Mapping[str, str] | None = None, chunks: int | None = None,
                     encoding: str | None = None, status: int | None = None, wait: float = 0,
                     node: str | None = None, env: Mapping[str, str] | None = None) -> Running:
    """``node -e <script>`` with Node's ``http2`` module: ``calls`` streams on one session
    (``concurrent``: all at once).  Prints one JSON line per call, as node_fetch does."""
    req_headers: dict[str, str] = {}
    if scenario is not None:
        spath, sbody, req_headers = request_for(scenario)
        path = path or spath
        body = sbody if body is None else body
    req_headers.update(_knob_headers(chunks, encoding, status, None, headers))
    extra = {
        "FAKE_ORIGIN": url.rstrip("/"),
        "FAKE_PATH": path or "/",
        "FAKE_METHOD": "POST" if body is not None else "GET",
        "FAKE_HEADERS": json.dumps({k.lower(): v for k, v in req_headers.items()}),
        "FAKE_CALLS": str(calls),
        "FAKE_CONCURRENT": "1" if concurrent else "0",
        "FAKE_WAIT_MS": str(int(wait * 1000)),
    }
    if body is not None:
        extra["FAKE_BODY"] = body if isinstance(body, str) else json.dumps(body)
    extra.update(env or {})
    argv = [node or shutil.which("node") or "node", "-e", NODE_HTTP2_SCRIPT]
    return _spawn(f"node-http2 {scenario or path}", argv, client_env(certs, extra))


def node_http2(url: str, certs: Any, scenario: str | None = "openai.chat.stream", *,
               timeout: float = DEFAULT_TIMEOUT, **kwargs: Any) -> ClientResult:
    return start_node_http2(url, certs, scenario, **kwargs).finish(timeout)


# --------------------------------------------------------------------------------------
# Many at once
# --------------------------------------------------------------------------------------


def start_concurrent(url: str, certs: Any, *, procs: int = 20, calls: int = 10,
                     scenario: str = "openai.chat.stream", client: str = "sdk", **kwargs: Any) -> list[Running]:
    """Start ``procs`` client processes at once, each making ``calls`` calls of ``scenario``.

    ``client`` is "sdk", "curl" or "node"; ``kwargs`` go to its ``start_*`` helper.
    """
    starters = {"sdk": start_sdk, "curl": start_curl, "node": start_node_fetch}
    start = starters[client]
    return [start(url, certs, scenario, calls=calls, **kwargs) for _ in range(procs)]


def run_concurrent(url: str, certs: Any, *, procs: int = 20, calls: int = 10,
                   scenario: str = "openai.chat.stream", client: str = "sdk",
                   timeout: float = 300, **kwargs: Any) -> list[ClientResult]:
    """``start_concurrent`` and wait for all; one ``ClientResult`` per process."""
    running = start_concurrent(url, certs, procs=procs, calls=calls, scenario=scenario, client=client, **kwargs)
    deadline = time.monotonic() + timeout
    return [r.finish(max(1.0, deadline - time.monotonic())) for r in running]


# --------------------------------------------------------------------------------------
# Reading usage out of a raw body (the test's own oracle, independent of lumen_agent)
# --------------------------------------------------------------------------------------


def _objects(body: str) -> list[Any]:
    text = body.strip()
    if not text:
        return []
    if text[0] in "{[" and not text.startswith("data:"):
        parsed = json.loads(text)
        return parsed if isinstance(parsed, list) else [parsed]
    out = []
    for line in text.splitlines():
        if line.startswith("data:"):
            payload = line[5:].strip()
            if payload and payload != "[DONE]":
                out.append(json.loads(payload))
    return out


def usage_from_body(body: str) -> dict[str, int] | None:
    """Normalised usage (``fake_provider.TOKEN_FIELDS``) in a JSON or SSE response body, or None."""
    usage: dict[str, int] | None = None
    for obj in _objects(body):
        if not isinstance(obj, dict):
            continue
        kind = obj.get("type")
        if kind == "message_start":
            usage = _anthropic(obj["message"]["usage"])
        elif kind == "message_delta" and usage is not None:
            delta = obj.get("usage") or {}
            merged = {"input_tokens": usage["input_tokens"] - usage["cache_read_tokens"]
                      - usage["cache_write_tokens"],
                      "cache_read_input_tokens": usage["cache_read_tokens"],
                      "cache_creation_input_tokens": usage["cache_write_tokens"]}
            merged.update({k: v for k, v in delta.items() if v is not None})
            usage = _anthropic(merged)
        elif kind == "message" and obj.get("usage"):
            usage = _anthropic(obj["usage"])
        elif kind == "response.completed":
            usage = _responses(obj["response"]["usage"])
        elif obj.get("object") == "response" and obj.get("usage"):
            usage = _responses(obj["usage"])
        elif obj.get("usageMetadata"):
            m = obj["usageMetadata"]
            thoughts = m.get("thoughtsTokenCount", 0)
            usage = {"input_tokens": m.get("promptTokenCount", 0),
                     "cache_read_tokens": m.get("cachedContentTokenCount", 0), "cache_write_tokens": 0,
                     "output_tokens": m.get("candidatesTokenCount", 0) + thoughts, "reasoning_tokens": thoughts}
        elif isinstance(obj.get("usage"), dict) and "inputTokens" in obj["usage"]:  # Bedrock Converse
            u = obj["usage"]
            read, write = u.get("cacheReadInputTokens", 0), u.get("cacheWriteInputTokens", 0)
            usage = {"input_tokens": u["inputTokens"] + read + write, "cache_read_tokens": read,
                     "cache_write_tokens": write, "output_tokens": u.get("outputTokens", 0), "reasoning_tokens": 0}
        elif isinstance(obj.get("usage"), dict) and "prompt_tokens" in obj["usage"]:
            u = obj["usage"]
            usage = {"input_tokens": u["prompt_tokens"],
                     "cache_read_tokens": (u.get("prompt_tokens_details") or {}).get("cached_tokens", 0),
                     "cache_write_tokens": 0,
                     "output_tokens": u.get("completion_tokens", 0),
                     "reasoning_tokens": (u.get("completion_tokens_details") or {}).get("reasoning_tokens", 0)}
    return usage


def model_from_body(body: str) -> str | None:
    """The model the response names (last one seen)."""
    model = None
    for obj in _objects(body):
        if isinstance(obj, dict):
            inner = obj.get("message") or obj.get("response") or obj
            model = (inner.get("model") if isinstance(inner, dict) else None) or obj.get("model") \
                or obj.get("modelVersion") or model
    return model


def _anthropic(u: Mapping[str, Any]) -> dict[str, int]:
    read = u.get("cache_read_input_tokens") or 0
    write = u.get("cache_creation_input_tokens") or 0
    return {"input_tokens": u.get("input_tokens", 0) + read + write, "cache_read_tokens": read,
            "cache_write_tokens": write, "output_tokens": u.get("output_tokens", 0), "reasoning_tokens": 0}


def _responses(u: Mapping[str, Any]) -> dict[str, int]:
    return {"input_tokens": u["input_tokens"],
            "cache_read_tokens": (u.get("input_tokens_details") or {}).get("cached_tokens", 0),
            "cache_write_tokens": 0, "output_tokens": u["output_tokens"],
            "reasoning_tokens": (u.get("output_tokens_details") or {}).get("reasoning_tokens", 0)}


def expected_usage(scenario: str, **kwargs: Any) -> dict[str, int] | None:
    """``fake_provider.expected()`` cut down to the token fields (None: no usage on the wire)."""
    e = fp.expected(scenario, **kwargs)
    if e["input_tokens"] is None:
        return None
    return {k: e[k] for k in fp.TOKEN_FIELDS}


__all__: Sequence[str] = (
    "ClientResult", "Running", "client_env", "request_for", "start_curl", "curl", "curl_get", "start_sdk", "sdk",
    "start_node_fetch", "node_fetch", "start_node_http2", "node_http2", "start_concurrent", "run_concurrent",
    "usage_from_body", "model_from_body", "expected_usage", "SDK_SCENARIOS", "BEDROCK_SCENARIOS", "bedrock",
)
