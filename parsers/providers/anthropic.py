"""Anthropic Messages usage (api.anthropic.com, and the same body shape from
Bedrock InvokeModel, Vertex rawPredict and Anthropic-compatible servers).

Anthropic's ``input_tokens`` EXCLUDE ``cache_read_input_tokens`` and
``cache_creation_input_tokens``; we add them back so ``input_tokens`` counts
the whole prompt.  ``cache_creation.ephemeral_5m_input_tokens`` and
``ephemeral_1h_input_tokens`` split the writes by cache lifetime.  Thinking
tokens are part of ``output_tokens`` and not reported apart.

Streaming: ``message_start.message.usage`` has the input and cache counts
(and a provisional ``output_tokens``); ``message_delta.usage`` has the
cumulative final ``output_tokens`` and may repeat the input fields.  The
latest reported value of each field wins.

Context compaction (beta) adds ``usage.iterations``: one entry per billed
sampling iteration (``compaction``, ``message``), while the top-level counts
are only the last iteration.  The bill is the sum of the iterations, cache
reads included, so when they are reported they make the totals and the
cost is priced per iteration.  ``usage.server_tool_use.web_search_requests``
counts searches billed per request; ``usage.service_tier`` names the tier
(``standard``, ``priority``, ``batch``).
"""

from __future__ import annotations

from typing import Any

from lumen_agent.parsers.providers.base import BaseReader, dig, plus, service_tier, token_count
from lumen_agent.parsers.usage import TokenParts, Usage

# More iterations than this in one response is not a real bill.
MAX_ITERATIONS = 1024


def _iteration(item: Any) -> TokenParts | None:
    if not isinstance(item, dict):
        return None
    counts = {k: token_count(item.get(k)) for k in (
        "input_tokens", "output_tokens", "cache_read_input_tokens", "cache_creation_input_tokens")}
    if counts["input_tokens"] is None and counts["output_tokens"] is None:
        return None
    read = counts["cache_read_input_tokens"] or 0
    write = counts["cache_creation_input_tokens"] or 0
    write_1h = token_count(dig(item, "cache_creation", "ephemeral_1h_input_tokens")) or 0
    if not write:
        write = write_1h + (token_count(dig(item, "cache_creation", "ephemeral_5m_input_tokens")) or 0)
    return TokenParts(
        input_tokens=(counts["input_tokens"] or 0) + read + write,
        output_tokens=counts["output_tokens"] or 0,
        cache_read_tokens=read,
        cache_write_tokens=write,
        cache_write_1h_tokens=min(write_1h, write),
    )


class MessagesReader(BaseReader):
    __slots__ = ("_iterations", "_tier")

    def __init__(self, fallback_model: str | None = None) -> None:
        super().__init__(fallback_model)
        self._iterations: tuple[TokenParts, ...] | None = None
        self._tier: str | None = None

    def _take(self, obj: Any) -> None:
        if not isinstance(obj, dict):
            return
        message = obj.get("message")  # message_start wraps the message
        if not isinstance(message, dict):
            message = obj  # non-streaming body, or message_delta
        self._note_identity(message.get("model"), message.get("id"))
        usage = message.get("usage")
        if not isinstance(usage, dict):
            return
        self._note("input", usage.get("input_tokens"))
        self._note("output", usage.get("output_tokens"))
        self._note("cache_read", usage.get("cache_read_input_tokens"))
        self._note("cache_write", usage.get("cache_creation_input_tokens"))
        creation = usage.get("cache_creation")
        if isinstance(creation, dict):
            self._note("write_5m", creation.get("ephemeral_5m_input_tokens"))
            self._note("write_1h", creation.get("ephemeral_1h_input_tokens"))
        self._note("web_search", dig(usage, "server_tool_use", "web_search_requests"))
        self._tier = service_tier(usage.get("service_tier")) or self._tier
        iterations = usage.get("iterations")
        if isinstance(iterations, list) and 0 < len(iterations) <= MAX_ITERATIONS:
            parts = tuple(p for p in map(_iteration, iterations) if p is not None)
            if parts:  # cumulative like the rest: the latest list wins
                self._iterations = parts

    def result(self) -> Usage:
        bill = {"service_tier": self._tier, "web_search_requests": self._get("web_search")}
        if self._iterations is not None:
            its = self._iterations
            return self._usage(
                input_tokens=sum(p.input_tokens for p in its),
                output_tokens=sum(p.output_tokens for p in its),
                cache_read_tokens=sum(p.cache_read_tokens for p in its),
                cache_write_tokens=sum(p.cache_write_tokens for p in its),
                cache_write_1h_tokens=sum(p.cache_write_1h_tokens for p in its),
                iterations=its,
                **bill,
            )
        read = self._get("cache_read")
        write = self._get("cache_write")
        write_5m, write_1h = self._get("write_5m"), self._get("write_1h")
        if write is None and (write_5m is not None or write_1h is not None):
            write = (write_5m or 0) + (write_1h or 0)
        return self._usage(
            input_tokens=plus(self._get("input"), read, write),
            output_tokens=self._get("output"),
            cache_read_tokens=read,
            cache_write_tokens=write,
            cache_write_1h_tokens=write_1h,
            **bill,
        )
