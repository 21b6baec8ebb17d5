"""What a call cost: normalised token usage x a price row, plus what the
response says about the bill.

Token counts follow parsers/usage.py (DESIGN.md section 3): ``input_tokens``
includes the cache reads and cache writes, ``cache_write_1h_tokens`` is part of
``cache_write_tokens``, and ``output_tokens`` includes reasoning tokens.

The bill, in order:

- a provider that states its charge (OpenRouter ``usage.cost``) is believed:
  that is ``cost_usd``; the token-priced figure is kept apart;
- Anthropic compaction iterations are priced one by one (each has its own
  long-context tier) and summed;
- the service tier the response names (``flex``, ``priority``, ``batch``)
  takes the row's tier rates; a tier the row has no rates for (or
  ``default``/``standard``/``auto``) is priced at the standard rates;
- audio input is priced at the row's audio rates where it has them;
- per-request fees (web searches) are added at the row's $ per 1,000: per
  search, or once per call that searched where the row's unit is
  ``prompt`` (Gemini 2.x grounding), at the request's search context size
  where the row prices sizes apart (OpenAI search-preview models).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal

from lumen_agent.parsers.usage import TokenParts, Usage
from lumen_agent.pricing.table import PriceRow, PriceTier

MILLION = Decimal(1_000_000)
THOUSAND = Decimal(1_000)
QUANTUM = Decimal("0.00000001")  # DECIMAL(18,8) in llm_calls.cost_usd


@dataclass(frozen=True, slots=True)
class Priced:
    cost_usd: Decimal | None  # what the call cost: the stated charge, else token_cost_usd
    token_cost_usd: Decimal | None  # tokens x the price row, plus per-request fees
    charged_usd: Decimal | None  # what the provider said it charged, quantised
    price_id: str | None
    unpriced: bool


def _quantize(value: Decimal) -> Decimal:
    return value.quantize(QUANTUM, rounding=ROUND_HALF_EVEN)


def _prices(row: PriceRow, input_tokens: int) -> PriceRow | PriceTier:
    """The tier whose threshold the call's input exceeds (highest such), else the row.

    A long-context tier prices the whole call, as Anthropic and Gemini bill it.
    """
    chosen: PriceRow | PriceTier = row
    for tier in row.tiers:  # ascending thresholds
        if input_tokens > tier.above_input_tokens:
            chosen = tier
    return chosen


def _parts_cost(parts: TokenParts, row: PriceRow, usage: Usage) -> Decimal:
    """Unrounded USD x 1M of one set of token parts."""
    inp, out, read = parts.input_tokens, parts.output_tokens, parts.cache_read_tokens
    write = parts.cache_write_tokens
    write_1h = min(parts.cache_write_1h_tokens, write) if write else parts.cache_write_1h_tokens
    write = max(write, write_1h)
    uncached = max(inp - read - write, 0)

    p = _prices(row, inp)
    input_price, output_price, read_price = p.input, p.output, p.cache_read
    tier = row.service_tier(usage.service_tier)
    if tier is not None:
        input_price, output_price = tier.input, tier.output
        read_price = tier.cache_read if tier.cache_read is not None else read_price
    if read_price is None:
        read_price = input_price
    w5_price = p.cache_write_5m if p.cache_write_5m is not None else p.input
    w1_price = p.cache_write_1h if p.cache_write_1h is not None else w5_price

    total = Decimal(0)
    if tier is None and row.input_audio is not None and (usage.input_audio_tokens or usage.cache_read_audio_tokens):
        # Audio priced apart: its cached part at the cached-audio rate, the
        # rest at the audio rate; the other modalities keep the row's rates.
        read_audio = min(usage.cache_read_audio_tokens or 0, read)
        audio = min(usage.input_audio_tokens or 0, inp)
        uncached_audio = min(max(audio - read_audio, 0), uncached)
        audio_read_price = row.cache_read_audio if row.cache_read_audio is not None else read_price
        total += uncached_audio * row.input_audio + read_audio * audio_read_price
        uncached -= uncached_audio
        read -= read_audio
    return total + (
        uncached * input_price
        + read * read_price
        + (write - write_1h) * w5_price
        + write_1h * w1_price
        + out * output_price
    )


def request_fees(usage: Usage, row: PriceRow) -> Decimal:
    """Per-request charges (web searches), in USD."""
    rate = row.web_search_rate(usage.search_context_size)
    if not usage.web_search_requests or rate is None:
        return Decimal(0)
    billed = 1 if row.web_search_unit == "prompt" else usage.web_search_requests
    return billed * rate / THOUSAND


def compute_cost(usage: Usage, row: PriceRow) -> Decimal | None:
    """USD token cost of one call plus its per-request fees, quantised to 8
    places (ROUND_HALF_EVEN).

    None when the call reported no tokens at all.  Missing counts are 0.
    Cache reads fall back to the input price, 5-minute cache writes to the
    input price, 1-hour writes to the 5-minute price and then the input price.
    """
    if usage.input_tokens is None and usage.output_tokens is None:
        return None
    if usage.iterations:
        parts_list = usage.iterations
    else:
        parts_list = (TokenParts(
            usage.input_tokens or 0, usage.output_tokens or 0, usage.cache_read_tokens or 0,
            usage.cache_write_tokens or 0, usage.cache_write_1h_tokens or 0),)
    total = sum((_parts_cost(parts, row, usage) for parts in parts_list), Decimal(0))
    return _quantize(total / MILLION + request_fees(usage, row))


def price_call(table, usage: Usage, provider: str | None, request_model: str | None, at) -> Priced:
    """Price one call.

    The row is looked up by the model the response names, then by the one the
    request asked for (an Azure deployment, a gateway alias), for the call's
    provider on its date (Bedrock: the other way round).  A call without tokens is neither priced nor
    unpriced; a call with tokens and no matching row is unpriced, unless the
    provider stated what it charged.
    """
    charged = _quantize(usage.charged_usd) if usage.charged_usd is not None else None
    if not usage.has_tokens:
        return Priced(charged, None, charged, None, False)
    # Bedrock prices depend on the inference profile the URL names (AWS adds
    # 10% for geographic cross-region profiles such as us.); the body names
    # only the vendor's model, so the request's model id is tried first there.
    names = (request_model, usage.model) if provider == "bedrock" else (usage.model, request_model)
    for name in dict.fromkeys(n for n in names if n):
        row = table.lookup(name, provider, at)
        if row is not None:
            token_cost = compute_cost(usage, row)
            return Priced(charged if charged is not None else token_cost, token_cost, charged, row.price_id, False)
    return Priced(charged, None, charged, None, charged is None)


def price_usage(table, usage: Usage, provider: str | None, request_model: str | None,
                at) -> tuple[Decimal | None, str | None, bool]:
    """``(cost_usd, price_id, unpriced)`` of :func:`price_call`."""
    priced = price_call(table, usage, provider, request_model, at)
    return priced.cost_usd, priced.price_id, priced.unpriced
