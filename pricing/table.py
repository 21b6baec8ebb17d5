"""The dated price table: load prices.json (+ a user override file) and find the
price row for a model at a date.

Prices are USD per 1M tokens.  ``PriceTable.lookup`` runs for every captured
call, so it is memoised per (model, provider, date); ``PriceTable.load`` runs at
agent start and reads only the shipped JSON and the optional TOML override.
"""

from __future__ import annotations

import json
import re
import tomllib
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path

from lumen_agent.errors import LumenError

SHIPPED_PRICES = Path(__file__).with_name("prices.json")

# Pipeline provider names that are a gateway or a protocol, not a price list:
# their models are looked up across all providers.
_UNPRICED_PROVIDERS = frozenset({"ollama"})
# Search order across providers (ties: first-party OpenAI, Anthropic, Google).
_PROVIDER_ORDER = ("openai", "anthropic", "google", "mistral", "deepseek", "xai", "groq", "bedrock", "azure")
_PROVIDER_SYNONYMS = {
    "gemini": "google", "vertex": "google", "vertex_ai": "google", "vertexai": "google", "google-vertex": "google",
    "aws": "bedrock", "aws-bedrock": "bedrock", "bedrock-runtime": "bedrock",
    "azure-openai": "azure", "azure_openai": "azure", "x-ai": "xai",
}

_MEMO_LIMIT = 200_000

# OpenAI's default web_search_options.search_context_size.
DEFAULT_SEARCH_CONTEXT = "medium"
SEARCH_CONTEXT_SIZES = ("low", "medium", "high")
WEB_SEARCH_UNITS = ("request", "prompt")


class PricingError(LumenError):
    """The price table or the user's override file cannot be used."""


@dataclass(frozen=True, slots=True)
class PriceTier:
    above_input_tokens: int
    input: Decimal
    output: Decimal
    cache_read: Decimal | None
    cache_write_5m: Decimal | None
    cache_write_1h: Decimal | None


@dataclass(frozen=True, slots=True)
class ServiceTierPrice:
    """Token prices of one service tier (``flex``, ``priority``, ``batch``)."""

    name: str
    input: Decimal
    output: Decimal
    cache_read: Decimal | None


@dataclass(frozen=True, slots=True)
class PriceRow:
    price_id: str  # provider/model@effective_from, "override:" prefixed for user rows
    provider: str
    model: str
    effective_from: date
    effective_to: date | None
    input: Decimal  # USD per 1M tokens
    output: Decimal
    cache_read: Decimal | None
    cache_write_5m: Decimal | None
    cache_write_1h: Decimal | None
    tiers: tuple[PriceTier, ...]
    source: str
    # Audio input and cached audio input, where the model prices audio apart.
    input_audio: Decimal | None = None
    cache_read_audio: Decimal | None = None
    service_tiers: tuple[ServiceTierPrice, ...] = ()
    # USD per 1,000 server-side web search requests.
    web_search_per_1000: Decimal | None = None
    # What one unit of that fee is: "request" (each search the response
    # reports: Anthropic, the OpenAI tool, Gemini 3 per query) or "prompt"
    # (Gemini 2.x grounding: one fee per call that searched, however many
    # queries it ran).
    web_search_unit: str = "request"
    # USD per 1,000 by the request's search_context_size (low, medium, high):
    # OpenAI's search-preview chat models.  Where empty, web_search_per_1000.
    web_search_context_per_1000: tuple[tuple[str, Decimal], ...] = ()

    def web_search_rate(self, context_size: str | None) -> Decimal | None:
        """USD per 1,000 searches at the request's search context size."""
        for size, rate in self.web_search_context_per_1000:
            if size == (context_size or DEFAULT_SEARCH_CONTEXT):
                return rate
        return self.web_search_per_1000

    def service_tier(self, name: str | None) -> ServiceTierPrice | None:
        for tier in self.service_tiers:
            if tier.name == name:
                return tier
        return None

    def contains(self, day: date) -> bool:
        return self.effective_from <= day and (self.effective_to is None or day < self.effective_to)


# ------------------------------------------------------------------ parsing

_DEC_CACHE: dict[str, Decimal] = {}


