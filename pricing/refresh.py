"""Build lumen-agent's own price table (``pricing/prices.json``) from reference data.

Usage::

    python -m lumen_agent.pricing.refresh --from DIR --out pricing/prices.json [--report]

``DIR`` holds the three reference snapshots (see pricing/README.md):

- ``litellm_model_prices.json``  - LiteLLM model cost map, USD per token;
- ``langfuse_default_model_prices.json`` - Langfuse default model prices, USD per unit;
- ``llm-prices/*.json`` - simonw/llm-prices, USD per 1M tokens, with ``price_history``.

Only this tool reads those files; the agent reads the generated prices.json.

How the table is merged (details and the reasons in pricing/README.md):

1. LiteLLM is the base: it is keyed by provider and carries cache reads, 5m and
   1h cache writes and long-context tiers.  One row per (provider, model).
2. llm-prices supplies dated price history.  A model whose ``price_history``
   has dates becomes several rows; a period whose prices differ from LiteLLM's
   takes llm-prices' numbers (LiteLLM's extra components are scaled by the
   same factor as the input price, and the row's ``source`` says so).
   llm-prices models LiteLLM lacks are added; ``<id>-200k``-style entries are
   the long-context tiers of ``<id>``.
3. Langfuse fills in models that neither other source has.
4. Where the current price of a model disagrees between sources and no dated
   history explains it, LiteLLM wins unless ``DECISIONS`` below says otherwise.
   ``--report`` prints every disagreement found.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from pathlib import Path

MILLION = Decimal(1_000_000)

# As-of dates of the reference snapshots (from /work/shared/data/README.md).
# Override on the command line when importing a newer snapshot.
DEFAULT_AS_OF = {
    "litellm": "2026-07-24",
    "langfuse": "2026-08-22",
    "llm-prices": "2026-08-05",
}

# effective_from for a row no source dates: a model name carrying a snapshot
# date (gpt-4o-2024-08-06, claude-sonnet-4-5-20250929) starts on that date; an
# alias (claude-sonnet-4-5) starts on the earliest snapshot of the same
# provider with the same input/output price; anything else starts on this
# floor date, which only means "from the beginning of this table".
DEFAULT_EFFECTIVE_FROM = "2023-01-01"

# Anthropic's published prompt-caching multipliers of the base input price:
# 5-minute cache write 1.25x, 1-hour cache write 2x, cache read 0.1x.  Used
# only when the source gives no explicit price for a Claude model, and the
# row's source says when a value was derived this way.
ANTHROPIC_CACHE_WRITE_5M = Decimal("1.25")
ANTHROPIC_CACHE_WRITE_1H = Decimal("2")
ANTHROPIC_CACHE_READ = Decimal("0.1")
# Anthropic's Message Batches bill input, output and cache reads at half the
# standard price (published); LiteLLM carries no Claude batch rates.
ANTHROPIC_BATCH = Decimal("0.5")
# Google bills a cached token at 10% of the input price of its modality
# (published for Gemini 2.5: Flash text/image/video 0.30 -> 0.03, audio
# 1.00 -> 0.10).  The sources give the audio input price but not the cached
# audio price, so a Gemini row with an audio rate gets 0.1x of it.
GOOGLE_CACHED_AUDIO = Decimal("0.1")
# OpenAI bills its web search tool per call: $10.00 per 1,000 calls
# (openai.com/api/pricing, "Web search").  The sources only price the older
# search-preview chat models (LiteLLM search_context_cost_per_query), so
# OpenAI rows that support web search and carry no per-query price get this.
OPENAI_WEB_SEARCH_PER_1000 = Decimal("10")
# Anthropic bills web search at $10 per 1,000 searches on every Claude model
# (docs: web search tool pricing); LiteLLM has it only on some entries.
ANTHROPIC_WEB_SEARCH_PER_1000 = Decimal("10")
# OpenAI's Batch API bills input, output and cached input at half the
# standard price (openai.com/api/pricing, "Batch"), as does Azure OpenAI's
# global batch ("50% less cost than global standard"); LiteLLM carries
# *_batches keys for only some of their models.
OPENAI_BATCH = Decimal("0.5")
# Grounding with Google Search on Gemini 2.x is billed per grounded prompt
# ($35 per 1,000), on Gemini 3 per search query ($14 per 1,000); LiteLLM
# marks the latter web_search_billing_unit "per_query".
GEMINI_PER_QUERY_UNIT = "per_query"
_DATED_SEARCH_PREVIEW = re.compile(r"^(.*-search-preview)-\d{4}-\d{2}-\d{2}$")
# LiteLLM suffix -> our service tier name.
SERVICE_TIER_SUFFIXES = {"flex": "flex", "priority": "priority", "batches": "batch"}

# LiteLLM provider -> our provider.  Order matters: when two LiteLLM entries
# map to the same (provider, model), the one listed first wins (e.g. the
# Gemini API entry over the Vertex entry of the same Gemini model).
LITELLM_PROVIDERS: list[tuple[str, str]] = [
    ("openai", "openai"),
    ("text-completion-openai", "openai"),
    ("anthropic", "anthropic"),
    ("gemini", "google"),
    ("vertex_ai-language-models", "google"),
    ("vertex_ai", "google"),
    ("vertex_ai-embedding-models", "google"),
    ("vertex_ai-text-models", "google"),
    ("vertex_ai-anthropic_models", "google"),
    ("vertex_ai-mistral_models", "google"),
    ("vertex_ai-llama_models", "google"),
    ("vertex_ai-deepseek_models", "google"),
    ("vertex_ai-openai_models", "google"),
    ("vertex_ai-qwen_models", "google"),
    ("vertex_ai-ai21_models", "google"),
    ("vertex_ai-minimax_models", "google"),
    ("vertex_ai-moonshot_models", "google"),
    ("vertex_ai-zai_models", "google"),
    ("bedrock_converse", "bedrock"),
    ("bedrock", "bedrock"),
    ("bedrock_mantle", "bedrock"),
    ("azure", "azure"),
    ("azure_text", "azure"),
    ("mistral", "mistral"),
    ("codestral", "mistral"),
    ("text-completion-codestral", "mistral"),
    ("deepseek", "deepseek"),
    ("xai", "xai"),
    ("groq", "groq"),
]
_LITELLM_RANK = {name: i for i, (name, _) in enumerate(LITELLM_PROVIDERS)}
_LITELLM_MAP = dict(LITELLM_PROVIDERS)
MODES = {"chat", "completion", "responses", "embedding"}

# LiteLLM key prefixes that are routing hints, not part of the model name.
_KEY_PREFIXES = (
    "gemini/", "vertex_ai/", "azure/", "azure_text/", "bedrock/", "bedrock_converse/",
    "bedrock_mantle/", "mistral/", "codestral/", "text-completion-codestral/",
    "deepseek/", "xai/", "groq/", "openai/", "anthropic/",
)
# Keys that price a specific region, data zone or commitment.  The agent only
# sees the model name, so these cannot be told apart from the plain entry and
# are left out (the plain on-demand entry prices the call).
_SKIP_KEY = re.compile(
    r"^(bedrock/[a-z]{2}(-gov)?-[a-z]+-\d|bedrock/\*|bedrock/invoke/|azure/(eu|us|global|global-standard)/)"
)

# llm-prices vendor file -> our provider.
LLM_PRICES_VENDORS = {
    "openai": "openai",
    "anthropic": "anthropic",
    "google": "google",
    "deepseek": "deepseek",
    "mistral": "mistral",
    "xai": "xai",
    "amazon": "bedrock",
}
# llm-prices ids that are not API model names.
LLM_PRICES_IDS = {
    ("anthropic", "claude-4.5-haiku"): "claude-haiku-4-5",
    ("google", "gemini-3-1-pro-preview"): "gemini-3.1-pro-preview",
    ("bedrock", "amazon-nova-micro"): "amazon.nova-micro-v1:0",
    ("bedrock", "amazon-nova-lite"): "amazon.nova-lite-v1:0",
    ("bedrock", "amazon-nova-pro"): "amazon.nova-pro-v1:0",
    ("bedrock", "amazon-nova-premier"): "amazon.nova-premier-v1:0",
}
# llm-prices entries that are not token-priced text models.
LLM_PRICES_SKIP = {"gpt-image-1", "gpt-image-1-mini", "gpt-image-2-image", "gpt-image-2-text"}

# Deliberate choices where the sources disagree on a model's current price and
# no dated history explains the difference.  Key: (provider, model, field).
# Value: (chosen value in USD per 1M tokens, reason).  The reasons are repeated
# in pricing/README.md.
DECISIONS: dict[tuple[str, str, str], tuple[str, str]] = {
    # LiteLLM: 0.0028 (2.8e-09 per token); llm-prices: 0.028.  DeepSeek bills a
    # cache hit at a tenth-or-so of the miss price on every other model in both
    # sources (deepseek-chat 0.28 -> 0.028), and 0.0028 is exactly 10x below
    # the other source: a dropped digit in LiteLLM.  Take 0.028.
    ("deepseek", "deepseek-v4-flash", "cache_read"): (
        "0.028",
        "llm-prices 0.028 over LiteLLM 0.0028: LiteLLM is exactly 10x low, "
        "out of line with DeepSeek's ~10% cache-hit ratio elsewhere",
    ),
    # LiteLLM 0.075 (25% of input, Google's old implicit-cache rate); llm-prices
    # 0.03 (10%), which is what both sources give for gemini-2.5-flash itself.
    ("google", "gemini-2.5-flash-preview-09-2025", "cache_read"): (
        "0.03",
        "llm-prices 0.03 over LiteLLM 0.075: matches gemini-2.5-flash's 10% cache rate in both sources",
    ),
}

# Models whose whole current row is taken from llm-prices instead of LiteLLM.
PREFER_LLM_PRICES: dict[tuple[str, str], str] = {
    ("deepseek", "deepseek-v4-pro"): (
        "LiteLLM's 0.435/0.87 is exactly a quarter of the list price 1.74/3.48 (DeepSeek's 75% "
        "discount), and its cache read 0.003625 is again 10x below a quarter of 0.145; the newer "
        "llm-prices snapshot has the list price"
    ),
    ("mistral", "codestral-latest"): (
        "LiteLLM's mistral/codestral-latest 1/3 contradicts Mistral's published Codestral price "
        "0.3/0.9 (its codestral/ entry even says 0/0)"
    ),
    ("google", "gemini-1.5-flash"): (
        "LiteLLM's gemini/gemini-1.5-flash has output 0 and an embeddings source link: a mis-entry"
    ),
}

# Price changes a source's history misses.  (provider, model) -> (date, why):
# the llm-prices price that LiteLLM contradicts was in force until this date,
# LiteLLM's price from then on.  Without an entry here the change is dated at
# LiteLLM's as-of date (the first day we know the new price held).
CHANGE_DATES: dict[tuple[str, str], tuple[str, str]] = {
    ("deepseek", "deepseek-chat"): ("2025-09-29", "DeepSeek V3.2 price cut (0.28/0.42) took effect 2025-09-29"),
    ("deepseek", "deepseek-reasoner"): ("2025-09-29", "DeepSeek V3.2 price cut (0.28/0.42) took effect 2025-09-29"),
    ("openai", "o3"): ("2025-06-10", "OpenAI cut o3 by 80% (10/40 -> 2/8) on 2025-06-10"),
}


def _d(value) -> Decimal | None:
    if value is None:
        return None
    return Decimal(str(value))


def _fmt(value: Decimal | None) -> str | None:
    """Plain decimal string, no exponent, no trailing zeros."""
    if value is None:
        return None
    value = value.normalize()
    text = format(value, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text or "0"


def _q(value: Decimal) -> Decimal:
    """A derived price, rounded to 1e-9 USD per 1M tokens."""
    return value.quantize(Decimal("1e-9")).normalize()


def _per_million(per_token) -> Decimal | None:
    if per_token is None:
        return None
    return (Decimal(str(per_token)) * MILLION).normalize()


_DATE8 = re.compile(r"-(\d{4})(\d{2})(\d{2})(?:-v\d+(?::\d+)?)?$|@(\d{4})(\d{2})(\d{2})$")
_DATE10 = re.compile(r"-(\d{4})-(\d{2})-(\d{2})$")


def snapshot_date(model: str) -> date | None:
    """The release date a snapshot name carries, if any."""
    for pattern in (_DATE10, _DATE8):
        m = pattern.search(model)
        if m:
            y, mo, d = (int(g) for g in m.groups() if g is not None)
            try:
                return date(y, mo, d)
            except ValueError:
                return None
    return None


def is_claude(provider: str, model: str) -> bool:
    return "claude" in model.lower()


@dataclass
class Tier:
    above_input_tokens: int
    input: Decimal
    output: Decimal
    cache_read: Decimal | None = None
    cache_write_5m: Decimal | None = None
    cache_write_1h: Decimal | None = None

    def scaled(self, factor: Decimal) -> Tier:
        s = lambda v: None if v is None else _q(v * factor)  # noqa: E731
        return Tier(self.above_input_tokens, s(self.input), s(self.output), s(self.cache_read),
                    s(self.cache_write_5m), s(self.cache_write_1h))


@dataclass
class Row:
    provider: str
    model: str
    input: Decimal
    output: Decimal
    cache_read: Decimal | None = None
    cache_write_5m: Decimal | None = None
    cache_write_1h: Decimal | None = None
    tiers: list[Tier] = field(default_factory=list)
    effective_from: str | None = None
    effective_to: str | None = None
    source: str = ""
    notes: list[str] = field(default_factory=list)
    input_audio: Decimal | None = None
    cache_read_audio: Decimal | None = None
    # tier name -> {"input", "output", "cache_read"} in USD per 1M tokens
    service_tiers: dict[str, dict[str, Decimal | None]] = field(default_factory=dict)
    web_search_per_1000: Decimal | None = None
    supports_web_search: bool = False
    web_search_unit: str = "request"
    # search_context_size -> USD per 1,000 (only where the sizes differ)
    web_search_context: dict[str, Decimal] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {
            "provider": self.provider,
            "model": self.model,
            "effective_from": self.effective_from,
            "effective_to": self.effective_to,
            "input": _fmt(self.input),
            "output": _fmt(self.output),
            "cache_read": _fmt(self.cache_read),
            "cache_write_5m": _fmt(self.cache_write_5m),
            "cache_write_1h": _fmt(self.cache_write_1h),
            "tiers": [
                {
                    "above_input_tokens": t.above_input_tokens,
                    "input": _fmt(t.input),
                    "output": _fmt(t.output),
                    "cache_read": _fmt(t.cache_read),
                    "cache_write_5m": _fmt(t.cache_write_5m),
                    "cache_write_1h": _fmt(t.cache_write_1h),
                }
                for t in sorted(self.tiers, key=lambda t: t.above_input_tokens)
            ],
            "source": "; ".join([self.source, *self.notes]),
            # Written only where a row has them, so most rows stay as they were.
            **({"input_audio": _fmt(self.input_audio)} if self.input_audio is not None else {}),
            **({"cache_read_audio": _fmt(self.cache_read_audio)} if self.cache_read_audio is not None else {}),
            **({"service_tiers": {name: {k: _fmt(v) for k, v in prices.items()}
                                  for name, prices in sorted(self.service_tiers.items())}}
               if self.service_tiers else {}),
            **({"web_search_per_1000": _fmt(self.web_search_per_1000)}
               if self.web_search_per_1000 is not None else {}),
            **({"web_search_unit": self.web_search_unit}
               if self.web_search_per_1000 is not None and self.web_search_unit != "request" else {}),
            **({"web_search_context_per_1000": {k: _fmt(v) for k, v in sorted(self.web_search_context.items())}}
               if self.web_search_context else {}),
        }


# ---------------------------------------------------------------- LiteLLM

_TIER_KEY = re.compile(
    r"^(input_cost_per_token|output_cost_per_token|cache_read_input_token_cost|"
    r"cache_creation_input_token_cost|cache_creation_input_token_cost_above_1hr)"
    r"_above_(\d+)k_tokens$"
)
_TIER_FIELD = {
    "input_cost_per_token": "input",
    "output_cost_per_token": "output",
    "cache_read_input_token_cost": "cache_read",
    "cache_creation_input_token_cost": "cache_write_5m",
    "cache_creation_input_token_cost_above_1hr": "cache_write_1h",
}


def _litellm_model_name(key: str) -> str:
    for prefix in _KEY_PREFIXES:
        if key.startswith(prefix):
            return key[len(prefix):]
    return key


def _row_from_litellm(provider: str, model: str, entry: dict, source: str) -> Row | None:
    inp = _per_million(entry.get("input_cost_per_token"))
    if inp is None:
        return None
    out = _per_million(entry.get("output_cost_per_token")) or Decimal(0)
    read = _per_million(entry.get("cache_read_input_token_cost"))
    if read is None:
        read = _per_million(entry.get("input_cost_per_token_cache_hit"))
    w5 = _per_million(entry.get("cache_creation_input_token_cost"))
    if w5 is not None and w5 == 0:
        # LiteLLM writes 0.0 for "no separate cache-write price" (DeepSeek):
        # leave it unset so writes fall back to the input price, never free.
        w5 = None
    w1 = _per_million(entry.get("cache_creation_input_token_cost_above_1hr"))
    row = Row(provider, model, inp, out, read, w5, w1, source=source)
    row.input_audio = _per_million(entry.get("input_cost_per_audio_token"))
    row.cache_read_audio = _per_million(entry.get("cache_read_input_audio_token_cost"))
    for suffix, tier_name in SERVICE_TIER_SUFFIXES.items():
        t_in = _per_million(entry.get(f"input_cost_per_token_{suffix}"))
        t_out = _per_million(entry.get(f"output_cost_per_token_{suffix}"))
        if t_in is not None and t_out is not None:
            row.service_tiers[tier_name] = {
                "input": t_in, "output": t_out,
                "cache_read": _per_million(entry.get(f"cache_read_input_token_cost_{suffix}")),
            }
    per_query = entry.get("search_context_cost_per_query")
    if isinstance(per_query, dict) and per_query.get("search_context_size_medium") is not None:
        row.web_search_per_1000 = _q(_d(per_query["search_context_size_medium"]) * 1000).normalize()
        sizes = {size: _q(_d(per_query[f"search_context_size_{size}"]) * 1000).normalize()
                 for size in ("low", "medium", "high") if per_query.get(f"search_context_size_{size}") is not None}
        if len(set(sizes.values())) > 1:  # priced by search_context_size (OpenAI search-preview)
            row.web_search_context = sizes
        if provider == "google" and model.startswith("gemini") \
                and entry.get("web_search_billing_unit") != GEMINI_PER_QUERY_UNIT:
            row.web_search_unit = "prompt"
    row.supports_web_search = entry.get("supports_web_search") is True

    tiers: dict[int, dict[str, Decimal]] = {}
    for key, value in entry.items():
        m = _TIER_KEY.match(key)
        if m and value is not None:
            tiers.setdefault(int(m.group(2)) * 1000, {})[_TIER_FIELD[m.group(1)]] = _per_million(value)
    for threshold, prices in sorted(tiers.items()):
        if "input" not in prices:
            continue
        # A component the tier does not price keeps the base price (as
        # LiteLLM itself computes it), except Claude cache writes, which
        # follow Anthropic's multipliers of the tier's input price.
        t = Tier(
            threshold,
            prices["input"],
            prices.get("output", row.output),
            prices.get("cache_read", row.cache_read),
            prices.get("cache_write_5m", row.cache_write_5m),
            prices.get("cache_write_1h", row.cache_write_1h),
        )
        if is_claude(provider, model):
            if "cache_write_5m" not in prices:
                t.cache_write_5m = (t.input * ANTHROPIC_CACHE_WRITE_5M).normalize()
            if "cache_write_1h" not in prices:
                t.cache_write_1h = (t.input * ANTHROPIC_CACHE_WRITE_1H).normalize()
            if "cache_read" not in prices:
                t.cache_read = (t.input * ANTHROPIC_CACHE_READ).normalize()
        row.tiers.append(t)
    return row


def _apply_anthropic_rules(row: Row) -> None:
    """Fill Claude cache prices a source left out, by Anthropic's published rule."""
    if not is_claude(row.provider, row.model):
        return
    if row.cache_write_5m is None:
        row.cache_write_5m = (row.input * ANTHROPIC_CACHE_WRITE_5M).normalize()
        row.notes.append("cache_write_5m=1.25x input (Anthropic rule)")
    if row.cache_write_1h is None:
        row.cache_write_1h = (row.input * ANTHROPIC_CACHE_WRITE_1H).normalize()
        row.notes.append("cache_write_1h=2x input (Anthropic rule)")
    if row.cache_read is None:
        row.cache_read = (row.input * ANTHROPIC_CACHE_READ).normalize()
        row.notes.append("cache_read=0.1x input (Anthropic rule)")


