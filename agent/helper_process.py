"""The start of each of the agent's helper processes (the exporter, the runtime analysis)."""

from __future__ import annotations

import os
import signal
from typing import BinaryIO


def become_helper(nice: int) -> BinaryIO:
    """Set this process up as a helper of the agent; returns the pipe to answer on.

    * SIGINT and SIGTERM are ignored: Ctrl-C or a service stop reaches the
      agent too, which then closes our stdin, and we finish what we hold;
      dying on the signal would lose it.
    * ``nice``: below the agent's CPU priority, so capture comes first.
    * Our stdout is the reply pipe: it is kept for us, and anything a library
      prints goes to stderr (the agent's log) instead.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    os.nice(nice)
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    return out
