"""What a call cost: normalised token usage x a price row.

Token counts follow parsers/usage.py (DESIGN.md section 3): ``input_tokens``
includes the cache reads and cache writes, ``cache_write_1h_tokens`` is part of
``cache_write_tokens``, and ``output_tokens`` includes reasoning tokens.
"""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal

from lumen_agent.parsers.usage import Usage
from lumen_agent.pricing.table import PriceRow, PriceTier

MILLION = Decimal(1_000_000)
QUANTUM = Decimal("0.00000001")  # DECIMAL(18,8) in llm_calls.cost_usd


def _prices(row: PriceRow, input_tokens: int) -> PriceRow | PriceTier:
    """The tier whose threshold the call's input exceeds (highest such), else the row.

    A long-context tier prices the whole call, as Anthropic and Gemini bill it.
    """
    chosen: PriceRow | PriceTier = row
    for tier in row.tiers:  # ascending thresholds
        if input_tokens > tier.above_input_tokens:
            chosen = tier
    return chosen


def compute_cost(usage: Usage, row: PriceRow) -> Decimal | None:
    """USD cost of one call, quantised to 8 places (ROUND_HALF_EVEN).

    None when the call reported no tokens at all.  Missing counts are 0.
    Cache reads fall back to the input price, 5-minute cache writes to the
    input price, 1-hour writes to the 5-minute price and then the input price.
    """
    if usage.input_tokens is None and usage.output_tokens is None:
        return None
    inp = usage.input_tokens or 0
    out = usage.output_tokens or 0
    read = usage.cache_read_tokens or 0
    write = usage.cache_write_tokens or 0
    write_1h = min(usage.cache_write_1h_tokens or 0, write) if write else (usage.cache_write_1h_tokens or 0)
    write = max(write, write_1h)
    uncached = max(inp - read - write, 0)

    p = _prices(row, inp)
    read_price = p.cache_read if p.cache_read is not None else p.input
    w5_price = p.cache_write_5m if p.cache_write_5m is not None else p.input
    w1_price = p.cache_write_1h if p.cache_write_1h is not None else w5_price

    total = (
        uncached * p.input
        + read * read_price
        + (write - write_1h) * w5_price
        + write_1h * w1_price
        + out * p.output
    )
    return (total / MILLION).quantize(QUANTUM, rounding=ROUND_HALF_EVEN)


def price_usage(table, usage: Usage, provider: str | None, request_model: str | None,
                at) -> tuple[Decimal | None, str | None, bool]:
    """Price one call: ``(cost_usd, price_id, unpriced)``.

    The row is looked up by the model the response names, then by the one the
    request asked for (an Azure deployment, a gateway alias), for the call's
    provider on its date.  A call without tokens is neither priced nor
    unpriced; a call with tokens and no matching row is unpriced.
    """
    if not usage.has_tokens:
        return None, None, False
    for name in dict.fromkeys(n for n in (usage.model, request_model) if n):
        row = table.lookup(name, provider, at)
        if row is not None:
            return compute_cost(usage, row), row.price_id, False
    return None, None, True