def _apply_bill_rules(row: Row) -> None:
    """Fill the cached-audio, batch and web search prices the sources leave out,
    by each provider's published rule (constants above)."""
    if row.provider == "google" and row.input_audio is not None and row.cache_read_audio is None:
        row.cache_read_audio = _q(row.input_audio * GOOGLE_CACHED_AUDIO).normalize()
        row.notes.append("cache_read_audio=0.1x input_audio (Google rule)")
    if is_claude(row.provider, row.model) and row.provider == "anthropic" and "batch" not in row.service_tiers:
        row.service_tiers["batch"] = {
            "input": (row.input * ANTHROPIC_BATCH).normalize(),
            "output": (row.output * ANTHROPIC_BATCH).normalize(),
            "cache_read": None if row.cache_read is None else (row.cache_read * ANTHROPIC_BATCH).normalize(),
        }
        row.notes.append("batch=0.5x (Anthropic rule)")
    if row.provider == "anthropic" and is_claude(row.provider, row.model) and row.web_search_per_1000 is None:
        row.web_search_per_1000 = ANTHROPIC_WEB_SEARCH_PER_1000
        row.notes.append("web_search_per_1000=10 (Anthropic web search price)")
    if row.provider in ("openai", "azure") and "batch" not in row.service_tiers:
        row.service_tiers["batch"] = {
            "input": (row.input * OPENAI_BATCH).normalize(),
            "output": (row.output * OPENAI_BATCH).normalize(),
            "cache_read": None if row.cache_read is None else (row.cache_read * OPENAI_BATCH).normalize(),
        }
        row.notes.append(f"batch=0.5x ({'Azure OpenAI' if row.provider == 'azure' else 'OpenAI'} Batch API rule)")
    if row.provider == "openai" and row.supports_web_search and row.web_search_per_1000 is None:
        row.web_search_per_1000 = OPENAI_WEB_SEARCH_PER_1000
        row.notes.append("web_search_per_1000=10 (OpenAI web search tool price)")


