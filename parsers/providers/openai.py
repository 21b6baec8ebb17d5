"""OpenAI-shaped usage: Chat Completions (and legacy Completions), Responses,
Embeddings.  Also read for every OpenAI-compatible server (Azure, OpenRouter,
Mistral, DeepSeek, xAI, Groq, Ollama's /v1, gateways).

OpenAI's ``prompt_tokens`` already include ``prompt_tokens_details.cached_tokens``
and ``completion_tokens`` include ``completion_tokens_details.reasoning_tokens``,
so they map onto ``Usage`` unchanged.  Two compatible dialects differ:

- DeepSeek reports cache hits as ``prompt_cache_hit_tokens`` (part of
  ``prompt_tokens``);
- xAI reports ``reasoning_tokens`` *next to* ``completion_tokens``
  (``total_tokens = prompt + completion + reasoning``).  We recognise that
  from the totals, not from the host, so it also works behind gateways.

What the bill depends on besides tokens: ``service_tier`` (``default``,
``flex``, ``priority``...) names the tier that priced the call; Responses
output items of type ``web_search_call`` are billed per call; OpenRouter's
``usage.cost`` is what it charged (credits in USD), which is the cost even
when a server-side tool makes it far above the token price.

The search-preview chat models (``gpt-4o-search-preview``,
``gpt-4o-mini-search-preview`` and their snapshots) search the web on every
completion: one search per call, priced by the request's
``web_search_options.search_context_size`` (default ``medium``).
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

from lumen_agent.parsers.providers.base import BaseReader, charge, dig, service_tier
from lumen_agent.parsers.usage import Usage

# More web search calls than this in one response is not a real bill.
MAX_OUTPUT_ITEMS = 100_000

# Chat models that run one web search per completion.
_SEARCH_PREVIEW_MODEL = re.compile(r"-search-preview(?:-\d{4}-\d{2}-\d{2})?$", re.IGNORECASE)
DEFAULT_SEARCH_CONTEXT = "medium"


def searches_every_call(model: str | None) -> bool:
    """The chat model performs one web search per completion."""
    return bool(model) and _SEARCH_PREVIEW_MODEL.search(model) is not None


def _output_with_reasoning(
    prompt: int | None, completion: int | None, reasoning: int | None, total: int | None
) -> int | None:
    """All generated tokens, adding reasoning when the totals show it was reported apart."""
    if completion is None or not reasoning or prompt is None or total is None:
        return completion
    if total == prompt + completion + reasoning:
        return completion + reasoning
    return completion


class ChatCompletionsReader(BaseReader):
    """``/chat/completions`` and ``/completions``.

    A stream carries usage only in its final chunk, and only when the request
    set ``stream_options.include_usage`` (Mistral and OpenRouter send it
    anyway, Groq puts it in ``x_groq.usage``).  Without it the result is
    ``usage_missing`` with no tokens: never estimated.
    """

    __slots__ = ("_charged", "_request_model", "_search_context", "_tier")

    def __init__(self, fallback_model: str | None = None, *, request_model: str | None = None,
                 search_context_size: str | None = None) -> None:
        super().__init__(fallback_model)
        self._tier: str | None = None
        self._charged = None
        self._request_model = request_model
        self._search_context = search_context_size

    def _take(self, obj: Any) -> None:
        if not isinstance(obj, dict):
            return
        self._note_identity(obj.get("model"), obj.get("id"))
        self._tier = service_tier(obj.get("service_tier")) or self._tier
        usage = obj.get("usage")
        if isinstance(usage, dict) and "cost" in usage:
            self._charged = charge(usage.get("cost"))
        for usage in (obj.get("usage"), dig(obj, "x_groq", "usage")):
            if isinstance(usage, dict):
                self._take_usage(usage)

    def _take_usage(self, usage: dict[str, Any]) -> None:
        self._note("prompt", usage.get("prompt_tokens"))
        self._note("completion", usage.get("completion_tokens"))
        self._note("total", usage.get("total_tokens"))
        self._note("cached", dig(usage, "prompt_tokens_details", "cached_tokens"))
        self._note("cache_write", dig(usage, "prompt_tokens_details", "cache_write_tokens"))
        self._note("reasoning", dig(usage, "completion_tokens_details", "reasoning_tokens"))
        self._note("deepseek_hit", usage.get("prompt_cache_hit_tokens"))

    def result(self) -> Usage:
        prompt, completion = self._get("prompt"), self._get("completion")
        reasoning = self._get("reasoning")
        cached = self._get("cached")
        search = {}
        if searches_every_call(self._model or self._request_model):
            search = {"web_search_requests": 1, "search_context_size": self._search_context or DEFAULT_SEARCH_CONTEXT}
        usage = self._usage(
            input_tokens=prompt,
            output_tokens=_output_with_reasoning(prompt, completion, reasoning, self._get("total")),
            cache_read_tokens=cached if cached is not None else self._get("deepseek_hit"),
            cache_write_tokens=self._get("cache_write"),
            reasoning_tokens=reasoning,
            reasoning_reported=True,
            service_tier=self._tier,
            charged_usd=self._charged,
            **search,
        )
        if search and usage.usage_missing:  # no usage, no evidence the call completed: no fee
            return dataclasses.replace(usage, web_search_requests=None, search_context_size=None)
        return usage


class ResponsesReader(BaseReader):
    """``/responses``: the body is a response object; a stream ends with a
    ``response.completed`` (or ``.incomplete`` / ``.failed``) event whose
    ``response`` carries the usage."""

    __slots__ = ("_tier",)

    def __init__(self, fallback_model: str | None = None) -> None:
        super().__init__(fallback_model)
        self._tier: str | None = None

    def _take(self, obj: Any) -> None:
        if not isinstance(obj, dict):
            return
        response = obj.get("response")
        if not isinstance(response, dict):
            response = obj  # non-streaming body: the response object itself
        self._note_identity(response.get("model"), response.get("id"))
        self._tier = service_tier(response.get("service_tier")) or self._tier
        output = response.get("output")
        if isinstance(output, list) and len(output) <= MAX_OUTPUT_ITEMS and "usage" in response:
            # The final response object lists every output item.
            searches = sum(1 for item in output if isinstance(item, dict) and item.get("type") == "web_search_call")
            self._note("web_search", searches)
        usage = response.get("usage")
        if isinstance(usage, dict):
            self._note("input", usage.get("input_tokens"))
            self._note("output", usage.get("output_tokens"))
            self._note("total", usage.get("total_tokens"))
            self._note("cached", dig(usage, "input_tokens_details", "cached_tokens"))
            self._note("reasoning", dig(usage, "output_tokens_details", "reasoning_tokens"))

    def result(self) -> Usage:
        prompt, output = self._get("input"), self._get("output")
        reasoning = self._get("reasoning")
        return self._usage(
            input_tokens=prompt,
            output_tokens=_output_with_reasoning(prompt, output, reasoning, self._get("total")),
            cache_read_tokens=self._get("cached"),
            reasoning_tokens=reasoning,
            reasoning_reported=True,
            service_tier=self._tier,
            web_search_requests=self._get("web_search"),
        )


class EmbeddingsReader(BaseReader):
    """``/embeddings``: only ``usage.prompt_tokens``; nothing is generated."""

    __slots__ = ()

    def _take(self, obj: Any) -> None:
        if not isinstance(obj, dict):
            return
        self._note_identity(obj.get("model"), obj.get("id"))
        usage = obj.get("usage")
        if isinstance(usage, dict):
            self._note("prompt", usage.get("prompt_tokens"))

    def result(self) -> Usage:
        prompt = self._get("prompt")
        return self._usage(input_tokens=prompt, output_tokens=None if prompt is None else 0,
                           reasoning_reported=True)
