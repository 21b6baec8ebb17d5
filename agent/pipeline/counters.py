"""Named counters for everything the pipeline skips, drops or notices.

Bad input is never fatal, but it is never silent either: every skip is
counted here under a reason, and logged the first time and then every
``LOG_EVERY``-th time it happens (occurrences, per reason: a skip of many
bytes is still one occurrence), so a flood of junk cannot flood the journal.
"""

from __future__ import annotations

import logging
from collections import Counter

log = logging.getLogger("lumen_agent")

LOG_EVERY = 1000


class Counters:
    """``events`` and ``bytes`` (every input event and its size) are plain
    integer attributes that the pipeline adds to once per event, cheaper
    than a keyed count; reads see them as the ``"events"`` and ``"bytes"``
    counters, as if they were counted like the rest."""

    def __init__(self) -> None:
        self._values: Counter[str] = Counter()
        self._occurrences: Counter[str] = Counter()
        self.events = 0
        self.bytes = 0

    def add(self, name: str, n: int = 1) -> None:
        if name == "events":
            self.events += n
        elif name == "bytes":
            self.bytes += n
        else:
            self._values[name] += n

    def skip(self, reason: str, detail: str = "", n: int = 1) -> None:
        key = f"skipped.{reason}"
        self._values[key] += n
        self._occurrences[reason] += 1
        occurrences = self._occurrences[reason]
        if occurrences == 1 or occurrences % LOG_EVERY == 0:
            log.warning("skipped %s%s count=%d occurrences=%d", reason, f" ({detail})" if detail else "",
                        self._values[key], occurrences)

    def __getitem__(self, name: str) -> int:
        if name == "events":
            return self.events
        if name == "bytes":
            return self.bytes
        return self._values[name]

    def snapshot(self) -> dict[str, int]:
        """Every counter counted so far (``events`` and ``bytes`` once an event was)."""
        values = self._values
        if self.events or self.bytes:
            return {"events": self.events, "bytes": self.bytes, **values}
        return dict(values)
