"""Every value of a row made safe to store: valid text, plausible numbers.

The pipeline builds a :class:`~lumen_agent.pipeline.call.Call` from bytes a
hostile local process or server may have chosen.  One value DuckDB cannot
take (a lone UTF-16 surrogate, a count past DECIMAL(18,8)) would fail the
whole batch it sits in, so :func:`bounded_call` runs on every row where the
pipeline makes it, and :func:`bounded_usage` on every usage before it is
priced.  Nothing here raises.
"""

from __future__ import annotations

import math
import re
from dataclasses import fields, replace
from decimal import Decimal

from lumen_agent.parsers.providers.base import MAX_NAME_LENGTH, MAX_PLAUSIBLE_TOKENS
from lumen_agent.parsers.usage import Usage
from lumen_agent.pipeline.call import Call

# The largest cost DECIMAL(18,8) holds is just under 10^10 USD.
MAX_STORABLE_COST = Decimal(10) ** 10
MAX_MODEL_CHARS = MAX_NAME_LENGTH
# Any other short text column (host, process, endpoint, tenant, ids...).
MAX_TEXT_CHARS = 1024
# Paths (exe) may be as long as PATH_MAX.
MAX_PATH_CHARS = 4096
# Prompt and completion text of the opt-in content capture (the exchange
# already keeps at most 1 MiB of bytes; this bounds the escaped text).
MAX_BODY_CHARS = 2 * 1024 * 1024

_TOKEN_FIELDS = ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens",
                 "cache_write_1h_tokens", "reasoning_tokens", "input_audio_tokens", "cache_read_audio_tokens",
                 "web_search_requests")
_COST_FIELDS = ("cost_usd", "token_cost_usd", "charged_usd")
_LIMITS = {"model": MAX_MODEL_CHARS, "request_model": MAX_MODEL_CHARS, "exe": MAX_PATH_CHARS,
           "request_body": MAX_BODY_CHARS, "response_body": MAX_BODY_CHARS}
_TEXT_FIELDS = tuple(f.name for f in fields(Call) if "str" in str(f.type) and f.name != "outcome")
_BODY_FIELDS = frozenset({"request_body", "response_body"})

# C0 controls but tab/LF/CR, DEL, C1 controls, lone surrogates.
_UNSAFE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")
# In short fields even tab/LF/CR would break a one-line report.
_UNSAFE_SHORT = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


def _escape(match: re.Match[str]) -> str:
    return f"\\x{ord(match.group()):02x}" if ord(match.group()) < 0x100 else f"\\u{ord(match.group()):04x}"


def clean_text(value: object, limit: int = MAX_TEXT_CHARS, *, multiline: bool = False) -> str | None:
    """``value`` as valid UTF-8 text: control characters and lone surrogates
    escaped as ``\\xNN`` / ``\\uNNNN``, cut to ``limit`` characters."""
    if value is None:
        return None
    if type(value) is str and len(value) <= limit and value.isascii() and value.isprintable():
        # Printable ASCII holds none of the characters escaped below (most
        # values: hosts, models, ids): no scan by the pattern.
        return value
    if not isinstance(value, str):
        value = str(value)
    if len(value) > limit * 6:  # bound the work before escaping
        value = value[: limit * 6]
    value = (_UNSAFE if multiline else _UNSAFE_SHORT).sub(_escape, value)
    return value[:limit] if len(value) > limit else value


def plausible_count(value: object) -> bool:
    return (isinstance(value, int) and not isinstance(value, bool)
            and 0 <= value <= MAX_PLAUSIBLE_TOKENS)


def bounded_usage(usage: Usage) -> Usage:
    """Counts outside ``0..MAX_PLAUSIBLE_TOKENS`` become NULL and the usage is
    flagged implausible; so is usage whose reader rejected a count."""
    bad = {name: None for name in _TOKEN_FIELDS
           if getattr(usage, name, None) is not None and not plausible_count(getattr(usage, name))}
    if not bad and not usage.usage_implausible:
        return usage
    return replace(usage, usage_implausible=True, **bad)


def storable_cost(cost: Decimal | None) -> bool:
    return cost is None or (cost.is_finite() and abs(cost) < MAX_STORABLE_COST)


def bounded_call(call: Call) -> Call:
    """The row with every string cleaned and every number inside its column."""
    changes: dict[str, object] = {}
    for name in _TEXT_FIELDS:
        value = getattr(call, name)
        if value is None:
            continue
        clean = clean_text(value, _LIMITS.get(name, MAX_TEXT_CHARS), multiline=name in _BODY_FIELDS)
        if clean != value:
            changes[name] = clean
    implausible = call.usage_implausible
    for name in _TOKEN_FIELDS:
        value = getattr(call, name)
        if value is not None and not plausible_count(value):
            changes[name] = None
            implausible = True
    if implausible or not all(storable_cost(getattr(call, name)) for name in _COST_FIELDS):
        # Partial or impossible usage is never priced as if it were complete.
        changes.update(cost_usd=None, token_cost_usd=None, charged_usd=None, price_id=None, unpriced=False,
                       usage_implausible=True)
    for name in ("latency_ms", "ttft_ms"):
        value = getattr(call, name)
        if value is not None and not (isinstance(value, float | int) and math.isfinite(value)):
            changes[name] = None
    for name in ("pid", "server_port", "status_code", "sender_uid"):
        value = getattr(call, name)
        if value is not None and not (isinstance(value, int) and -2**31 <= value < 2**31):
            changes[name] = None if name != "pid" else 0
    return replace(call, **changes) if changes else call
