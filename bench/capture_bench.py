"""What the running agent costs: added request latency, per-SSL-call probe cost,
agent CPU and memory, and start-up time.  Figures from ONE run, printed, not asserted.

    sudo .venv/bin/python bench/capture_bench.py [--calls 300] [--rate 100] [--seconds 10]

(a) latency added to one real HTTPS LLM request: ``--calls`` sequential
    non-streaming chat calls from ONE Python process (http.client over TLS,
    keep-alive) against the fake provider (tests/support; its connections set
    TCP_NODELAY here, see capture_load.SERVER), with no agent, with
    ``lumen-agent run`` running (the fake server's pid excluded with
    --exclude-pid, as a remote provider would not be probed; it still takes the
    uprobe trap), and with no agent again (how noisy the host is).
(b) per-SSL-call cost: bench/probe_cost.py (none / empty uprobe / ours ...),
    run as a subprocess with no agent running.
(c) agent CPU % (psutil cpu_times deltas) and memory (RSS, RssAnon from
    /proc/PID/status) idle for ``--seconds`` (three windows; the one in which
    other processes on the host made the fewest TLS events is shown as idle)
    and while a client makes paced calls at ``--rate`` per second for ``--seconds``.
(d) seconds from starting ``lumen-agent run`` to ``lumen-agent status``
    exiting 0 (and to node being a probe target), over three starts.

(e) load: ``--load-clients`` keep-alive clients call as fast as they can for
    ``--load-seconds`` (non-streaming, then streams of ``--chunks`` chunks).
    The same calls are first recorded in this process (an EbpfCapture with no
    agent running) and replayed through the bare pipeline (Pipeline +
    CallStore, no capture): agent CPU per call vs pipeline-only CPU per call,
    and the streamed calls per second one core of agent can take.  The
    replay also runs once more while the same load runs uncaptured beside
    it (no agent): the agent is measured beside its load, so that is the
    pipeline-only cost in the agent's conditions, and both ratios print.
    Last, the replay runs in the agent's rhythm, quiet and beside the load:
    batches of as many events as the agent's ring reads took under that
    load, each after a sleep as long as the reader's linger.  A consumer
    that sleeps between batches starts each on cold caches; this prints
    what that costs the bare pipeline, apart from anything the agent adds.
(f) latency floor: the sequential calls of (a) with EMPTY BPF programs on the
    agent's attach points (every system libssl, same symbols, entry and
    return), in the same run: what any uprobe costs, before our programs'
    work.
(g) memory: RssAnon once the agent has made ``--mem-calls`` calls (load as in
    (e)), its growth over the last half of them, and the highest RssAnon
    read (every 0.2 s) on the way.
(h) idle with background non-LLM TLS: a process makes a new HTTPS connection
    and a GET every 0.5 s and another a keep-alive GET every 0.1 s (neither
    is an LLM call) while the agent's CPU is measured over ``--idle-seconds``.

``--agent-bin`` runs another build's ``lumen-agent`` (e.g. main's venv) under
the same bench, for a before/after; (b) and the replay always use this tree.

Aims (README/DESIGN): added p50 <= 0.5 ms, idle CPU <= 0.3 %, anon RSS <= 64 MB,
start-up <= 3 s.  The agent probes every process on the host (global mode),
so other TLS traffic on the machine shows up in (c) and (a).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import capture_load  # noqa: E402
import e2e_agent  # noqa: E402
from capture_load import Load, isolated_python, write_isolation_config  # noqa: E402
from e2e_agent import AgentProcess  # noqa: E402
from support import certs as certs_mod  # noqa: E402
from support import clients  # noqa: E402

# One process, one keep-alive TLS connection.  mode "seq": N calls back to
# back, prints per-call latencies (us); mode "paced": calls at RATE/s for
# SECONDS, prints how many were made and how late the schedule ran.
CLIENT = textwrap.dedent(
    """
    import http.client, json, ssl, sys, time
    port, ca, mode, n, rate, seconds, warm = (sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]),
                                              float(sys.argv[5]), float(sys.argv[6]), int(sys.argv[7]))
    path, body, headers = json.loads(sys.argv[8])
    body = json.dumps(body).encode()
    ctx = ssl.create_default_context(cafile=ca)
    c = http.client.HTTPSConnection("localhost", int(port), context=ctx)
    def one():
        c.request("POST", path, body=body, headers=headers)
        r = c.getresponse()
        r.read()
        if r.status != 200:
            raise SystemExit(f"status {r.status}")
    for _ in range(warm):
        one()
    if mode == "seq":
        lat = []
        for _ in range(n):
            t0 = time.perf_counter_ns()
            one()
            lat.append((time.perf_counter_ns() - t0) / 1000)
        print(json.dumps({"calls": warm + n, "lat_us": lat}))
    else:
        made, behind = 0, 0.0
        t0 = time.monotonic()
        while True:
            due = t0 + made / rate
            now = time.monotonic()
            if due - t0 >= seconds:
                break
            if due > now:
                time.sleep(due - now)
            else:
                behind = max(behind, now - due)
            one()
            made += 1
        print(json.dumps({"calls": warm + made, "made": made, "elapsed": time.monotonic() - t0,
                          "max_behind_s": behind}))
    c.close()
    """
)


# The fake provider with TCP_NODELAY, as a real provider answers (capture_load.py says why).
spawn_server = capture_load.spawn_server


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q / 100 * (len(s) - 1))))]


# The Python the clients run: isolated_python() unless --no-isolate.
PY = sys.executable


def run_client_proc(server, certs, mode: str, **kw) -> tuple[int, dict]:
    """Run the CLIENT script to completion: (its pid, to find its rows; what it printed)."""
    request = json.dumps(list(clients.request_for("openai.chat")))
    argv = [PY, "-c", CLIENT, str(server.port), str(certs.ca), mode, str(kw.get("n", 0)),
            str(kw.get("rate", 0)), str(kw.get("seconds", 0)), str(kw.get("warm", 20)), request]
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env=clients.client_env(certs))
    out, err = p.communicate(timeout=300)
    if p.returncode != 0:
        raise SystemExit(f"client failed: {err}")
    return p.pid, json.loads(out)


def mem(pid: int) -> tuple[float, float]:
    """(RSS, RssAnon) in MB from /proc/PID/status."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "RssAnon"):
            fields[key] = int(value.split()[0]) / 1024
    return fields["VmRSS"], fields["RssAnon"]


