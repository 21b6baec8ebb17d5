"""An agent whose run loop is held up while short-lived clients call.

The agent's ``--record`` file is a FIFO read by :class:`PipeReader`; when the
reader stops, a few calls fill the pipe and the run loop blocks in a write,
as it blocks in a long database flush.  :func:`calls_while_held` makes calls
during that stall, so every client exits before the agent reads a byte of
its, and then lets the agent go.
"""

from __future__ import annotations

import fcntl
import os
import select
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

F_SETPIPE_SZ = 1031  # <linux/fcntl.h>: the smallest pipe (a page) fills after a few calls' events
# The run loop writes its status every second; older than this, it is stuck.
STUCK_AFTER_S = 2.5


class PipeReader:
    """Reads the agent's recording from a FIFO, and stops reading while told to (the agent then blocks)."""

    def __init__(self, path):
        os.mkfifo(path, 0o600)
        self.fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # before the agent opens it for writing
        fcntl.fcntl(self.fd, F_SETPIPE_SZ, 4096)
        self.reading = threading.Event()
        self.reading.set()
        self.stopped = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stopped:
            if not self.reading.wait(0.1):
                continue
            if select.select([self.fd], [], [], 0.1)[0]:
                try:
                    os.read(self.fd, 65536)
                except BlockingIOError:
                    pass

    def close(self):
        self.reading.set()
        self.stopped = True
        self.thread.join(5)
        os.close(self.fd)


def finish_all(running):
    results = [r.finish() for r in running]
    for result in results:
        assert result.ok, result.describe()
    return results


def assert_one_row_per_call(calls, rows, counters=None) -> None:
    """Each call (a started client with its ``pid``) is exactly one row with that pid.

    A failure names the calls and rows that differ, with ``counters`` (the
    agent's capture status): a flake on a loaded host says what happened."""
    pids = sorted(r.pid for r in calls)
    assert len(set(pids)) == len(pids) == len(rows)
    got = sorted(row["pid"] for row in rows)
    if got != pids:
        made, stored = Counter(pids), Counter(got)
        odd = [{k: row.get(k) for k in ("pid", "ts_start", "ts_end", "process", "capture")}
               for row in rows if stored[row["pid"]] != made[row["pid"]]]
        raise AssertionError(f"calls without their row: {sorted((made - stored).elements())}; "
                             f"rows whose pid is not one call's: {odd}; capture counters: {counters}")


def updated(agent):
    return (agent.status_file() or {}).get("updated", 0)


@dataclass
class Stall:
    priming: list  # calls made until the loop blocked (read late too, but not all after their exit)
    burst: list  # made at once during the stall
    late: list  # made one after the other during the stall
    still_stuck: bool  # the loop had not moved when the last of them finished

    @property
    def stalled(self) -> list:
        return self.burst + self.late


def calls_while_held(agent, reader: PipeReader, start_call: Callable[[], object], *, burst: int,
                     sequential: int) -> Stall:
    """Hold up ``agent``'s run loop, make ``burst`` calls at once and then
    ``sequential`` one after the other (``start_call()`` starts one), and let the loop go."""
    reader.reading.clear()
    priming = []
    deadline = time.monotonic() + 60
    while time.time() - updated(agent) < STUCK_AFTER_S:
        assert time.monotonic() < deadline, "the agent's run loop never blocked on its recording"
        priming += finish_all([start_call()])
        time.sleep(0.3)
    stuck_at = updated(agent)
    at_once = finish_all([start_call() for _ in range(burst)])
    late = []
    for _ in range(sequential):
        late += finish_all([start_call()])
    still_stuck = updated(agent) == stuck_at
    reader.reading.set()
    return Stall(priming, at_once, late, still_stuck)
