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

``None`` means "not reported", which is different from zero.
"""

from __future__ import annotations

from dataclasses import dataclass


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
    # A count was reported but is not a plausible one (negative, absurd, not
    # a number): it reads as not reported, and the call must not be priced
    # from the other counts alone.
    usage_implausible: bool = False

    @property
    def has_tokens(self) -> bool:
        return self.input_tokens is not None or self.output_tokens is not None
