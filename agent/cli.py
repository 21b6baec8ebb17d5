"""``lumen-agent``: the command line, a thin layer over the library.

Every command that prints rows takes ``--format table|json|csv`` and renders
through :func:`lumen_agent.output.render`.  User errors (no database, bad
SQL, bad ``--since``, a lock held too long, a bad price file) print one line
``error: ...`` to stderr and exit 2; no traceback.

To add a command: write the work in a library module, then a small function
here decorated with ``@app.command()`` (or ``@pricing_app.command()``) and
``@user_errors``, reusing ``DbOption`` / ``FormatOption``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Optional, TypeVar

import duckdb
import typer

from lumen_agent.output import Format, render
from lumen_agent.paths import default_db_path, default_price_overrides_path
from lumen_agent.queries import REPORT_KEYS, QueryError
from lumen_agent.schema import SchemaError

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    help="See, price and attribute every LLM API call this host makes.",
)


def _version(value: bool) -> None:
    if value:
        from lumen_agent import __version__

        typer.echo(f"lumen-agent {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """See, price and attribute every LLM API call this host makes."""
pricing_app = typer.Typer(no_args_is_help=True, help="The price table and models it does not price.")
app.add_typer(pricing_app, name="pricing")

EXIT_USER_ERROR = 2

# -- shared options ------------------------------------------------------

DbOption = Annotated[
    Optional[Path],
    typer.Option("--db", help="DuckDB file [default: the agent's database]", show_default=False),
]
FormatOption = Annotated[
    Format,
    typer.Option("--format", "-f", help="Output format.", case_sensitive=False),
]
PricesOption = Annotated[
    Optional[Path],
    typer.Option("--prices", help="Price overrides TOML [default: the agent's prices.toml]", show_default=False),
]
SinceOption = Annotated[
    Optional[str],
    typer.Option("--since", help="Only calls since: 7d, 24h, 30m or an ISO date.", show_default=False),
]


def _db(path: Path | None) -> Path:
    return path if path is not None else default_db_path()


def _price_table(overrides: Path | None):
    from lumen_agent.pricing.table import PriceTable

    return PriceTable.load(overrides if overrides is not None else default_price_overrides_path())


def _user_error_types() -> tuple[type[BaseException], ...]:
    from lumen_agent.pricing.table import PricingError

    from lumen_agent.capture.kernel_setup import CaptureError
    from lumen_agent.config import ConfigError

    from lumen_agent.agent_main import CaptureUnavailable

    return (QueryError, SchemaError, PricingError, ConfigError, CaptureError, CaptureUnavailable,
            duckdb.Error, OSError)


def _one_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


F = TypeVar("F", bound=Callable[..., object])


def user_errors(fn: F) -> F:
    """Turn the library's user-facing errors into one ``error:`` line, exit 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except _user_error_types() as exc:
            typer.echo(f"error: {_one_line(exc)}", err=True)
            raise typer.Exit(EXIT_USER_ERROR) from None

    return wrapper  # type: ignore[return-value]


# -- data commands -------------------------------------------------------


@app.command()
@user_errors
def sql(
    query: Annotated[str, typer.Argument(help="SQL to run, read-only.")],
    db: DbOption = None,
    fmt: FormatOption = Format.TABLE,
) -> None:
    """Run a read-only SQL query on the database (table llm_calls)."""
    from lumen_agent.queries import run_sql

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
    from lumen_agent.queries import report as build_report

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
    from lumen_agent.queries import reprice as do_reprice

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
    from lumen_agent.queries import missing_prices

    result = missing_prices(_db(db), since)
    render(result.columns, result.rows, fmt)


# -- agent commands ------------------------------------------------------


ConfigOption = Annotated[
    Optional[Path],
    typer.Option("--config", help="Configuration TOML [default: /etc/lumen-agent/config.toml as root]",
                 show_default=False),
]


def _config(config_path: Path | None, **overrides):
    from lumen_agent.config import load

    return load(config_path, overrides)