def cpu_seconds(proc: psutil.Process) -> float:
    t = proc.cpu_times()
    return t.user + t.system


def status_delta(before: dict, after: dict, section: str, key: str) -> int:
    """How far one counter of the agent's status file moved between two reads of it."""
    return int((after.get(section) or {}).get(key, 0)) - int((before.get(section) or {}).get(key, 0))


def measure(agent: AgentProcess, seconds: float, during=None) -> dict:
    """Agent CPU % and memory over ``seconds`` (or over ``during()``, if given)."""
    proc = psutil.Process(agent.pid)
    s0 = agent.status_file() or {}
    c0, t0 = cpu_seconds(proc), time.monotonic()
    extra = during() if during else time.sleep(seconds)
    c1, t1 = cpu_seconds(proc), time.monotonic()
    rss, anon = mem(agent.pid)
    time.sleep(1.1)  # the status file is rewritten every second
    s1 = agent.status_file() or {}
    return {"cpu_pct": 100 * (c1 - c0) / (t1 - t0), "wall_s": t1 - t0, "rss_mb": rss, "anon_mb": anon,
            "extra": extra, "events": status_delta(s0, s1, "capture", "events"),
            "calls": status_delta(s0, s1, "pipeline", "calls")}


def count_rows(agent: AgentProcess, pid: int) -> int:
    return agent.query("SELECT count(*) AS n FROM llm_calls WHERE pid = ?", [pid])[0]["n"]


def startup_times(workdir: Path, runs: int = 3) -> list[tuple[float, float, float]]:
    """Per start: seconds until the agent's status file names a target, until
    `lumen-agent status` exits 0 (run once the file is there), until node is a target."""
    out = []
    for i in range(runs):
        a = AgentProcess.start(workdir / f"start{i}")
        try:
            ready = a.wait_ready(need_node=False, timeout=60, margin=0)
            a.wait_ready(need_node=True, timeout=60, margin=0)
            node = time.monotonic() - a.started
        finally:
            a.stop()
        out.append((a.file_ready_after or float("nan"), ready, node))
    return out


