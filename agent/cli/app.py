"""``lumen-agent``: the command line, a thin layer over the library.

Every command that prints rows takes ``--format table|json|csv`` and renders
through :func:`lumen_agent.cli.format.render`.  User errors (no database, bad
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

import typer

from lumen_agent.cli.format import Format
from lumen_agent.errors import user_error_line, user_error_types
from lumen_agent.paths import default_db_path, default_price_overrides_path

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


# The CLI's one-line errors, shared with the run process (errors.py).
_user_error_types, _one_line = user_error_types, user_error_line


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


ConfigOption = Annotated[
    Optional[Path],
    typer.Option("--config", help="Configuration TOML [default: /etc/lumen-agent/config.toml as root]",
                 show_default=False),
]


def _config(config_path: Path | None, **overrides):
    from lumen_agent.config import load

    return load(config_path, overrides)


ExportOtlpOption = Annotated[
    Optional[str],
    typer.Option("--export-otlp", help="Send each call to this OTLP endpoint, e.g. http://collector:4318 "
                 "([export.otlp] endpoint).", show_default=False),
]
ExportParquetOption = Annotated[
    Optional[Path],
    typer.Option("--export-parquet", help="Write calls as Parquet under DIR/host=H/date=D/ "
                 "([export.parquet] root).", show_default=False),
]
ExportRedisOption = Annotated[
    Optional[str],
    typer.Option("--export-redis", help="XADD each call to a Redis stream, e.g. redis://host:6379/0 "
                 "([export.redis] url).", show_default=False),
]