def load_litellm(path: Path, as_of: str) -> dict[tuple[str, str], Row]:
    data = json.loads(path.read_text())
    rows: dict[tuple[str, str], tuple[int, Row]] = {}
    for key, entry in data.items():
        if not isinstance(entry, dict) or key == "sample_spec":
            continue
        lp = entry.get("litellm_provider")
        if lp not in _LITELLM_MAP or entry.get("mode") not in MODES or _SKIP_KEY.match(key):
            continue
        if "/" in key and "commitment" in key:
            continue
        provider = _LITELLM_MAP[lp]
        model = _litellm_model_name(key)
        if "@" in model:
            # Vertex spellings (claude-sonnet-4-5@20250929) duplicate the dashed
            # names; the lookup maps "@version" to them, and "@" would make the
            # price_id (provider/model@date) ambiguous.
            continue
        row = _row_from_litellm(provider, model, entry, f"{path.name} (as of {as_of})")
        if row is None:
            continue
        k = (provider, model.lower())
        rank = _LITELLM_RANK[lp]
        if k not in rows or rank < rows[k][0]:
            rows[k] = (rank, row)
    return {k: v[1] for k, v in rows.items()}


# ---------------------------------------------------------------- llm-prices

_TIER_ID = re.compile(r"^(.*)-(\d+)k$")


