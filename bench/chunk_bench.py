"""CPU per streamed chunk: this tree's pipeline against another tree's, same events, same run.

The events (streamed calls of 100 SSE chunks, one SSL_read each, over
HTTP/1.1 and HTTP/2; or a recording of real load, a pickled list of
DataEvents) are written once, then replayed by child processes that import
either this tree's lumen_agent or the baseline's, in alternating rounds (the
host is shared: a burst of someone else's work should not land on one side
only).  Each child feeds every event to a Pipeline whose calls go to a list
(the store's cost is per call, not per chunk) and prints the CPU seconds.

A baseline tree is a directory laid out as the installed package
(``BASE/lumen_agent`` = agent/, with parsers/, pricing/ and bpf/ inside it),
e.g. made from main with::

    git archive main | tar -x -C /tmp/base/src
    cp -r /tmp/base/src/agent /tmp/base/pkg/lumen_agent
    cp -r /tmp/base/src/{parsers,pricing,bpf} /tmp/base/pkg/lumen_agent/

Run::

    .venv/bin/python bench/chunk_bench.py --base /tmp/base/pkg [--streams 2000] [--rounds 3]
    .venv/bin/python bench/chunk_bench.py --base /tmp/base/pkg --replay recorded.pickle
    .venv/bin/python bench/chunk_bench.py --base /tmp/base/pkg --shapes   # + each provider's SSE shape

``--shapes`` adds the SSE shapes of bench/stream_shapes.py (OpenAI with
``"usage":null``, Anthropic, Responses, Gemini with CRLF), ten calls per
connection; ``--only`` keeps the modes whose label contains a word.
"""

from __future__ import annotations

import argparse
import os
import pickle
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def child(path: str, profile: bool, passes: int) -> None:
    from lumen_agent.pipeline.core import Pipeline
    from lumen_agent.pricing.table import PriceTable

    with open(path, "rb") as f:
        events = pickle.load(f)
    prices = PriceTable.load()
    best = float("inf")
    for _ in range(passes):  # a fresh pipeline per pass: the same work each time; the least CPU counts
        calls: list = []
        pipeline = Pipeline(prices, calls.append, salt=b"b" * 32)
        feed = pipeline.feed
        if profile:
            import cProfile
            import pstats

            prof = cProfile.Profile()
            prof.enable()
        c0 = time.process_time()
        for event in events:
            feed(event)
        pipeline.close()
        best = min(best, time.process_time() - c0)
        if profile:
            prof.disable()
            pstats.Stats(prof, stream=sys.stderr).sort_stats("tottime").print_stats(18)
            break
    print(best, len(calls), pipeline.counters["calls"])


def run_child(tree: str | None, path: str, profile: bool = False, passes: int = 1) -> tuple[float, int]:
    env = dict(os.environ)
    if tree:  # ahead of the editable install's finder on sys.meta_path
        env["PYTHONPATH"] = tree
    out = subprocess.run([sys.executable, __file__, "--child", path, "--passes", str(passes)]
                         + (["--profile"] if profile else []),
                         env=env, capture_output=True, text=True, check=True)
    if profile:
        print(out.stderr)
    cpu, calls, _ = out.stdout.split()
    return float(cpu), int(calls)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--child")
    parser.add_argument("--profile", action="store_true", help="print each side's top cProfile frames once")
    parser.add_argument("--base", help="baseline tree laid out as the package (see the module docstring)")
    parser.add_argument("--replay", help="a pickled list of DataEvents (bench/capture_bench.py record_load)")
    parser.add_argument("--streams", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--passes", type=int, default=1,
                        help="passes over the events per child, the least CPU kept (steadier on a busy host)")
    parser.add_argument("--shapes", action="store_true", help="also each provider's SSE shape (stream_shapes.py)")
    parser.add_argument("--only", help="only the modes whose label contains this")
    args = parser.parse_args()
    if args.child:
        child(args.child, args.profile, args.passes)
        return

    sys.path.insert(0, str(HERE))
    from pipeline_bench import stream_events, stream_events_h2

    # Each mode's events are made when its turn comes (lambdas), not all at once.
    sets = {}
    if args.replay:
        sets["replay"] = lambda: pickle.loads(Path(args.replay).read_bytes())
    else:
        sets["HTTP/1.1 x100"] = lambda: stream_events(args.streams)
        sets["HTTP/1.1 x100 10/conn"] = lambda: stream_events(args.streams, per_connection=10)
        sets["HTTP/2 x100 10/conn"] = lambda: stream_events_h2(args.streams, per_connection=10)
        if args.shapes:
            from stream_shapes import SHAPES, shape_events

            for shape in SHAPES:
                sets[shape[0]] = lambda label=shape[0]: shape_events(label, args.streams)
    if args.only:
        sets = {label: make for label, make in sets.items() if args.only in label}
    print(f"python {sys.version.split()[0]}; load {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f}; "
          f"best of {args.rounds} alternating rounds x {args.passes} passes, CPU seconds (process_time)")
    with tempfile.TemporaryDirectory() as tmp:
        for label, make in sets.items():
            events = make()
            path = str(Path(tmp) / "events.pickle")
            with open(path, "wb") as f:
                pickle.dump(events, f, protocol=pickle.HIGHEST_PROTOCOL)
            sides = {"base": args.base, "this": None} if args.base else {"this": None}
            best = {side: float("inf") for side in sides}
            calls = {}
            for _ in range(args.rounds):
                for side, tree in sides.items():
                    cpu, calls[side] = run_child(tree, path, passes=args.passes)
                    best[side] = min(best[side], cpu)
            if args.profile:
                for side, tree in sides.items():
                    print(f"--- profile {label} {side}")
                    run_child(tree, path, profile=True)
            n = len(events)
            line = f"{label:24s} {n:7d} events"
            for side in sides:
                line += (f"  {side}: {best[side] / n * 1e6:5.1f} us/event {calls[side] / best[side]:6.0f} calls/s"
                         f" ({calls[side]} calls)")
            if args.base:
                line += f"  base/this {best['base'] / best['this']:4.2f}x"
            print(line, flush=True)


if __name__ == "__main__":
    main()
