"""The ``proxy`` command: a local HTTP endpoint in front of the LLM providers (docs/proxy.md)."""

from typing import Annotated, Optional

import typer

from lumen_agent.cli.app import EXIT_USER_ERROR, ConfigOption, DbOption, PricesOption, _config, app, user_errors


@app.command()
@user_errors
def proxy(
    listen: Annotated[
        Optional[str], typer.Option("--listen", help="HOST:PORT to serve plain HTTP on "
                                    "[default: the configuration's proxy listen, 127.0.0.1:8787]",
                                    show_default=False)
    ] = None,
    upstream: Annotated[
        list[str], typer.Option("--upstream", help="PREFIX=URL (repeatable; adds to or replaces a default "
                                "route), or a single URL that receives every request.")
    ] = [],
    resolve: Annotated[
        list[str], typer.Option("--resolve", help="HOST:PORT:ADDRESS: connect there for that upstream "
                                "(curl's --resolve; TLS still verifies HOST).")
    ] = [],
    db: DbOption = None,
    config_path: ConfigOption = None,
    prices: PricesOption = None,
    sink: Annotated[
        str, typer.Option("--events", help="Where calls are accounted: auto (a running agent's ingest "
                          "socket, else a pipeline here), agent, local, or none.")
    ] = "auto",
    capture_content: Annotated[
        Optional[bool], typer.Option("--capture-content/--no-capture-content",
                                     help="Also store prompt and completion text.", show_default=False)
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False,
) -> None:
    """Serve a local HTTP endpoint that forwards to the providers over TLS and records every call."""
    from lumen_agent.proxy.routes import RouteError
    from lumen_agent.proxy.runner import SINKS, ProxyOptions, run_proxy

    try:
        if sink not in SINKS:
            raise RouteError(f"--events must be one of {', '.join(SINKS)}, not {sink!r}")
        config = _config(config_path, db=db, price_overrides=prices, capture_content=capture_content,
                         log_level="debug" if verbose else None)
        run_proxy(config, ProxyOptions(listen=listen, upstreams=tuple(upstream), resolve=tuple(resolve),
                                       sink=sink, db=db))
    except RouteError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(EXIT_USER_ERROR) from None