@dataclass
class Period:
    input: Decimal
    output: Decimal
    cache_read: Decimal | None
    from_date: str | None
    to_date: str | None


def _llm_prices_model_name(provider: str, model_id: str, known: set[str]) -> str:
    if (provider, model_id) in LLM_PRICES_IDS:
        return LLM_PRICES_IDS[(provider, model_id)]
    if model_id.lower() in known:
        return model_id
    if provider == "anthropic":
        # claude-3.7-sonnet -> claude-3-7-sonnet (Anthropic API names use dashes)
        return re.sub(r"(\d)\.(\d)", r"\1-\2", model_id)
    return model_id


def load_llm_prices(directory: Path, known: dict[str, set[str]]):
    """Returns {(provider, model): (periods, {threshold: periods}, source)}."""
    out: dict[tuple[str, str], tuple[list[Period], dict[int, list[Period]], str]] = {}
    for path in sorted(directory.glob("*.json")):
        data = json.loads(path.read_text())
        provider = LLM_PRICES_VENDORS.get(data.get("vendor", path.stem))
        if provider is None:
            continue
        models = {}
        for m in data["models"]:
            models.setdefault(m["id"], m)  # the file lists grok-4-fast twice, identically
        base_ids = set(models)
        tiers: dict[str, dict[int, list[Period]]] = {}
        bases: dict[str, list[Period]] = {}
        for mid, m in models.items():
            if mid in LLM_PRICES_SKIP:
                continue
            periods = [
                Period(_d(p["input"]), _d(p["output"]), _d(p.get("input_cached")), p.get("from_date"),
                       p.get("to_date"))
                for p in m["price_history"]
            ]
            periods.sort(key=lambda p: p.from_date or "")
            t = _TIER_ID.match(mid)
            if t and t.group(1) in base_ids:
                tiers.setdefault(t.group(1), {})[int(t.group(2)) * 1000] = periods
            else:
                bases[mid] = periods
        for mid, periods in bases.items():
            name = _llm_prices_model_name(provider, mid, known.get(provider, set()))
            out[(provider, name.lower())] = (periods, tiers.get(mid, {}), f"llm-prices/{path.name}|{name}")
    return out


