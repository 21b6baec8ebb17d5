"""The data commands through the CLI runner, on real DuckDB files:
sql, report, pricing show/missing, reprice, and one-line user errors."""

from __future__ import annotations

import json
import subprocess
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest
from test_store_support import make_call, script
from typer.testing import CliRunner

from lumen_agent.cli import app
from lumen_agent.outputs.queries import QueryError, open_readonly, parse_since, reprice, run_sql
from lumen_agent.outputs.store import CallStore

runner = CliRunner()
NO_TOKENS = dict(
    input_tokens=None,
    output_tokens=None,
    cache_read_tokens=None,
    cache_write_tokens=None,
    cost_usd=None,
    price_id=None,
    usage_missing=True,
)


def cli(*args: str):
    return runner.invoke(app, list(args))


def ok(*args: str) -> str:
    result = cli(*args)
    assert result.exit_code == 0, (result.stdout, result.stderr)
    assert result.stderr == ""
    return result.stdout


@pytest.fixture
def db(tmp_path):
    path = tmp_path / "lumen.duckdb"
    day2 = timedelta(days=1)
    calls = [
        make_call(0),
        make_call(1, input_tokens=2000, output_tokens=100, cache_read_tokens=500,
                  cost_usd=Decimal("0.00537500"), streaming=True),
        make_call(2, ts_start=make_call(2).ts_start + day2, ts_end=make_call(2).ts_end + day2,
                  provider="anthropic", endpoint="messages", model="claude-sonnet-4-5",
                  request_model="claude-sonnet-4-5", process="node", tenant="beta",
                  input_tokens=300, output_tokens=50, cache_write_tokens=100,
                  cost_usd=Decimal("0.00172500"), price_id="anthropic/claude-sonnet-4-5@2025-09-29",
                  api_key_hash="k-9999ffff"),
        make_call(3, model="lumen-test-model", request_model="lumen-test-model",
                  input_tokens=10, output_tokens=5, cost_usd=None, price_id=None, unpriced=True),
        make_call(4, **NO_TOKENS),
    ]
    with CallStore(path) as store:
        store.add_many(calls)
    return path


# -- sql -------------------------------------------------------------------


def test_sql_json_exact(db):
    out = ok("sql", "SELECT id, ts_start, model, input_tokens, cost_usd, streaming, unpriced "
                    "FROM llm_calls ORDER BY id LIMIT 2", "--db", str(db), "--format", "json")
    assert out == (
        '[{"id": "call-000000", "ts_start": "2026-03-01T12:00:00+00:00", "model": "gpt-4o-2024-08-06", '
        '"input_tokens": 1000, "cost_usd": 0.00450000, "streaming": false, "unpriced": false},\n'
        ' {"id": "call-000001", "ts_start": "2026-03-01T12:00:01+00:00", "model": "gpt-4o-2024-08-06", '
        '"input_tokens": 2000, "cost_usd": 0.00537500, "streaming": true, "unpriced": false}]\n'
    )
    # Exact decimals survive a JSON parser that keeps them.
    parsed = json.loads(out, parse_float=Decimal)
    assert parsed[1]["cost_usd"] == Decimal("0.005375")


def test_sql_csv_exact(db):
    out = ok("sql", "SELECT id, ts_end, latency_ms, cost_usd, tenant, container_id FROM llm_calls "
                    "WHERE id IN ('call-000002', 'call-000004') ORDER BY id",
             "--db", str(db), "-f", "csv")
    assert out == (
        "id,ts_end,latency_ms,cost_usd,tenant,container_id\n"
        "call-000002,2026-03-02T12:00:02.750000+00:00,750.25,0.00172500,beta,\n"
        "call-000004,2026-03-01T12:00:04.750000+00:00,750.25,,acme,\n"
    )


def test_sql_table_and_empty_results(db):
    out = ok("sql", "SELECT outcome, count(*) AS calls FROM llm_calls GROUP BY 1", "--db", str(db))
    assert out == (
        "outcome   calls\n"
        "───────────────\n"
        "success       5\n"
    )
    assert ok("sql", "SELECT 1 AS a WHERE false", "--db", str(db), "-f", "json") == "[]\n"
    assert ok("sql", "SELECT 1 AS a WHERE false", "--db", str(db), "-f", "csv") == "a\n"


