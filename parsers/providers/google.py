"""Gemini ``generateContent`` / ``streamGenerateContent`` usage (Gemini API
and Vertex AI).

``usageMetadata.promptTokenCount`` INCLUDES ``cachedContentTokenCount``;
``thoughtsTokenCount`` is SEPARATE from ``candidatesTokenCount``, so output =
candidates + thoughts.  ``toolUsePromptTokenCount`` (e.g. search results fed
back to the model) is also outside ``promptTokenCount`` and billed as input,
so it is added to input.  Every stream chunk carries cumulative usage: the
latest wins.  The JSON mapping of the protobuf omits zero counts, so a
missing candidates or thoughts count next to a reported prompt means zero.

``promptTokensDetails`` and ``cacheTokensDetails`` split the prompt and the
cached part by modality (``TEXT``, ``IMAGE``, ``AUDIO``, ``VIDEO``); the
audio counts are kept because audio input is priced above the rest.

The service tier that served the call (``standard``, ``flex``, ``priority``)
is the ``x-gemini-service-tier`` response header: a request for priority
that exceeded its limit is served, and billed, at standard.

Grounding with Google Search: a candidate's ``groundingMetadata`` lists the
``webSearchQueries`` the model ran.  Their count is ``web_search_requests``
(the latest chunk that lists any wins: a stream sends the list once, in a
late chunk); the price row says whether Google bills each query (Gemini 3)
or once per grounded prompt (Gemini 2.x).

The model comes from ``modelVersion``, else from the URL (``models/NAME:...``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lumen_agent.parsers.providers.base import (
    BaseReader,
    decode_event_data,
    plus,
    service_tier,
    token_count,
)
from lumen_agent.parsers.usage import Usage

# Candidates looked at per chunk (candidateCount is at most 8) and queries
# counted per candidate: past these a body is not a real response.
MAX_CANDIDATES = 64
MAX_SEARCH_QUERIES = 10_000


def _search_queries(candidates: Any) -> int | None:
    """The web search queries the chunk's candidates list; None when none
    carries grounding metadata with queries."""
    if not isinstance(candidates, list):
        return None
    total = None
    for candidate in candidates[:MAX_CANDIDATES]:
        # dig(candidate, "groundingMetadata", "webSearchQueries"), inline: every chunk has a candidate.
        grounding = candidate.get("groundingMetadata") if isinstance(candidate, dict) else None
        queries = grounding.get("webSearchQueries") if isinstance(grounding, dict) else None
        if isinstance(queries, list) and queries:
            total = (total or 0) + min(len(queries), MAX_SEARCH_QUERIES)
    return total


def _modality_count(details: Any, modality: str) -> int | None:
    """The token count of one modality in a ``*TokensDetails`` list; 0 when
    the list is there without it, None when there is no list."""
    if not isinstance(details, list):
        return None
    total = 0
    for item in details:
        if isinstance(item, dict) and item.get("modality") == modality:
            total += token_count(item.get("tokenCount")) or 0
    return total


# (key, usageMetadata field) of the plain counts, read from every chunk.
_USAGE_FIELDS = (("prompt", "promptTokenCount"), ("cached", "cachedContentTokenCount"),
                 ("candidates", "candidatesTokenCount"), ("thoughts", "thoughtsTokenCount"),
                 ("tool_prompt", "toolUsePromptTokenCount"))


class GeminiReader(BaseReader):
    __slots__ = ("_tier",)

    def __init__(self, fallback_model: str | None = None) -> None:
        super().__init__(fallback_model)
        self._tier: str | None = None

    def feed_headers(self, headers: Mapping[str, str]) -> None:
        tier = service_tier(headers.get("x-gemini-service-tier"))
        if tier is not None:
            self._tier = tier.removeprefix("service_tier_")  # SERVICE_TIER_PRIORITY -> priority

    def feed_sse(self, event: str | None, data: str) -> None:
        # The base skips events without usage once the model is known; a
        # chunk with the search queries must be read whatever else it has.
        if isinstance(data, str) and "webSearchQueries" in data:
            obj = decode_event_data(data)
            if obj is not None:
                self._take(obj)
            return
        super().feed_sse(event, data)

    def ignores_sse_data(self, raw: bytes) -> bool:
        return raw.find(b"webSearchQueries") < 0 and super().ignores_sse_data(raw)

    def _take(self, obj: Any) -> None:
        if not isinstance(obj, dict):
            return
        self._note_identity(obj.get("modelVersion"), obj.get("responseId"))
        searches = _search_queries(obj.get("candidates"))
        if searches is not None:
            self._note("web_search", searches)
        usage = obj.get("usageMetadata")
        if not isinstance(usage, dict):
            return
        self._note_fields(usage, _USAGE_FIELDS)
        self._note("prompt_audio", _modality_count(usage.get("promptTokensDetails"), "AUDIO"))
        self._note("cached_audio", _modality_count(usage.get("cacheTokensDetails"), "AUDIO"))

    def result(self) -> Usage:
        prompt = self._get("prompt")
        candidates, thoughts = self._get("candidates"), self._get("thoughts")
        if candidates is None and thoughts is None:
            output = None if prompt is None else 0
        else:
            output = (candidates or 0) + (thoughts or 0)
        return self._usage(
            input_tokens=plus(prompt, self._get("tool_prompt")),
            output_tokens=output,
            cache_read_tokens=self._get("cached"),
            reasoning_tokens=thoughts,
            reasoning_reported=True,
            input_audio_tokens=self._get("prompt_audio"),
            cache_read_audio_tokens=self._get("cached_audio"),
            service_tier=self._tier,
            web_search_requests=self._get("web_search"),
        )
