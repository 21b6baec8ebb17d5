"""Two capture sources in one agent: eBPF for TLS, the sniffer for plain HTTP.

The run loop polls one source.  This one has the primary wait on the
secondary's sockets too (``watch_fds``: one epoll_wait for both, so an idle
agent sleeps the whole timeout), then drains the secondary without waiting.
A primary that cannot watch fds is polled with a short timeout instead, so
neither starves.  A secondary that cannot start (no libpcap, no
CAP_NET_RAW) is logged and left out: the primary still runs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

log = logging.getLogger("lumen_agent")

# Longest wait in the primary before the secondary is read: its packets wait
# this long at most in the kernel socket buffer.
PRIMARY_POLL_MS = 20


class CombinedCapture:
    def __init__(self, primary: Any, secondary: Any, *, secondary_name: str,
                 secondary_conn: Callable[[int], bool]) -> None:
        """``secondary_conn(conn)``: whether a connection id is the secondary's."""
        self.primary = primary
        self.secondary: Any | None = secondary
        self._secondary_conn = secondary_conn
        self._secondary_name = secondary_name
        self.secondary_error: str | None = None
        self.secondary_faults = 0
        self._watching: frozenset | None = None  # the secondary's sockets the primary waits on
        self._extra: set[int] = set()  # the caller's fds (watch_fds)

    def start(self) -> None:
        prepare = getattr(self.secondary, "prepare", None)
        if prepare is not None:
            try:
                prepare()  # e.g. the sniffer's BPF compile, beside the primary's
            except Exception as exc:  # noqa: BLE001 - start() reports it, once
                log.debug("%s capture could not prepare: %s", self._secondary_name, exc)
        self.primary.start()
        try:
            self.secondary.start()
        except Exception as exc:  # noqa: BLE001 - the primary capture must run regardless
            self.secondary_error = str(exc)
            log.warning("%s capture not started: %s", self._secondary_name, exc)
            self.secondary = None

    def poll(self, timeout_ms: int = 100) -> None:
        self.primary.poll(timeout_ms if self._watch_secondary() else min(timeout_ms, PRIMARY_POLL_MS))
        if self.secondary is not None:
            try:
                self.secondary.poll(0)
            except Exception:  # noqa: BLE001 - a fault in the secondary must not stop the primary capture
                self.secondary_faults += 1
                if self.secondary_faults == 1 or self.secondary_faults % 1000 == 0:
                    log.exception("%s capture failed faults=%d", self._secondary_name, self.secondary_faults)

    def watch_fds(self, fds: set[int]) -> bool:
        """End the wait also when one of ``fds`` is readable (see EbpfCapture.watch_fds)."""
        if getattr(self.primary, "watch_fds", None) is None:
            return False
        self._extra = set(fds)
        self._watching = None
        return self._watch_secondary()

    def _watch_secondary(self) -> bool:
        """Have the primary's wait end on the secondary's packets; False when it cannot."""
        watch = getattr(self.primary, "watch_fds", None)
        if watch is None:
            return self.secondary is None
        fds = getattr(self.secondary, "fds", None)
        if self.secondary is not None and fds is None:
            return False
        now = fds() if fds is not None else frozenset()
        if now != self._watching:
            if not watch({fd for fd, _identity in now} | self._extra):
                return False
            self._watching = now
        return True

    def next_due_s(self) -> float | None:
        dues = []
        for src in (self.primary, self.secondary):
            if src is not None:
                due = getattr(src, "next_due_s", None)
                # A source that cannot say is polled as often as before.
                dues.append(PRIMARY_POLL_MS / 1000 if due is None else due())
        dues = [d for d in dues if d is not None]
        return min(dues) if dues else None

    def ignore_connection(self, pid: int, conn: int) -> None:
        if not self._secondary_conn(conn):
            self.primary.ignore_connection(pid, conn)
        elif self.secondary is not None:
            self.secondary.ignore_connection(pid, conn)

    def exclude_pid(self, pid: int) -> None:
        self.primary.exclude_pid(pid)
        if self.secondary is not None:
            self.secondary.exclude_pid(pid)

    def include_pid(self, pid: int) -> None:
        self.primary.include_pid(pid)
        if self.secondary is not None:
            self.secondary.include_pid(pid)

    def stats(self) -> dict[str, int]:
        out = dict(self.primary.stats())
        if self.secondary_faults:
            out["secondary_faults"] = self.secondary_faults
        if self.secondary is not None:
            for key, value in self.secondary.stats().items():
                out.setdefault(key, value)  # events, bytes stay the primary's (metrics name them so)
        return out

    def targets(self) -> list[Any]:
        targets = list(self.primary.targets())
        if self.secondary is not None:
            targets += self.secondary.targets()
        return targets

    def tls_not_found(self) -> list[str]:
        """Executables whose TLS code the primary (eBPF) capture could not hook."""
        return list(getattr(self.primary, "tls_not_found", list)())

    def close(self) -> None:
        try:
            self.primary.close()
        finally:
            if self.secondary is not None:
                self.secondary.close()
