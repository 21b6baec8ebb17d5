"""Who made a call: process, executable, user, systemd unit, container.

Looked up from /proc once per process and cached.  A cached entry is keyed
by (pid, start time) so a recycled pid is never mistaken for the process
that had it before; a process that has already exited keeps whatever was
learnt about it while it ran (capture sources call ``observe`` early, at
exec or first event, for exactly that reason, or read the process where
they find it and hand it in: ``remember``).
"""

from __future__ import annotations

import pwd
import re
from collections import OrderedDict
from dataclasses import astuple, dataclass
from pathlib import Path

# psutil is imported where it is used: the hook, in a program's own
# virtualenv, imports this module (through recording) for ProcessInfo alone.

# Processes remembered at once; the least recently used is forgotten.
MAX_PROCESSES = 16384

_CONTAINER_ID = re.compile(r"(?:docker|crio|cri-containerd|containerd|libpod|podman)[-/:]([0-9a-f]{12,64})")
_BARE_ID = re.compile(r"/([0-9a-f]{64})(?:\.scope)?$")
_UNIT = re.compile(r"([^/]+\.(?:service|scope))$")


@dataclass(frozen=True, slots=True)
class ProcessInfo:
    process: str | None = None
    exe: str | None = None
    user: str | None = None
    unit: str | None = None
    container_id: str | None = None


UNKNOWN = ProcessInfo()


@dataclass(frozen=True, slots=True)
class ProcessIdentity:
    """A process as read while it ran: ``pid`` and ``start`` name it (pids are reused)."""

    pid: int
    start: float  # psutil's create_time
    info: ProcessInfo


class Attribution:
    def __init__(self, proc: Path = Path("/proc")) -> None:
        self._proc = proc
        self._by_pid: OrderedDict[int, tuple[float | None, ProcessInfo]] = OrderedDict()
        self._users: dict[int, str] = {}
        # pids whose entry a capture source handed in (``remember``): read while
        # the process ran, possibly before this run loop sees the process's exec.
        self._handed_in: OrderedDict[int, None] = OrderedDict()

    def observe(self, pid: int) -> ProcessInfo:
        """Learn about ``pid`` now, while it runs; cheap when already known."""
        start = self._start_time(pid)
        cached = self._by_pid.get(pid)
        if cached is not None and (start is None or cached[0] == start):
            self._by_pid.move_to_end(pid)
            return cached[1]
        # A pid gone before we saw it stays unknown (cached, so a stream of
        # its events does not read /proc each time).
        info = UNKNOWN if start is None else self._read(pid)
        self._by_pid[pid] = (start, info)
        if len(self._by_pid) > MAX_PROCESSES:
            self._by_pid.popitem(last=False)
        return info

    def identify(self, pid: int) -> ProcessIdentity | None:
        """``observe`` and the start time with it; None if ``pid`` is gone."""
        info = self.observe(pid)
        start = self._by_pid[pid][0]
        return None if start is None else ProcessIdentity(pid, start, info)

    def remember(self, identity: ProcessIdentity) -> bool:
        """What a capture source read of a process while it ran (perhaps on
        another thread, before the process exited): later lookups of its pid
        need no /proc.  True if another process had this pid before."""
        before = self._by_pid.get(identity.pid)
        self._by_pid[identity.pid] = (identity.start, identity.info)
        self._by_pid.move_to_end(identity.pid)
        if len(self._by_pid) > MAX_PROCESSES:
            self._by_pid.popitem(last=False)
        self._handed_in[identity.pid] = None
        self._handed_in.move_to_end(identity.pid)
        if len(self._handed_in) > MAX_PROCESSES:
            self._handed_in.popitem(last=False)
        return before is not None and before[0] != identity.start

    def lookup(self, pid: int) -> ProcessInfo:
        """What is known about ``pid``: the cache first, /proc if it is new."""
        cached = self._by_pid.get(pid)
        if cached is not None:
            return cached[1]
        return self.observe(pid)

    def forget(self, pid: int) -> None:
        """Drop what is known of ``pid`` (it exec'd: /proc will tell the new program).

        What a capture source handed in is of the new program (the eBPF exec
        record's comm, handed in just before; the sniffer's owner found at
        connect()), so it is not dropped but read over: all of it is kept
        when the process is gone (its exec record was read after it exited),
        and it fills what /proc no longer had when the process exited while
        being read (a short-lived curl: its comm vanished mid-read).
        """
        handed_in = self._by_pid.get(pid) if pid in self._handed_in else None
        if handed_in is None:
            self._by_pid.pop(pid, None)
            self._handed_in.pop(pid, None)
            return
        start = self._start_time(pid)
        if start is not None:  # else gone: what was handed in stays as it is
            self.remember(ProcessIdentity(pid, start, _filled(self._read(pid), handed_in[1])))

    def _start_time(self, pid: int) -> float | None:
        """When ``pid`` started: with the pid, names one process (pids are reused)."""
        import psutil

        try:
            return psutil.Process(pid).create_time()
        except psutil.Error:
            return None

    def _read(self, pid: int) -> ProcessInfo:
        # Start time and user come from psutil.  comm, the exe link and the
        # cgroup are read here: psutil's name() swaps a 15-character comm for
        # the command line's first word (filters match the comm), its exe()
        # drops the " (deleted)" mark of a replaced binary, and it has no
        # cgroup at all.
        base = self._proc / str(pid)
        try:  # first: a process that is exiting loses its exe link before its comm
            exe = str((base / "exe").readlink())
        except OSError:
            exe = None
        process = _read_text(base / "comm")
        user = self._user(pid)
        unit, container = _cgroup_facts(_read_text(base / "cgroup") or "")
        return ProcessInfo(process, exe, user, unit, container)

    def _user(self, pid: int) -> str | None:
        import psutil

        try:
            uid = psutil.Process(pid).uids().real
        except psutil.Error:
            return None
        if uid not in self._users:
            try:
                self._users[uid] = pwd.getpwuid(uid).pw_name
            except KeyError:
                self._users[uid] = str(uid)
        return self._users[uid]


def _filled(info: ProcessInfo, fallback: ProcessInfo) -> ProcessInfo:
    """``info``, with what it lacks taken from ``fallback``."""
    return ProcessInfo(*(mine if mine is not None else theirs
                         for mine, theirs in zip(astuple(info), astuple(fallback), strict=True)))


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _cgroup_facts(cgroup: str) -> tuple[str | None, str | None]:
    """The systemd unit and container id named by a /proc/PID/cgroup text."""
    unit = container = None
    for line in cgroup.splitlines():
        path = line.split(":", 2)[-1]
        if container is None:
            match = _CONTAINER_ID.search(path) or _BARE_ID.search(path)
            if match:
                container = match.group(1)
        if unit is None:
            for part in reversed(path.split("/")):
                if _UNIT.match(part) and not part.startswith(("docker-", "crio-", "libpod-")):
                    unit = part
                    break
    return unit, container