def _period_for(periods: list[Period], on: str | None) -> Period | None:
    for p in periods:
        if (p.from_date is None or on is None or p.from_date <= on) and (p.to_date is None or on is None or on < p.to_date):
            return p
    return None


# ---------------------------------------------------------------- Langfuse

_LANGFUSE_READ_KEYS = ("input_cache_read", "input_cached_tokens", "cache_read_input_tokens")
_LANGFUSE_W5_KEYS = ("input_cache_creation_5m", "input_cache_creation", "cache_creation_input_tokens")


def _langfuse_provider(entry: dict) -> str | None:
    pattern = entry["matchPattern"].lower()
    name = entry["modelName"].lower()
    if "anthropic" in pattern or name.startswith("claude"):
        return "anthropic"
    if "google" in pattern or name.startswith(("gemini", "chat-bison", "text-bison", "code", "textembedding")):
        return "google"
    if "openai" in pattern or name.startswith(("gpt", "o1", "o3", "o4", "text-", "davinci", "babbage", "chatgpt")):
        return "openai"
    return None


def load_langfuse(path: Path, as_of: str) -> dict[tuple[str, str], Row]:
    out = {}
    for entry in json.loads(path.read_text()):
        provider = _langfuse_provider(entry)
        model = entry["modelName"]
        if provider is None or model.startswith("ft:"):
            continue
        tiers = entry.get("pricingTiers") or []
        default = next((t for t in tiers if t.get("isDefault")), None)
        if default is None:
            continue
        prices = default["prices"]
        inp = prices.get("input", prices.get("total"))
        if inp is None:
            continue  # audio/realtime models priced per modality only
        row = Row(
            provider, model, _per_million(inp), _per_million(prices.get("output", 0)),
            _per_million(next((prices[k] for k in _LANGFUSE_READ_KEYS if k in prices), None)),
            _per_million(next((prices[k] for k in _LANGFUSE_W5_KEYS if k in prices), None)),
            _per_million(prices.get("input_cache_creation_1h")),
            source=f"{path.name} (as of {as_of})",
        )
        for t in tiers:
            conds = t.get("conditions") or []
            if t.get("isDefault") or len(conds) != 1 or conds[0].get("operator") != "gt" or "value" not in conds[0]:
                continue  # service-tier (fast/flex) variants are not long-context tiers
            tp = t["prices"]
            if "input" not in tp:
                continue
            row.tiers.append(Tier(
                int(conds[0]["value"]), _per_million(tp["input"]),
                _per_million(tp.get("output")) or row.output,
                _per_million(next((tp[k] for k in _LANGFUSE_READ_KEYS if k in tp), None)) or row.cache_read,
                _per_million(next((tp[k] for k in _LANGFUSE_W5_KEYS if k in tp), None)) or row.cache_write_5m,
                _per_million(tp.get("input_cache_creation_1h")) or row.cache_write_1h,
            ))
        out[(provider, model.lower())] = row
    return out


