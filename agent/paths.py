"""Where lumen-agent keeps its files.

As root the agent is a host service: state in /var/lib/lumen-agent and
configuration in /etc/lumen-agent.  As any other user everything lives in
that user's XDG directories, so a non-root run never needs a system path.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

# sun_path of a Unix socket holds 108 bytes, the final NUL included.
MAX_SOCKET_PATH_BYTES = 107
# The longest socket name the agent creates in its runtime directory.
_LONGEST_SOCKET_NAME = "ingest.sock"


def _is_root() -> bool:
    return os.geteuid() == 0


def state_dir() -> Path:
    if env := os.environ.get("LUMEN_STATE_DIR"):
        return Path(env)
    return _standard_state_dir()


def _standard_state_dir() -> Path:
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


def runtime_dir(db: Path | None = None) -> Path:
    """Sockets, status file and instance lock of the agent of database ``db``
    (default: the default database).

    ``LUMEN_RUNTIME_DIR`` names it outright.  Otherwise the standard database
    (the service's, or this user's) has the standard runtime directory, and
    any other database one of its own beside it, ``<db>.run``: a test agent
    or a second database never shares sockets with the service.  Everyone who
    looks for the agent of a database (status, top, exec, proxy, the hook)
    asks this function, so they find the same folder.
    """
    if env := os.environ.get("LUMEN_RUNTIME_DIR"):
        return Path(env)
    db = _absolute(db if db is not None else default_db_path())
    if db == _absolute(_standard_state_dir() / DB_NAME):
        return _standard_runtime_dir()
    beside = db.with_name(db.name + ".run")
    if len(os.fsencode(beside / _LONGEST_SOCKET_NAME)) <= MAX_SOCKET_PATH_BYTES:
        return beside
    # Too deep for a socket path: a folder named after the database instead.
    digest = hashlib.sha256(os.fsencode(db)).hexdigest()[:16]
    return _standard_runtime_dir().with_name("lumen-agent-db") / digest


def _standard_runtime_dir() -> Path:
    if _is_root():
        return Path("/run/lumen-agent")
    base = os.environ.get("XDG_RUNTIME_DIR") or f"/tmp/lumen-agent-{os.getuid()}"
    return Path(base) / "lumen-agent"


def _absolute(path: Path) -> Path:
    # resolve() follows the symlinks that exist, so two spellings of one file
    # (relative, through a link) name one agent.
    return Path(path).expanduser().resolve()


DB_NAME = "lumen.duckdb"


def default_db_path() -> Path:
    return state_dir() / DB_NAME


def default_price_overrides_path() -> Path:
    return config_dir() / "prices.toml"
