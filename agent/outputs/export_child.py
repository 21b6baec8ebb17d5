"""The exporter process (export_process.py is the agent's side of it).

Reads from stdin, in pickle frames: first ``{"sinks": {name: options},
"log_level": n}``, then batches ``{sink: [row tuple, ...]}``.  Each row
becomes a :class:`Row` (the call's fields by name, so the in-process
exporters take it as they take a ``Call``) and goes to that sink's exporter.
Writes to the parent's pipe ``{"ready": pid}`` once started (or
``{"error": (problem, fix)}``), then every ``REPORT_INTERVAL_S`` the
exporters' counters and its CPU time.  At end of input it closes the
exporters (they drain their queues), reports once more and exits.

Priority: it runs at ``EXPORTER_NICE``.  Capture must keep up with the
kernel's events (what overflows the ring buffer is gone for good); exports
can wait in their bounded queues.  On a host whose cores are busy, the
scheduler then gives capture the CPU first, and the exporters catch up when
there is CPU to spare.  It stays in the agent's session on purpose: with
autogroup scheduling a session of its own would get an equal share, and
its niceness would count for nothing against the agent.

Signals: it ignores SIGINT and SIGTERM.  Ctrl-C or a service stop reaches
the agent too, and the agent then closes our stdin; dying on the signal
would lose what is still queued here.  When the agent itself is killed,
stdin ends the same way.
"""

from __future__ import annotations

import collections
import logging
import os
import pickle
import sys
import threading
import time
from typing import Any, BinaryIO

from lumen_agent.errors import LumenError
from lumen_agent.helper_process import become_helper
from lumen_agent.outputs.base import Output
from lumen_agent.outputs.export_process import REPORT_INTERVAL_S, ROW_FIELDS

Row = collections.namedtuple("Row", ROW_FIELDS)


def build(name: str, options: dict[str, Any]) -> Output:
    if name == "otlp":
        from lumen_agent.outputs.otlp import OtlpExport

        return OtlpExport(**options)
    if name == "redis":
        from lumen_agent.outputs.redis_stream import RedisStreamExport

        return RedisStreamExport(**options)
    raise LumenError(f"unknown exporter {name!r}", "this is a bug in lumen-agent")


class Reporter:
    def __init__(self, out: BinaryIO, outputs: dict[str, Output]) -> None:
        self._out = out
        self._outputs = outputs
        self._lock = threading.Lock()
        self._last: dict | None = None

    def send(self, message: dict[str, Any]) -> None:
        with self._lock:
            pickle.dump(message, self._out)
            self._out.flush()

    def report(self, *, final: bool = False) -> None:
        stats = {name: output.stats() for name, output in self._outputs.items()}
        if stats == self._last and not final:
            return
        self._last = stats
        self.send({"stats": stats, "cpu_s": time.process_time(), "final": final})

    def run(self, stop: threading.Event) -> None:
        while not stop.wait(REPORT_INTERVAL_S):
            try:
                self.report()
            except OSError:  # the agent is gone
                return


# Lower CPU priority than the agent (nice 0): a weight of ~1/10 when both want the CPU.
EXPORTER_NICE = 10


def main() -> int:
    out = become_helper(EXPORTER_NICE)  # the report pipe
    inp = sys.stdin.buffer
    config = pickle.load(inp)
    logging.basicConfig(level=config.get("log_level", logging.INFO), stream=sys.stderr,
                        format="lumen-export[%(process)d] %(levelname)s %(name)s: %(message)s")
    try:
        outputs = {name: build(name, options) for name, options in config["sinks"].items()}
    except LumenError as exc:
        pickle.dump({"error": (exc.problem, exc.fix)}, out)
        out.flush()
        return 2
    except Exception as exc:  # noqa: BLE001 - tell the agent why, in its words
        pickle.dump({"error": (f"the exporter process could not start: {exc}", "check [export.*] options")}, out)
        out.flush()
        return 2
    reporter = Reporter(out, outputs)
    reporter.send({"ready": os.getpid(), "cpu_s": time.process_time()})
    stop = threading.Event()
    threading.Thread(target=reporter.run, args=(stop,), name="lumen-export-report", daemon=True).start()
    make_row = Row._make
    while True:
        try:
            batch = pickle.load(inp)
        except (EOFError, pickle.UnpicklingError, OSError):  # the agent stopped (or died mid-write)
            break
        for name, rows in batch.items():
            on_call = outputs[name].on_call
            for row in rows:
                on_call(make_row(row))
    for output in outputs.values():
        output.close()
    stop.set()
    reporter.report(final=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