# ---------------------------------------------------------------- merge


def _same(a: Decimal | None, b: Decimal | None) -> bool:
    return a is None or b is None or a == b


def build(src: Path, as_of: dict[str, str], report: list[str]) -> list[Row]:
    litellm = load_litellm(src / "litellm_model_prices.json", as_of["litellm"])
    known: dict[str, set[str]] = {}
    for provider, model in litellm:
        known.setdefault(provider, set()).add(model)
    llmp = load_llm_prices(src / "llm-prices", known)
    langfuse = load_langfuse(src / "langfuse_default_model_prices.json", as_of["langfuse"])

    rows: list[Row] = []
    handled: set[tuple[str, str]] = set()

    for key, (periods, tier_periods, source) in llmp.items():
        source, name = source.split("|")
        source = f"{source} (as of {as_of['llm-prices']})"
        base = litellm.get(key)
        handled.add(key)
        dated = any(p.from_date or p.to_date for p in periods)
        if base is not None and key in PREFER_LLM_PRICES:
            report.append(f"{key[0]}/{base.model}: LiteLLM {_fmt(base.input)}/{_fmt(base.output)}/"
                          f"{_fmt(base.cache_read)} replaced by {source}: {PREFER_LLM_PRICES[key]}")
            name, base = base.model, None
        if base is None:
            for p in periods:
                r = Row(key[0], name, p.input, p.output, p.cache_read, source=source,
                        effective_from=p.from_date, effective_to=p.to_date)
                if key in PREFER_LLM_PRICES:
                    r.notes.append("chosen over LiteLLM: " + PREFER_LLM_PRICES[key])
                for threshold, tps in tier_periods.items():
                    tp = _period_for(tps, p.from_date)
                    if tp:
                        r.tiers.append(Tier(threshold, tp.input, tp.output, tp.cache_read))
                rows.append(r)
            continue
        last = periods[-1]
        if (last.to_date is None and (last.input != base.input or last.output != base.output)
                and (last.from_date is None or last.from_date < as_of["litellm"])
                and (key in CHANGE_DATES or dated)):
            # The newest llm-prices period is older than LiteLLM's price: close it.
            change, why = CHANGE_DATES.get(key, (as_of["litellm"], "dated at LiteLLM's as-of date"))
            last.to_date = change
            periods.append(Period(base.input, base.output, base.cache_read, change, None))
            dated = True
            report.append(f"{key[0]}/{base.model}: llm-prices' open price {_fmt(last.input)}/{_fmt(last.output)} "
                          f"closed at {change}, LiteLLM's {_fmt(base.input)}/{_fmt(base.output)} after ({why})")
        if not dated:
            p = periods[0]
            if p.input == base.input and p.output == base.output and _same(p.cache_read, base.cache_read):
                base.notes.append("agrees with " + source)
                if base.cache_read is None and p.cache_read is not None:
                    base.cache_read = p.cache_read
                    base.notes.append("cache_read from " + source)
            else:
                report.append(
                    f"{key[0]}/{base.model}: LiteLLM in/out/read {_fmt(base.input)}/{_fmt(base.output)}/"
                    f"{_fmt(base.cache_read)} vs {source} {_fmt(p.input)}/{_fmt(p.output)}/{_fmt(p.cache_read)}"
                )
            rows.append(base)
            continue
        # Dated history: one row per period.
        for p in periods:
            if p.input == base.input and p.output == base.output:
                r = Row(**{**base.__dict__, "tiers": list(base.tiers), "notes": list(base.notes)})
                r.notes.append(f"period dates from {source}")
            else:
                factor = p.input / base.input if base.input else Decimal(1)
                scale = lambda v, factor=factor: None if v is None else _q(v * factor)  # noqa: E731
                # llm-prices sometimes repeats today's cached price on an old
                # period (o3); a cached price equal to LiteLLM's current one on
                # a period with another input price is scaled instead.
                own_read = p.cache_read if p.cache_read is not None and p.cache_read != base.cache_read else None
                r = Row(key[0], base.model, p.input, p.output,
                        own_read if own_read is not None else scale(base.cache_read),
                        scale(base.cache_write_5m), scale(base.cache_write_1h), source=source)
                r.notes.append(f"cache prices scaled from {base.source} by the input-price ratio")
                for t in base.tiers:
                    tp = _period_for(tier_periods.get(t.above_input_tokens, []), p.from_date)
                    if tp:
                        nt = t.scaled(tp.input / t.input)
                        nt.input, nt.output = tp.input, tp.output
                        if tp.cache_read is not None:
                            nt.cache_read = tp.cache_read
                        r.tiers.append(nt)
                    else:
                        r.tiers.append(t.scaled(factor))
                report.append(
                    f"{key[0]}/{base.model}: {source} dates a price {_fmt(p.input)}/{_fmt(p.output)} "
                    f"[{p.from_date} .. {p.to_date}) that LiteLLM ({_fmt(base.input)}/{_fmt(base.output)}) lacks: "
                    "row added from llm-prices"
                )
            r.effective_from, r.effective_to = p.from_date, p.to_date
            rows.append(r)

    for key, row in litellm.items():
        if key not in handled:
            rows.append(row)
            handled.add(key)

    for key, row in langfuse.items():
        if key in handled:
            at = as_of["langfuse"]
            other = next((r for r in rows if (r.provider, r.model.lower()) == key
                          and (r.effective_from or "") <= at and (r.effective_to is None or at < r.effective_to)),
                         None)
            if other and (other.input != row.input or other.output != row.output):
                report.append(
                    f"{key[0]}/{other.model}: {row.source} in/out {_fmt(row.input)}/{_fmt(row.output)} "
                    f"vs chosen {_fmt(other.input)}/{_fmt(other.output)} ({other.source})"
                )
            continue
        rows.append(row)
        handled.add(key)

    # Deliberate decisions.
    for (provider, model, fld), (value, why) in DECISIONS.items():
        for r in rows:
            if r.provider == provider and r.model.lower() == model and r.effective_to is None:
                old = getattr(r, fld)
                setattr(r, fld, Decimal(value))
                r.notes.append(f"{fld}={value} by decision (was {_fmt(old)}): {why}")

    for r in rows:
        _apply_anthropic_rules(r)
        if r.effective_to is None:  # current prices only: the rules are today's
            _apply_bill_rules(r)
    _inherit_search_fees(rows)
    _assign_dates(rows)
    rows.sort(key=lambda r: (r.provider, r.model.lower(), r.effective_from))
    return rows


