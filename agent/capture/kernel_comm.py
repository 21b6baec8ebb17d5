"""Who a process is when the kernel named it (pid and comm) and /proc may be gone.

A capture source that reads a process's pid and comm in the kernel (the
plain-HTTP sniffer's connect() map, the eBPF capture's EXEC and PROC records)
hands the run loop an identity for it (``Attribution.remember``).  A process
still alive under that name is read from /proc as usual; one gone already
(or whose pid now names another program) keeps its pid and the kernel's comm,
with exe, user and unit unknown.

The start time of a gone process cannot be read any more (and reading it from
``task_struct`` in BPF would need the running kernel's struct layout, which
the installed headers do not match): the wall time the kernel first named it
stands in, the same for everything of that process, so its calls share one
(pid, start).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

from lumen_agent.pipeline.attribution import ProcessIdentity, ProcessInfo

# Identities made for processes already gone, by pid (one per process, so
# its later connections and calls name the same (pid, start)).
MAX_GONE_IDENTITIES = 4096


def comm_text(raw: bytes) -> str:
    """The comm in a kernel record: TASK_COMM_LEN bytes, NUL-terminated."""
    return raw.split(b"\0", 1)[0].decode(errors="replace")


class KernelIdentities:
    def __init__(self, identify: Callable[[int], ProcessIdentity | None] | None) -> None:
        """``identify(pid)``: who a live process is, from /proc (None: gone)."""
        self._identify = identify
        self._gone: OrderedDict[int, ProcessIdentity] = OrderedDict()

    def identity(self, pid: int, comm: str, seen_wall_ns: int) -> ProcessIdentity:
        """``pid`` named ``comm`` by the kernel at ``seen_wall_ns``: /proc's identity if it still runs that, else the kernel's."""
        live = self._identify(pid) if self._identify is not None else None
        if live is not None and live.info.process == comm:
            return live
        return self.gone(pid, comm, seen_wall_ns)

    def gone(self, pid: int, comm: str, seen_wall_ns: int) -> ProcessIdentity:
        """The kernel's identity of ``pid`` (no /proc): made once per process, then the same."""
        known = self._gone.get(pid)
        if known is not None and known.info.process == comm:
            self._gone.move_to_end(pid)
            return known
        identity = ProcessIdentity(pid, seen_wall_ns / 1e9, ProcessInfo(process=comm))
        self._gone[pid] = identity
        if len(self._gone) > MAX_GONE_IDENTITIES:
            self._gone.popitem(last=False)
        return identity

    def exited(self, pid: int) -> None:
        """``pid`` ended: a process that gets the pid next is another one."""
        self._gone.pop(pid, None)
