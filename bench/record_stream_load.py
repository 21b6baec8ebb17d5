"""Record real streamed load once, as a pickled list of DataEvents, for bench/chunk_bench.py --replay.

Real clients (capture_load.Load: keep-alive TLS to the local fake provider)
make streamed calls while this process captures them with the eBPF probes
(capture_bench.record_load); nothing else runs.  Needs root, and the global
probe lock, since uprobes on libssl see every engineer's traffic::

    flock /tmp/lumen-ebpf.lock .venv/bin/python bench/record_stream_load.py /tmp/stream-load.pickle [--seconds 4]
"""

from __future__ import annotations

import argparse
import pickle
import tempfile
from pathlib import Path

import capture_bench
from capture_bench import certs_mod, record_load, spawn_server


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--seconds", type=float, default=4)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--chunks", type=int, default=100)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="record-stream-"))
    capture_bench.PY = capture_bench.isolated_python(work / "bin")
    certs = certs_mod.ensure_certs(work / "certs")
    server = spawn_server(certs, work / "fp")
    try:
        events, made, lost = record_load(server, certs, seconds=args.seconds, clients=args.clients,
                                         streaming=True, chunks=args.chunks)
    finally:
        server.stop()
    with open(args.out, "wb") as f:
        pickle.dump(events, f, protocol=pickle.HIGHEST_PROTOCOL)
    print(f"{len(events)} events of {made} calls ({lost} lost by the ring buffer) -> {args.out}")


if __name__ == "__main__":
    main()
