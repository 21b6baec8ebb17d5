"""One agent per database: exclusive locks taken at start, held until exit.

Two agents on one database would both record every call (every row twice),
and the one that stops first would remove the other's sockets and status
file.  So ``lumen-agent run`` takes two ``flock`` locks before it builds
anything, and a second agent refuses to start:

``<db>.lock``
    beside the database: one writer per database, wherever its runtime
    directory is;
``<runtime dir>/agent.lock``
    one agent per set of sockets and status file (a runtime directory given
    by hand can be shared by two databases).

The kernel drops a ``flock`` when its holder exits, however it exits, so a
crashed agent never leaves a stale lock behind.  Each file holds the pid and
database of its holder, for the refusal message; the files themselves are
left in place (removing a lock file races with the next agent opening it).
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from lumen_agent.errors import LumenError

LOCK_NAME = "agent.lock"


class AlreadyRunning(LumenError):
    """Another agent holds the database or the runtime directory (one line, names its pid)."""


def db_lock_path(db: Path) -> Path:
    return db.with_name(db.name + ".lock")


class InstanceLock:
    def __init__(self, db: Path, runtime_dir: Path) -> None:
        self.db = Path(db)
        self.paths = (db_lock_path(self.db), Path(runtime_dir) / LOCK_NAME)
        self._fds: list[int] = []

    def acquire(self) -> InstanceLock:
        """Take both locks or none; raises AlreadyRunning, or OSError when a folder is unusable."""
        try:
            for path in self.paths:
                try:
                    path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
                    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
                except OSError as exc:
                    raise LumenError(f"cannot create the agent's lock {path}: {exc.strerror or exc}",
                                     "run as root, or give --db (or LUMEN_RUNTIME_DIR) a writable folder") from None
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    holder = _read_holder(fd)
                    os.close(fd)
                    raise AlreadyRunning(
                        f"another lumen-agent is already running on this database (pid {holder[0]}, "
                        f"db {holder[1] or self.db}; lock {path})",
                        "one agent per database: stop that one first, or give this one another --db") from None
                self._fds.append(fd)
                _write_holder(fd, self.db)
        except BaseException:
            self.release()
            raise
        return self

    def release(self) -> None:
        for fd in self._fds:
            os.close(fd)  # closing the last descriptor drops the flock
        self._fds.clear()

    def __enter__(self) -> InstanceLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def _write_holder(fd: int, db: Path) -> None:
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n{db}\n".encode(), 0)


def _read_holder(fd: int) -> tuple[str, str]:
    """(pid, db) written by the holder; '?' while it has not written them yet."""
    try:
        lines = os.pread(fd, 4096, 0).decode("utf-8", "replace").splitlines()
    except OSError:
        lines = []
    pid = lines[0].strip() if lines and lines[0].strip().isdigit() else "?"
    db = lines[1].strip() if len(lines) > 1 else ""
    return pid, db
