"""Commands that run the agent or ask the running one: run, status, doctor, config show."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from lumen_agent.cli.app import (
    EXIT_USER_ERROR,
    ConfigOption,
    DbOption,
    ExportOtlpOption,
    ExportParquetOption,
    ExportRedisOption,
    FormatOption,
    PricesOption,
    _config,
    _db,
    _one_line,
    app,
    user_errors,
)
from lumen_agent.cli.format import Format, render

# Set by the ``lumen-agent`` program (cli.main), never by a caller that runs
# the app in its own process (a test's CliRunner): ``run`` then continues in
# a fresh interpreter, which replaces the process.
RUN_IN_FRESH_PROCESS = False


@app.command()
@user_errors
def run(
    db: DbOption = None,
    config_path: ConfigOption = None,
    prices: PricesOption = None,
    record: Annotated[
        Optional[Path], typer.Option("--record", help="Also append captured events to FILE (replay format; "
                                     "FILE.pcapng: a packet capture of the decrypted traffic).")
    ] = None,
    capture: Annotated[
        Optional[str], typer.Option("--capture", help="auto (eBPF when it can), ebpf, hook (events only from "
                                    "hooked processes over the ingest socket), or plain (only plain-HTTP ports, "
                                    "by packet capture).", show_default=False)
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
    export_otlp: ExportOtlpOption = None,
    export_parquet: ExportParquetOption = None,
    export_redis: ExportRedisOption = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False,
    init: Annotated[bool, typer.Option("--init", help="Add lumen-agent's tables to an existing DuckDB file "
                                       "that holds other tables.")] = False,
) -> None:
    """Capture LLM calls until SIGTERM/SIGINT, writing rows to the database."""
    overrides = dict(db=db, price_overrides=prices, record=record, capture=capture, attach=attach,
                     capture_content=capture_content, metrics_addr=metrics_addr, export_otlp=export_otlp,
                     export_parquet=export_parquet, export_redis=export_redis,
                     log_level="debug" if verbose else None, adopt_db=init or None)
    config = _config(config_path, **overrides)  # a bad file or value: the one-line error, here
    if RUN_IN_FRESH_PROCESS:
        from lumen_agent.run_process import exec_run

        exec_run(config_path, overrides, set(exclude_pid))  # the run loop, without typer (run_process.py says why)
    from lumen_agent.agent_main import run_agent

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
def status(config_path: ConfigOption = None, db: DbOption = None, fmt: FormatOption = Format.TABLE) -> None:
    """Exit 0 and summarise the running agent (of --db); exit 1 when none is capturing."""
    from lumen_agent.control import request
    from lumen_agent.runner import read_status, status_rows

    try:
        config = _config(config_path, db=db)
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
