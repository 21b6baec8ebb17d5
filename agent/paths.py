"""Where lumen-agent keeps its files.

As root the agent is a host service: state in /var/lib/lumen-agent and
configuration in /etc/lumen-agent.  As any other user everything lives in
that user's XDG directories, so a non-root run never needs a system path.
"""

from __future__ import annotations

import os
from pathlib import Path


def _is_root() -> bool:
    return os.geteuid() == 0


def state_dir() -> Path:
    if env := os.environ.get("LUMEN_STATE_DIR"):
        return Path(env)
    if _is_root():
        return Path("/var/lib/lumen-agent")
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "lumen-agent"


def config_dir() -> Path:
    if env := os.environ.get("LUMEN_CONFIG_DIR"):
        return Path(env)
    if _is_root():
        return Path("/etc/lumen-agent")
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "lumen-agent"


def runtime_dir() -> Path:
    """Sockets and the status file of a running agent."""
    if env := os.environ.get("LUMEN_RUNTIME_DIR"):
        return Path(env)
    if _is_root():
        return Path("/run/lumen-agent")
    base = os.environ.get("XDG_RUNTIME_DIR") or f"/tmp/lumen-agent-{os.getuid()}"
    return Path(base) / "lumen-agent"


def default_db_path() -> Path:
    return state_dir() / "lumen.duckdb"


def default_price_overrides_path() -> Path:
    return config_dir() / "prices.toml"
