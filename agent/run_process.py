"""``lumen-agent run`` goes on here, in a fresh interpreter without the command line's libraries.

    python -m lumen_agent.run_process lumen-agent run --db ...   (started by ``exec_run``, never by hand)

Why: the options are read by typer, which imports click and, to coerce
them, pydantic; all of that stays resident for the life of a process that
never uses it again (7.2 MB of RssAnon measured on an idle agent, a fifth of
its memory).  So once ``run`` has read its options and checked the
configuration (errors there are still the CLI's one ``error:`` line), it
replaces itself, by ``execve``, with this module: the same pid (systemd's
main pid, the notify socket and the process's caps carry over), the
configuration file and overrides passed in one environment variable, and
the original command line kept after the module name so ``ps`` still shows
``lumen-agent run``.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, NoReturn

from lumen_agent.errors import user_error_line, user_error_types

ENV_VAR = "LUMEN_AGENT_RUN"
EXIT_USER_ERROR = 2


def exec_run(config_path: Path | None, overrides: dict[str, Any], exclude_pids: set[int]) -> NoReturn:
    """Continue ``run`` in a fresh interpreter (this process's pid); never returns."""
    payload = {
        "config": None if config_path is None else str(config_path),
        "overrides": {k: str(v) if isinstance(v, Path) else v for k, v in overrides.items() if v is not None},
        "exclude_pids": sorted(exclude_pids),
    }
    env = {**os.environ, ENV_VAR: json.dumps(payload)}
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, "-m", "lumen_agent.run_process", "lumen-agent", *sys.argv[1:]], env)


def main() -> int:
    from lumen_agent.agent_main import run_agent
    from lumen_agent.config import load

    _name_process(b"lumen-agent")
    try:
        payload = json.loads(os.environ.pop(ENV_VAR))
    except (KeyError, ValueError):
        print("error: lumen_agent.run_process is started by `lumen-agent run`, not by hand", file=sys.stderr)
        return EXIT_USER_ERROR
    try:
        config = load(None if payload["config"] is None else Path(payload["config"]), payload["overrides"])
        run_agent(config, exclude_pids=set(payload["exclude_pids"]))
    except user_error_types() as exc:
        print(f"error: {user_error_line(exc)}", file=sys.stderr)
        return EXIT_USER_ERROR
    return 0


def _name_process(name: bytes) -> None:
    """The kernel's name for this process (comm: ps, top, the journal), not "python3"."""
    import ctypes

    PR_SET_NAME = 15  # <linux/prctl.h>
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_NAME, ctypes.c_char_p(name), 0, 0, 0)
    except (OSError, AttributeError):  # not Linux
        pass


if __name__ == "__main__":
    sys.exit(main())