def _inherit_search_fees(rows: list[Row]) -> None:
    """A dated search-preview snapshot (gpt-4o-search-preview-2025-03-11)
    searches on every call like its family, but LiteLLM prices the search
    only on the family's entry: the snapshot gets the family's fee."""
    family = {(r.provider, r.model.lower()): r for r in rows if r.web_search_per_1000 is not None}
    for r in rows:
        m = _DATED_SEARCH_PREVIEW.match(r.model.lower())
        base = family.get((r.provider, m.group(1))) if m and r.web_search_per_1000 is None else None
        if base is not None:
            r.web_search_per_1000 = base.web_search_per_1000
            r.web_search_context = dict(base.web_search_context)
            r.notes.append(f"web search fee of {base.model}")


def _assign_dates(rows: list[Row]) -> None:
    by_key: dict[tuple[str, str], list[Row]] = {}
    for r in rows:
        by_key.setdefault((r.provider, r.model.lower()), []).append(r)
    # earliest dated snapshot per (provider, family, input, output)
    first_snapshot: dict[tuple[str, str, Decimal, Decimal], date] = {}
    for r in rows:
        d = snapshot_date(r.model)
        if d is None:
            continue
        family = r.model.lower()[: _snapshot_start(r.model)]
        k = (r.provider, family, r.input, r.output)
        if k not in first_snapshot or d < first_snapshot[k]:
            first_snapshot[k] = d
    for r in rows:
        if r.effective_from is not None:
            continue
        d = snapshot_date(r.model) or first_snapshot.get((r.provider, r.model.lower(), r.input, r.output))
        start = d.isoformat() if d else DEFAULT_EFFECTIVE_FROM
        if r.effective_to is not None and start >= r.effective_to:
            start = DEFAULT_EFFECTIVE_FROM
        r.effective_from = start


