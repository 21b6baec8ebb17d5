"""Stream events that cannot carry usage are not JSON-decoded once the model
is known (parsers/providers/base.py ``_may_carry_usage``), and the usage read
from a stream is the same as when every event is decoded."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lumen_agent.parsers.providers import base
from lumen_agent.parsers.providers.openai import ChatCompletionsReader

WIRE = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "wire"


def _data_lines(name: str) -> list[str]:
    return [line[len("data: "):] for line in (WIRE / name).read_text().splitlines() if line.startswith("data: ")]


@pytest.fixture
def decoded(monkeypatch):
    seen: list[str] = []
    real = base.decode_event_data

    def counting(data):
        seen.append(data)
        return real(data)

    monkeypatch.setattr(base, "decode_event_data", counting)
    return seen


def test_openai_chunks_with_null_usage_are_skipped(decoded):
    lines = _data_lines("openai_chat_completions_stream_text.txt")
    assert sum('"usage":null' in line for line in lines) >= 3  # the recording's shape
    reader = ChatCompletionsReader()
    for line in lines:
        reader.feed_sse(None, line)
    usage = reader.result()
    full = ChatCompletionsReader()
    for line in lines:  # every event decoded, as before the skip
        if line != "[DONE]":
            full._take(json.loads(line))
    assert usage == full.result()
    # Only the first chunk (the model is not known yet) and the usage chunk.
    assert len(decoded) == 2
    assert '"usage":{' in decoded[1]


@pytest.mark.parametrize("data", [
    # Groq: the top-level usage is null, the counts are in x_groq.usage.
    '{"model":"m","usage":null,"x_groq":{"usage":{"prompt_tokens":7,"completion_tokens":3}}}',
    '{"model":"m","usage": {"prompt_tokens":7,"completion_tokens":3}}',
    '{"model":"m","usageMetadata":{"promptTokenCount":7}}',
])
def test_events_with_usage_are_decoded(data):
    assert base._may_carry_usage(data)


@pytest.mark.parametrize("data", [
    '{"model":"m","choices":[{"delta":{"content":"hi"}}],"usage":null}',
    '{"model":"m","choices":[{"delta":{"content":"hi"}}],"usage": null}',
    '{"type":"content_block_delta","delta":{"text":"hi"}}',
])
def test_events_without_usage_are_skipped(data):
    assert not base._may_carry_usage(data)


def test_groq_usage_next_to_null_usage_is_read():
    reader = ChatCompletionsReader()
    reader.feed_sse(None, '{"model":"llama-3.1-8b-instant","id":"c1","usage":null}')
    reader.feed_sse(None, '{"model":"llama-3.1-8b-instant","usage":null,'
                          '"x_groq":{"usage":{"prompt_tokens":7,"completion_tokens":3,"total_tokens":10}}}')
    usage = reader.result()
    assert (usage.input_tokens, usage.output_tokens) == (7, 3)