def probe_cost(calls: int) -> dict[str, float]:
    p = subprocess.run([sys.executable, str(ROOT / "bench" / "probe_cost.py"), "--calls", str(calls)],
                       capture_output=True, text=True, timeout=600)
    if p.returncode != 0:
        raise SystemExit(f"probe_cost.py failed: {p.stderr[-2000:]}")
    found = {m.group(1): float(m.group(2))
             for m in re.finditer(r"^\s+([\w-]+)\s+([\d.]+) us/call", p.stdout, re.M)}
    found["_text"] = p.stdout  # type: ignore[assignment]
    return found


# -------------------------------------------------------- (e) load and replay
BACKGROUND_TLS = textwrap.dedent(
    """
    import http.client, ssl, sys, time
    port, ca, seconds = int(sys.argv[1]), sys.argv[2], float(sys.argv[3])
    ctx = ssl.create_default_context(cafile=ca)
    keep = http.client.HTTPSConnection("localhost", port, context=ctx)
    end, next_new = time.monotonic() + seconds, 0.0
    while time.monotonic() < end:
        keep.request("GET", "/healthz"); keep.getresponse().read()
        if time.monotonic() >= next_new:
            c = http.client.HTTPSConnection("localhost", port, context=ctx)
            c.request("GET", "/healthz"); c.getresponse().read(); c.close()
            next_new = time.monotonic() + 0.5
        time.sleep(0.1)
    """
)


# The two kinds of (e) load: (name, streaming).
LOAD_KINDS = (("non-streaming", False), ("streamed", True))


def record_load(server, certs, *, seconds: float, clients: int, streaming: bool, chunks: int):
    """The load's events, captured in this process (no agent running): (events, calls made)."""
    import threading

    from lumen_agent.capture.ebpf import CaptureOptions, EbpfCapture

    load = Load(server, certs, n=clients, seconds=seconds, streaming=streaming, chunks=chunks, python=PY)
    pids = {p.pid for p in load.procs}
    events: list = []

    def keep(event) -> None:
        if event.pid in pids:
            events.append(event)

    cap = EbpfCapture(keep, CaptureOptions(scan_executables=False, exclude_pids={server.pid}))
    cap.start()
    done = threading.Event()

    def drain() -> None:
        while not done.is_set():
            cap.poll(50)

    thread = threading.Thread(target=drain)
    thread.start()
    try:
        load.go()
        result = load.wait()
        time.sleep(0.5)
    finally:
        done.set()
        thread.join()
        lost = cap.stats()["lost"]
        cap.close()
    return events, result.calls, lost


def replay_cpu(events, *, burst: int = 0, pause_s: float = 0.0) -> tuple[float, int]:
    """CPU seconds the bare pipeline (and a DuckDB store) spends on ``events``, and the calls it made.

    With ``burst``, the replay sleeps ``pause_s`` after every ``burst``
    events: the agent's rhythm, which reads a batch of records, handles it
    and sleeps through the next linger.  The sleep costs no CPU itself, but
    each batch after it starts on cold caches.

    The store flushes as the agent's does, every DEFAULT_FLUSH_INTERVAL of
    the recording's own time, so each flush holds as many rows as the
    agent's would at the recorded rate: a flush costs ~22 ms plus ~30 us a
    row here (its checkpoint, the counters' upsert), so a fixed row count
    per flush would price the store for one call rate only."""
    from lumen_agent.outputs.store import DEFAULT_FLUSH_INTERVAL, CallStore
    from lumen_agent.pipeline.core import Pipeline
    from lumen_agent.pricing.table import PriceTable

    prices = PriceTable.load()
    interval_ns = int(DEFAULT_FLUSH_INTERVAL * 1e9)
    with tempfile.TemporaryDirectory() as tmp:
        store = CallStore(Path(tmp) / "replay.duckdb")
        pipeline = Pipeline(prices, store.add, salt=b"b" * 32)
        next_flush_ns = events[0].ts_ns + interval_ns if events else 0
        c0 = time.process_time()
        for i, event in enumerate(events, 1):
            pipeline.feed(event)
            if event.ts_ns >= next_flush_ns:
                store.flush()
                next_flush_ns = event.ts_ns + interval_ns
            if burst and i % burst == 0:
                time.sleep(pause_s)
        pipeline.close()
        store.close()
        cpu = time.process_time() - c0
    return cpu, pipeline.counters["calls"]


