"""The status file: rewritten at every turn of the run loop, never seen half-written.

Readers (``status``, ``doctor``, the hook, scripts) open ``status.json`` and
parse it, so it must always be a whole file.  Writing a new file and renaming
it over the last one guarantees that, but costs ~350 us of CPU on ext4 (an
inode made and one freed, both journaled), once a second: a sixth of an idle
agent's CPU.  So two files are kept open, ``status.json`` and a spare: the
next status is written into the spare in place, and ``renameat2`` with
``RENAME_EXCHANGE`` swaps the two names in one step (~16 us).  A reader
opens either the old whole file or the new one; the old one is written again
only a turn later.

Where the filesystem cannot exchange names (NFS, some overlayfs), or libc
has no ``renameat2``, each write is the classic write-and-rename.
"""

from __future__ import annotations

import ctypes
import errno
import json
import logging
import os
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

MODE = 0o644  # readable by `status` of any user, whatever the agent's umask
_RENAME_EXCHANGE = 2  # linux/fs.h
_AT_FDCWD = -100
_OPEN_FLAGS = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC


def _renameat2():
    # Python's os module has no renameat2 (exchanging two names is
    # Linux-only); glibc >= 2.28 exports it.
    function = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if function is not None:
        function.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
        function.restype = ctypes.c_int
    return function


class StatusFile:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.spare = path.with_name("." + path.name + ".spare")
        self._exchange = _renameat2()
        # (fd, (st_dev, st_ino)) of the file named by ``path``, then of the spare.
        self._files: list[tuple[int, tuple[int, int]]] = []

    def write(self, status: dict[str, Any]) -> None:
        data = json.dumps(status, default=str).encode()
        try:
            if self._exchange is not None:
                self._open_both()
                self._write_exchanged(data)
            else:
                self._write_renamed(data)
        except OSError as exc:
            log.warning("cannot write status file path=%s error=%s", self.path, exc)

    def remove(self, pid: int) -> None:
        """At stop: the spare, and the status file if it is still ``pid``'s (never another agent's)."""
        self._close()
        for path in (self.spare, self.path.with_suffix(".tmp")):
            try:
                path.unlink()
            except FileNotFoundError:
                pass
            except OSError as exc:
                log.warning("cannot remove path=%s error=%s", path, exc)
        try:
            if json.loads(self.path.read_text()).get("pid") == pid:
                self.path.unlink()
        except (OSError, ValueError, AttributeError):
            pass

    def _write_exchanged(self, data: bytes) -> None:
        current, spare = self._files
        fd = spare[0]
        os.pwrite(fd, data, 0)
        os.ftruncate(fd, len(data))
        if self._exchange(_AT_FDCWD, os.fsencode(self.spare), _AT_FDCWD, os.fsencode(self.path),
                          _RENAME_EXCHANGE) != 0:
            code = ctypes.get_errno()
            if code not in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
                raise OSError(code, os.strerror(code), str(self.path))
            log.info("status file: the filesystem cannot exchange names; writing and renaming path=%s", self.path)
            self._exchange = None
            self._close()
            self._write_renamed(data)
            return
        self._files = [spare, current]

    def _open_both(self) -> None:
        """Both files open, and still named as we left them; else (the first
        write, or the folder or a file was removed or replaced) opened afresh."""
        try:
            if len(self._files) == 2 and all(
                    _identity(os.stat(path, follow_symlinks=False)) == ident
                    for path, (_fd, ident) in zip((self.path, self.spare), self._files, strict=True)):
                return
        except FileNotFoundError:
            pass
        self._close()
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
        for path in (self.path, self.spare):
            fd = os.open(path, _OPEN_FLAGS, MODE)
            self._files.append((fd, _identity(os.fstat(fd))))
            os.fchmod(fd, MODE)

    def _write_renamed(self, data: bytes) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_bytes(data)
        os.chmod(tmp, MODE)
        os.replace(tmp, self.path)

    def _close(self) -> None:
        for fd, _ident in self._files:
            os.close(fd)
        self._files = []


def _identity(st: os.stat_result) -> tuple[int, int]:
    return st.st_dev, st.st_ino
