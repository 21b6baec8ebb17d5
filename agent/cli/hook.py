"""``lumen-agent exec`` and ``lumen-agent hook ...``: load the user-space hook
into Python programs (see docs/hook.md and ``lumen_agent.hook``)."""

from __future__ import annotations

import os
import shutil
import sys
from typing import Annotated, Optional

import typer

from lumen_agent.cli.app import DbOption, app, user_errors

hook_app = typer.Typer(no_args_is_help=True, help="The user-space hook for Python programs (no eBPF needed).")

EXIT_NOT_FOUND = 127
EXIT_NOT_RUNNABLE = 126

ModeOption = Annotated[
    Optional[str],
    typer.Option("--mode", help="auto: the running agent if one answers, else the pipeline in the program; "
                 "agent: only the agent; local: never the agent.", show_default=False),
]
PythonOption = Annotated[
    Optional[str],
    typer.Option("--python", help="Interpreter of the venv [default: the one running lumen-agent].",
                 show_default=False),
]


def exec_command(
    command: Annotated[list[str], typer.Argument(help="The program and its arguments (after --).",
                                                 metavar="CMD [ARGS]...")],
    db: DbOption = None,
    mode: ModeOption = None,
) -> None:
    """Run a Python program with the hook: its LLM calls become rows.

    Rows go to the running agent of --db when one answers (`lumen-agent run
    --capture hook`; an eBPF agent sees the program itself).  Otherwise this
    command stays as the program's parent and writes its rows to --db: the
    program needs nothing but its own interpreter (any virtualenv).  The
    exit code is the program's.
    """
    from lumen_agent import paths
    from lumen_agent.hook.launch import LaunchError, hook_env
    from lumen_agent.hook.settings import ENV_MODE

    mode = mode or os.environ.get(ENV_MODE) or None
    try:
        env = hook_env(os.environ, db=db, mode=mode)
    except LaunchError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    program = command[0]
    path = program if os.sep in program else shutil.which(program, path=env.get("PATH"))
    if path is None or not os.path.exists(path):
        typer.echo(f"error: command not found: {program}", err=True)
        raise typer.Exit(EXIT_NOT_FOUND)
    # The agent of this database, wherever its runtime directory is.
    agent_socket = paths.runtime_dir(db.expanduser() if db is not None else None) / "ingest.sock"
    if mode == "agent" or (mode in (None, "auto") and _answers(agent_socket)):
        env = hook_env(env, socket=agent_socket)
        sys.stdout.flush()
        sys.stderr.flush()
        try:
            os.execve(path, command, env)  # the program takes this process: same pid, its exit code
        except OSError as exc:
            typer.echo(f"error: cannot run {program}: {exc.strerror or exc}", err=True)
            raise typer.Exit(EXIT_NOT_RUNNABLE) from None
    raise typer.Exit(_host(command, path, env, db))


def _answers(socket_path) -> bool:
    """True when an agent listens on ``socket_path`` (connect, then hang up)."""
    import socket

    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(1.0)
        try:
            sock.connect(str(socket_path))
        except OSError:
            return False
    return True


def _host(command: list[str], path: str, env: dict[str, str], db) -> int:
    """No agent: run the program as a child and host its pipeline here (lumen_agent.hook.host)."""
    from lumen_agent import config as config_mod
    from lumen_agent.hook.host import ExecHost
    from lumen_agent.hook.launch import hook_env
    from lumen_agent.logs import setup_logging

    try:
        config = config_mod.load(None, {"db": db})
    except config_mod.ConfigError as exc:
        # The program runs regardless, as with the hook alone: defaults, and say so.
        typer.echo(f"lumen-agent exec: configuration unusable ({exc}); using defaults", err=True)
        config = config_mod.Config(db=db) if db is not None else config_mod.Config()
    # The program's output is the user's: only our warnings join it.
    setup_logging("debug" if config.log_level == "debug" else "warning")
    try:
        host = ExecHost(config)
    except Exception as exc:  # noqa: BLE001 - no rows is better than no program
        typer.echo(f"lumen-agent exec: cannot record ({exc}); running the program without it", err=True)
        env = {k: v for k, v in env.items() if k != "LUMEN_HOOK"}
        try:
            os.execve(path, command, env)
        except OSError as err:
            typer.echo(f"error: cannot run {command[0]}: {err.strerror or err}", err=True)
            return EXIT_NOT_RUNNABLE
    # "agent" mode towards our own socket: the program's hook never falls back
    # to a pipeline of its own (it cannot import one in a foreign virtualenv).
    env = hook_env(env, mode="agent", socket=host.socket_path)
    try:
        return host.run(command, env, path)
    except OSError as exc:
        typer.echo(f"error: cannot run {command[0]}: {exc.strerror or exc}", err=True)
        return EXIT_NOT_RUNNABLE


@hook_app.command("path")
def hook_path() -> None:
    """Print the folder to put first on PYTHONPATH (with LUMEN_HOOK=1) to hook a service."""
    from lumen_agent.hook.launch import site_dir

    typer.echo(str(site_dir()))


@hook_app.command("env")
def hook_env_command(db: DbOption = None, mode: ModeOption = None) -> None:
    """Print the environment (KEY=VALUE lines, e.g. for a systemd EnvironmentFile) that hooks a service."""
    from lumen_agent.hook.launch import hook_env
    from lumen_agent.hook.settings import ENV_DB, ENV_MODE, ENV_ON

    env = hook_env({"PYTHONPATH": os.environ.get("PYTHONPATH", "")}, db=db, mode=mode)
    for key in ("PYTHONPATH", ENV_ON, ENV_DB, ENV_MODE):
        if key in env:
            typer.echo(f"{key}={env[key]}")


@hook_app.command("install-pth")
@user_errors
def install_pth(python: PythonOption = None) -> None:
    """Hook every program of a venv: write a .pth file into its site-packages (LUMEN_HOOK=0 turns it off)."""
    from lumen_agent.hook.launch import install_pth as do_install

    typer.echo(f"installed {do_install(python)}")


@hook_app.command("uninstall-pth")
@user_errors
def uninstall_pth(python: PythonOption = None) -> None:
    """Remove the .pth file written by install-pth."""
    from lumen_agent.hook.launch import uninstall_pth as do_uninstall

    removed = do_uninstall(python)
    typer.echo(f"removed {removed}" if removed else "no .pth file of the hook was installed")


app.command("exec", context_settings={"allow_interspersed_args": False, "ignore_unknown_options": True},
            no_args_is_help=True)(exec_command)
app.add_typer(hook_app, name="hook")
