"""What the exporters cost: pipeline calls/s with OTLP, Parquet and Redis all
on, against none, on the same events in one run.

The OTLP receiver is the tests' protobuf-decoding endpoint (in a process of
its own) and Redis a real redis-server started here (Debian's), both on
127.0.0.1; the Parquet export
runs once at the end, as at stop.  Capture time is what is measured: the
exporters' own threads deliver in the background, and the figure after
"delivered" says how long the last of it took once the pipeline was done.

    .venv/bin/python bench/export_bench.py [--calls 20000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))
from pipeline_bench import nonstream_events  # noqa: E402

from lumen_agent.outputs.otlp import OtlpExport  # noqa: E402
from lumen_agent.outputs.parquet import ParquetExport, ParquetExporter  # noqa: E402
from lumen_agent.outputs.redis_stream import RedisStreamExport  # noqa: E402
from lumen_agent.outputs.store import CallStore  # noqa: E402
from lumen_agent.pipeline.core import Pipeline  # noqa: E402
from lumen_agent.pricing.table import PriceTable  # noqa: E402

RECEIVER = """
import sys, time
from support.otlp_receiver import Receiver
Receiver(int(sys.argv[1]))
time.sleep(3600)
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(events, n: int, prices: PriceTable, workdir: Path, exporters) -> tuple[float, float]:
    store = CallStore(workdir / "bench.duckdb")
    outputs = [store, *exporters]

    def on_call(call) -> None:
        for output in outputs:
            output.on_call(call)

    pipeline = Pipeline(prices, on_call, salt=b"b" * 32)
    start = time.perf_counter()
    for event in events:
        pipeline.feed(event)
        if store.pending() >= 5000:
            store.flush()
    pipeline.close()
    store.flush()
    captured = time.perf_counter() - start
    for output in outputs:
        output.close()
    delivered = time.perf_counter() - start
    assert store.stats()["rows_written"] == n
    return captured, delivered


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    prices = PriceTable.load()
    events = nonstream_events(args.calls)
    redis_server = shutil.which("redis-server")
    port = free_port()
    redis = subprocess.Popen([redis_server, "--port", str(port), "--save", "", "--appendonly", "no"],
                             stdout=subprocess.DEVNULL) if redis_server else None
    # The collector stand-in runs in a process of its own, as a collector
    # would: its protobuf decoding must not be counted as the agent's work.
    otlp_port = free_port()
    receiver = subprocess.Popen([sys.executable, "-c", RECEIVER, str(otlp_port)], cwd=ROOT / "tests")
    otlp_url = f"http://127.0.0.1:{otlp_port}"
    time.sleep(1.5)
    try:
        best = {"none": float("inf"), "all": float("inf")}
        tail = 0.0
        for _ in range(args.rounds):  # alternate, so drift in machine load hits both
            for label in ("none", "all"):
                with tempfile.TemporaryDirectory() as tmp:
                    work = Path(tmp)
                    exporters = []
                    if label == "all":
                        exporters = [OtlpExport(otlp_url, metrics_interval_ms=60_000),
                                     ParquetExport(ParquetExporter(work / "bench.duckdb", work / "lake"), 3600)]
                        if redis is not None:
                            exporters.append(RedisStreamExport(f"redis://127.0.0.1:{port}/0", maxlen=100_000))
                    captured, delivered = run(events, args.calls, prices, work, exporters)
                    best[label] = min(best[label], captured)
                    if label == "all":
                        tail = max(tail, delivered - captured)
                        stats = {e.name: e.stats() for e in exporters}
        none, both = args.calls / best["none"], args.calls / best["all"]
        print(f"{args.calls} non-streaming calls, best of {args.rounds} rounds each, one core")
        print(f"no exporters        {none:8.0f} calls/s")
        print(f"OTLP+Parquet+Redis  {both:8.0f} calls/s   ratio {best['all'] / best['none']:.2f}x slower "
              f"(aim <= 1.15x); delivery finished {tail:.2f} s after the pipeline")
        print(f"exporter stats (last round): {stats}")
    finally:
        receiver.terminate()
        if redis is not None:
            redis.terminate()


if __name__ == "__main__":
    main()