@app.command()
@user_errors
def run(
    db: DbOption = None,
    config_path: ConfigOption = None,
    prices: PricesOption = None,
    record: Annotated[
        Optional[Path], typer.Option("--record", help="Also append captured events to FILE (replay format).")
    ] = None,
    capture: Annotated[
        Optional[str], typer.Option("--capture", help="auto (eBPF when it can), ebpf, or hook (events only from "
                                    "hooked processes over the ingest socket).", show_default=False)
    ] = None,
    attach: Annotated[
        Optional[str], typer.Option("--attach", help="global: probe TLS library files (every process, from its "
                                    "first call); per-process: probe only included processes.", show_default=False)
    ] = None,
    exclude_pid: Annotated[
        list[int], typer.Option("--exclude-pid", help="Never capture this process (repeatable).")
    ] = [],
    capture_content: Annotated[
        Optional[bool], typer.Option("--capture-content/--no-capture-content",
                                     help="Also store prompt and completion text.", show_default=False)
    ] = None,
    metrics_addr: Annotated[
        Optional[str], typer.Option("--metrics-addr", help="Serve Prometheus metrics on HOST:PORT.",
                                    show_default=False)
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False,
) -> None:
    """Capture LLM calls until SIGTERM/SIGINT, writing rows to the database."""
    from lumen_agent.agent_main import run_agent

    config = _config(config_path, db=db, price_overrides=prices, record=record, capture=capture, attach=attach,
                     capture_content=capture_content, metrics_addr=metrics_addr,
                     log_level="debug" if verbose else None)
    run_agent(config, exclude_pids=set(exclude_pid))


config_app = typer.Typer(no_args_is_help=True, help="The agent's configuration.")
app.add_typer(config_app, name="config")


@config_app.command("show")
@user_errors
def config_show(config_path: ConfigOption = None, db: DbOption = None) -> None:
    """Print the effective configuration (file, then flags) as TOML."""
    from lumen_agent.config import as_toml

    typer.echo(as_toml(_config(config_path, db=db)), nl=False)


@app.command()
@user_errors
def replay(
    recording: Annotated[Path, typer.Argument(help="Recorded capture (JSON lines, see docs/recording.md).")],
    db: DbOption = None,
    prices: PricesOption = None,
) -> None:
    """Run a recorded capture through the pipeline into the database."""
    from lumen_agent.logs import setup_logging
    from lumen_agent.replay import replay as do_replay

    setup_logging(False)
    if not recording.is_file():
        raise QueryError(f"no such recording: {recording}")
    s = do_replay(recording, _db(db),
                  price_overrides=prices if prices is not None else default_price_overrides_path())
    typer.echo(
        f"replayed {s.events} events: {s.calls} calls ({s.unpriced} unpriced), "
        f"{s.rows_written} rows written, {s.skipped} bytes/items skipped, {s.bad_lines} bad lines"
    )


@app.command()
def status(config_path: ConfigOption = None, fmt: FormatOption = Format.TABLE) -> None:
    """Exit 0 and summarise the running agent; exit 1 when none is capturing."""
    from lumen_agent.control import request
    from lumen_agent.runner import read_status, status_rows

    try:
        config = _config(config_path)
    except Exception as exc:  # noqa: BLE001
        typer.echo(f"error: {_one_line(exc)}", err=True)
        raise typer.Exit(EXIT_USER_ERROR) from None
    try:
        current = request(config.socket_path, "status")
    except (OSError, ValueError):
        current = read_status(config.runtime_dir)
    if current is None:
        typer.echo("no lumen-agent is running", err=True)
        raise typer.Exit(1)
    render(("what", "value"), status_rows(current), fmt)
    if not current.get("targets"):
        typer.echo("agent is running but nothing is attached", err=True)
        raise typer.Exit(1)


@app.command()
def doctor(db: DbOption = None) -> None:
    """Check every prerequisite of capture; exit 1 if any fails."""
    from lumen_agent.doctor import run_checks

    checks = run_checks(_db(db))
    for check in checks:
        mark = "ok  " if check.ok else "FAIL"
        line = f"{mark} {check.name}: {check.detail}"
        if not check.ok and check.fix:
            line += f"  (fix: {check.fix})"
        typer.echo(line)
    if not all(c.ok for c in checks):
        raise typer.Exit(1)


# -- commands that live in their own modules -------------------------------

from lumen_agent import cli_hook, cli_proxy, cli_top  # noqa: E402

for _module in (cli_top, cli_hook, cli_proxy):
    _module.register(app)


def main() -> None:
    app(prog_name="lumen-agent")


if __name__ == "__main__":
    main()
