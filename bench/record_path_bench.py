"""What the eBPF capture's record path adds to the pipeline, per streamed call, in one process.

The same 100-chunk streamed calls (bench/pipeline_bench.py's) go in three ways:

    pipeline      DataEvents fed to the pipeline (+ store), as the replays of capture_bench.py
    agent path    the same bytes as ring-buffer records (header tuple, payload), through
                  EbpfCapture's record loop and the process gate into the same pipeline
    records only  the record loop making DataEvents, delivered nowhere

No BPF and no load: CPU time (process_time) of this process only, so the
figures say what the Python between the ring buffer and the pipeline costs,
apart from the host's contention that capture_bench.py's load phase adds.
Rounds interleave the three; medians and bests are printed, with the ratio
agent path / pipeline (issue: the agent <= 1.3x the pipeline).

    .venv/bin/python bench/record_path_bench.py [--calls 1000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from pipeline_bench import stream_events  # noqa: E402

from lumen_agent.capture.ebpf import EV_DATA, HDR, CaptureOptions, EbpfCapture  # noqa: E402
from lumen_agent.outputs.store import CallStore  # noqa: E402
from lumen_agent.pipeline.attribution import Attribution  # noqa: E402
from lumen_agent.pipeline.core import Pipeline  # noqa: E402
from lumen_agent.pipeline.events import Direction  # noqa: E402
from lumen_agent.pipeline.filters import ProcessFilter  # noqa: E402
from lumen_agent.pipeline.gate import ProcessGate  # noqa: E402
from lumen_agent.pricing.table import PriceTable  # noqa: E402

# Records per read: the ring reader's batches under streamed load are dozens to hundreds.
BATCH = 400
MODES = ("pipeline", "agent path", "records only")


def as_records(events) -> list[tuple[tuple, bytes]]:
    """The events as the ring reader hands them over: (header tuple, payload)."""
    return [(HDR.unpack(HDR.pack(e.ts_ns, e.conn, e.pid, e.tid, len(e.data), 0, len(e.data), 0, EV_DATA,
                                 1 if e.direction is Direction.RECV else 0)), e.data) for e in events]


def run(mode: str, events, records, calls: int, prices: PriceTable) -> float:
    """CPU microseconds per call."""
    with tempfile.TemporaryDirectory() as tmp:
        store = CallStore(Path(tmp) / "bench.duckdb")
        pipeline = Pipeline(prices, store.add, salt=b"b" * 32)
        if mode == "pipeline":
            start = time.process_time()
            for event in events:
                pipeline.feed(event)
        else:
            gate = ProcessGate(ProcessFilter(), Attribution())

            def on_event(event) -> None:  # runner.Agent._on_event
                if gate.allows(event.pid):
                    pipeline.feed(event)

            capture = EbpfCapture(on_event if mode == "agent path" else (lambda event: None),
                                  CaptureOptions(scan_executables=False))
            start = time.process_time()
            for i in range(0, len(records), BATCH):
                capture._records = records[i:i + BATCH]
                capture._process_records()
        elapsed = time.process_time() - start
        pipeline.close()
        store.close()
        if mode != "records only":
            assert store.stats()["rows_written"] == calls, store.stats()
        return elapsed / calls * 1e6


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    prices = PriceTable.load()
    events = stream_events(args.calls)
    records = as_records(events)
    for mode in MODES:  # warm-up: imports, caches
        run(mode, events, records, args.calls, prices)
    results: dict[str, list[float]] = {mode: [] for mode in MODES}
    for _ in range(args.rounds):
        for mode in MODES:
            results[mode].append(run(mode, events, records, args.calls, prices))
    print(f"{args.calls} streamed calls of 100 chunks ({len(events)} events), {args.rounds} rounds, CPU us per call")
    for mode in MODES:
        print(f"    {mode:14} median {statistics.median(results[mode]):8.1f}   best {min(results[mode]):8.1f}")
    median = statistics.median(results["agent path"]) / statistics.median(results["pipeline"])
    best = min(results["agent path"]) / min(results["pipeline"])
    print(f"    agent path / pipeline: x{median:.2f} (medians), x{best:.2f} (bests)")


if __name__ == "__main__":
    main()
