"""Logging to stderr in a form journald keeps well: level, message, key=value.

Under systemd (``JOURNAL_STREAM`` set) each line starts with a syslog
priority prefix such as ``<4>``, which journald turns into the entry's
priority, and carries no timestamp of its own (journald adds one).  In a
terminal each line starts with the time.
"""

from __future__ import annotations

import logging
import os
import sys

_SYSLOG_PRIORITY = {
    logging.CRITICAL: 2,
    logging.ERROR: 3,
    logging.WARNING: 4,
    logging.INFO: 6,
    logging.DEBUG: 7,
}


class _JournalFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        priority = _SYSLOG_PRIORITY.get(record.levelno, 6)
        return f"<{priority}>{super().format(record)}"


def setup_logging(level: str | bool = "info") -> None:
    """``level`` is a level name; True/False (a --verbose flag) mean debug/info."""
    if isinstance(level, bool):
        level = "debug" if level else "info"
    handler = logging.StreamHandler(sys.stderr)
    if os.environ.get("JOURNAL_STREAM"):
        handler.setFormatter(_JournalFormatter("%(levelname)s %(message)s"))
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%dT%H:%M:%S"))
    root = logging.getLogger("lumen_agent")
    root.handlers[:] = [handler]
    root.setLevel(getattr(logging, level.upper(), logging.INFO))
    root.propagate = False
