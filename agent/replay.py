"""Run a recorded capture through the pipeline again, into a DuckDB file.

Two kinds of file: the agent's own recordings (JSON lines, see
``recording``), and packet captures (pcap or pcapng, told by their magic
bytes), whose plain-HTTP conversations -- and, given an NSS key log, TLS
ones -- become rows (``capture`` = ``pcap``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from lumen_agent.capture.pcap_file import capture_events, is_packet_capture
from lumen_agent.config import Config
from lumen_agent.outputs.exporters import build_exporters
from lumen_agent.outputs.store import CallStore
from lumen_agent.pipeline.build import build
from lumen_agent.pipeline.events import DataEvent
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
    # Packet captures only:
    packets: int | None = None
    connections: int | None = None


def replay(recording: Path, config: Config, *, keylog: Path | None = None) -> ReplaySummary:
    """Feed ``recording`` through the pipeline ``config`` describes, into ``config.db``.

    Calls are attributed from the recording's process lines; a pid it does
    not describe stays unattributed (so does every call of a packet capture).
    ``keylog``: an NSS key log that decrypts a packet capture's TLS.
    """
    store = CallStore(config.db)
    outputs = [store, *build_exporters(config)]

    def on_call(call) -> None:
        for output in outputs:
            output.on_call(call)

    attribution = RecordedAttribution()
    pcap = is_packet_capture(recording)
    pipeline = build(config, capture="pcap" if pcap else "replay", on_call=on_call, attribution=attribution)
    bad = 0
    events = 0

    def on_bad_line(lineno: int, error: Exception) -> None:
        nonlocal bad
        bad += 1
        if bad == 1 or bad % BAD_LINE_LOG_EVERY == 0:
            log.warning("skipped recording line=%d error=%s bad_lines=%d", lineno, error, bad)

    def recorded_events() -> Iterator[DataEvent]:
        nonlocal events
        with open(recording, "rb") as stream:
            for event in read_events(stream, on_bad_line, on_process=attribution.remember):
                events += 1
                yield event
        if not events and bad:
            raise NotARecording(f"{recording} is not a recording: no line of it is a recorded event "
                                "(see docs/recording.md; pcap and pcapng files are read as packet captures)")

    source = capture_events(recording, pipeline.counters, keylog=keylog) if pcap else recorded_events()
    try:
        for event in source:
            pipeline.feed(event)
            store.maybe_flush()
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
        packets=counters.get("pcap.packets", 0) if pcap else None,
        connections=counters.get("pcap.connections", 0) if pcap else None,
    )
