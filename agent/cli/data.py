"""Commands that read or rewrite the database and the price table."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from lumen_agent.cli.app import (
    ConfigOption,
    DbOption,
    ExportOtlpOption,
    ExportParquetOption,
    ExportRedisOption,
    FormatOption,
    PricesOption,
    SinceOption,
    _config,
    _db,
    _price_table,
    app,
    pricing_app,
    user_errors,
)
from lumen_agent.cli.format import Format, render
from lumen_agent.outputs.query_terms import REPORT_KEYS, QueryError


@app.command()
@user_errors
def sql(
    query: Annotated[str, typer.Argument(help="SQL to run, read-only.")],
    db: DbOption = None,
    fmt: FormatOption = Format.TABLE,
) -> None:
    """Run a read-only SQL query on the database (table llm_calls)."""
    from lumen_agent.outputs.queries import run_sql

    result = run_sql(_db(db), query)
    render(result.columns, result.rows, fmt)


@app.command()
@user_errors
def report(
    by: Annotated[str, typer.Option("--by", help=f"Group by: {', '.join(REPORT_KEYS)}.")] = "model",
    since: SinceOption = None,
    db: DbOption = None,
    fmt: FormatOption = Format.TABLE,
) -> None:
    """Calls, tokens and spend grouped by model, process, provider, day, key or tenant."""
    from lumen_agent.outputs.queries import report as build_report

    result = build_report(_db(db), by, since)
    render(result.columns, result.rows, fmt)


@app.command()
@user_errors
def reprice(
    since: SinceOption = None,
    db: DbOption = None,
    prices: PricesOption = None,
) -> None:
    """Recompute cost_usd of stored calls with the current price table."""
    from lumen_agent.outputs.queries import reprice as do_reprice

    table = _price_table(prices)
    r = do_reprice(_db(db), table, since)
    typer.echo(
        f"repriced {r.examined} calls: {r.changed} changed "
        f"({r.newly_priced} newly priced, {r.now_unpriced} now unpriced)"
    )


# -- pricing -------------------------------------------------------------

PRICE_COLUMNS = (
    "price_id",
    "provider",
    "model",
    "effective_from",
    "effective_to",
    "input",
    "output",
    "cache_read",
    "cache_write_5m",
    "cache_write_1h",
    "tiers",
    "source",
)


@pricing_app.command("show")
@user_errors
def pricing_show(
    model: Annotated[str, typer.Argument(help="Model name, as a provider or request names it.")],
    provider: Annotated[Optional[str], typer.Option("--provider", help="Only this provider's rows.")] = None,
    prices: PricesOption = None,
    fmt: FormatOption = Format.TABLE,
) -> None:
    """All dated price rows (USD per 1M tokens) for MODEL."""
    table = _price_table(prices)
    rows = table.rows_for(model)
    if provider:
        rows = [r for r in rows if r.provider == provider.lower()]
    if not rows:
        where = f" of provider {provider!r}" if provider else ""
        raise QueryError(f"no price rows{where} for model {model!r}")
    render(
        PRICE_COLUMNS,
        [
            (
                r.price_id,
                r.provider,
                r.model,
                r.effective_from,
                r.effective_to,
                r.input,
                r.output,
                r.cache_read,
                r.cache_write_5m,
                r.cache_write_1h,
                "; ".join(
                    f">{t.above_input_tokens}: in {t.input:f} out {t.output:f}" for t in r.tiers
                )
                or None,
                r.source,
            )
            for r in rows
        ],
        fmt,
    )


@pricing_app.command("missing")
@user_errors
def pricing_missing(
    since: SinceOption = None,
    db: DbOption = None,
    fmt: FormatOption = Format.TABLE,
) -> None:
    """Models seen with tokens but no price, by calls and tokens."""
    from lumen_agent.outputs.queries import missing_prices

    result = missing_prices(_db(db), since)
    render(result.columns, result.rows, fmt)


@app.command()
@user_errors
def replay(
    recording: Annotated[Path, typer.Argument(help="Recorded capture (JSON lines, see docs/recording.md) "
                                              "or a packet capture (pcap/pcapng, see docs/plain-http.md).")],
    db: DbOption = None,
    prices: PricesOption = None,
    config_path: ConfigOption = None,
    export_otlp: ExportOtlpOption = None,
    export_parquet: ExportParquetOption = None,
    export_redis: ExportRedisOption = None,
    keylog: Annotated[
        Optional[Path], typer.Option("--keylog", help="NSS key log (SSLKEYLOGFILE) to decrypt TLS in a packet "
                                     "capture.", show_default=False)
    ] = None,
) -> None:
    """Run a recorded capture or a packet capture through the pipeline into the database (prices,
    tenant and feature defaults from the configuration, as the agent would)."""
    from lumen_agent.logs import setup_logging
    from lumen_agent.replay import replay as do_replay

    setup_logging(False)
    if not recording.is_file():
        raise QueryError(f"no such recording: {recording}")
    if keylog is not None and not keylog.is_file():
        raise QueryError(f"no such key log: {keylog}")
    s = do_replay(recording, _config(config_path, db=db, price_overrides=prices, export_otlp=export_otlp,
                                     export_parquet=export_parquet, export_redis=export_redis), keylog=keylog)
    if s.packets is not None:
        typer.echo(
            f"replayed {s.packets} packets, {s.connections} TCP connections, {s.events} events: "
            f"{s.calls} calls ({s.unpriced} unpriced), {s.rows_written} rows written, "
            f"{s.skipped} bytes/items skipped"
        )
        return
    typer.echo(
        f"replayed {s.events} events: {s.calls} calls ({s.unpriced} unpriced), "
        f"{s.rows_written} rows written, {s.skipped} bytes/items skipped, {s.bad_lines} bad lines"
    )
