"""The `top` command: the running agent's spend, live (see :mod:`lumen_agent.top`)."""

from __future__ import annotations

import enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from lumen_agent.cli.app import EXIT_USER_ERROR, DbOption, _config, _one_line, app


class Window(enum.StrEnum):
    M1 = "1m"
    M5 = "5m"
    H1 = "1h"
    H24 = "24h"


def top(
    window: Annotated[Window, typer.Option("--window", "-w", help="Window of the tables (keys 1-4 switch it).")]
    = Window.M1,
    once: Annotated[bool, typer.Option("--once", help="Print one snapshot and exit (for scripts).")] = False,
    config_path: Annotated[
        Optional[Path],
        typer.Option("--config", help="Configuration TOML [default: /etc/lumen-agent/config.toml as root]",
                     show_default=False),
    ] = None,
    db: DbOption = None,
) -> None:
    """Live spend of the running agent: rates, top processes, models, providers, tenants, latest calls.

    Keys: 1 2 3 4 switch the window (1m 5m 1h 24h), q quits.  Exit 1 when no agent runs.
    """
    from lumen_agent.top import WINDOW_BY_LABEL, print_once, run

    try:
        config = _config(config_path, db=db)  # the agent of this database
    except Exception as exc:  # noqa: BLE001 - a bad config file is one line, as in `status`
        typer.echo(f"error: {_one_line(exc)}", err=True)
        raise typer.Exit(EXIT_USER_ERROR) from None
    seconds = WINDOW_BY_LABEL[window.value]
    try:
        code = print_once(config.socket_path, seconds) if once else run(config.socket_path, seconds)
    except KeyboardInterrupt:  # before the view started (the view itself quits on Ctrl-C with 0)
        code = 130
    raise typer.Exit(code)


app.command("top")(top)
