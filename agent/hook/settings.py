"""The hook's settings, all from environment variables (the hooked program has
no command line of ours).  Imports only the standard library and ``paths``.

    LUMEN_HOOK=1              turn the hook on (sitecustomize); with the .pth
                              file it is on unless LUMEN_HOOK=0
    LUMEN_HOOK_MODE           auto (default): the running agent's ingest socket
                              if one answers, else the pipeline in-process;
                              agent: only the agent (events are dropped and
                              counted while none answers); local: never the agent
    LUMEN_HOOK_DB             database of the in-process pipeline
                              [default: the agent's default database]
    LUMEN_HOOK_SOCKET         ingest socket [default: <runtime dir of the
                              database>/ingest.sock]
    LUMEN_HOOK_REPORT         at exit, write the hook's counters (JSON) to this file
    LUMEN_HOOK_EXIT_TIMEOUT   seconds the exit may wait for the last rows [15]
    LUMEN_HOOK_LOCK_RETRY     seconds the final append retries while another
                              process holds the database [10]
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

MODES = ("auto", "agent", "local")

ENV_ON = "LUMEN_HOOK"
ENV_MODE = "LUMEN_HOOK_MODE"
ENV_DB = "LUMEN_HOOK_DB"
ENV_SOCKET = "LUMEN_HOOK_SOCKET"
ENV_REPORT = "LUMEN_HOOK_REPORT"
ENV_EXIT_TIMEOUT = "LUMEN_HOOK_EXIT_TIMEOUT"
ENV_LOCK_RETRY = "LUMEN_HOOK_LOCK_RETRY"


@dataclass(frozen=True, slots=True)
class HookSettings:
    mode: str = "auto"
    db: Path | None = None
    socket: Path | None = None
    report: Path | None = None
    exit_timeout_s: float = 15.0
    lock_retry_s: float = 10.0

    @property
    def socket_path(self) -> Path:
        if self.socket is not None:
            return self.socket
        from lumen_agent import paths

        # The agent of the database this hook writes to, not any agent.
        return paths.runtime_dir(self.db) / "ingest.sock"


def _float(value: str | None, default: float) -> float:
    try:
        return float(value) if value else default
    except ValueError:
        return default


def from_env(env: dict[str, str] | None = None) -> HookSettings:
    env = os.environ if env is None else env
    mode = env.get(ENV_MODE, "auto").strip().lower() or "auto"
    if mode not in MODES:
        mode = "auto"
    return HookSettings(
        mode=mode,
        db=Path(env[ENV_DB]) if env.get(ENV_DB) else None,
        socket=Path(env[ENV_SOCKET]) if env.get(ENV_SOCKET) else None,
        report=Path(env[ENV_REPORT]) if env.get(ENV_REPORT) else None,
        exit_timeout_s=_float(env.get(ENV_EXIT_TIMEOUT), 15.0),
        lock_retry_s=_float(env.get(ENV_LOCK_RETRY), 10.0),
    )


def enabled(env: dict[str, str] | None = None, default: bool = False) -> bool:
    env = os.environ if env is None else env
    value = env.get(ENV_ON)
    if value is None or value.strip() == "":
        return default
    return value.strip().lower() not in ("0", "false", "no", "off")
