"""Run a recorded capture through the pipeline again, into a DuckDB file."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from lumen_agent.config import Config
from lumen_agent.outputs.exporters import build_exporters
from lumen_agent.outputs.store import CallStore
from lumen_agent.pipeline.build import build
from lumen_agent.recording import NotARecording, RecordedAttribution, read_events

log = logging.getLogger("lumen_agent")

# Bad lines are logged the first time and then every this many.
BAD_LINE_LOG_EVERY = 1000


@dataclass(frozen=True, slots=True)
class ReplaySummary:
    events: int
    bad_lines: int
    calls: int
    unpriced: int
    skipped: int
    rows_written: int


def replay(recording: Path, config: Config) -> ReplaySummary:
    """Feed ``recording`` through the pipeline ``config`` describes, into ``config.db``.

    Calls are attributed from the recording's process lines; a pid it does
    not describe stays unattributed.
    """
    store = CallStore(config.db)
    outputs = [store, *build_exporters(config)]

    def on_call(call) -> None:
        for output in outputs:
            output.on_call(call)

    attribution = RecordedAttribution()
    pipeline = build(config, capture="replay", on_call=on_call, attribution=attribution)
    bad = 0
    events = 0

    def on_bad_line(lineno: int, error: Exception) -> None:
        nonlocal bad
        bad += 1
        if bad == 1 or bad % BAD_LINE_LOG_EVERY == 0:
            log.warning("skipped recording line=%d error=%s bad_lines=%d", lineno, error, bad)

    try:
        with open(recording, "rb") as stream:
            for event in read_events(stream, on_bad_line, on_process=attribution.remember):
                events += 1
                pipeline.feed(event)
                store.maybe_flush()
            if not events and bad:
                raise NotARecording(f"{recording} is not a recording: no line of it is a recorded event "
                                    "(see docs/recording.md)")
        pipeline.close()
    finally:
        for output in outputs:  # the store first: exporters read what it wrote
            output.close()
    counters = pipeline.counters.snapshot()
    return ReplaySummary(
        events=counters.get("events", 0),
        bad_lines=bad,
        calls=counters.get("calls", 0),
        unpriced=counters.get("calls.unpriced", 0),
        skipped=sum(v for k, v in counters.items() if k.startswith("skipped.")),
        rows_written=store.stats().get("rows_written", 0),
    )