def test_sql_nested_timestamps_and_views(db):
    out = ok("sql", "SELECT [min(ts_start)] AS l FROM llm_calls", "--db", str(db), "-f", "csv")
    assert out == "l\n['2026-03-01 12:00:00+00']\n"
    out = ok("sql", "SELECT * FROM calls_by_day ORDER BY day, provider", "--db", str(db), "-f", "csv")
    assert out == (
        "day,provider,calls,input_tokens,output_tokens,cache_read_tokens,cache_write_tokens,cost_usd,unpriced_calls\n"
        "2026-03-01,openai,4,3010,305,500,0,0.00987500,1\n"
        "2026-03-02,anthropic,1,300,50,0,100,0.00172500,0\n"
    )


# -- report ----------------------------------------------------------------


def test_report_by_model_exact_sums(db):
    out = ok("report", "--by", "model", "--db", str(db), "-f", "json")
    assert json.loads(out, parse_float=Decimal) == [
        {"model": "gpt-4o-2024-08-06", "calls": 3, "input_tokens": 3000, "output_tokens": 300,
         "cache_read_tokens": 500, "cache_write_tokens": 0, "cost_usd": Decimal("0.00987500"),
         "unpriced_calls": 0},
        {"model": "claude-sonnet-4-5", "calls": 1, "input_tokens": 300, "output_tokens": 50,
         "cache_read_tokens": 0, "cache_write_tokens": 100, "cost_usd": Decimal("0.00172500"),
         "unpriced_calls": 0},
        {"model": "lumen-test-model", "calls": 1, "input_tokens": 10, "output_tokens": 5,
         "cache_read_tokens": 0, "cache_write_tokens": 0, "cost_usd": None,
         "unpriced_calls": 1},
    ]
    assert '"cost_usd": 0.00987500' in out
    assert '"cost_usd": null, "unpriced_calls": 1' in out


def test_report_unpriced_model_cost_is_empty_never_zero(db):
    # lumen-test-model has 10 + 5 tokens and no price: its spend is unknown,
    # which CSV shows as an empty field and a table as a blank cell, never
    # 0.00000000 (that would read as free).
    out = ok("report", "--by", "model", "--db", str(db), "-f", "csv")
    assert out == (
        "model,calls,input_tokens,output_tokens,cache_read_tokens,cache_write_tokens,cost_usd,unpriced_calls\n"
        "gpt-4o-2024-08-06,3,3000,300,500,0,0.00987500,0\n"
        "claude-sonnet-4-5,1,300,50,0,100,0.00172500,0\n"
        "lumen-test-model,1,10,5,0,0,,1\n"
    )
    table = ok("report", "--by", "model", "--db", str(db)).splitlines()
    assert table[-1].split() == ["lumen-test-model", "1", "10", "5", "0", "0", "1"]
    # A group with priced and unpriced calls keeps the known part of its cost
    # (unpriced_calls says it understates); a group of calls without usage
    # (errors) cost nothing known to be charged: 0.
    out = ok("report", "--by", "provider", "--db", str(db), "-f", "csv")
    assert "openai,4,3010,305,500,0,0.00987500,1\n" in out


def test_report_table_exact(db):
    out = ok("report", "--by", "provider", "--db", str(db))
    header = "provider    calls   input_tokens   output_tokens   cache_read_tokens   cache_write_tokens     cost_usd   unpriced_calls"
    assert out == (
        header + "\n"
        + "─" * len(header) + "\n"
        + "openai          4           3010             305                 500                    0   0.00987500                1\n"
        + "anthropic       1            300              50                   0                  100   0.00172500                0\n"
    )


@pytest.mark.parametrize(
    ("by", "keys"),
    [
        ("process", ["python3", "node"]),
        ("day", ["2026-03-01", "2026-03-02"]),
        ("key", ["k-1234abcd", "k-9999ffff"]),
        ("tenant", ["acme", "beta"]),
    ],
)
def test_report_other_dimensions(db, by, keys):
    rows = list(csv_rows(ok("report", "--by", by, "--db", str(db), "-f", "csv")))
    assert [r[0] for r in rows[1:]] == keys
    assert sum(int(r[1]) for r in rows[1:]) == 5


def csv_rows(text: str):
    import csv
    import io

    return csv.reader(io.StringIO(text))