def replay_cpu_under_load(events, server, certs, *, clients: int, streaming: bool, chunks: int,
                          burst: int = 0, pause_s: float = 0.0) -> float:
    """CPU seconds of the replay of ``events`` while the same load runs uncaptured beside it.

    The agent's figure is taken while the load's clients and the provider
    share the host's cores with it; the replay alone runs on a quiet host
    with warm caches, and the same replay under load costs 1.3-1.5x more
    here (2 vCPUs).  This is the pipeline-only cost under the agent's
    conditions: no agent runs, so nothing captures the load."""
    load = Load(server, certs, n=clients, seconds=3600, streaming=streaming, chunks=chunks, python=PY)
    load.go()
    try:
        time.sleep(1.0)  # the clients connected and calling
        cpu, _ = replay_cpu(events, burst=burst, pause_s=pause_s)
    finally:
        for p in load.procs:
            p.kill()
        for p in load.procs:
            p.wait()
    return cpu


def agent_load(agent: AgentProcess, server, certs, *, seconds: float, clients: int, streaming: bool,
               chunks: int) -> dict:
    """Agent CPU per call while ``clients`` call as fast as they can."""
    load = Load(server, certs, n=clients, seconds=seconds, streaming=streaming, chunks=chunks, python=PY)
    pids = [p.pid for p in load.procs]
    proc = psutil.Process(agent.pid)
    s0 = agent.status_file() or {}
    c0 = cpu_seconds(proc)
    load.go()
    result = load.wait()
    marks = ",".join("?" * len(pids))
    deadline = time.monotonic() + 60
    rows = 0
    while time.monotonic() < deadline:
        rows = agent.query(f"SELECT count(*) AS n FROM llm_calls WHERE pid IN ({marks})", pids)[0]["n"]
        if rows >= result.calls:
            break
        time.sleep(0.5)
    c1 = cpu_seconds(proc)
    time.sleep(1.1)
    s1 = agent.status_file() or {}
    return {"calls": result.calls, "rows": rows, "rate": result.rate, "cpu_s": c1 - c0,
            "us_per_call": (c1 - c0) / max(rows, 1) * 1e6, "lost": status_delta(s0, s1, "capture", "lost"),
            "events_per_read": status_delta(s0, s1, "capture", "events")
            / max(status_delta(s0, s1, "capture", "ring_reads"), 1)}


def floor_probes():
    """Empty BPF programs on the agent's attach points: every system libssl, same symbols."""
    from lumen_agent.capture.bpf_loader import import_bcc
    from lumen_agent.capture.ebpf import PROBES
    from lumen_agent.capture.targets import TargetTracker

    bcc = import_bcc()
    bpf = bcc.BPF(text=b"int empty(void *ctx) { return 0; }")
    attached = 0
    for target in TargetTracker().add_system_libraries():
        for sym, _entry, ret in PROBES:
            addr = target.symbols.get(sym)
            if addr is None:
                continue
            bpf.attach_uprobe(name=target.path.encode(), addr=addr, fn_name=b"empty")
            attached += 1
            if ret:
                bpf.attach_uretprobe(name=target.path.encode(), addr=addr, fn_name=b"empty")
                attached += 1
    return bpf, attached


