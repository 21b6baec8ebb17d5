"""What reading the ring buffer costs per record, by reading method.  Printed, not asserted.

    sudo .venv/bin/python bench/ringbuf_bench.py [--rounds 20000] [--rate 10000] [--size 200]

A worker subprocess makes paced SSL_write_ex + SSL_read_ex rounds (Python
ssl over memory BIOs: real OpenSSL calls, no sockets) at ``--rate`` rounds/s,
so records arrive as they do from a busy host rather than all at once.  An
EbpfCapture in this process delivers them to a no-op callback; the CPU this
process spends (user + system, getrusage) per delivered event is printed for:

  bulk            capture/ringbuf.py, read as soon as woken (coalesce 0)
  bulk+linger     capture/ringbuf.py, the default: linger a few ms after a wake-up

with wake-ups per second (epoll reports) and records per read.  Baseline:
bulk, same run.  (bcc's own reader, one ctypes callback per record, left
with bcc itself: the agent no longer loads bcc, see capture/bpf_loader.py.)
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

from lumen_agent.capture.ebpf import CaptureOptions, EbpfCapture

WORKER = textwrap.dedent(
    """
    import ssl, sys, time
    cert, key, n, size, rate = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
    sctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER); sctx.load_cert_chain(cert, key)
    cctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT); cctx.check_hostname = False
    cctx.verify_mode = ssl.CERT_NONE
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    cli = cctx.wrap_bio(c_in, c_out); srv = sctx.wrap_bio(s_in, s_out, server_side=True)
    for _ in range(50):
        for side in (cli, srv):
            try: side.do_handshake()
            except ssl.SSLWantReadError: pass
        d = c_out.read()
        if d: s_in.write(d)
        d = s_out.read()
        if d: c_in.write(d)
    msg = b"x" * size
    print("ready", flush=True); sys.stdin.readline()
    t0 = time.monotonic()
    for i in range(n):
        due = t0 + i / rate
        now = time.monotonic()
        if due > now + 0.001:
            time.sleep(due - now)
        cli.write(msg)
        s_in.write(c_out.read())
        srv.read(size)
    print(time.monotonic() - t0, flush=True)
    """
)


def make_cert(d: Path) -> tuple[str, str]:
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(d / "k.pem"),
                    "-out", str(d / "c.pem"), "-days", "1", "-subj", "/CN=localhost"],
                   check=True, capture_output=True)
    return str(d / "c.pem"), str(d / "k.pem")


def cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def run_mode(name: str, options: CaptureOptions, cert: str, key: str, rounds: int, size: int,
             rate: float) -> dict:
    seen = [0]

    def on_event(_ev) -> None:
        seen[0] += 1

    cap = EbpfCapture(on_event, options)
    cap.start()
    try:
        cap.poll(0)
        worker = subprocess.Popen([sys.executable, "-c", WORKER, cert, key, str(rounds), str(size), str(rate)],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert worker.stdout.readline().strip() == "ready"
        wpid = worker.pid
        counted = [0]

        def only_worker(ev) -> None:
            if ev.pid == wpid:
                counted[0] += 1

        cap.on_event = only_worker
        stop = threading.Event()

        def loop() -> None:
            while not stop.is_set():
                cap.poll(100)

        reader = cap._reader
        w0 = reader.wakeups if reader else 0
        r0 = reader.reads if reader else 0
        lost0 = cap.stats()["lost"]
        c0, t0 = cpu_s(), time.monotonic()
        thread = threading.Thread(target=loop)
        thread.start()
        worker.stdin.write("go\n")
        worker.stdin.flush()
        worker.stdout.readline()
        worker.wait()
        deadline = time.monotonic() + 10
        while counted[0] < 2 * rounds and time.monotonic() < deadline:
            time.sleep(0.01)
        stop.set()
        thread.join()
        c1, t1 = cpu_s(), time.monotonic()
        out = {"name": name, "events": counted[0], "cpu_s": c1 - c0, "wall_s": t1 - t0,
               "lost": cap.stats()["lost"] - lost0}
        if reader:
            out["wakeups"] = reader.wakeups - w0
            out["reads"] = reader.reads - r0
        return out
    finally:
        cap.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=20000, help="write+read rounds per mode")
    ap.add_argument("--rate", type=float, default=10000, help="rounds per second")
    ap.add_argument("--size", type=int, default=200, help="bytes per SSL call")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root (BPF probes)")
    cert, key = make_cert(Path(tempfile.mkdtemp()))
    base = dict(scan_executables=False, scan_proc_at_start=False)
    modes = [
        ("bulk", CaptureOptions(**base, coalesce_ms=0)),
        ("bulk+linger", CaptureOptions(**base)),
    ]
    results = [run_mode(name, opt, cert, key, args.rounds, args.size, args.rate) for name, opt in modes]
    print(f"ring buffer reading: {args.rounds} rounds x 2 SSL calls of {args.size} B at {args.rate:.0f} rounds/s, "
          f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}")
    first = results[0]
    base_us = first["cpu_s"] / max(first["events"], 1) * 1e6
    for r in results:
        us = r["cpu_s"] / max(r["events"], 1) * 1e6
        extra = ""
        if "wakeups" in r:
            extra = (f"  wake-ups {r['wakeups'] / r['wall_s']:7.0f}/s  "
                     f"records/read {r['events'] / max(r['reads'], 1):6.1f}")
        print(f"  {r['name']:13s} {us:6.2f} us CPU/event  x{us / base_us:4.2f} of bulk  "
              f"events {r['events']}  lost {r['lost']}{extra}")


if __name__ == "__main__":
    main()