def _dec(value) -> Decimal | None:
    if value is None:
        return None
    key = str(value)
    d = _DEC_CACHE.get(key)
    if d is None:
        d = _DEC_CACHE[key] = Decimal(key)
    return d


def _row_from_json(r: dict) -> PriceRow:
    provider, model, start = r["provider"], r["model"], r["effective_from"]
    end = r.get("effective_to")
    return PriceRow(
        price_id=f"{provider}/{model}@{start}",
        provider=provider,
        model=model,
        effective_from=date.fromisoformat(start),
        effective_to=date.fromisoformat(end) if end else None,
        input=_dec(r["input"]),
        output=_dec(r["output"]),
        cache_read=_dec(r.get("cache_read")),
        cache_write_5m=_dec(r.get("cache_write_5m")),
        cache_write_1h=_dec(r.get("cache_write_1h")),
        tiers=tuple(
            PriceTier(int(t["above_input_tokens"]), _dec(t["input"]), _dec(t["output"]), _dec(t.get("cache_read")),
                      _dec(t.get("cache_write_5m")), _dec(t.get("cache_write_1h")))
            for t in r.get("tiers") or ()
        ),
        source=r.get("source", ""),
        input_audio=_dec(r.get("input_audio")),
        cache_read_audio=_dec(r.get("cache_read_audio")),
        service_tiers=tuple(
            ServiceTierPrice(name, _dec(t["input"]), _dec(t["output"]), _dec(t.get("cache_read")))
            for name, t in sorted((r.get("service_tiers") or {}).items())
        ),
        web_search_per_1000=_dec(r.get("web_search_per_1000")),
        web_search_unit=r.get("web_search_unit") or "request",
        web_search_context_per_1000=tuple(
            (size, _dec(rate)) for size, rate in sorted((r.get("web_search_context_per_1000") or {}).items())),
    )


_PRICE_FIELDS = ("input", "output", "cache_read", "cache_write_5m", "cache_write_1h")
_EXTRA_FIELDS = ("input_audio", "cache_read_audio", "web_search_per_1000")
_SERVICE_TIER_KEYS = {"input", "output", "cache_read"}
_ROW_KEYS = {"provider", "model", "effective_from", "effective_to", "tiers", "source", "service_tiers",
             "web_search_unit", "web_search_context_per_1000", *_PRICE_FIELDS, *_EXTRA_FIELDS}
_TIER_KEYS = {"above_input_tokens", *_PRICE_FIELDS}


def _price(value, where: str, name: str, required: bool) -> Decimal | None:
    if value is None:
        if required:
            raise PricingError(f"{where}: missing {name!r}")
        return None
    if isinstance(value, bool) or not isinstance(value, (int, str, Decimal)):
        raise PricingError(f"{where}: {name} must be a number or a decimal string, got {value!r}")
    try:
        d = Decimal(str(value).strip())
    except InvalidOperation:
        raise PricingError(f"{where}: {name} is not a number: {value!r}") from None
    if not d.is_finite() or d < 0:
        raise PricingError(f"{where}: {name} must be a non-negative number, got {value!r}")
    return d


def _date(value, where: str, name: str) -> date | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    if isinstance(value, str):
        try:
            return date.fromisoformat(value)
        except ValueError:
            pass
    raise PricingError(f"{where}: {name} must be a date (YYYY-MM-DD), got {value!r}")


