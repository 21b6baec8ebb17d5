"""The process gate: the configuration's process filters, decided once per process.

Every capture path asks the same question before an event reaches the
pipeline ("may this process be captured?"); the answer comes from the
filters applied to what attribution knows about the process, and is cached
until the process execs another program (``forget``).
"""

from __future__ import annotations

from collections.abc import Callable

from lumen_agent.pipeline.attribution import MAX_PROCESSES, Attribution
from lumen_agent.pipeline.filters import ProcessFilter


class ProcessGate:
    def __init__(self, filters: ProcessFilter, attribution: Attribution,
                 on_exclude: Callable[[int], None] | None = None) -> None:
        self._filters = filters
        self._attribution = attribution
        self._on_exclude = on_exclude
        self._allowed: set[int] = set()
        self._excluded: set[int] = set()

    def allows(self, pid: int) -> bool:
        if pid in self._allowed:
            return True
        if pid in self._excluded:
            return False
        if len(self._allowed) + len(self._excluded) >= MAX_PROCESSES:
            # Verdicts are cheap to make again; keep the sets as bounded as
            # attribution's own cache.
            self._allowed.clear()
            self._excluded.clear()
        # Observed now, even with no filters: the process may be gone by the
        # time its call completes, and attribution must have seen it alive.
        info = self._attribution.observe(pid)
        if self._filters.is_trivial or self._filters.allows(info):
            self._allowed.add(pid)
            return True
        self._excluded.add(pid)
        if self._on_exclude is not None:
            self._on_exclude(pid)
        return False

    def forget(self, pid: int) -> bool:
        """Decide ``pid`` afresh next time (it exec'd); True if it was excluded."""
        self._allowed.discard(pid)
        if pid in self._excluded:
            self._excluded.discard(pid)
            return True
        return False
