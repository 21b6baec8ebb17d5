"""``lumen-agent``: the command line, a thin layer over the library.

:mod:`lumen_agent.cli.app` holds the Typer app and what every command shares
(options, the one-line error handling); each other module of this package
adds one group of commands to it.  This package imports its command modules,
never the reverse.
"""

from __future__ import annotations

from lumen_agent.cli import agent, alerts, data, hook, proxy, top  # noqa: F401  (each adds its commands)
from lumen_agent.cli.app import app

__all__ = ["app", "main"]


def main() -> None:
    agent.RUN_IN_FRESH_PROCESS = True  # this process is the program: `run` may replace it
    app(prog_name="lumen-agent")