def _parse_overrides(path: Path) -> tuple[list[PriceRow], dict[str, str]]:
    try:
        text = path.read_text()
    except OSError as e:
        raise PricingError(f"{path}: cannot read price overrides: {e.strerror or e}") from None
    try:
        doc = tomllib.loads(text, parse_float=Decimal)
    except tomllib.TOMLDecodeError as e:
        raise PricingError(f"{path}: not valid TOML: {e}") from None
    unknown = set(doc) - {"price", "aliases"}
    if unknown:
        raise PricingError(f"{path}: unknown section(s) {', '.join(sorted(unknown))} (expected [[price]], [aliases])")

    rows: list[PriceRow] = []
    entries = doc.get("price", [])
    if not isinstance(entries, list):
        raise PricingError(f"{path}: 'price' must be an array of tables ([[price]])")
    for i, e in enumerate(entries, 1):
        where = f"{path}: [[price]] #{i}"
        if not isinstance(e, dict):
            raise PricingError(f"{where}: must be a table")
        extra = set(e) - _ROW_KEYS
        if extra:
            raise PricingError(f"{where}: unknown key(s) {', '.join(sorted(extra))}")
        provider, model = e.get("provider"), e.get("model")
        for name, v in (("provider", provider), ("model", model)):
            if not isinstance(v, str) or not v.strip():
                raise PricingError(f"{where}: missing {name!r}")
        start = _date(e.get("effective_from"), where, "effective_from") or date(2000, 1, 1)
        end = _date(e.get("effective_to"), where, "effective_to")
        if end is not None and end <= start:
            raise PricingError(f"{where}: effective_to {end} is not after effective_from {start}")
        tiers = []
        raw_tiers = e.get("tiers", [])
        if not isinstance(raw_tiers, list):
            raise PricingError(f"{where}: tiers must be an array of tables ([[price.tiers]])")
        for j, t in enumerate(raw_tiers, 1):
            tw = f"{where} tier #{j}"
            if not isinstance(t, dict) or set(t) - _TIER_KEYS:
                raise PricingError(f"{tw}: expected keys {', '.join(sorted(_TIER_KEYS))}")
            above = t.get("above_input_tokens")
            if isinstance(above, bool) or not isinstance(above, int) or above < 0:
                raise PricingError(f"{tw}: above_input_tokens must be a non-negative integer")
            tiers.append(PriceTier(above, *(_price(t.get(f), tw, f, f in ("input", "output")) for f in _PRICE_FIELDS)))
        service_tiers = []
        raw_service = e.get("service_tiers", {})
        if not isinstance(raw_service, dict):
            raise PricingError(f"{where}: service_tiers must be a table ([price.service_tiers.NAME])")
        for tier_name, t in sorted(raw_service.items()):
            tw = f"{where} service tier {tier_name!r}"
            if not isinstance(t, dict) or set(t) - _SERVICE_TIER_KEYS:
                raise PricingError(f"{tw}: expected keys {', '.join(sorted(_SERVICE_TIER_KEYS))}")
            service_tiers.append(ServiceTierPrice(
                tier_name.strip().lower(), *(_price(t.get(f), tw, f, f != "cache_read")
                                             for f in ("input", "output", "cache_read"))))
        unit = e.get("web_search_unit", "request")
        if unit not in WEB_SEARCH_UNITS:
            raise PricingError(f"{where}: web_search_unit must be one of {', '.join(WEB_SEARCH_UNITS)}")
        raw_context = e.get("web_search_context_per_1000", {})
        if not isinstance(raw_context, dict) or set(raw_context) - set(SEARCH_CONTEXT_SIZES):
            raise PricingError(f"{where}: web_search_context_per_1000 takes {', '.join(SEARCH_CONTEXT_SIZES)}")
        context_rates = tuple((size, _price(rate, where, f"web_search_context_per_1000.{size}", True))
                              for size, rate in sorted(raw_context.items()))
        provider, model = provider.strip().lower(), model.strip()
        rows.append(PriceRow(
            price_id=f"override:{provider}/{model}@{start.isoformat()}",
            provider=provider,
            model=model,
            effective_from=start,
            effective_to=end,
            **{f: _price(e.get(f), where, f, f in ("input", "output")) for f in _PRICE_FIELDS},
            tiers=tuple(sorted(tiers, key=lambda t: t.above_input_tokens)),
            source=str(e.get("source") or f"user override {path}"),
            **{f: _price(e.get(f), where, f, False) for f in _EXTRA_FIELDS},
            service_tiers=tuple(service_tiers),
            web_search_unit=unit,
            web_search_context_per_1000=context_rates,
        ))

    aliases_raw = doc.get("aliases", {})
    if not isinstance(aliases_raw, dict):
        raise PricingError(f"{path}: [aliases] must be a table of \"name\" = \"model\"")
    aliases = {}
    for name, target in aliases_raw.items():
        if not isinstance(target, str) or not target.strip():
            raise PricingError(f"{path}: [aliases] {name!r} must map to a model name string")
        aliases[name.strip().lower()] = target.strip()
    return rows, aliases


# ------------------------------------------------------------------ names

