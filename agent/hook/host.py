"""``lumen-agent exec`` when no agent runs: this process hosts the pipeline.

The program usually runs in a virtualenv of its own, whose interpreter can
import the hook (standard library only) but not DuckDB or the parsers.  So
``exec`` does not hand the program over to the hook's in-process pipeline:
it stays as the program's parent, in the agent's own environment, runs the
pipeline and the store here, and gives the program's hook a private ingest
socket (the agent's protocol, ``lumen_agent.control``).  The hook ships its
events there exactly as it would to a running agent; the socket stamps each
event with the sending process's pid, so every hooked process (forks,
subprocesses) is attributed as itself.

When the program has exited, the host waits for the hook's last events
(each hooked process closes its connection after its final batch), feeds
them, closes out open exchanges and writes the last rows.
"""

from __future__ import annotations

import logging
import queue
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from lumen_agent.config import Config
from lumen_agent.control import ControlServer
from lumen_agent.outputs.store import CallStore
from lumen_agent.pipeline.attribution import Attribution
from lumen_agent.pipeline.build import build
from lumen_agent.pipeline.core import Origin
from lumen_agent.pipeline.events import DataEvent
from lumen_agent.pipeline.gate import ProcessGate

log = logging.getLogger("lumen_agent")

# Seconds between housekeeping turns (idle connections, due flushes), as the agent.
HOUSEKEEPING_S = 1.0
# How long to wait for one event before looking at the program again.
POLL_S = 0.1
# After the program exits, how long its hooked children may keep sending
# (the hook itself gives up on its last batch after 15 s, settings.py).
DRAIN_TIMEOUT_S = 20.0
# Signals passed on to the program: it decides how to end.  SIGINT is not
# among them because a terminal already sends it to the whole process group.
FORWARDED_SIGNALS = (signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2)


class ExecHost:
    """Pipeline, store and a private ingest socket for one ``exec``'d program."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.store = CallStore(config.db, flush_interval=config.flush_interval_s)
        self.attribution = Attribution()
        # Built as the agent builds it: same prices, salt, options, filters.
        self.pipeline = build(config, capture="hook", on_call=self.store.add, attribution=self.attribution)
        self.gate = ProcessGate(config.filters, self.attribution, on_exclude=self._excluded)
        self._dir = Path(tempfile.mkdtemp(prefix="lumen-exec-"))  # 0700: this user's processes only
        self.control = ControlServer(self._dir)
        self._next_housekeeping = 0.0

    @property
    def socket_path(self) -> Path:
        return self.control.ingest_path

    def run(self, argv: Sequence[str], env: Mapping[str, str], path: str) -> int:
        """Start the program with ``env``, record until it exits, return its exit code."""
        self.control.start()
        try:
            child = subprocess.Popen(argv, executable=path, env=dict(env))
        except BaseException:
            self.close()
            raise
        # Popen returns once the program is exec'd: learn who it is now, while
        # /proc has it, not when its last events arrive after it has exited.
        self._allowed(child.pid)
        previous = {sig: signal.signal(sig, lambda s, _f: _forward(child, s)) for sig in FORWARDED_SIGNALS}
        previous[signal.SIGINT] = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            while child.poll() is None:
                self._turn()
            if not self.control.wait_idle(DRAIN_TIMEOUT_S):
                log.warning("exec: hooked processes still sending %.0f s after the program exited; "
                            "what they send from now on is not recorded", DRAIN_TIMEOUT_S)
            self._drain()
        finally:
            self.close()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        code = child.returncode
        return 128 - code if code < 0 else code  # killed by signal N: 128+N, as a shell says

    def _turn(self) -> None:
        try:
            event, origin = self.control.events.get(timeout=POLL_S)
        except queue.Empty:
            pass
        else:
            self._feed(event, origin)
            self._drain()
        now = time.monotonic()
        if now >= self._next_housekeeping:
            self._next_housekeeping = now + HOUSEKEEPING_S
            self.pipeline.tick(time.time_ns())
            self.store.maybe_flush(now)

    def _drain(self) -> None:
        events = self.control.events
        while True:
            try:
                event, origin = events.get_nowait()
            except queue.Empty:
                return
            self._feed(event, origin)

    def _feed(self, event: DataEvent, origin: Origin) -> None:
        if self._allowed(event.pid):
            self.pipeline.feed(event, origin)  # rows say hook, with the program's uid

    def _allowed(self, pid: int) -> bool:
        return self.gate.allows(pid)

    def _excluded(self, pid: int) -> None:
        self.pipeline.counters.add("processes.excluded")

    def close(self) -> None:
        try:
            self.control.close()
            self._drain()
            self.pipeline.close(time.time_ns())
            self.store.close()
        except Exception as exc:  # noqa: BLE001 - the program's exit code must still come through
            log.error("exec: the last rows could not be written to %s: %s", self.config.db, exc)
        finally:
            shutil.rmtree(self._dir, ignore_errors=True)


def _forward(child: subprocess.Popen, sig: int) -> None:
    try:
        child.send_signal(sig)
    except OSError:
        pass
