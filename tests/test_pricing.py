"""Price table, model matching and cost arithmetic.

Expected costs are worked out by hand from the published prices (USD per 1M
tokens): gpt-4o-mini 0.15/0.60 (cached 0.075); claude-sonnet-4-5 3/15, cache
read 0.30, 5m write 3.75, 1h write 6, above 200k input tokens 6/22.5 (read
0.60); gemini-2.5-pro 1.25/10, above 200k input tokens 2.50/15.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from lumen_agent.parsers.usage import Usage
from lumen_agent.pricing import refresh
from lumen_agent.pricing.cost import compute_cost
from lumen_agent.pricing.table import PriceRow, PriceTable, PriceTier, PricingError

D = Decimal
SHARED = Path(__file__).parents[2] / "shared" / "data" / "pricing"


@pytest.fixture(scope="module")
def table() -> PriceTable:
    return PriceTable.load()


def _row(**kw) -> PriceRow:
    base = dict(price_id="t/m@2020-01-01", provider="t", model="m", effective_from=date(2020, 1, 1),
                effective_to=None, input=D("1"), output=D("2"), cache_read=None, cache_write_5m=None,
                cache_write_1h=None, tiers=(), source="test")
    base.update(kw)
    return PriceRow(**base)


# ---------------------------------------------------------------- the table

def test_shipped_table_covers_all_providers(table):
    providers = {r.provider for r in table._rows}
    assert {"openai", "anthropic", "google", "bedrock", "azure", "mistral", "deepseek", "xai", "groq"} <= providers
    assert len(table) > 500


def test_price_ids_are_unique_and_resolve(table):
    ids = [r.price_id for r in table._rows]
    assert len(ids) == len(set(ids))
    row = table.lookup("claude-sonnet-4-5", "anthropic")
    assert row.price_id == "anthropic/claude-sonnet-4-5@2025-09-29"
    assert table.by_id(row.price_id) is row
    assert table.by_id("nope/nope@2020-01-01") is None


def test_every_row_names_its_source(table):
    for r in table._rows:
        assert r.source, r.price_id
        assert ".json" in r.source


def test_product_does_not_read_shared_data():
    pkg = Path(__file__).parents[1] / "pricing"
    for name in ("table.py", "cost.py"):
        assert "/work/shared" not in (pkg / name).read_text()
    doc = json.loads((pkg / "prices.json").read_text())
    assert doc["rows"]


# ---------------------------------------------------------------- matching

def test_exact_match_case_insensitive(table):
    row = table.lookup("GPT-4o-Mini", "openai")
    assert (row.provider, row.model, row.input, row.output, row.cache_read) == (
        "openai", "gpt-4o-mini", D("0.15"), D("0.6"), D("0.075"))


def test_anthropic_prices(table):
    row = table.lookup("claude-sonnet-4-5", "anthropic")
    assert (row.input, row.output, row.cache_read, row.cache_write_5m, row.cache_write_1h) == (
        D("3"), D("15"), D("0.3"), D("3.75"), D("6"))
    assert row.tiers[0].above_input_tokens == 200_000
    assert (row.tiers[0].input, row.tiers[0].output) == (D("6"), D("22.5"))


def test_snapshot_with_own_row(table):
    row = table.lookup("gpt-4o-2024-08-06", "openai")
    assert row.input == D("2.5") and row.output == D("10")


def test_snapshot_falls_back_to_family(table):
    # no row of its own -> family gpt-4o / gpt-4o-mini / claude-sonnet-4-5
    assert table.lookup("gpt-4o-2099-01-01", "openai").model == "gpt-4o"
    assert table.lookup("gpt-4o-mini-2099-12-31", "openai").model == "gpt-4o-mini"
    assert table.lookup("claude-sonnet-4-5-20991231", "anthropic").model == "claude-sonnet-4-5"


@pytest.mark.parametrize("name,provider,model", [
    ("openai/gpt-4o", "openrouter", "gpt-4o"),
    ("openai/gpt-4o", None, "gpt-4o"),
    ("anthropic/claude-sonnet-4-5", "openrouter", "claude-sonnet-4-5"),
    ("anthropic/claude-sonnet-4.5", "openrouter", "claude-sonnet-4-5"),
    ("models/gemini-2.5-flash", "google", "gemini-2.5-flash"),
    ("google/gemini-2.5-flash", "openai-compatible", "gemini-2.5-flash"),
    ("publishers/google/models/gemini-2.5-pro", "google", "gemini-2.5-pro"),
    ("projects/p/locations/us-central1/publishers/google/models/gemini-2.5-pro", "google", "gemini-2.5-pro"),
    ("claude-sonnet-4-5@20250929", "google", "claude-sonnet-4-5"),
])
def test_prefixes_stripped(table, name, provider, model):
    assert table.lookup(name, provider).model == model


def test_bedrock_ids(table):
    row = table.lookup("us.anthropic.claude-sonnet-4-5-20250929-v1:0", "bedrock")
    assert row.provider == "bedrock" and "claude-sonnet-4-5" in row.model
    plain = table.lookup("anthropic.claude-sonnet-4-5-20250929-v1:0", "bedrock")
    assert plain.provider == "bedrock" and plain.input == D("3")
    assert table.lookup("apac.anthropic.claude-sonnet-4-5-20250929-v1:0", "bedrock").provider == "bedrock"


def test_bedrock_falls_back_to_anthropic(table):
    # A Claude model the bedrock rows lack: anthropic's own price.
    row = table.lookup("us.anthropic.claude-sonnet-4-5-20991231-v1:0", "bedrock")
    assert row.provider == "anthropic" and row.model == "claude-sonnet-4-5"


def test_provider_none_prefers_first_party(table):
    assert table.lookup("gpt-4o", None).provider == "openai"
    assert table.lookup("claude-sonnet-4-5", None).provider == "anthropic"
    assert table.lookup("gemini-2.5-pro", "azure").provider == "google"


def test_unknown_and_local_models(table):
    assert table.lookup("totally-unknown-model-9000", "openai") is None
    assert table.lookup("totally-unknown-model-9000") is None
    assert table.lookup("gpt-4o", "ollama") is None
    assert table.lookup("llama3.2:3b", "ollama") is None
    assert table.lookup("", "openai") is None


def test_other_providers(table):
    assert table.lookup("text-embedding-3-small", "openai").input == D("0.02")
    assert table.lookup("deepseek-chat", "deepseek", date(2026, 1, 1)).input == D("0.28")
    assert table.lookup("llama-3.3-70b-versatile", "groq").input == D("0.59")
    assert table.lookup("grok-4", "xai").input == D("3")
    assert table.lookup("mistral-large-latest", "mistral") is not None
    assert table.lookup("gpt-4o", "azure").provider == "azure"


def test_deepseek_v4_flash_cache_read_decision(table):
    # LiteLLM says 0.0028, llm-prices 0.028: 0.028 chosen (see pricing/README.md)
    assert table.lookup("deepseek-v4-flash", "deepseek").cache_read == D("0.028")


# ---------------------------------------------------------------- dated history

def test_dated_history(table):
    # llm-prices: gpt-5.6-terra 2.5/15 until 2026-07-30, 2/12 from then.
    old = table.lookup("gpt-5.6-terra", "openai", date(2026, 7, 29))
    new = table.lookup("gpt-5.6-terra", "openai", date(2026, 7, 30))
    assert (old.input, old.output) == (D("2.5"), D("15"))
    assert (new.input, new.output) == (D("2"), D("12"))
    assert old.effective_to == date(2026, 7, 30) and new.effective_from == date(2026, 7, 30)
    assert old.price_id != new.price_id
    # claude-sonnet-5: 2/10 until 2026-09-01, 3/15 from then
    assert table.lookup("claude-sonnet-5", "anthropic", date(2026, 8, 31)).input == D("2")
    assert table.lookup("claude-sonnet-5", "anthropic", datetime(2026, 9, 1, 0, 0, tzinfo=UTC)).input == D("3")
    # deepseek-chat history: 0.14 -> 0.27 (2025-02-08) -> 0.28/0.42 (2025-09-29)
    assert table.lookup("deepseek-chat", "deepseek", date(2025, 1, 1)).input == D("0.14")
    assert table.lookup("deepseek-chat", "deepseek", date(2025, 5, 1)).output == D("1.1")
    # o3: 10/40 before OpenAI's 2025-06-10 cut
    assert table.lookup("o3", "openai", date(2025, 6, 9)).input == D("10")
    assert table.lookup("o3", "openai", date(2025, 6, 10)).input == D("2")


def test_rows_for(table):
    rows = table.rows_for("gpt-5.6-terra")
    openai_rows = [r for r in rows if r.provider == "openai"]
    assert [r.input for r in openai_rows] == [D("2.5"), D("2")]
    assert rows[0].provider == "openai"
    assert table.rows_for("no-such-model") == []


def test_lookup_is_memoised(table, monkeypatch):
    first = table.lookup("gpt-4o-mini-2024-07-18", "openai", date(2026, 1, 1))
    searches = []
    monkeypatch.setattr(table, "_lookup", lambda *a: searches.append(a))
    for _ in range(100):
        assert table.lookup("gpt-4o-mini-2024-07-18", "openai", date(2026, 1, 1)) is first
    assert searches == []  # answered from the memo, no name search


# ---------------------------------------------------------------- overrides

def test_overrides_and_aliases(tmp_path):
    f = tmp_path / "prices.toml"
    f.write_text('''
[[price]]
provider = "openai"
model = "gpt-4o"
effective_from = 2026-10-01
input = "2.00"
output = 8
cache_read = 0.5

[[price]]
provider = "openai-compatible"
model = "my-local-finetune"
effective_from = "2025-01-01"
input = "0.1"
output = "0.2"

[[price.tiers]]
above_input_tokens = 100000
input = "0.2"
output = "0.4"

[aliases]
"My-Azure-Deployment" = "gpt-4o-mini"
"prod-claude" = "claude-sonnet-4-5"
''')
    t = PriceTable.load(f)
    before = t.lookup("gpt-4o", "openai", date(2026, 9, 30))
    after = t.lookup("gpt-4o", "openai", date(2026, 10, 2))
    assert before.input == D("2.5") and not before.price_id.startswith("override:")
    assert (after.input, after.output, after.cache_read) == (D("2.00"), D("8"), D("0.5"))
    assert after.price_id == "override:openai/gpt-4o@2026-10-01"
    assert t.by_id(after.price_id) is after
    own = t.lookup("my-local-finetune", "openai-compatible")
    assert own.tiers == (PriceTier(100000, D("0.2"), D("0.4"), None, None, None),)
    assert t.lookup("my-azure-deployment", "azure").model == "gpt-4o-mini"
    assert t.lookup("prod-claude", None).model == "claude-sonnet-4-5"


def test_override_replaces_same_dated_row(tmp_path):
    shipped = PriceTable.load().lookup("gpt-4o-mini", "openai")
    f = tmp_path / "p.toml"
    f.write_text(f'''[[price]]
provider = "openai"
model = "gpt-4o-mini"
effective_from = {shipped.effective_from.isoformat()}
input = "9"
output = "9"
''')
    t = PriceTable.load(f)
    assert t.lookup("gpt-4o-mini", "openai").input == D("9")
    assert len(t) == len(PriceTable.load())


def test_missing_override_file_is_fine(tmp_path):
    assert len(PriceTable.load(tmp_path / "absent.toml")) == len(PriceTable.load())


@pytest.mark.parametrize("text,needle", [
    ("[[price]\nprovider=", "not valid TOML"),
    ('[[price]]\nprovider = "openai"\nmodel = "x"\noutput = "1"\n', "missing 'input'"),
    ('[[price]]\nprovider = "openai"\nmodel = "x"\ninput = "abc"\noutput = "1"\n', "input is not a number"),
    ('[[price]]\nprovider = "openai"\nmodel = "x"\ninput = "-1"\noutput = "1"\n', "non-negative"),
    ('[[price]]\nprovider = "openai"\ninput = "1"\noutput = "1"\n', "missing 'model'"),
    ('[[price]]\nprovider = "openai"\nmodel = "x"\ninput = 1\noutput = 1\neffective_from = "yesterday"\n',
     "effective_from must be a date"),
    ('[[price]]\nprovider = "openai"\nmodel = "x"\ninput = 1\noutput = 1\ncolour = "red"\n', "unknown key"),
    ('[aliases]\nfoo = 3\n', "must map to a model name"),
    ('[prices]\n', "unknown section"),
])
def test_malformed_override_file(tmp_path, text, needle):
    f = tmp_path / "bad.toml"
    f.write_text(text)
    with pytest.raises(PricingError) as e:
        PriceTable.load(f)
    msg = str(e.value)
    assert str(f) in msg and needle in msg and "\n" not in msg


# ---------------------------------------------------------------- cost

def test_cost_gpt_4o_mini(table):
    row = table.lookup("gpt-4o-mini", "openai")
    # 1000 x 0.15 + 500 x 0.60 = 150 + 300 = 450 per 1M -> 0.00045
    assert compute_cost(Usage(input_tokens=1000, output_tokens=500), row) == D("0.00045000")
    # 1000 input of which 400 cached: 600 x 0.15 + 400 x 0.075 + 500 x 0.6 = 90 + 30 + 300 = 420
    assert compute_cost(Usage(input_tokens=1000, output_tokens=500, cache_read_tokens=400), row) == D("0.00042000")


def test_cost_claude_sonnet_4_5_with_caching(table):
    row = table.lookup("claude-sonnet-4-5", "anthropic")
    u = Usage(input_tokens=10_000, cache_read_tokens=2_000, cache_write_tokens=3_000, cache_write_1h_tokens=1_000,
              output_tokens=1_000)
    # uncached 5000 x 3 = 15000; read 2000 x 0.3 = 600; 5m 2000 x 3.75 = 7500; 1h 1000 x 6 = 6000;
    # output 1000 x 15 = 15000; total 44100 / 1M = 0.0441
    assert compute_cost(u, row) == D("0.04410000")


def test_cost_claude_long_context_tier(table):
    row = table.lookup("claude-sonnet-4-5", "anthropic")
    u = Usage(input_tokens=250_000, cache_read_tokens=50_000, output_tokens=2_000)
    # tier above 200k: 200000 x 6 + 50000 x 0.6 + 2000 x 22.5 = 1200000 + 30000 + 45000 = 1275000 -> 1.275
    assert compute_cost(u, row) == D("1.27500000")


def test_cost_gemini_2_5_pro_tiers(table):
    row = table.lookup("gemini-2.5-pro", "google")
    # at the threshold: base prices. 200000 x 1.25 + 1000 x 10 = 260000 -> 0.26
    assert compute_cost(Usage(input_tokens=200_000, output_tokens=1_000), row) == D("0.26000000")
    # above: 200001 x 2.5 + 1000 x 15 = 500002.5 + 15000 = 515002.5 -> 0.5150025
    assert compute_cost(Usage(input_tokens=200_001, output_tokens=1_000), row) == D("0.51500250")


def test_cost_missing_counts_and_none():
    row = _row()
    assert compute_cost(Usage(), row) is None
    assert compute_cost(Usage(usage_missing=True), row) is None
    assert compute_cost(Usage(output_tokens=1_000_000), row) == D("2.00000000")
    assert compute_cost(Usage(input_tokens=1_000_000), row) == D("1.00000000")


def test_cost_fallbacks_to_input_price():
    row = _row(input=D("4"), output=D("0"))
    # no cache prices: reads and writes (5m and 1h) at the input price
    u = Usage(input_tokens=1000, cache_read_tokens=100, cache_write_tokens=300, cache_write_1h_tokens=100)
    assert compute_cost(u, row) == D("0.00400000")
    # 1h falls back to the 5m price before the input price
    row2 = _row(input=D("4"), output=D("0"), cache_write_5m=D("5"))
    # 600 x 4 + 100 x 4 + 200 x 5 + 100 x 5 = 2400 + 400 + 1000 + 500 = 4300
    assert compute_cost(u, row2) == D("0.00430000")


def test_cost_rounding_half_even():
    row = _row(input=D("0.000000005"), output=D("0"))
    # 1 token x 0.000000005 / 1M = 5e-15 -> 0E-8
    assert compute_cost(Usage(input_tokens=1), row) == D("0E-8")
    row = _row(input=D("0.025"), output=D("0"))
    # 1 token: 0.025 / 1e6 = 2.5e-8 -> half-even -> 2e-8
    assert compute_cost(Usage(input_tokens=1), row) == D("0.00000002")
    # 3 tokens: 7.5e-8 -> 8e-8
    assert compute_cost(Usage(input_tokens=3), row) == D("0.00000008")


def test_cost_is_decimal_with_8_places(table):
    c = compute_cost(Usage(input_tokens=7, output_tokens=3), table.lookup("gpt-4o", "openai"))
    assert isinstance(c, Decimal) and c.as_tuple().exponent == -8


# ---------------------------------------------------------------- refresh

@pytest.mark.skipif(not SHARED.exists(), reason="reference price data not present")
def test_refresh_reproduces_shipped_table(tmp_path):
    out = tmp_path / "prices.json"
    assert refresh.main(["--from", str(SHARED), "--out", str(out)]) == 0
    shipped = json.loads((Path(__file__).parents[1] / "pricing" / "prices.json").read_text())
    assert json.loads(out.read_text()) == shipped


def test_refresh_llm_prices_only_model(tmp_path):
    src = tmp_path / "src"
    (src / "llm-prices").mkdir(parents=True)
    (src / "litellm_model_prices.json").write_text(json.dumps({
        "claude-test-1": {"litellm_provider": "anthropic", "mode": "chat",
                          "input_cost_per_token": 2e-06, "output_cost_per_token": 1e-05}}))
    (src / "langfuse_default_model_prices.json").write_text("[]")
    (src / "llm-prices" / "openai.json").write_text(json.dumps({"vendor": "openai", "models": [
        {"id": "gpt-x", "name": "X", "price_history": [
            {"input": 1, "output": 4, "input_cached": 0.1, "from_date": None, "to_date": "2026-01-01"},
            {"input": 0.5, "output": 2, "input_cached": 0.05, "from_date": "2026-01-01", "to_date": None}]},
        {"id": "gpt-x-272k", "name": "X long", "price_history": [
            {"input": 2, "output": 8, "input_cached": 0.2, "from_date": None, "to_date": None}]},
    ]}))
    out = tmp_path / "p.json"
    refresh.main(["--from", str(src), "--out", str(out)])
    rows = {(r["model"], r["effective_from"]): r for r in json.loads(out.read_text())["rows"]}
    claude = rows[("claude-test-1", refresh.DEFAULT_EFFECTIVE_FROM)]
    # Anthropic rule: 5m = 1.25x, 1h = 2x, read = 0.1x input, and the source says so
    assert (claude["cache_write_5m"], claude["cache_write_1h"], claude["cache_read"]) == ("2.5", "4", "0.2")
    assert "2x input (Anthropic rule)" in claude["source"]
    new = rows[("gpt-x", "2026-01-01")]
    assert (new["input"], new["output"], new["cache_read"], new["effective_to"]) == ("0.5", "2", "0.05", None)
    old = rows[("gpt-x", refresh.DEFAULT_EFFECTIVE_FROM)]
    assert old["effective_to"] == "2026-01-01" and old["tiers"][0]["above_input_tokens"] == 272000
