"""The long fuzz run of the hardening issue: hostile whole recordings for N minutes.

Not part of CI (tests/test_hardening_fuzz.py runs the same invariants on a
few dozen recordings).  Every recording (tests/support/hostile.py: several
providers and wire shapes, hostile usage numbers and names, every encoding,
corrupt bodies, compression bombs of up to ``--bomb-mib``, random cuts, junk
lines) goes through the pipeline into one real DuckDB file; a broken
invariant stops the run with hypothesis's shrunk example.  Prints figures at
the end:

    .venv/bin/python bench/fuzz_recordings.py --minutes 30
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from hypothesis import HealthCheck, given, settings  # noqa: E402
from support.hostile import MEMORY_CEILING, RunFigures, check_run, recordings  # noqa: E402

from lumen_agent.outputs.store import CallStore  # noqa: E402
from lumen_agent.pricing.table import PriceTable  # noqa: E402

# Recordings between two flushes (each flush reopens the file: ~0.1 s).
FLUSH_EVERY = 25


class TimeUp(KeyboardInterrupt):
    """Hypothesis stops at once on KeyboardInterrupt, without shrinking."""


def rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--bomb-mib", type=int, default=32, help="largest inflated body of a bomb")
    parser.add_argument("--max-calls", type=int, default=6, help="calls per recording, at most")
    args = parser.parse_args()

    prices = PriceTable.load()
    folder = Path(tempfile.mkdtemp(prefix="lumen-fuzz-"))
    store = CallStore(folder / "fuzz.duckdb")
    total = RunFigures()
    examples = 0
    peak = 0
    started = time.monotonic()
    deadline = started + args.minutes * 60
    rss_start = rss_mib()

    @settings(max_examples=10**9, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(recording=recordings(max_calls=args.max_calls, max_bomb_mib=args.bomb_mib))
    def fuzz(recording: bytes) -> None:
        nonlocal examples, peak
        if time.monotonic() > deadline:
            raise TimeUp
        figures = check_run(recording, prices, store, flush=False)
        examples += 1
        peak = max(peak, figures.peak_bytes)
        for name in ("events", "bad_lines", "calls", "implausible", "skipped"):
            setattr(total, name, getattr(total, name) + getattr(figures, name))
        if examples % FLUSH_EVERY == 0:
            check_flush()

    def check_flush() -> None:
        store.flush()
        stats = store.stats()
        assert stats["pending"] == 0 and stats["dead_lettered"] == 0, stats
        assert stats["rows_written"] == total.calls, (stats["rows_written"], total.calls)

    failed = False
    try:
        fuzz()
        check_flush()
    except TimeUp:
        check_flush()
    except Exception:  # noqa: BLE001 - report, then fail
        failed = True
        import traceback

        traceback.print_exc()
    elapsed = time.monotonic() - started
    store.close()
    stats = store.stats()
    rows = [
        ("minutes", f"{elapsed / 60:.1f}"),
        ("recordings", examples),
        ("recordings/s", f"{examples / elapsed:.2f}"),
        ("events", total.events),
        ("bad lines skipped", total.bad_lines),
        ("calls (rows)", total.calls),
        ("rows written", stats["rows_written"]),
        ("rows dead-lettered", stats["dead_lettered"]),
        ("rows flagged usage_implausible", total.implausible),
        ("bytes/items skipped (counted)", total.skipped),
        ("peak traced memory per recording MiB", f"{peak / 2**20:.1f} (ceiling {MEMORY_CEILING / 2**20:.0f})"),
        ("RSS start -> end MiB", f"{rss_start:.0f} -> {rss_mib():.0f}"),
        ("max RSS MiB", f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f}"),
        ("invariants", "BROKEN" if failed else "held"),
    ]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
