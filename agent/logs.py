"""Logging to stderr in a form journald keeps well: level, message, key=value."""

from __future__ import annotations

import logging
import sys


def setup_logging(level: str | bool = "info") -> None:
    """``level`` is a level name; True/False (a --verbose flag) mean debug/info."""
    if isinstance(level, bool):
        level = "debug" if level else "info"
    handler = logging.StreamHandler(sys.stderr)
    # journald adds its own timestamp; a terminal user gets one too.
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%dT%H:%M:%S"))
    root = logging.getLogger("lumen_agent")
    root.handlers[:] = [handler]
    root.setLevel(getattr(logging, level.upper(), logging.INFO))
    root.propagate = False