def test_report_since(db):
    out = ok("report", "--by", "provider", "--since", "2026-03-02", "--db", str(db), "-f", "csv")
    assert out == (
        "provider,calls,input_tokens,output_tokens,cache_read_tokens,cache_write_tokens,cost_usd,unpriced_calls\n"
        "anthropic,1,300,50,0,100,0.00172500,0\n"
    )
    # The data is from March 2026; the last 30 minutes hold nothing.
    assert ok("report", "--since", "30m", "--db", str(db), "-f", "json") == "[]\n"


def test_parse_since():
    now = datetime(2026, 5, 10, 8, 30, tzinfo=UTC)
    assert parse_since("7d", now) == now - timedelta(days=7)
    assert parse_since("24h", now) == now - timedelta(hours=24)
    assert parse_since("30m", now) == now - timedelta(minutes=30)
    assert parse_since("2w", now) == now - timedelta(weeks=2)
    assert parse_since("2026-01-31") == datetime(2026, 1, 31, tzinfo=UTC)
    assert parse_since("2026-01-31T10:00:00+02:00") == datetime(2026, 1, 31, 8, tzinfo=UTC)
    with pytest.raises(QueryError, match="bad --since"):
        parse_since("yesterday")


# -- pricing ---------------------------------------------------------------


def test_pricing_missing(db):
    out = ok("pricing", "missing", "--db", str(db), "-f", "csv")
    assert out == (
        "provider,model,calls,input_tokens,output_tokens,first_seen,last_seen\n"
        "openai,lumen-test-model,1,10,5,2026-03-01T12:00:03+00:00,2026-03-01T12:00:03+00:00\n"
    )


OVERRIDES_V1 = """
[[price]]
provider = "openai"
model = "lumen-test-model"
effective_from = 2026-01-01
input = "1"
output = "2"

[[price]]
provider = "openai"
model = "lumen-test-model"
effective_from = 2026-03-01
input = "1.5"
output = "3"
"""


def test_pricing_show_lists_dated_rows(tmp_path):
    prices = tmp_path / "prices.toml"
    prices.write_text(OVERRIDES_V1)
    out = ok("pricing", "show", "lumen-test-model", "--prices", str(prices), "-f", "json")
    rows = json.loads(out, parse_float=Decimal)
    assert [(r["provider"], r["effective_from"], r["input"], r["output"]) for r in rows] == [
        ("openai", "2026-01-01", Decimal("1"), Decimal("2")),
        ("openai", "2026-03-01", Decimal("1.5"), Decimal("3")),
    ]
    # The shipped table, filtered by provider.
    out = ok("pricing", "show", "gpt-4o", "--provider", "openai", "-f", "csv",
             "--prices", str(tmp_path / "none.toml"))
    assert all(r[1] == "openai" for r in list(csv_rows(out))[1:])


def test_reprice_after_a_price_change(tmp_path):
    db = tmp_path / "lumen.duckdb"
    feb = datetime(2026, 2, 15, tzinfo=UTC)
    with CallStore(db) as store:
        store.add_many([
            # Before the 2026-03-01 price change, and after it.
            make_call(0, model="lumen-test-model", request_model=None, ts_start=feb, ts_end=feb,
                      input_tokens=1_000_000, output_tokens=1_000_000, cost_usd=None, price_id=None, unpriced=True),
            make_call(1, model="lumen-test-model", request_model=None,
                      input_tokens=2_000_000, output_tokens=0, cost_usd=None, price_id=None, unpriced=True),
            make_call(2, model="lumen-test-model", request_model=None, **NO_TOKENS),
        ])
    prices = tmp_path / "prices.toml"
    prices.write_text(OVERRIDES_V1)

    assert ok("reprice", "--db", str(db), "--prices", str(prices)) == (
        "repriced 3 calls: 2 changed (2 newly priced, 0 now unpriced)\n"
    )
    q = "SELECT id, cost_usd, price_id, unpriced FROM llm_calls ORDER BY id"
    assert ok("sql", q, "--db", str(db), "-f", "csv") == (
        "id,cost_usd,price_id,unpriced\n"
        "call-000000,3.00000000,override:openai/lumen-test-model@2026-01-01,false\n"
        "call-000001,3.00000000,override:openai/lumen-test-model@2026-03-01,false\n"
        "call-000002,,,false\n"
    )
    assert ok("pricing", "missing", "--db", str(db), "-f", "json") == "[]\n"
    # Nothing changed: nothing to do.
    assert ok("reprice", "--db", str(db), "--prices", str(prices)).startswith("repriced 3 calls: 0 changed")

    # The March price is corrected; only calls since March are repriced.
    prices.write_text(OVERRIDES_V1.replace('input = "1.5"', 'input = "1.25"'))
    assert ok("reprice", "--since", "2026-03-01", "--db", str(db), "--prices", str(prices)) == (
        "repriced 2 calls: 1 changed (0 newly priced, 0 now unpriced)\n"
    )
    assert ok("sql", q, "--db", str(db), "-f", "csv").splitlines()[1:3] == [
        "call-000000,3.00000000,override:openai/lumen-test-model@2026-01-01,false",
        "call-000001,2.50000000,override:openai/lumen-test-model@2026-03-01,false",
    ]

    # Prices removed: the calls become unpriced again.
    prices.unlink()
    assert ok("reprice", "--db", str(db), "--prices", str(prices)) == (
        "repriced 3 calls: 2 changed (0 newly priced, 2 now unpriced)\n"
    )
    assert run_sql(db, "SELECT count(*) FROM llm_calls WHERE unpriced AND cost_usd IS NULL").rows == [(2,)]


