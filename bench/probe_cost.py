"""Per-SSL-call cost of our probes, and ring buffer throughput.

    sudo .venv/bin/python bench/probe_cost.py [--calls 20000] [--size 64]

A worker subprocess runs N rounds of SSL_write_ex + SSL_read_ex (Python ssl
with memory BIOs: real OpenSSL calls on a local TLS connection, no socket
noise) and reports microseconds per SSL call, under:

  none        no probes
  empty       an empty BPF program on the same uprobes + uretprobes
  ours        EbpfCapture (global mode), events drained by a poll thread
  excluded    EbpfCapture with the worker's pid in the in-kernel skip map
  ignored     EbpfCapture with the worker's connection in the ignore map

Ratios are against `none`.  The events/s figure is what the poll loop
delivered during `ours` (each SSL call is one event).

    sudo .venv/bin/python bench/probe_cost.py --runtime go  [--calls 20000]
    sudo .venv/bin/python bench/probe_cost.py --runtime bun [--bun PATH]

    sudo .venv/bin/python bench/probe_cost.py --compare-bpf main [--repeat 5]

`ours` with this tree's BPF programs against `ours` with those of a git ref
(same user space, same run, alternated --repeat times): what a change to the
probes costs per SSL call.

The same for runtimes without a shared libssl, at the points we probe them:
Go's crypto/tls ((*Conn).Write entry, (*Conn).Read entry and every RET; a
Go worker in bench/go_tls_worker, built here) and Bun's static BoringSSL
(SSL_write/SSL_read entry + return; bench/bun_tls_worker.js).  `empty` puts
an empty BPF program on exactly those addresses.  These modes also time the
analysis of the executable (runtime_analysis.analyse_file): first look with the
file's pages dropped from the page cache, warm, and a build-id cache hit.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

from lumen_agent.capture.bpf_loader import import_bcc
from lumen_agent.capture.ebpf import CaptureOptions, EbpfCapture

WORKER = textwrap.dedent(
    """
    import ssl, sys, time
    cert, key, n, size = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    sctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER); sctx.load_cert_chain(cert, key)
    cctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT); cctx.check_hostname = False
    cctx.verify_mode = ssl.CERT_NONE
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    cli = cctx.wrap_bio(c_in, c_out); srv = sctx.wrap_bio(s_in, s_out, server_side=True)
    def pump():
        d = c_out.read()
        if d: s_in.write(d)
        d = s_out.read()
        if d: c_in.write(d)
    for _ in range(50):
        for side in (cli, srv):
            try: side.do_handshake()
            except ssl.SSLWantReadError: pass
        pump()
    msg = b"x" * size
    # conn id of the client SSL* is unknown here; report our pid and wait.
    print("ready", flush=True); sys.stdin.readline()
    t0 = time.perf_counter()
    for _ in range(n):
        cli.write(msg)          # SSL_write_ex
        s_in.write(c_out.read())
        srv.read(size)          # SSL_read_ex
    dt = time.perf_counter() - t0
    print(dt / (2 * n) * 1e6, flush=True)
    """
)


def make_cert(d: Path) -> tuple[str, str]:
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(d / "k.pem"),
         "-out", str(d / "c.pem"), "-days", "1", "-subj", "/CN=localhost"],
        check=True, capture_output=True,
    )
    return str(d / "c.pem"), str(d / "k.pem")


def run_worker(cert, key, n, size, before_go=None) -> float:
    p = subprocess.Popen(
        [sys.executable, "-c", WORKER, cert, key, str(n), str(size)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    assert p.stdout.readline().strip() == "ready"
    if before_go:
        before_go(p.pid)
    p.stdin.write("go\n")
    p.stdin.flush()
    us = float(p.stdout.readline())
    p.wait()
    return us


class Drainer:
    def __init__(self, cap: EbpfCapture) -> None:
        self.cap = cap
        self.stop = threading.Event()
        self.t = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        while not self.stop.is_set():
            self.cap.poll(20)

    def __enter__(self):
        self.t.start()
        return self

    def __exit__(self, *a):
        self.stop.set()
        self.t.join()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=20000, help="write+read rounds")
    ap.add_argument("--size", type=int, default=64, help="bytes per call")
    ap.add_argument("--runtime", choices=["openssl", "go", "bun"], default="openssl")
    ap.add_argument("--bun", default=None, help="bun executable (default: $PATH, then the tests' npm cache)")
    ap.add_argument("--compare-bpf", metavar="REF", default=None,
                    help="time `ours` with the BPF sources of git REF against this tree's")
    ap.add_argument("--repeat", type=int, default=5, help="alternations for --compare-bpf")
    args = ap.parse_args()
    if args.compare_bpf:
        compare_bpf(args.compare_bpf, args.calls, args.size, args.repeat)
        return
    if args.runtime != "openssl":
        runtime_main(args)
        return
    tmp = Path(tempfile.mkdtemp())
    cert, key = make_cert(tmp)
    n, size = args.calls, args.size
    results: dict[str, float] = {}

    results["none"] = run_worker(cert, key, n, size)

    bcc = import_bcc()
    from lumen_agent.capture.targets import SymbolCache, ldconfig_libssl

    lib = next(p for p in ldconfig_libssl() if SymbolCache().ssl_symbols(p))
    syms = SymbolCache().ssl_symbols(lib)
    empty = bcc.BPF(text=b"int empty(void *ctx) { return 0; }")
    for s in ("SSL_write_ex", "SSL_read_ex", "SSL_write", "SSL_read"):
        empty.attach_uprobe(name=lib.encode(), addr=syms[s], fn_name=b"empty")
        empty.attach_uretprobe(name=lib.encode(), addr=syms[s], fn_name=b"empty")
    results["empty"] = run_worker(cert, key, n, size)
    empty.cleanup()

    count = [0, 0]

    def on_event(ev):
        count[0] += 1
        count[1] += len(ev.data)

    cap = EbpfCapture(on_event, CaptureOptions(scan_executables=False))
    cap.start()
    try:
        with Drainer(cap):
            t0 = time.perf_counter()
            results["ours"] = run_worker(cert, key, n, size)
            time.sleep(0.3)
            dt = time.perf_counter() - t0
        ev_rate = count[0] / dt
        lost = cap.stats()["lost"]
        seen = count[0]

        # Kernel side alone: nobody drains during the loop (fewer rounds, so
        # the 16 MiB ring buffer holds them all), then drain.
        results["ours-nodrain"] = run_worker(cert, key, min(n, 5000), size)
        with Drainer(cap):
            time.sleep(0.5)
        with Drainer(cap):
            results["excluded"] = run_worker(cert, key, n, size, before_go=cap.exclude_pid)

        results["ignored"] = _run_ignored(cap, cert, key, n, size)
    finally:
        cap.close()

    base = results["none"]
    print(f"{n} rounds of SSL_write_ex+SSL_read_ex, {size} B each, {os.cpu_count()} CPUs")
    for k, v in results.items():
        print(f"  {k:9s} {v:7.2f} us/call   x{v / base:5.2f}   (+{v - base:5.2f} us)")
    print(f"  ring buffer: {seen} events in {dt:.2f}s = {ev_rate:,.0f} events/s delivered, lost={lost}")
    tp = throughput(cap_factory=lambda cb: EbpfCapture(cb, CaptureOptions(scan_executables=False)),
                    cert=cert, key=key)
    print(f"  max drain: {tp[0]:,.0f} events/s ({tp[1] / 1e6:.1f} MB/s) with 4 KiB calls, lost={tp[2]}")


def compare_bpf(ref: str, n: int, size: int, repeat: int) -> None:
    """``ours`` per SSL call with git ``ref``'s bpf/ sources and with this tree's, alternated."""
    from lumen_agent.capture import ebpf

    tmp = Path(tempfile.mkdtemp())
    cert, key = make_cert(tmp)
    here = ebpf.bpf_source_dir()
    base_dir = tmp / "bpf-base"
    base_dir.mkdir()
    for name in ("events.h", *ebpf.BPF_SOURCES):
        text = subprocess.run(["git", "-C", str(here), "show", f"{ref}:bpf/{name}"],
                              check=True, capture_output=True).stdout
        (base_dir / name).write_bytes(text)
    real = ebpf.bpf_source_dir
    times: dict[str, list[float]] = {ref: [], "this tree": []}
    none = run_worker(cert, key, n, size)
    try:
        for _ in range(repeat):
            for label, folder in ((ref, base_dir), ("this tree", here)):
                ebpf.bpf_source_dir = lambda folder=folder: folder
                cap = EbpfCapture(lambda ev: None, CaptureOptions(scan_executables=False))
                cap.start()
                try:
                    with Drainer(cap):
                        times[label].append(run_worker(cert, key, n, size))
                finally:
                    cap.close()
    finally:
        ebpf.bpf_source_dir = real
    print(f"{n} rounds of SSL_write_ex+SSL_read_ex, {size} B each, {os.cpu_count()} CPUs; none {none:.2f} us/call")
    for label, values in times.items():
        print(f"  {label:10s} " + " ".join(f"{v:6.2f}" for v in values)
              + f"   median {sorted(values)[len(values) // 2]:6.2f} us/call")
    a, b = (sorted(v)[len(v) // 2] for v in times.values())
    print(f"  this tree / {ref}: x{b / a:.3f} ({b - a:+.2f} us per SSL call, medians)")


def _run_ignored(cap, cert, key, n, size) -> float:
    """Worker whose connections are in the ignore map before the timed loop."""
    seen: dict[int, set[int]] = {}
    prev = cap.on_event

    def learn(ev):
        seen.setdefault(ev.pid, set()).add(ev.conn)
        prev(ev)

    cap.on_event = learn
    p = subprocess.Popen(
        [sys.executable, "-c", WORKER.replace('print("ready", flush=True)',
                                              'cli.write(b"w"); s_in.write(c_out.read()); srv.read(1)\n'
                                              'print("ready", flush=True)'),
         cert, key, str(n), str(size)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    assert p.stdout.readline().strip() == "ready"
    end = time.monotonic() + 2
    while time.monotonic() < end and len(seen.get(p.pid, ())) < 2:
        cap.poll(20)
    for conn in seen.get(p.pid, ()):
        cap.ignore_connection(p.pid, conn)
    with Drainer(cap):
        p.stdin.write("go\n")
        p.stdin.flush()
        us = float(p.stdout.readline())
        p.wait()
    cap.on_event = prev
    return us


def throughput(cap_factory, cert, key) -> tuple[float, float, int]:
    n, size = 30000, 4096
    count = [0, 0]

    def cb(ev):
        count[0] += 1
        count[1] += len(ev.data)

    cap = cap_factory(cb)
    cap.start()
    try:
        with Drainer(cap):
            t0 = time.perf_counter()
            run_worker(cert, key, n, size)
            deadline = time.monotonic() + 5
            while count[0] < 2 * n and time.monotonic() < deadline:
                time.sleep(0.05)
            dt = time.perf_counter() - t0
        lost = cap.stats()["lost"]
    finally:
        cap.close()
    return count[0] / dt, count[1] / dt, lost


# --------------------------------------------------------------------- Go and Bun

BENCH = Path(__file__).resolve().parent
BUN_TEST_CACHE = Path.home() / ".cache" / "lumen-agent-tests" / "bun-1.4.5" / "node_modules" / "@oven" / "bun-linux-x64" / "bin" / "bun"


def run_argv(argv: list[str], before_go=None) -> float:
    p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "ready"
    if before_go:
        before_go(p.pid)
    p.stdin.write("go\n")
    p.stdin.flush()
    us = float(p.stdout.readline())
    p.wait()
    return us


def _analysis_times(exe: str) -> dict[str, float]:
    """Seconds to analyse ``exe``: pages dropped, warm, and a build-id cache hit."""
    from lumen_agent.capture.runtime_analysis import analyse_file

    t0 = time.perf_counter()
    import capstone  # noqa: F401 - once per agent process, timed apart

    imports = time.perf_counter() - t0
    fd = os.open(exe, os.O_RDONLY)
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)  # this file only, not the whole cache
    os.close(fd)
    t0 = time.perf_counter()
    res = analyse_file(exe)
    cold = time.perf_counter() - t0
    t0 = time.perf_counter()
    analyse_file(exe)
    warm = time.perf_counter() - t0
    t0 = time.perf_counter()
    analyse_file(exe, {res.build_id: res})
    cached = time.perf_counter() - t0
    return {"imports": imports, "cold": cold, "warm": warm, "cached": cached, "result": res}


def runtime_main(args) -> None:

    tmp = Path(tempfile.mkdtemp())
    cert, key = make_cert(tmp)
    n, size = args.calls, args.size
    if args.runtime == "go":
        exe = str(tmp / "go_tls_worker")
        subprocess.run(["go", "build", "-o", exe, "."], cwd=BENCH / "go_tls_worker", check=True,
                       env={**os.environ, "GOCACHE": str(tmp / "gocache"), "GOFLAGS": "-mod=mod"})
        argv = [exe, cert, key, str(n), str(size)]
        unit = "crypto/tls call ((*Conn).Write or (*Conn).Read)"
    else:
        import shutil

        exe = os.path.realpath(args.bun or shutil.which("bun") or str(BUN_TEST_CACHE))
        argv = [exe, str(BENCH / "bun_tls_worker.js"), cert, key, str(n), str(size)]
        unit = "SSL call (ping-pong: 2 SSL_write + 2 SSL_read per round, event loop included)"
    times = _analysis_times(exe)
    res = times["result"]
    assert res is not None and res.probes, f"{exe}: {res}"
    results: dict[str, float] = {"none": run_argv(argv)}

    bcc = import_bcc()
    empty = bcc.BPF(text=b"int empty(void *ctx) { return 0; }")
    for probe in res.probes:
        empty.attach_uprobe(name=exe.encode(), addr=probe.addr, fn_name=b"empty")
        if probe.ret_fn:
            empty.attach_uretprobe(name=exe.encode(), addr=probe.addr, fn_name=b"empty")
    results["empty"] = run_argv(argv)
    empty.cleanup()

    count = [0]
    cap = EbpfCapture(lambda ev: count.__setitem__(0, count[0] + 1),
                      CaptureOptions(scan_executables=False, scan_proc_at_start=False))
    cap.start()
    try:
        cap.runtimes.submit(exe)  # the agent's own path: the analysis process, then attach
        deadline = time.monotonic() + 60
        while not any(t.path == exe for t in cap.targets()) and time.monotonic() < deadline:
            cap.poll(20)
        with Drainer(cap):
            t0 = time.perf_counter()
            results["ours"] = run_argv(argv)
            time.sleep(0.3)
            dt = time.perf_counter() - t0
        seen, lost = count[0], cap.stats()["lost"]
        with Drainer(cap):
            results["excluded"] = run_argv(argv, before_go=cap.exclude_pid)
    finally:
        cap.close()

    base, empty_us = results["none"], results["empty"]
    print(f"{args.runtime}: {n} rounds, {size} B, {os.cpu_count()} CPUs; us per {unit}")
    for k, v in results.items():
        print(f"  {k:9s} {v:7.2f} us/call   x{v / base:5.2f}   (+{v - base:5.2f} us vs none, "
              f"{v - empty_us:+6.2f} us vs empty)")
    print(f"  events delivered during `ours`: {seen} in {dt:.2f}s, lost={lost}")
    mb = os.path.getsize(exe) / 1e6
    print(f"  analysis of {exe} ({mb:.0f} MB, {res.runtime}, {res.detail}, {len(res.probes)} probes): "
          f"{times['cold']:.3f}s first look (pages dropped), {times['warm']:.3f}s warm, "
          f"{times['cached']:.3f}s build-id cache hit (plus {times['imports']:.3f}s to import capstone, once)")


if __name__ == "__main__":
    main()