def _snapshot_start(model: str) -> int:
    for pattern in (_DATE10, _DATE8):
        m = pattern.search(model)
        if m:
            return m.start()
    return len(model)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m lumen_agent.pricing.refresh", description=__doc__.split("\n")[0])
    ap.add_argument("--from", dest="src", type=Path, required=True,
                    help="directory with litellm_model_prices.json, langfuse_default_model_prices.json, llm-prices/")
    ap.add_argument("--out", type=Path, default=Path(__file__).with_name("prices.json"))
    for name, default in DEFAULT_AS_OF.items():
        ap.add_argument(f"--{name}-as-of", default=default, help=f"as-of date of the {name} snapshot")
    ap.add_argument("--report", action="store_true", help="print where the sources disagree")
    args = ap.parse_args(argv)
    as_of = {name: getattr(args, f"{name.replace('-', '_')}_as_of") for name in DEFAULT_AS_OF}
    report: list[str] = []
    rows = build(args.src, as_of, report)
    doc = {
        "format": 1,
        "unit": "USD per 1M tokens",
        "sources": {
            "litellm_model_prices.json": as_of["litellm"],
            "langfuse_default_model_prices.json": as_of["langfuse"],
            "llm-prices": as_of["llm-prices"],
        },
        "default_effective_from": DEFAULT_EFFECTIVE_FROM,
        "rows": [r.to_json() for r in rows],
    }
    args.out.write_text(json.dumps(doc, indent=1, sort_keys=False) + "\n")
    counts: dict[str, int] = {}
    for r in rows:
        counts[r.provider] = counts.get(r.provider, 0) + 1
    print(f"wrote {len(rows)} rows to {args.out}: " + ", ".join(f"{p} {n}" for p, n in sorted(counts.items())),
          file=sys.stderr)
    if args.report:
        print("\n".join(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