def test_reprice_library_with_a_stub_table(db):
    from lumen_agent.pricing.table import PriceRow

    row = PriceRow(
        price_id="stub/any@2020-01-01", provider="stub", model="any",
        effective_from=date(2020, 1, 1), effective_to=None,
        input=Decimal("10"), output=Decimal("20"), cache_read=Decimal("1"),
        cache_write_5m=Decimal("12.5"), cache_write_1h=None, tiers=(), source="test",
    )
    seen = []

    class Stub:
        def lookup(self, model, provider=None, at=None):
            seen.append((model, provider, at))
            return row

    r = reprice(db, Stub())
    assert (r.examined, r.changed, r.newly_priced, r.now_unpriced) == (5, 4, 1, 0)
    assert ("claude-sonnet-4-5", "anthropic", date(2026, 3, 2)) in seen
    costs = dict(run_sql(db, "SELECT id, cost_usd FROM llm_calls").rows)
    # call 1: 1500 uncached x 10 + 500 reads x 1 + 100 out x 20, per 1M tokens
    assert costs["call-000001"] == Decimal("0.01750000")
    assert costs["call-000003"] == Decimal("0.00020000")
    assert costs["call-000004"] is None  # no tokens: never priced


# -- user errors -----------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["sql", "SELECT 1", "--db", "{missing}"], "error: no database at {missing}"),
        (["sql", "SELEC 1", "--db", "{db}"], "error: Parser Error: syntax error at or near"),
        (["sql", "SELECT nope FROM llm_calls", "--db", "{db}"], "error: Binder Error"),
        (["sql", "DELETE FROM llm_calls", "--db", "{db}"], "error: Invalid Input Error: Cannot execute statement"),
        (["sql", "  ", "--db", "{db}"], "error: empty query"),
        (["report", "--since", "yesterday", "--db", "{db}"], "error: bad --since 'yesterday'"),
        (["report", "--by", "colour", "--db", "{db}"], "error: bad --by 'colour'"),
        (["pricing", "missing", "--db", "{missing}"], "error: no database at"),
        (["pricing", "show", "no-such-model-xyz", "--prices", "{missing}"], "error: no price rows for model"),
        (["pricing", "show", "gpt-4o", "--prices", "{bad_toml}"], "error: {bad_toml}: not valid TOML"),
        (["reprice", "--db", "{db}", "--prices", "{bad_toml}"], "error: {bad_toml}: not valid TOML"),
        (["reprice", "--db", "{missing}", "--prices", "{missing}"], "error: no database at"),
    ],
)
def test_user_errors_are_one_line(db, tmp_path, args, message):
    bad_toml = tmp_path / "bad.toml"
    bad_toml.write_text("[[price]\n")
    names = dict(db=db, missing=tmp_path / "missing.duckdb", bad_toml=bad_toml)
    result = cli(*(a.format(**names) for a in args))
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr.startswith(message.format(**names))
    assert result.stderr.count("\n") == 1 and result.stderr.endswith("\n")
    assert "Traceback" not in result.stderr


def test_reader_gives_up_cleanly_when_the_writer_holds_the_lock(db):
    holder = subprocess.Popen(script("hold", str(db), "2", "rw"), stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(QueryError, match="stayed locked by another process for 0.2 s"):
            open_readonly(db, timeout=0.2)
    finally:
        holder.wait(timeout=60)
    open_readonly(db).close()