_PATH_PREFIX = re.compile(r"^(?:projects/[^/]+/locations/[^/]+/)?publishers/[^/]+/models/|^models/")
_ROUTE_PREFIXES = (
    "openai/", "anthropic/", "google/", "gemini/", "vertex_ai/", "vertex/", "googleai/", "azure/", "bedrock/",
    "mistral/", "mistralai/", "deepseek/", "deepseek-ai/", "xai/", "x-ai/", "groq/",
)
_BEDROCK_REGION = re.compile(r"^(?:us|eu|apac|ap|au|jp|ca|sa|global|us-gov)\.", re.I)
_BEDROCK_VENDOR = re.compile(r"^(?:anthropic|amazon|meta|mistral|cohere|ai21|deepseek|openai|qwen|writer)\.", re.I)
_VERSION_SUFFIX = re.compile(r"(?:-v\d+)?(?::\d+)?$")
_COLON_SUFFIX = re.compile(r":[^:/]*$")
_SNAPSHOT = re.compile(r"-(?:\d{4}-\d{2}-\d{2}|\d{8}|\d{4}|\d{3}|latest|preview-\d{2}-\d{4})$")
_CLAUDE_DOTS = re.compile(r"(\d)\.(\d)")


def _candidates(model: str) -> list[str]:
    """Names to try, most specific first (all lower case)."""
    out: list[str] = []

    def add(name: str) -> None:
        if name and name not in out:
            out.append(name)

    name = model.strip().lower()
    add(name)
    # Bedrock ARNs: the resource id (a profile id an [aliases] entry can map,
    # or a foundation model / system inference profile id).
    if name.startswith("arn:"):
        resource = name.split(":", 5)[-1]
        add(resource)
        name = resource.partition("/")[2] or resource
        add(name)
    # Path and routing prefixes: models/x, publishers/google/models/x, openai/x ...
    changed = True
    while changed:
        changed = False
        m = _PATH_PREFIX.match(name)
        if m:
            name, changed = name[m.end():], True
        for p in _ROUTE_PREFIXES:
            if name.startswith(p):
                name, changed = name[len(p):], True
        add(name)
    # Vertex version: claude-sonnet-4-5@20250929 -> claude-sonnet-4-5-20250929, claude-sonnet-4-5
    if "@" in name:
        base, _, ver = name.partition("@")
        if ver.isdigit():
            add(f"{base}-{ver}")
        add(base)
        name = base
    # OpenRouter-style dotted Claude versions: claude-sonnet-4.5 -> claude-sonnet-4-5
    if "claude" in name:
        add(_CLAUDE_DOTS.sub(r"\1-\2", name))
    # Bedrock: us.anthropic.claude-...-v1:0 -> anthropic.claude-...-v1:0 -> claude-...
    if _BEDROCK_REGION.match(name):
        name = _BEDROCK_REGION.sub("", name)
        add(name)
    if _BEDROCK_VENDOR.match(name):
        add(_VERSION_SUFFIX.sub("", name))
        name = _BEDROCK_VENDOR.sub("", name)
        add(name)
    stripped = _VERSION_SUFFIX.sub("", name)
    add(stripped)
    add(_COLON_SUFFIX.sub("", stripped))  # openrouter ":free", ollama-ish ":tag"
    # Dated snapshot without its own row -> its family.
    family = _COLON_SUFFIX.sub("", stripped)
    while True:
        shorter = _SNAPSHOT.sub("", family)
        if shorter == family or not shorter:
            break
        family = shorter
        add(family)
    return out


def _day(at: date | datetime | None) -> date:
    if at is None:
        return datetime.now(UTC).date()
    if isinstance(at, datetime):
        if at.tzinfo is not None:
            at = at.astimezone(UTC)
        return at.date()
    return at


# ------------------------------------------------------------------ table


