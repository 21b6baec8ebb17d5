"""A real SDK client: calls the fake provider with the ``openai`` or ``anthropic`` package.

    python tests/support/sdk_client.py SCENARIO --url https://localhost:PORT [--calls M]
        [--header 'x-fake-chunks: 100'] [--model M] [--max-retries N] [--wait S] [--http2]

SCENARIO is a ``fake_provider.SCENARIOS`` name served by an SDK:
openai.chat, openai.chat.stream, openai.chat.stream_no_usage, openai.responses,
openai.responses.stream, openai.embeddings, anthropic.messages, anthropic.messages.stream.

All calls of one run share one SDK client, so they share its keep-alive connection.
Prints one JSON line per call:

    {"scenario": ..., "call": 0, "ok": true, "model": ..., "request_id": ...,
     "chunks": <text deltas seen, streams>, "usage": {input_tokens, cache_read_tokens,
     cache_write_tokens, output_tokens, reasoning_tokens} or null, "raw_usage": {...}}

and, for a failed call, ``"ok": false, "status": <HTTP status>, "error": ...``.
Exits 0 when every call succeeded, 1 otherwise. The credentials are obvious fakes.
Trust comes from the environment (SSL_CERT_FILE, see certs.Certs.env).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

OPENAI_KEY = "sk-test-fake-0000"
ANTHROPIC_KEY = "sk-ant-test-fake-0000"

DEFAULT_MODELS = {
    "openai.chat": "gpt-4o-mini",
    "openai.chat.stream": "gpt-4o-mini",
    "openai.chat.stream_no_usage": "gpt-4o-mini",
    "openai.responses": "gpt-5-mini",
    "openai.responses.stream": "gpt-5-mini",
    "openai.embeddings": "text-embedding-3-small",
    "anthropic.messages": "claude-sonnet-4-5",
    "anthropic.messages.stream": "claude-sonnet-4-5",
}
MESSAGES = [{"role": "user", "content": "What is the capital of the UK?"}]


def _get(obj: Any, *names: str) -> Any:
    for name in names:
        if obj is None:
            return None
        obj = getattr(obj, name, None)
    return obj


def _dump(obj: Any) -> Any:
    return obj.model_dump(mode="json") if hasattr(obj, "model_dump") else obj


def openai_usage(usage: Any, kind: str) -> dict[str, int] | None:
    if usage is None:
        return None
    if kind == "chat":
        return {
            "input_tokens": usage.prompt_tokens,
            "cache_read_tokens": _get(usage, "prompt_tokens_details", "cached_tokens") or 0,
            "cache_write_tokens": 0,
            "output_tokens": usage.completion_tokens,
            "reasoning_tokens": _get(usage, "completion_tokens_details", "reasoning_tokens") or 0,
        }
    if kind == "responses":
        return {
            "input_tokens": usage.input_tokens,
            "cache_read_tokens": _get(usage, "input_tokens_details", "cached_tokens") or 0,
            "cache_write_tokens": 0,
            "output_tokens": usage.output_tokens,
            "reasoning_tokens": _get(usage, "output_tokens_details", "reasoning_tokens") or 0,
        }
    return {  # embeddings
        "input_tokens": usage.prompt_tokens,
        "cache_read_tokens": 0,
        "cache_write_tokens": 0,
        "output_tokens": 0,
        "reasoning_tokens": 0,
    }


def anthropic_usage(usage: Any) -> dict[str, int]:
    read = usage.cache_read_input_tokens or 0
    write = usage.cache_creation_input_tokens or 0
    return {
        "input_tokens": usage.input_tokens + read + write,  # Anthropic's input_tokens exclude the cache
        "cache_read_tokens": read,
        "cache_write_tokens": write,
        "output_tokens": usage.output_tokens,
        "reasoning_tokens": 0,
    }


def call_openai(client: Any, scenario: str, model: str, headers: dict[str, str]) -> dict[str, Any]:
    if scenario == "openai.chat":
        r = client.chat.completions.create(model=model, messages=MESSAGES, extra_headers=headers)
        return {"model": r.model, "request_id": r._request_id, "usage": openai_usage(r.usage, "chat"),
                "raw_usage": _dump(r.usage), "text": r.choices[0].message.content}
    if scenario.startswith("openai.chat.stream"):
        include = scenario == "openai.chat.stream"
        kwargs = {"stream_options": {"include_usage": True}} if include else {}
        stream = client.chat.completions.create(model=model, messages=MESSAGES, stream=True,
                                                extra_headers=headers, **kwargs)
        usage, model_seen, chunks, text = None, None, 0, []
        for chunk in stream:
            model_seen = chunk.model
            if chunk.usage is not None:
                usage = chunk.usage
            for choice in chunk.choices:
                if choice.delta.content:
                    chunks += 1
                    text.append(choice.delta.content)
        request_id = stream.response.headers.get("x-request-id")
        return {"model": model_seen, "request_id": request_id, "usage": openai_usage(usage, "chat"),
                "raw_usage": _dump(usage), "chunks": chunks, "text": "".join(text)}
    if scenario == "openai.responses":
        r = client.responses.create(model=model, input="What is the capital of the UK?", extra_headers=headers)
        return {"model": r.model, "request_id": r._request_id, "usage": openai_usage(r.usage, "responses"),
                "raw_usage": _dump(r.usage), "text": r.output_text}
    if scenario == "openai.responses.stream":
        stream = client.responses.create(model=model, input="What is the capital of the UK?", stream=True,
                                         extra_headers=headers)
        final, chunks, types = None, 0, []
        for event in stream:
            types.append(event.type)
            if event.type == "response.output_text.delta":
                chunks += 1
            elif event.type == "response.completed":
                final = event.response
        if final is None or types[0] != "response.created":
            raise RuntimeError(f"unexpected event sequence: {types[:3]} ... {types[-3:]}")
        return {"model": final.model, "request_id": stream.response.headers.get("x-request-id"),
                "usage": openai_usage(final.usage, "responses"), "raw_usage": _dump(final.usage),
                "chunks": chunks, "text": final.output_text}
    if scenario == "openai.embeddings":
        r = client.embeddings.create(model=model, input="hello world", extra_headers=headers)
        return {"model": r.model, "request_id": r._request_id, "usage": openai_usage(r.usage, "embeddings"),
                "raw_usage": _dump(r.usage), "dimensions": len(r.data[0].embedding)}
    raise SystemExit(f"unknown openai scenario {scenario!r}")


def call_anthropic(client: Any, scenario: str, model: str, headers: dict[str, str]) -> dict[str, Any]:
    if scenario == "anthropic.messages":
        m = client.messages.create(model=model, max_tokens=256, messages=MESSAGES, extra_headers=headers)
        return {"model": m.model, "request_id": m._request_id, "usage": anthropic_usage(m.usage),
                "raw_usage": _dump(m.usage), "text": m.content[0].text}
    if scenario == "anthropic.messages.stream":
        chunks = 0
        with client.messages.stream(model=model, max_tokens=256, messages=MESSAGES, extra_headers=headers) as s:
            for _text in s.text_stream:
                chunks += 1
            final = s.get_final_message()
            request_id = s.response.headers.get("request-id")
        return {"model": final.model, "request_id": request_id, "usage": anthropic_usage(final.usage),
                "raw_usage": _dump(final.usage), "chunks": chunks,
                "text": "".join(b.text for b in final.content if b.type == "text")}
    raise SystemExit(f"unknown anthropic scenario {scenario!r}")


def _httpx_module(scenario: str) -> Any:
    """The httpx the SDK is built on: recent SDKs moved to the ``httpx2`` fork."""
    sdk = __import__("openai" if scenario.startswith("openai") else "anthropic")
    base = sys.modules[sdk.__name__ + "._base_client"]
    return getattr(base, "httpx2", None) or base.httpx


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="call the fake provider with a real SDK")
    parser.add_argument("scenario", choices=sorted(DEFAULT_MODELS))
    parser.add_argument("--url", required=True, help="https://localhost:PORT (no /v1)")
    parser.add_argument("--calls", type=int, default=1)
    parser.add_argument("--model")
    parser.add_argument("--header", action="append", default=[], help="'name: value', sent with every call")
    parser.add_argument("--max-retries", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=60)
    parser.add_argument("--wait", type=float, default=0, help="seconds to sleep before the first call")
    parser.add_argument("--between", type=float, default=0, help="seconds to sleep between calls")
    parser.add_argument("--http2", action="store_true", help="the SDK on an httpx client with http2=True")
    args = parser.parse_args(argv)

    headers = {}
    for h in args.header:
        name, _, value = h.partition(":")
        headers[name.strip()] = value.strip()
    model = args.model or DEFAULT_MODELS[args.scenario]
    url = args.url.rstrip("/")

    extra: dict[str, Any] = {}
    if args.http2:
        extra["http_client"] = _httpx_module(args.scenario).Client(http2=True, timeout=args.timeout)
    if args.scenario.startswith("openai"):
        import openai

        client: Any = openai.OpenAI(api_key=OPENAI_KEY, base_url=f"{url}/v1", max_retries=args.max_retries,
                                    timeout=args.timeout, **extra)
        call, status_error = call_openai, openai.APIStatusError
    else:
        import anthropic

        client = anthropic.Anthropic(api_key=ANTHROPIC_KEY, base_url=url, max_retries=args.max_retries,
                                     timeout=args.timeout, **extra)
        call, status_error = call_anthropic, anthropic.APIStatusError

    if args.wait:
        time.sleep(args.wait)
    failures = 0
    for i in range(args.calls):
        if i and args.between:
            time.sleep(args.between)
        line: dict[str, Any] = {"scenario": args.scenario, "call": i}
        try:
            line.update(ok=True, **call(client, args.scenario, model, headers))
        except status_error as exc:
            failures += 1
            line.update(ok=False, status=exc.status_code, error=type(exc).__name__,
                        request_id=exc.response.headers.get("x-request-id") or exc.response.headers.get("request-id"))
        except Exception as exc:  # noqa: BLE001 - report, keep going, exit non-zero
            failures += 1
            line.update(ok=False, status=None, error=f"{type(exc).__name__}: {exc}")
        print(json.dumps(line), flush=True)
    client.close()
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