def memory_run(agent: AgentProcess, server, certs, *, calls: int,
               clients: int) -> tuple[list[tuple[int, float]], float]:
    """(calls the agent made, its RssAnon MB) after each 10 s round of load,
    until ``calls``; and the highest RssAnon read meanwhile (every 0.2 s: a
    flush's transient memory comes and goes between the rounds' samples)."""
    import threading

    samples = [(0, mem(agent.pid)[1])]
    peak = [samples[0][1]]
    done = threading.Event()

    def watch() -> None:
        while not done.wait(0.2):
            peak[0] = max(peak[0], mem(agent.pid)[1])

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    made = 0
    try:
        while made < calls:
            load = Load(server, certs, n=clients, seconds=10, python=PY)
            load.go()
            load.wait()
            time.sleep(1.2)
            made = int(((agent.status_file() or {}).get("pipeline") or {}).get("calls", 0))
            samples.append((made, mem(agent.pid)[1]))
    finally:
        done.set()
        watcher.join()
    return samples, peak[0]


def idle_with_background(agent: AgentProcess, server, certs, seconds: float) -> dict:
    bg = subprocess.Popen([PY, "-c", BACKGROUND_TLS, str(server.port), str(certs.ca), str(seconds + 5)],
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=clients.client_env(certs))
    time.sleep(2)  # its first connections sniffed and ignored
    m = measure(agent, seconds)
    bg.wait(30)
    return m


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--calls", type=int, default=300, help="(a) sequential calls per run")
    ap.add_argument("--rate", type=float, default=100, help="(c) paced calls per second")
    ap.add_argument("--seconds", type=float, default=10, help="(c) length of each window")
    ap.add_argument("--probe-calls", type=int, default=20000, help="(b) rounds for probe_cost.py")
    ap.add_argument("--load-seconds", type=float, default=15, help="(e) seconds of load per kind")
    ap.add_argument("--record-seconds", type=float, default=4, help="(e) seconds of load recorded for the replay")
    ap.add_argument("--load-clients", type=int, default=4, help="(e, g) keep-alive load clients")
    ap.add_argument("--chunks", type=int, default=100, help="(e) chunks per streamed call")
    ap.add_argument("--mem-calls", type=int, default=100_000, help="(g) calls before RssAnon is read; 0 skips")
    ap.add_argument("--idle-seconds", type=float, default=60, help="(h) idle window with background TLS")
    ap.add_argument("--skip-startup", action="store_true", help="skip (d)")
    ap.add_argument("--skip-probe-cost", action="store_true", help="skip (b)")
    ap.add_argument("--agent-bin", help="lumen-agent executable to measure (default: this venv's)")
    ap.add_argument("--no-isolate", action="store_true",
                    help="let the agent capture every process (default: only the bench's clients, by name)")
    args = ap.parse_args()
    if args.agent_bin:
        e2e_agent.LUMEN = args.agent_bin
    if os.geteuid() != 0:
        raise SystemExit("run as root (BPF probes)")

    work = Path(tempfile.mkdtemp(prefix="capture-bench-"))
    global PY
    if not args.no_isolate:
        PY = isolated_python(work / "bin")
        write_isolation_config(work / "agent")
    certs = certs_mod.ensure_certs(work / "certs")
    server = spawn_server(certs, work / "fp")
    results: dict[str, object] = {}
    try:
        # (d) start-up, first: nothing else of ours runs yet.
        results["startup"] = [] if args.skip_startup else startup_times(work)

        # (e) the load's events recorded here (no agent), replayed through the bare pipeline.
        replay = {}
        for kind, streaming in LOAD_KINDS:
            events, made, rec_lost = record_load(server, certs, seconds=args.record_seconds,
                                                 clients=args.load_clients, streaming=streaming, chunks=args.chunks)
            cpu, calls = replay_cpu(events)
            loaded_cpu = replay_cpu_under_load(events, server, certs, clients=args.load_clients,
                                               streaming=streaming, chunks=args.chunks)
            replay[kind] = {"events": len(events), "made": made, "calls": calls, "cpu_s": cpu,
                            "us_per_call_loaded": loaded_cpu / max(calls, 1) * 1e6,
                            "us_per_call": cpu / max(calls, 1) * 1e6, "lost": rec_lost, "recorded": events}

        # (a) latency: no agent / floor (empty programs) / agent / no agent again.
        _, base = run_client_proc(server, certs, "seq", n=args.calls)
        floor_bpf, floor_n = floor_probes()
        try:
            _, floor = run_client_proc(server, certs, "seq", n=args.calls)
        finally:
            floor_bpf.cleanup()
        agent = AgentProcess.start(work / "agent", args=["--exclude-pid", str(server.pid)])
        agent.wait_ready(need_node=True, timeout=60, margin=0.5)
        try:
            pid_a, with_agent = run_client_proc(server, certs, "seq", n=args.calls)
            # (c) idle, then paced load.
            time.sleep(2)  # let the flush of (a) pass
            # The host is rarely quiet (the agent sees every process's TLS):
            # three idle windows, the one with the fewest events is "idle".
            idles = [measure(agent, args.seconds) for _ in range(3)]
            idle = min(idles, key=lambda m: (m["events"], m["cpu_pct"]))
            loaded = measure(agent, args.seconds, during=lambda: run_client_proc(
                server, certs, "paced", rate=args.rate, seconds=args.seconds, warm=0))
            pid_c, paced = loaded["extra"]
            # (h) idle with other processes' non-LLM TLS.
            idle_bg = idle_with_background(agent, server, certs, args.idle_seconds)
            # (e) load through the agent.
            loads = {kind: agent_load(agent, server, certs, seconds=args.load_seconds, clients=args.load_clients,
                                      streaming=streaming, chunks=args.chunks)
                     for kind, streaming in LOAD_KINDS}
            # (g) memory after many calls.
            mem_samples, mem_peak = memory_run(agent, server, certs, calls=args.mem_calls,
                                               clients=args.load_clients) if args.mem_calls else ([], 0.0)
            status = agent.status() or {}
        finally:
            rc = agent.stop()
        # The replay again, now that the agent phases are over: the host's
        # load changes over minutes, the lower of the two is the pipeline's
        # cost.  Then in the agent's rhythm: its batches as it read them
        # under that load, each after the linger's sleep; quiet, then beside
        # the load.
        from lumen_agent.capture.ringbuf import DEFAULT_COALESCE_S, STREAMING_BATCH_RECORDS, STREAMING_COALESCE_S

        for kind, streaming in LOAD_KINDS:
            r = replay[kind]
            events = r.pop("recorded")
            cpu, _ = replay_cpu(events)
            r["us_per_call_2"] = cpu / max(r["calls"], 1) * 1e6
            r["us_per_call"] = min(r["us_per_call"], r["us_per_call_2"])
            r["burst"] = burst = max(1, round(loads[kind]["events_per_read"]))
            r["pause_s"] = pause = STREAMING_COALESCE_S if burst >= STREAMING_BATCH_RECORDS else DEFAULT_COALESCE_S
            cpu, _ = replay_cpu(events, burst=burst, pause_s=pause)
            r["us_per_call_rhythm"] = cpu / max(r["calls"], 1) * 1e6
            cpu = replay_cpu_under_load(events, server, certs, clients=args.load_clients, streaming=streaming,
                                        chunks=args.chunks, burst=burst, pause_s=pause)
            r["us_per_call_rhythm_loaded"] = cpu / max(r["calls"], 1) * 1e6
        rows_a = count_rows(agent, pid_a)
        rows_c = count_rows(agent, pid_c)
        _, base2 = run_client_proc(server, certs, "seq", n=args.calls)

        # (b) probe cost, with no agent of ours running.
        pc = {"_text": ""} if args.skip_probe_cost else probe_cost(args.probe_calls)
    finally:
        server.stop()

    # ------------------------------------------------------------------ report
    b, a, b2, fl = base["lat_us"], with_agent["lat_us"], base2["lat_us"], floor["lat_us"]
    p50b, p99b, p50a, p99a = pct(b, 50), pct(b, 99), pct(a, 50), pct(a, 99)
    print("clients " + ("run as " + capture_load.ISOLATED_NAME + "; the agent captures only them (--no-isolate: all)"
                        if not args.no_isolate else "run as python; the agent captures every process"))
    print(f"lumen-agent capture bench  ({os.cpu_count()} CPUs, {time.strftime('%Y-%m-%d %H:%M')}, "
          f"load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}, agent {e2e_agent.LUMEN})")
    print()
    print(f"(a) {args.calls} sequential non-streaming chat calls, one Python process, http.client, "
          "TLS keep-alive")
    print(f"    {'':22s} {'p50 ms':>8s} {'p99 ms':>8s} {'mean ms':>8s}")
    for name, lat in (("no agent", b), (f"floor ({floor_n} empty)", fl), ("agent running", a), ("no agent (after)", b2)):
        print(f"    {name:22s} {pct(lat, 50) / 1000:8.3f} {pct(lat, 99) / 1000:8.3f} "
              f"{statistics.fmean(lat) / 1000:8.3f}")
    print(f"    added by the agent:    p50 {(p50a - p50b) / 1000:+.3f} ms   p99 {(p99a - p99b) / 1000:+.3f} ms"
          f"   (aim: p50 <= 0.5 ms; before/after no-agent p50 differ by "
          f"{abs(pct(b2, 50) - p50b) / 1000:.3f} ms)")
    print(f"    rows captured for the agent run: {rows_a}/{with_agent['calls']}")
    p50f = pct(fl, 50)
    added_ratio = f"x{(p50a - p50b) / (p50f - p50b):.2f}" if p50f > p50b else "n/a (floor added nothing measurable)"
    print(f"    added p50: agent {(p50a - p50b) / 1000:+.3f} ms, floor {(p50f - p50b) / 1000:+.3f} ms; "
          f"agent p50 / floor p50 = x{p50a / p50f:.3f} (aim: <= 1.5); added agent / added floor = {added_ratio}")
    print()
    print(f"(b) per SSL call (bench/probe_cost.py, {args.probe_calls} write+read rounds, 64 B):")
    none = pc.get("none", float("nan"))
    for k in ("none", "empty", "ours", "ours-nodrain", "excluded", "ignored"):
        if k in pc:
            print(f"    {k:13s} {pc[k]:7.2f} us/call  x{pc[k] / none:5.2f}")
    if "ours" in pc and "empty" in pc:
        print(f"    ours vs empty uprobe: +{pc['ours'] - pc['empty']:.2f} us/call "
              f"(x{pc['ours'] / pc['empty']:.2f}); empty vs none: +{pc['empty'] - none:.2f} us/call")
    for line in str(pc["_text"]).splitlines():
        if "ring buffer" in line or "max drain" in line:
            print("    " + line.strip())
    print()
    print(f"(c) agent process        {'CPU %':>7s} {'RSS MB':>7s} {'anon MB':>8s}")
    print(f"    idle {args.seconds:.0f} s            {idle['cpu_pct']:7.2f} {idle['rss_mb']:7.1f} "
          f"{idle['anon_mb']:8.1f}   (aims: CPU <= 0.3 %, anon <= 64 MB)")
    print("    idle windows (CPU %, events and calls other processes made meanwhile): "
          + ", ".join(f"{m['cpu_pct']:.2f} % / {m['events']} ev / {m['calls']} calls" for m in idles))
    rate = paced["made"] / paced["elapsed"]
    print(f"    {rate:5.1f} calls/s {args.seconds:.0f} s    {loaded['cpu_pct']:7.2f} {loaded['rss_mb']:7.1f} "
          f"{loaded['anon_mb']:8.1f}   ({paced['made']} calls, schedule max {paced['max_behind_s'] * 1000:.0f} ms "
          f"behind; rows {rows_c}/{paced['calls']}; {loaded['events']} events)")
    print(f"    status after: lost={status.get('lost')} events={status.get('events')} "
          f"calls={status.get('calls')} skipped={status.get('skipped')}; agent exit code {rc}")
    print()
    print(f"(e) load: {args.load_clients} keep-alive clients as fast as they can; replay = the same kind of calls "
          f"recorded here for {args.record_seconds:.0f} s and fed to the bare pipeline + store")
    for kind, _ in LOAD_KINDS:
        ag, rp = loads[kind], replay[kind]
        ratio = ag["us_per_call"] / rp["us_per_call"] if rp["us_per_call"] else float("nan")
        print(f"    {kind:14s} agent {ag['us_per_call']:7.0f} us CPU/call ({ag['rows']}/{ag['calls']} rows, "
              f"{ag['rate']:.0f} calls/s, lost {ag['lost']})   pipeline-only {rp['us_per_call']:7.0f} us/call "
              f"({rp['calls']} calls of {rp['made']}, {rp['events']} events, lost {rp['lost']}; "
              f"the lower of two replays, other {rp['us_per_call_2']:.0f})   "
              f"ratio x{ratio:.2f}  (aim <= 1.3)")
        beside = rp["us_per_call_loaded"]
        print(f"    {'':14s} pipeline-only under the same load (uncaptured clients beside the replay) "
              f"{beside:7.0f} us/call: agent / that = x{ag['us_per_call'] / beside:.2f}")
        rhythm_quiet, rhythm_loaded = rp["us_per_call_rhythm"], rp["us_per_call_rhythm_loaded"]
        print(f"    {'':14s} pipeline-only in the agent's rhythm ({rp['burst']} events, then {rp['pause_s'] * 1000:.0f} "
              f"ms asleep, as the agent read them): quiet {rhythm_quiet:7.0f} us/call (x{rhythm_quiet / rp['us_per_call']:.2f} of "
              f"the replay), under the same load {rhythm_loaded:7.0f} us/call: agent / that = "
              f"x{ag['us_per_call'] / rhythm_loaded:.2f}")
    streamed_us = loads["streamed"]["us_per_call"]
    print(f"    streamed calls of {args.chunks} chunks per core: {1e6 / streamed_us:.0f} calls/s agent, "
          f"{1e6 / replay['streamed']['us_per_call']:.0f} calls/s pipeline-only  (aim >= 1000)")
    print()
    if mem_samples:
        half = next((m for m in mem_samples if m[0] >= args.mem_calls // 2), mem_samples[-1])
        last = mem_samples[-1]
        print(f"(g) RssAnon: {mem_samples[0][1]:.1f} MB at 0 calls, {half[1]:.1f} MB at {half[0]} calls, "
              f"{last[1]:.1f} MB at {last[0]} calls; last half added {last[1] - half[1]:+.1f} MB "
              "(aims: <= 45 MB, < 2 MB)")
        print("    samples (calls, MB): " + ", ".join(f"({c}, {m:.1f})" for c, m in mem_samples))
        print(f"    highest RssAnon meanwhile (read every 0.2 s): {mem_peak:.1f} MB")
        print()
    print(f"(h) idle {args.idle_seconds:.0f} s with background non-LLM TLS (GET every 0.1 s keep-alive, a new "
          f"connection every 0.5 s): CPU {idle_bg['cpu_pct']:.3f} %  ({idle_bg['events']} events; quiet idle "
          f"above: {idle['cpu_pct']:.3f} %)  (aim <= 0.2 %)")
    print()
    starts = results["startup"]
    print("(d) start-up, seconds from `lumen-agent run` (aim: `status` exits 0 within 3 s)")
    print("    (the status file is watched; `status` runs once it names a target and takes ~0.3-0.5 s itself)")
    for i, (written, ready, node) in enumerate(starts):  # type: ignore[misc]
        print(f"    start {i + 1}: status file {written:5.2f} s   `status` exit 0 {ready:5.2f} s   "
              f"node a target {node:5.2f} s")
    print()
    print("summary")
    print(f"    added latency p50/p99     {(p50a - p50b) / 1000:+.3f} / {(p99a - p99b) / 1000:+.3f} ms")
    if "ours" in pc and "empty" in pc:
        print(f"    probe per SSL call        ours {pc['ours'] - none:.2f} us, empty uprobe {pc['empty'] - none:.2f} us "
              "(over none)")
    print(f"    CPU idle / {rate:.0f} calls/s      {idle['cpu_pct']:.2f} % / {loaded['cpu_pct']:.2f} %")
    print(f"    anon RSS idle / loaded    {idle['anon_mb']:.1f} / {loaded['anon_mb']:.1f} MB")
    if starts:
        print(f"    start-up (median)         `status` exit 0 {statistics.median(r for _, r, _ in starts):.2f} s, "  # type: ignore[misc]
              f"status file {statistics.median(w for w, _, _ in starts):.2f} s")  # type: ignore[misc]


if __name__ == "__main__":
    main()
