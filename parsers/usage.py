"""What a provider's response says about the tokens a call used, normalised.

Every provider reports usage its own way.  Provider modules translate it to
this one shape, following DESIGN.md section 3:

- ``input_tokens`` counts all prompt tokens, cache reads and cache writes
  included;
- ``cache_read_tokens`` and ``cache_write_tokens`` are parts of it;
  ``cache_write_1h_tokens`` is the part of the writes billed at the one-hour
  rate (Anthropic);
- ``output_tokens`` counts all generated tokens, reasoning included;
  ``reasoning_tokens`` is part of it.

``None`` means the usage is missing (``usage_missing``), or a part the API
never reports apart (Anthropic's thinking tokens).  A part the provider does
not have for a call that reported usage is 0, not None (cache writes on
OpenAI, cache reads without a cache), so ``input - cache_read - cache_write``
is never NULL on a row with usage.

Beyond the token parts, a response may say more about the bill:

- ``iterations``: Anthropic context compaction bills each sampling iteration
  (the compaction and the message); the top-level counts are only the last
  one.  When present, the call is priced as the sum of its iterations;
- ``input_audio_tokens`` / ``cache_read_audio_tokens``: the audio parts of
  the input and of the cache reads (Gemini prices audio above text);
- ``service_tier``: the tier the response names (``flex``, ``priority``,
  ``batch``...), priced from the row's tier rates;
- ``web_search_requests``: server-side searches, billed per request (or,
  where the price row says so, once per call that searched: Gemini 2.x
  grounding);
- ``search_context_size``: ``low``/``medium``/``high`` from the request's
  ``web_search_options`` (OpenAI search-preview chat models price the
  search by it);
- ``charged_usd``: what the provider says it charged (OpenRouter
  ``usage.cost``): that is the cost, whatever the token price says.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal


@dataclass(frozen=True, slots=True)
class TokenParts:
    """The token counts of one billed sampling iteration (normalised as Usage)."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    cache_write_1h_tokens: int = 0


@dataclass(frozen=True, slots=True)
class Usage:
    model: str | None = None
    response_id: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_read_tokens: int | None = None
    cache_write_tokens: int | None = None
    cache_write_1h_tokens: int | None = None
    reasoning_tokens: int | None = None
    # The response carried no usage (e.g. an OpenAI stream requested without
    # stream_options.include_usage): tokens stay NULL, never invented.
    usage_missing: bool = False
    iterations: tuple[TokenParts, ...] | None = None
    input_audio_tokens: int | None = None
    cache_read_audio_tokens: int | None = None
    service_tier: str | None = None
    web_search_requests: int | None = None
    search_context_size: str | None = None
    charged_usd: Decimal | None = None
    # A count was reported but is not a plausible one (negative, absurd, not
    # a number): it reads as not reported, and the call must not be priced
    # from the other counts alone.
    usage_implausible: bool = False

    @property
    def has_tokens(self) -> bool:
        return self.input_tokens is not None or self.output_tokens is not None