class PriceTable:
    def __init__(self, rows: list[PriceRow], aliases: dict[str, str] | None = None) -> None:
        self._rows = rows
        self._aliases = {k.lower(): v for k, v in (aliases or {}).items()}
        self._by_id: dict[str, PriceRow] = {}
        # name -> provider -> rows (later rows win ties: overrides are added last)
        self._index: dict[str, dict[str, list[PriceRow]]] = {}
        for row in rows:
            self._by_id[row.price_id] = row
            self._index.setdefault(row.model.lower(), {}).setdefault(row.provider, []).append(row)
        for providers in self._index.values():
            for lst in providers.values():
                lst.sort(key=lambda r: (r.effective_from, r.price_id.startswith("override:")))
        self._memo: dict[tuple[str, str | None, date], PriceRow | None] = {}

    @classmethod
    def load(cls, overrides: Path | None = None) -> PriceTable:
        """The shipped price table, plus the user's override file if given and present.

        An override row replaces a shipped row of the same provider, model and
        effective_from, and otherwise adds a dated row (the row with the latest
        effective_from that covers a date wins).
        """
        try:
            doc = json.loads(SHIPPED_PRICES.read_text())
            rows = [_row_from_json(r) for r in doc["rows"]]
        except (OSError, ValueError, KeyError, TypeError, InvalidOperation) as e:
            raise PricingError(f"{SHIPPED_PRICES}: unusable price table: {e}") from None
        aliases: dict[str, str] = {}
        if overrides is not None and Path(overrides).exists():
            extra, aliases = _parse_overrides(Path(overrides))
            replaced = {(r.provider, r.model.lower(), r.effective_from) for r in extra}
            rows = [r for r in rows if (r.provider, r.model.lower(), r.effective_from) not in replaced] + extra
        return cls(rows, aliases)

    def __len__(self) -> int:
        return len(self._rows)

    def by_id(self, price_id: str) -> PriceRow | None:
        return self._by_id.get(price_id)

    @staticmethod
    def _pick(rows: list[PriceRow], day: date) -> PriceRow | None:
        best = None
        for r in rows:  # sorted by effective_from: the latest covering row wins
            if r.contains(day):
                best = r
        if best is None and rows and day < rows[0].effective_from:
            # Before the first known price: the earliest row is the best we know.
            best = rows[0]
        return best

    def _names(self, model: str) -> list[str]:
        names = _candidates(model)
        alias = None
        for n in names:
            alias = self._aliases.get(n)
            if alias:
                break
        if alias:
            names = _candidates(alias) + [n for n in names if n not in _candidates(alias)]
        return names

    def lookup(self, model: str, provider: str | None = None, at: date | datetime | None = None) -> PriceRow | None:
        """The price row in force for ``model`` at ``at`` (default: today, UTC).

        Tries the provider's own rows with ever more general names (exact,
        prefixes stripped, Bedrock region/version stripped, snapshot -> family),
        then the same names across all providers.  Ollama models are not priced.
        """
        if not model:
            return None
        day = _day(at)
        key = (model, provider, day)
        try:
            return self._memo[key]
        except KeyError:
            pass
        row = self._lookup(model, provider, day)
        if len(self._memo) >= _MEMO_LIMIT:
            self._memo.clear()
        self._memo[key] = row
        return row

    def _lookup(self, model: str, provider: str | None, day: date) -> PriceRow | None:
        prov = (provider or "").strip().lower() or None
        prov = _PROVIDER_SYNONYMS.get(prov, prov)
        names = self._names(model)
        if prov in _UNPRICED_PROVIDERS:
            # No public price (a local model): only a row for this very provider
            # prices it, an internal rate from the override file (chargeback).
            for n in names:
                rows = self._index.get(n, {}).get(prov)
                if rows:
                    return self._pick(rows, day)
            return None
        if prov is not None:
            for n in names:
                rows = self._index.get(n, {}).get(prov)
                if rows:
                    return self._pick(rows, day)
        for n in names:
            by_provider = self._index.get(n)
            if not by_provider:
                continue
            for p in self._provider_order(by_provider):
                return self._pick(by_provider[p], day)
        return None

    @staticmethod
    def _provider_order(by_provider: dict[str, list[PriceRow]]) -> list[str]:
        rank = {p: i for i, p in enumerate(_PROVIDER_ORDER)}
        return sorted(by_provider, key=lambda p: (rank.get(p, len(rank)), p))

    def rows_for(self, model: str) -> list[PriceRow]:
        """All dated rows of every provider for the first name form of ``model`` that is priced."""
        for n in self._names(model):
            by_provider = self._index.get(n)
            if by_provider:
                return [r for p in self._provider_order(by_provider) for r in by_provider[p]]
        return []
