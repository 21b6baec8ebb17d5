"""What every provider module shares: the request description, the reader
protocol, and the defensive plumbing that turns odd JSON into "not reported".

A usage reader is fed the decoded pieces of one response (a whole JSON body,
SSE events, or NDJSON objects) and hands back one normalised ``Usage``.
Readers are sans-I/O and never raise anything but ``UsageError`` (a
``ParseError``): values of the wrong type, negative counts and missing fields
are treated as not reported, and SSE events whose data is not JSON are
skipped.  After a ``UsageError`` the reader's state is unchanged, so the
caller may keep feeding it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Protocol, runtime_checkable

from lumen_agent.parsers.errors import ParseError
from lumen_agent.parsers.usage import Usage

# No single API call reports this many tokens: the largest context windows
# are ~10 million tokens, so 1e9 leaves two orders of magnitude of headroom
# while keeping any cost (at <= $10,000 per million tokens) far inside the
# DECIMAL(18,8) cost column.  Used for the rows too (pipeline/bounds.py).
MAX_PLAUSIBLE_TOKENS = 1_000_000_000

# Counts above this are not real token usage (the reason is with the constant).
MAX_TOKEN_COUNT = MAX_PLAUSIBLE_TOKENS

# Model names in the wild are under 100 characters; 256 keeps long
# fine-tune and deployment names whole, and a hostile 10 KB name is cut
# to it (not dropped: the row still says which model it claimed).
MAX_NAME_LENGTH = 256


class UsageError(ParseError):
    """Input a reader cannot take at all (SSE data that is not text)."""


@dataclass(frozen=True, slots=True)
class RequestInfo:
    # openai, anthropic, google, bedrock, azure, ollama, mistral, deepseek,
    # xai, groq, openrouter, openai-compatible
    provider: str
    # chat.completions, completions, responses, embeddings, messages,
    # generateContent, streamGenerateContent, converse, converse-stream,
    # invoke, invoke-with-response-stream, chat, generate, embed; and the
    # batch results downloads files.content, messages.batches.results
    endpoint: str
    request_model: str | None
    streaming: bool  # the request asked for a stream
    include_usage: bool | None  # OpenAI chat stream: stream_options.include_usage
    # The host name (or an Azure deployment path) named the provider; when it
    # did not, the response headers may (served_by.py).
    host_named: bool = field(default=False, compare=False)
    # Chat Completions web_search_options.search_context_size (low, medium,
    # high; medium when the options leave it out): it prices the search of
    # OpenAI's search-preview models.  Only this enum is read from the body.
    search_context_size: str | None = None
    # Batch results downloads: the file or batch id the URL names.
    batch_ref: str | None = None


@runtime_checkable
class UsageReader(Protocol):
    def feed_json(self, body: Any) -> None: ...

    def feed_sse(self, event: str | None, data: str) -> None: ...

    def ignores_sse_data(self, raw: bytes) -> bool: ...

    def feed_ndjson(self, obj: Any) -> None: ...

    def feed_headers(self, headers: Mapping[str, str]) -> None: ...

    def result(self) -> Usage: ...


def token_count(value: Any) -> int | None:
    """A JSON token count, or None when it is not a plausible one."""
    if type(value) is int:  # the common case first (a bool's type is bool, not int)
        return value if 0 <= value <= MAX_TOKEN_COUNT else None
    if isinstance(value, bool):
        return None
    if isinstance(value, float):
        if not value.is_integer():  # also rejects NaN and infinities
            return None
        value = int(value)
    if isinstance(value, int) and 0 <= value <= MAX_TOKEN_COUNT:
        return value
    return None


def name(value: Any) -> str | None:
    """A model name or id: a non-empty string cut to a sane length, else None."""
    if isinstance(value, str) and value:
        return value[:MAX_NAME_LENGTH]
    return None


def dig(obj: Any, *keys: str) -> Any:
    """``obj[k1][k2]...`` through dicts only; None as soon as a step is missing."""
    for key in keys:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(key)
    return obj


def decode_event_data(data: Any) -> Any:
    """The JSON value of one SSE event's data; None for ``[DONE]``, empty data,
    and data that is not JSON (a keep-alive, a proxy's note).

    One odd event must not cost the usage in the stream's final event, so it
    is skipped, not an error.
    """
    if not isinstance(data, str):
        raise UsageError(f"SSE data must be text, not {type(data).__name__}")
    text = data.strip()
    if not text or text == "[DONE]":
        return None
    # json.loads without its wrapper (once per event read): the stripped text
    # has no whitespace around it, so one value that ends where the text
    # ends is exactly what json.loads accepts; StopIteration: no value at all.
    try:
        obj, end = _scan_json(text, 0)
    except (StopIteration, ValueError, RecursionError):
        return None
    return obj if end == len(text) else None


_scan_json = json.JSONDecoder().scan_once


# How an OpenAI-shaped stream chunk says it carries no usage: with
# stream_options.include_usage every chunk but the last has ``"usage":null``
# (the openai SDK's servers send it compact, json.dumps with a space).
_NULL_USAGE = ('"usage":null', '"usage": null')


def _may_carry_usage(data: str) -> bool:
    """The event's text names usage other than as ``"usage": null``.

    Substring counts only (no decoding): a text delta saying "usage" inside
    a JSON string has its quotes escaped, so it never matches a null form and
    the event is decoded, which is merely slower, never wrong."""
    if "Usage" in data:  # any capitalised field naming usage: always decoded
        return True
    mentions = data.count("usage")
    if not mentions:
        return False
    return mentions != data.count(_NULL_USAGE[0]) + data.count(_NULL_USAGE[1])


_NULL_USAGE_RAW = tuple(form.encode() for form in _NULL_USAGE)


def may_carry_usage_raw(raw: bytes) -> bool:
    """``_may_carry_usage`` of the text ``raw`` decodes to (UTF-8, errors
    replaced), read from the bytes.

    Every pattern is ASCII, and that decoding turns each ASCII byte into the
    same character and nothing else into an ASCII one, so each count is the
    same in the bytes as in the text.  Ordered for the common events: one
    scan when nothing says ``sage`` (a text delta), two when each ``sage``
    is the one of a compact ``"usage":null`` (an OpenAI chunk).  No pattern
    overlaps itself, and each null form holds one ``usage`` and so one
    ``sage``, which a ``Usage`` cannot share."""
    sage = raw.count(b"sage")
    if not sage:
        return False
    compact = raw.count(_NULL_USAGE_RAW[0])
    if compact == sage:
        return False
    mentions = raw.count(b"usage")
    # Some "sage" outside a "usage": Usage, or a word such as message.
    if sage != mentions and raw.find(b"Usage") >= 0:
        return True
    if not mentions:
        return False
    return mentions != compact + raw.count(_NULL_USAGE_RAW[1])


def service_tier(value: Any) -> str | None:
    """A service tier name as the response gives it (lowercase), or None."""
    if isinstance(value, str) and 0 < len(value) <= 32:
        return value.strip().lower() or None
    return None


# A charge above this for one call is not a real bill (nor a DECIMAL(18,8)).
MAX_CHARGE_USD = Decimal(1_000_000)


def charge(value: Any) -> Decimal | None:
    """A USD amount the provider says it charged, or None when implausible."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return None
    try:
        amount = Decimal(str(value))
    except ArithmeticError:
        return None
    if not amount.is_finite() or amount < 0 or amount > MAX_CHARGE_USD:
        return None
    return amount


def plus(total: int | None, *parts: int | None) -> int | None:
    """``total`` plus the parts that were reported; None when total was not."""
    if total is None:
        return None
    return total + sum(p for p in parts if p is not None)


class BaseReader:
    """Shared plumbing: every feed ends in ``_take`` with one decoded JSON value.

    Subclasses record raw counts with ``_note`` (latest reported value wins,
    which is right for every cumulative streaming format we read) and build
    the normalised ``Usage`` in ``result``.
    """

    __slots__ = ("_counts", "_fallback_model", "_model", "_rejected", "_response_id")

    def __init__(self, fallback_model: str | None = None) -> None:
        self._counts: dict[str, int] = {}
        self._rejected = False  # a count was present but not plausible
        self._model: str | None = None
        self._response_id: str | None = None
        # The model named by the request URL, for APIs whose responses name none.
        self._fallback_model = fallback_model

    def feed_json(self, body: Any) -> None:
        if isinstance(body, list):
            # Gemini streamGenerateContent without alt=sse: one JSON array of chunks.
            for item in body:
                self._take(item)
        else:
            self._take(body)

    def feed_sse(self, event: str | None, data: str) -> None:
        # The event name is not needed: every provider repeats the event type
        # inside the data (Anthropic "type", OpenAI Responses "type").
        if self._model is not None and isinstance(data, str) and not _may_carry_usage(data):
            # Once the model is known, only events that carry usage matter
            # (every provider names it so); skipping the JSON decoding of
            # the text deltas makes long streams several times cheaper.
            return
        obj = decode_event_data(data)
        if obj is not None:
            self._take(obj)

    def ignores_sse_data(self, raw: bytes) -> bool:
        """``feed_sse`` of the data ``raw`` decodes to would change nothing,
        whatever the event's name: the caller may count the event and drop
        it undecoded (most events of a stream, once the model is known)."""
        return self._model is not None and not may_carry_usage_raw(raw)

    def feed_ndjson(self, obj: Any) -> None:
        self._take(obj)

    def result(self) -> Usage:
        raise NotImplementedError

    def _take(self, obj: Any) -> None:
        raise NotImplementedError

    def _note(self, key: str, value: Any) -> None:
        # token_count's common cases, inline: a plausible int; nothing reported.
        if type(value) is int and 0 <= value <= MAX_TOKEN_COUNT:
            self._counts[key] = value
            return
        if value is None:
            return
        count = token_count(value)
        if count is not None:
            self._counts[key] = count
        else:
            self._rejected = True

    def _note_fields(self, source: dict[str, Any], fields: tuple[tuple[str, str], ...]) -> None:
        """``_note(key, source.get(name))`` for each ``(key, name)``, in one
        call (for counts read from every chunk of a stream)."""
        counts = self._counts
        for key, name in fields:
            value = source.get(name)
            if type(value) is int and 0 <= value <= MAX_TOKEN_COUNT:
                counts[key] = value
            elif value is not None:
                self._note(key, value)

    def _note_identity(self, model: Any, response_id: Any) -> None:
        # Latest non-empty wins: Azure streams open with a content-filter chunk
        # whose model and id are empty strings.
        self._model = name(model) or self._model
        self._response_id = name(response_id) or self._response_id

    def _get(self, key: str) -> int | None:
        return self._counts.get(key)

    def feed_headers(self, headers: Mapping[str, str]) -> None:
        """The response headers (lowercase names), before any body: most
        providers put nothing about usage there."""

    def _usage(
        self,
        *,
        input_tokens: int | None = None,
        output_tokens: int | None = None,
        cache_read_tokens: int | None = None,
        cache_write_tokens: int | None = None,
        cache_write_1h_tokens: int | None = None,
        reasoning_tokens: int | None = None,
        reasoning_reported: bool = False,
        **bill: Any,
    ) -> Usage:
        """The normalised usage.  When the response reported usage, a part it
        does not have (cache writes on OpenAI, cache reads without a cache,
        reasoning when ``reasoning_reported`` says the API reports it apart)
        is 0, not None: None means the usage itself is missing."""
        missing = input_tokens is None and output_tokens is None
        if not missing:
            cache_read_tokens = cache_read_tokens or 0
            cache_write_tokens = cache_write_tokens or 0
            cache_write_1h_tokens = cache_write_1h_tokens or 0
            if reasoning_reported:
                reasoning_tokens = reasoning_tokens or 0
            if "web_search_requests" in bill:
                bill["web_search_requests"] = bill["web_search_requests"] or 0
        return Usage(
            model=self._model or self._fallback_model,
            response_id=self._response_id,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            cache_read_tokens=cache_read_tokens,
            cache_write_tokens=cache_write_tokens,
            cache_write_1h_tokens=cache_write_1h_tokens,
            reasoning_tokens=reasoning_tokens,
            usage_missing=missing,
            **bill,
            usage_implausible=self._rejected,
        )


class NoUsageReader(BaseReader):
    """For endpoints whose responses carry no usage we know how to read."""

    __slots__ = ()

    def _take(self, obj: Any) -> None:
        if isinstance(obj, dict):
            self._note_identity(obj.get("model"), obj.get("id"))

    def result(self) -> Usage:
        return self._usage()
