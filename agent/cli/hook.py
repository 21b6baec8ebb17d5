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

    Rows go to the running agent (`lumen-agent run --capture hook`) when one
    answers, else the program itself writes them to --db.  The exit code is
    the program's.
    """
    from lumen_agent.hook.launch import LaunchError, hook_env

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
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execve(path, command, env)  # the program takes this process: same pid, its exit code
    except OSError as exc:
        typer.echo(f"error: cannot run {program}: {exc.strerror or exc}", err=True)
        raise typer.Exit(EXIT_NOT_RUNNABLE) from None


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
