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
    def __init__(self) -> None:
        self._values: Counter[str] = Counter()
        self._occurrences: Counter[str] = Counter()

    def add(self, name: str, n: int = 1) -> None:
        self._values[name] += n

    def add_event(self, nbytes: int) -> None:
        """One input event of ``nbytes``: ``events`` and ``bytes`` in one call (once per event read)."""
        values = self._values
        values["events"] += 1
        values["bytes"] += nbytes

    def skip(self, reason: str, detail: str = "", n: int = 1) -> None:
        key = f"skipped.{reason}"
        self._values[key] += n
        self._occurrences[reason] += 1
        occurrences = self._occurrences[reason]
        if occurrences == 1 or occurrences % LOG_EVERY == 0:
            log.warning("skipped %s%s count=%d occurrences=%d", reason, f" ({detail})" if detail else "",
                        self._values[key], occurrences)

    def __getitem__(self, name: str) -> int:
        return self._values[name]

    def snapshot(self) -> dict[str, int]:
        return dict(self._values)
