"""What a store flush costs as the file grows: CPU, the memory it takes on the
way, and the file, with the store's row group size against DuckDB's default.
Printed, not asserted.

Each variant runs in a fresh process: ``--flushes`` flushes of ``--rows`` rows
(2,600 is 2 s of the agent at ~1,300 calls/s, its flush interval) into a new
file through CallStore, each followed by the heap release the agent's flush
thread does.  Per flush: CPU (process_time) and how far RSS rose above where
it started (batch_bench's VmHWM reset and read).  At the end: file size,
row groups, and a GROUP BY over the whole table.  Baseline: DuckDB's default
row group (122,880 rows), in the same run.

    .venv/bin/python bench/store_flush_bench.py [--flushes 100] [--rows 2600]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

DUCKDB_DEFAULT_ROW_GROUP = 122_880
QUERY = "SELECT model, count(*), sum(cost_usd), avg(latency_ms) FROM llm_calls GROUP BY model"


def measure(row_group_size: int, flushes: int, rows: int) -> dict:
    import duckdb
    from batch_bench import peak_mib, reset_peak
    from pipeline_bench import stream_events

    from lumen_agent.heap import release_free_heap
    from lumen_agent.outputs import store as store_mod
    from lumen_agent.pipeline.core import Pipeline, new_call_id
    from lumen_agent.pricing.table import PriceTable

    store_mod.ROW_GROUP_SIZE = row_group_size
    calls: list = []
    pipeline = Pipeline(PriceTable.load(), calls.append, salt=b"b" * 32)
    for event in stream_events(2):
        pipeline.feed(event)
    template = calls[0]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.duckdb"
        store = store_mod.CallStore(path)
        store.check()
        cpu, rises = [], []
        for i in range(flushes):
            for k in range(rows):
                store.add(dataclasses.replace(template, id=new_call_id(), request_id=f"req_{i}_{k}",
                                              latency_ms=k % 977))
            start_mib = reset_peak()
            started = time.process_time()
            store.flush()
            release_free_heap()
            cpu.append(time.process_time() - started)
            rises.append(peak_mib() - start_mib)
        store.close()
        con = duckdb.connect(str(path), read_only=True)
        for _ in range(3):
            con.execute(QUERY).fetchall()
        started = time.perf_counter()
        for _ in range(20):
            con.execute(QUERY).fetchall()
        query_ms = (time.perf_counter() - started) / 20 * 1000
        groups = con.execute("SELECT count(DISTINCT row_group_id) FROM pragma_storage_info('llm_calls')").fetchone()[0]
        con.close()
        size = path.stat().st_size
    rises.sort()
    return {"cpu_mean_ms": statistics.fmean(cpu) * 1000, "cpu_max_ms": max(cpu) * 1000,
            "rise_max_mb": rises[-1], "rise_p90_mb": rises[int(0.9 * (len(rises) - 1))],
            "file_mb": size / 1e6, "row_groups": groups, "query_ms": query_ms}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--flushes", type=int, default=100)
    ap.add_argument("--rows", type=int, default=2600, help="rows per flush")
    ap.add_argument("--measure", type=int, help=argparse.SUPPRESS)  # one variant, in a child
    args = ap.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure, args.flushes, args.rows)))
        return

    from lumen_agent.outputs.store import ROW_GROUP_SIZE

    results = {}
    for size in (DUCKDB_DEFAULT_ROW_GROUP, ROW_GROUP_SIZE):
        out = subprocess.run([sys.executable, __file__, "--measure", str(size), "--flushes", str(args.flushes),
                              "--rows", str(args.rows)], capture_output=True, text=True, check=True)
        results[size] = json.loads(out.stdout.splitlines()[-1])
    base = results[DUCKDB_DEFAULT_ROW_GROUP]
    print(f"store flushes: {args.flushes} x {args.rows} rows into a new file ({args.flushes * args.rows} rows)")
    print(f"    {'row group':>16s} {'CPU mean':>9s} {'CPU max':>8s} {'RSS rise max':>13s} {'p90':>6s} "
          f"{'file':>8s} {'groups':>7s} {'GROUP BY':>9s}")
    for size, r in results.items():
        name = f"{size} (ours)" if size == ROW_GROUP_SIZE else f"{size} (DuckDB)"
        print(f"    {name:>16s} {r['cpu_mean_ms']:7.1f}ms {r['cpu_max_ms']:6.0f}ms {r['rise_max_mb']:11.0f}MB "
              f"{r['rise_p90_mb']:4.0f}MB {r['file_mb']:6.1f}MB {r['row_groups']:7d} {r['query_ms']:7.1f}ms")
    ours = results[ROW_GROUP_SIZE]
    print(f"    ours / DuckDB's: CPU mean x{ours['cpu_mean_ms'] / base['cpu_mean_ms']:.2f}, "
          f"CPU max x{ours['cpu_max_ms'] / base['cpu_max_ms']:.2f}, "
          f"RSS rise max x{ours['rise_max_mb'] / max(base['rise_max_mb'], 1e-9):.2f}, "
          f"file x{ours['file_mb'] / base['file_mb']:.2f}, GROUP BY x{ours['query_ms'] / base['query_ms']:.2f}")


if __name__ == "__main__":
    main()
