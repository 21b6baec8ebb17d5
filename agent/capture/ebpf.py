"""eBPF capture: uprobes on OpenSSL, records from a BPF ring buffer -> DataEvents.

The BPF programs are compiled by BCC (Debian's ``python3-bpfcc``) in a
short-lived child process and held here by file descriptor (``bpf_loader``):
the agent itself never loads BCC's LLVM.

    cap = EbpfCapture(on_event=print)
    cap.start()
    while running:
        cap.poll(100)
    cap.close()

Attach modes (see ``CaptureOptions.attach_mode``):

``global`` (default)
    uprobes on each TLS *file* (libssl.so*, node), for every process.  The
    kernel installs the breakpoints into any process that maps the file, at
    mmap time, so a process started later is captured from its first call.
    Excluded processes are dropped in the kernel before any copy, but still
    take the uprobe trap (~14 us per SSL call on the reference machine).
``per-process``
    pid-filtered uprobes, attached to each included process when it execs (before
    its libraries are even mapped) or when a /proc scan finds it using a TLS
    file.  Other processes pay nothing at all; a process that makes a TLS call
    within the few milliseconds between exec and the attach misses that call.
"""

from __future__ import annotations

import math
import mmap
import os
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import psutil

from lumen_agent.capture import kernel_setup
from lumen_agent.capture.bpf_loader import LoadedBpf, Uprobe, load_bpf
from lumen_agent.capture.kernel_comm import KernelIdentities, comm_text
from lumen_agent.capture.kernel_setup import CaptureError
from lumen_agent.capture.ringbuf import RingBufferReader
from lumen_agent.capture.runtimes import RuntimeAnalyser, RuntimeResult
from lumen_agent.capture.targets import TargetTracker, TlsTarget, find_tls_executables
from lumen_agent.heap import release_free_heap
from lumen_agent.pipeline.attribution import ProcessIdentity
from lumen_agent.pipeline.events import DataEvent, Direction, EventFlag

__all__ = ["CaptureError", "CaptureOptions", "EbpfCapture", "AttachedTarget"]

# --- mirror of bpf/events.h ----------------------------------------------
HDR_FORMAT = "<QQIIIIIHBB"
HDR_SIZE = struct.calcsize(HDR_FORMAT)
HDR = struct.Struct(HDR_FORMAT)
HDR_CHUNK_LEN = 6  # index of chunk_len in the unpacked header
assert HDR_SIZE == 40
CHUNK_SIZE = 16384
EV_DATA, EV_CLOSE, EV_EXEC, EV_EXIT, EV_PROC = 1, 2, 3, 4, 5
DIR_SEND, DIR_RECV = 0, 1
CNT_LOST, CNT_ARGS_FULL, CNT_TRUNCATED, CNT_IGNORED = 0, 1, 2, 3
# Map keys and values in host byte order (bpf/ssl_probes.c, bpf/events.h): skip_tgids u32, ignored_conns
# struct lumen_conn_key {u32 tgid; u32 pad; u64 ssl}, counters u32 index; values u8 1.
_TGID = struct.Struct("=I")
_CONN_KEY = struct.Struct("=IIQ")
_COUNTER = struct.Struct("=I")
_ONE = b"\x01"

# Largest per-call max we accept: the BPF loop is unrolled by the verifier.
MAX_CALL_BYTES_LIMIT = 4 * 1024 * 1024
# A call whose chunks stop arriving (kernel ran out of ring buffer mid-call)
# is emitted TRUNCATED after this long.
PARTIAL_TIMEOUT_S = 1.0

# While a background search (executables at start, a Go/Bun binary) runs,
# poll at least this often so its result is attached soon after it is in.
BACKGROUND_POLL_S = 0.1

# (symbol, entry program, return program or None)
PROBES: tuple[tuple[str, str, str | None], ...] = (
    ("SSL_write", "probe_write_enter", "probe_rw_return"),
    ("SSL_read", "probe_read_enter", "probe_rw_return"),
    ("SSL_write_ex", "probe_write_ex_enter", "probe_rw_ex_return"),
    ("SSL_read_ex", "probe_read_ex_enter", "probe_rw_ex_return"),
    ("SSL_shutdown", "probe_close", None),
    ("SSL_free", "probe_close", None),
)

def bpf_source_dir() -> Path:
    return Path(str(resources.files("lumen_agent.bpf")))


# One BPF program, several files: bcc takes programs only from the main
# text (functions of an #included file are not loaded), so the files are
# joined; later ones use the maps and helpers of ssl_probes.c.
BPF_SOURCES = ("ssl_probes.c", "go_tls.c")


def program_text(folder: Path) -> bytes:
    return b"\n".join((folder / name).read_bytes() for name in BPF_SOURCES)


@dataclass
class CaptureOptions:
    attach_mode: str = "global"  # "global" or "per-process"
    # Processes never captured (filtered in the kernel before any copy).
    exclude_pids: set[int] = field(default_factory=set)
    exclude_self: bool = True  # add the agent's own pid to exclude_pids
    # per-process mode only: capture just these pids (None: every process
    # that is not excluded).
    include_pids: set[int] | None = None
    # Bytes of one SSL call copied whole.  A bigger call delivers its first
    # max_call_bytes bytes flagged TRUNCATED.  Rounded up to 16 KiB chunks.
    max_call_bytes: int = 256 * 1024
    ringbuf_pages: int = 4096  # 16 MiB of 4 KiB pages; a power of two
    # After a wake-up, let records gather this long before reading them;
    # the second while they stream in (capture/ringbuf.py).
    coalesce_ms: float = 4.0
    streaming_coalesce_ms: float = 12.0
    # More TLS files to probe (e.g. an app's bundled libssl) by path.
    extra_targets: list[str] = field(default_factory=list)
    scan_proc_at_start: bool = True
    # Look for executables with their own OpenSSL (node) in the usual bin
    # folders at start (in a background thread), so that even their first
    # process is probed from its first call.  Others are found at exec.
    scan_executables: bool = True


@dataclass(frozen=True, slots=True)
class AttachedTarget:
    path: str
    kind: str  # "libssl" or "exe"
    mode: str  # "global" or "per-process"
    pids: tuple[int, ...]  # global: processes seen using it; per-process: attached pids
    probes: int


# Decoded once: a record's direction byte and flag bits -> the event's values.
_DIRECTIONS = (Direction.SEND, Direction.RECV)
_FLAGS = tuple(EventFlag(i) for i in range(8))


class _Partial:
    __slots__ = ("hdr", "buf", "expect", "flags", "started")

    def __init__(self, hdr: tuple, expect: int, flags: int) -> None:
        self.hdr = hdr
        self.buf = bytearray()
        self.expect = expect
        self.flags = flags
        self.started = time.monotonic()


class EbpfCapture:
    def __init__(
        self,
        on_event: Callable[[DataEvent], None],
        options: CaptureOptions | None = None,
        on_exec: Callable[[int], None] | None = None,
        on_process: Callable[[int, ProcessIdentity | None], None] | None = None,
        identify: Callable[[int], ProcessIdentity | None] | None = None,
    ) -> None:
        """``on_process(pid, identity)``: who a process is, from the comm the
        kernel put in its EXEC or PROC record (read before its first call),
        for when it has left /proc by the time its records are read;
        ``identify(pid)``: who a live process is, from /proc (None: gone)."""
        self.on_event = on_event
        self.options = options or CaptureOptions()
        self.on_exec = on_exec
        self.on_process = on_process
        self._names = KernelIdentities(identify)
        if self.options.attach_mode not in ("global", "per-process"):
            raise CaptureError(
                f"unknown attach mode {self.options.attach_mode!r}", "use 'global' or 'per-process'"
            )
        mcb = self.options.max_call_bytes
        if not (CHUNK_SIZE <= mcb <= MAX_CALL_BYTES_LIMIT):
            raise CaptureError(
                f"max_call_bytes={mcb} out of range",
                f"use {CHUNK_SIZE}..{MAX_CALL_BYTES_LIMIT}",
            )
        self.max_chunks = math.ceil(mcb / CHUNK_SIZE)
        self.max_call_bytes = self.max_chunks * CHUNK_SIZE
        self.exclude: set[int] = set(self.options.exclude_pids)
        if self.options.exclude_self:
            self.exclude.add(os.getpid())
        self.tracker = TargetTracker()
        self._bpf: LoadedBpf | None = None
        self._reader: RingBufferReader | None = None
        # (target key, pid or -1) -> the probes attached there (closing one detaches it)
        self._attached: dict[tuple[tuple[int, int], int], list[Uprobe]] = {}
        self._records: list[tuple[tuple, bytes]] = []
        self._partials: dict[tuple[int, int], _Partial] = {}
        self._open_conns: dict[int, set[int]] = {}  # pid -> conns with data since last close
        self._ignored: dict[int, set[int]] = {}  # pid -> conns in the kernel ignore map
        self._clock_offset = 0
        self._stats = dict(
            events=0, bytes=0, truncated=0, gaps=0, closes=0, execs=0, exits=0, process_names=0,
            attach_errors=0, partial_dropped=0, execs_excluded=0, exclusions_not_in_kernel=0,
        )
        self.last_attach_error = ""
        self._exe_scan: threading.Thread | None = None
        self._exe_found: list | None = None
        # Go and Bun executables: analysed in a process of their own (runtimes.py)
        self.runtimes = RuntimeAnalyser()

    # -- lifecycle -----------------------------------------------------------
    def start(self) -> None:
        kernel_setup.prepare()
        src = bpf_source_dir() / "ssl_probes.c"
        if not src.exists():
            raise CaptureError(f"BPF source {src} missing", "reinstall lumen-agent")
        pages = self.options.ringbuf_pages
        if pages <= 0 or pages & (pages - 1):
            raise CaptureError(f"ringbuf_pages={pages} is not a power of two", "use e.g. 4096")
        cflags = [
            f"-I{src.parent}",
            f"-DLUMEN_MAX_CHUNKS={self.max_chunks}",
            f"-DLUMEN_RINGBUF_PAGES={pages}",
            "-Wno-macro-redefined",
        ]
        self._bpf = load_bpf(src.name, program_text(src.parent), cflags)
        self._sync_clock()
        for pid in list(self.exclude):
            self.exclude_pid(pid)
        self._open_ring()
        # Exec/exit first, so nothing started during the scan below is missed.
        # (TRACEPOINT_PROBE programs are attached by BPF() itself.)

        new: list[TlsTarget] = list(self.tracker.add_system_libraries())
        for p in self.options.extra_targets:
            t = self.tracker.add_file(p)
            if t is not None:
                new.append(t)
        if self.options.scan_proc_at_start:
            new.extend(self.tracker.scan_all())
            for pid in self.tracker.running_pids():
                self._consider_runtime(pid)
        if self.options.attach_mode == "global":
            for t in self.tracker.targets.values():
                self._attach(t, -1)
            if not self._attached:
                self.close()
                raise CaptureError(
                    f"no OpenSSL library could be probed ({self.last_attach_error or 'none found'})",
                    "install libssl3 or pass extra_targets with the path of your libssl.so",
                )
        else:
            for t in self.tracker.targets.values():
                for pid in sorted(t.pids):
                    if self._included(pid):
                        self._attach(t, pid)
        release_free_heap()
        if self.options.scan_executables:
            self._exe_scan = threading.Thread(
                target=self._scan_executables, name="lumen-exe-scan", daemon=True
            )
            self._exe_scan.start()

    def _scan_executables(self) -> None:
        try:
            found = find_tls_executables()
        except Exception:  # noqa: BLE001 - a scan failure only loses the head start
            found = []
        self._exe_found = found  # picked up by poll() on the main thread

    @property
    def executables_scanned(self) -> bool:
        """True once the start-up search for executables like node is in."""
        return self._exe_scan is None

    def _take_exe_scan(self) -> None:
        found = self._exe_found
        if found is None or self._exe_scan is None:
            return
        self._exe_found = None
        self._exe_scan = None
        for path, st, syms in found:
            t = self.tracker.add_known(path, st, "exe", syms)
            if t is not None and self.options.attach_mode == "global":
                self._attach(t, -1)
        release_free_heap()

    def close(self) -> None:
        """Detach, then deliver what the ring buffer still holds, then free everything.

        Events of calls made just before a stop are in the ring buffer but not
        yet read: draining after the uprobes are gone (so nothing new comes)
        and before the buffer is freed loses none of them.
        """
        if self._bpf is None:
            return
        try:
            self.poll(0)
            for tkey, pid in list(self._attached):
                self._detach(tkey, pid)
            for _ in range(100):  # bounded: a final burst, never a live stream
                self._read_ring(0)
                if not self._records:
                    break
                self._process_records()
            self._flush_stale_partials(force=True)
        except Exception:  # noqa: BLE001 - closing must not raise
            pass
        self.runtimes.close()
        b, self._bpf = self._bpf, None
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        b.close()
        self._attached.clear()

    def __enter__(self) -> EbpfCapture:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- attaching -----------------------------------------------------------
    def _included(self, pid: int) -> bool:
        if pid in self.exclude:
            return False
        inc = self.options.include_pids
        return inc is None or pid in inc

    def _attach(self, t: TlsTarget, pid: int) -> None:
        key = (t.key, pid)
        if key in self._attached or self._bpf is None:
            return
        if pid != -1 and not psutil.pid_exists(pid):
            return  # gone already (libbcc would print an error per probe)
        done: list[Uprobe] = []
        plan = t.probes or [(sym, t.symbols.get(sym), entry, ret) for sym, entry, ret in PROBES]
        for sym, addr, entry, ret in plan:
            if addr is None:
                continue
            try:
                done.append(self._bpf.attach_uprobe(t.path, addr, entry, pid=pid))
                if ret:
                    done.append(self._bpf.attach_uprobe(t.path, addr, ret, pid=pid, retprobe=True))
            except (OSError, ValueError, KeyError) as exc:
                self._stats["attach_errors"] += 1
                self.last_attach_error = f"{t.path}:{sym} pid {pid}: {exc}"
        if done:
            self._attached[key] = done

    def _detach(self, tkey: tuple[int, int], pid: int) -> None:
        for probe in self._attached.pop((tkey, pid), ()):
            probe.close()

    # -- control -------------------------------------------------------------
    def ignore_connection(self, pid: int, conn: int) -> None:
        """Stop capturing connection ``conn`` of ``pid`` (not LLM traffic)."""
        if self._bpf is None:
            return
        self._bpf.maps["ignored_conns"].update(_CONN_KEY.pack(pid, 0, conn), _ONE)
        self._ignored.setdefault(pid, set()).add(conn)
        opened = self._open_conns.get(pid)
        if opened:
            opened.discard(conn)
        for k in [k for k, p in self._partials.items() if k[0] == pid and p.hdr[1] == conn]:
            del self._partials[k]

    def exclude_pid(self, pid: int) -> None:
        self.exclude.add(pid)
        if self._bpf is not None:
            try:
                self._bpf.maps["skip_tgids"].update(_TGID.pack(pid), _ONE)
            except OSError:  # the map is full (E2BIG): its events still come, and are dropped in user space
                self._stats["exclusions_not_in_kernel"] += 1
            for tkey, p in [k for k in self._attached if k[1] == pid]:
                self._detach(tkey, p)

    def include_pid(self, pid: int) -> None:
        """Undo ``exclude_pid`` (a process that exec'd a program the filters allow).

        In per-process mode the new program is armed by the exec handling
        that follows; in global mode the library probes already cover it.
        """
        if pid == os.getpid() or pid not in self.exclude:
            return
        self.exclude.discard(pid)
        if self._bpf is not None:
            self._bpf.maps["skip_tgids"].delete(_TGID.pack(pid))

    # -- reading -------------------------------------------------------------
    def _open_ring(self) -> None:
        size = self.options.ringbuf_pages * mmap.PAGESIZE
        self._reader = RingBufferReader(self._bpf.maps["events"].fd, size, HDR, HDR_CHUNK_LEN,
                                        coalesce_s=self.options.coalesce_ms / 1000,
                                        streaming_coalesce_s=self.options.streaming_coalesce_ms / 1000)

    def _read_ring(self, timeout_ms: int) -> None:
        reader = self._reader
        if not timeout_ms or reader.wait(timeout_ms / 1000):
            records = reader.read()
            if self._records:
                self._records.extend(records)
            else:
                self._records = records

    def watch_fds(self, fds: set[int]) -> bool:
        """End :meth:`poll`'s wait also when one of ``fds`` is readable; False
        before the capture started, and the caller must take turns."""
        if self._reader is None:
            return False
        self._reader.watch(fds)
        return True

    def next_due_s(self) -> float | None:
        """Seconds until :meth:`poll` has work even if no record comes (a rescan
        of a new process, a call whose chunks stopped, a background search to
        pick up); None when nothing is scheduled, so an idle agent can sleep."""
        if self._bpf is None:
            return None
        if self._exe_scan is not None or self.runtimes.busy():
            return BACKGROUND_POLL_S
        now = time.monotonic()
        due = self.tracker.next_rescan()
        due = None if due is None else due - now
        if self._partials:
            oldest = min(p.started for p in self._partials.values()) + PARTIAL_TIMEOUT_S - now
            due = oldest if due is None else min(due, oldest)
        return None if due is None else max(due, 0.0)

    def _sync_clock(self) -> None:
        # bpf_ktime_get_ns() is CLOCK_MONOTONIC; re-read so NTP steps follow.
        self._clock_offset = time.clock_gettime_ns(time.CLOCK_REALTIME) - time.clock_gettime_ns(
            time.CLOCK_MONOTONIC
        )

    def poll(self, timeout_ms: int = 100) -> None:
        """Drain the ring buffer (waiting up to timeout_ms) and deliver events."""
        if self._bpf is None:
            return
        self._read_ring(timeout_ms)
        self._sync_clock()
        self._take_exe_scan()
        self._process_records()
        self._take_runtimes()
        # Late looks at new processes' maps: libraries they loaded since exec.
        for pid in self.tracker.due_rescans():
            self._rescan(pid)
        self._flush_stale_partials()

    def _process_records(self) -> None:
        # The commonest record, a whole SSL call with no flags for a thread
        # holding no partial call, is delivered inline: this loop runs once
        # per record (a streamed call is ~100 of them), and the calls through
        # _on_data and _deliver cost more than the record's own work.
        stats = self._stats
        partials = self._partials
        open_conns = self._open_conns
        on_event = self.on_event
        offset = self._clock_offset
        directions = _DIRECTIONS
        no_flags = EventFlag.NONE
        while self._records:
            records, self._records = self._records, []
            events = nbytes = 0
            try:
                for hdr, payload in records:
                    kind = hdr[8]
                    if kind == EV_DATA:
                        ts, conn, pid, tid, total, chunk_offset, _n, flags, _kind, direction = hdr
                        if (chunk_offset or flags & 0x7 or len(payload) < total or not payload
                                or (partials and (pid, tid) in partials)):
                            self._on_data(hdr, payload)
                            continue
                        conns = open_conns.get(pid)
                        if conns is None:
                            open_conns[pid] = {conn}
                        else:
                            conns.add(conn)
                        events += 1
                        nbytes += len(payload)
                        on_event(DataEvent(ts + offset, pid, tid, conn, directions[direction], payload, no_flags))
                    elif kind == EV_CLOSE:
                        self._on_close(hdr[2], hdr[3], hdr[1], hdr[0])
                    elif kind == EV_PROC:
                        self._on_proc(hdr[2], payload, hdr[0])
                    elif kind == EV_EXEC:
                        self._on_exec(hdr[2], payload, hdr[0])
                    elif kind == EV_EXIT:
                        self._on_exit(hdr[2], hdr[0])
            finally:
                stats["events"] += events
                stats["bytes"] += nbytes

    def _on_data(self, hdr: tuple, payload: bytes) -> None:
        ts, conn, pid, tid, total, offset, _n, flags, _kind, _dir = hdr
        key = (pid, tid)
        p = self._partials.get(key)
        if offset == 0:
            if p is not None:  # previous call of this thread never completed
                self._emit_partial(key, p, EventFlag.TRUNCATED)
            if len(payload) >= total or len(payload) >= self.max_call_bytes:
                # The whole call in one record (nearly every call): no
                # reassembly buffer, no second copy.
                self._deliver(hdr, payload, flags)
                return
            expect = min(total, self.max_call_bytes)
            p = _Partial(hdr, expect, flags)
            self._partials[key] = p
        elif p is None or p.hdr[1] != conn or offset != len(p.buf):
            # middle of a call whose start we lost
            if p is not None:
                self._emit_partial(key, p, EventFlag.TRUNCATED)
            self._stats["partial_dropped"] += 1
            return
        p.buf += payload
        p.flags |= flags
        if len(p.buf) >= p.expect:
            self._emit_partial(key, p, EventFlag.NONE)

    def _emit_partial(self, key: tuple[int, int], p: _Partial, extra: EventFlag) -> None:
        self._partials.pop(key, None)
        self._deliver(p.hdr, bytes(p.buf), p.flags | extra)

    def _deliver(self, hdr: tuple, data: bytes, flags: int) -> None:
        ts, conn, pid, tid, total, _o, _n, _f, _k, direction = hdr
        flags &= 0x7
        if len(data) < total:
            flags |= EventFlag.TRUNCATED
        if not data:
            return
        stats = self._stats
        if flags:
            if flags & EventFlag.TRUNCATED:
                stats["truncated"] += 1
            if flags & EventFlag.GAP:
                stats["gaps"] += 1
        stats["events"] += 1
        stats["bytes"] += len(data)
        opened = self._open_conns.get(pid)
        if opened is None:
            opened = self._open_conns[pid] = set()
        opened.add(conn)
        self.on_event(DataEvent(ts + self._clock_offset, pid, tid, conn, _DIRECTIONS[direction], data, _FLAGS[flags]))

    def _flush_stale_partials(self, force: bool = False) -> None:
        if not self._partials:
            return
        limit = time.monotonic() - (0 if force else PARTIAL_TIMEOUT_S)
        for key, p in list(self._partials.items()):
            if p.started <= limit:
                self._emit_partial(key, p, EventFlag.TRUNCATED)

    def _close_event(self, pid: int, tid: int, conn: int, ts: int) -> None:
        self._stats["closes"] += 1
        self.on_event(
            DataEvent(
                ts_ns=ts + self._clock_offset,
                pid=pid,
                tid=tid,
                conn=conn,
                direction=Direction.SEND,  # no meaning for CLOSE
                data=b"",
                flags=EventFlag.CLOSE,
            )
        )

    def _on_close(self, pid: int, tid: int, conn: int, ts: int) -> None:
        # Flush this connection's pending chunks first, keep order.
        for key, p in [(k, p) for k, p in self._partials.items() if k[0] == pid and p.hdr[1] == conn]:
            self._emit_partial(key, p, EventFlag.TRUNCATED)
        ign = self._ignored.get(pid)
        if ign:
            ign.discard(conn)
        opened = self._open_conns.get(pid)
        # SSL_shutdown then SSL_free: one CLOSE; SSLs never seen: none.
        if opened and conn in opened:
            opened.discard(conn)
            self._close_event(pid, tid, conn, ts)

    def _on_proc(self, pid: int, comm: bytes, ts: int) -> None:
        """A process's first call follows: hand in who it is (its comm if it is gone)."""
        if self.on_process is None or not comm:
            return
        self._stats["process_names"] += 1
        self.on_process(pid, self._names.identity(pid, comm_text(comm), ts + self._clock_offset))

    def _on_exec(self, pid: int, comm: bytes = b"", ts: int = 0) -> None:
        self._stats["execs"] += 1
        if self.on_process is not None and comm:
            # Before on_exec: it forgets what was known of the pid but keeps an
            # identity handed in for a process gone from /proc (this one, if
            # it exited before its records were read); a live one is read anew.
            self._names.exited(pid)  # a new program: a new stand-in start time
            self.on_process(pid, self._names.gone(pid, comm_text(comm), ts + self._clock_offset))
        # An exec replaces the image: old SSL* values mean nothing now.
        self._forget_pid(pid, close_ts=None)
        if self.on_exec is not None:
            self.on_exec(pid)
        if pid in self.exclude:
            # Filtered out (the gate decided in on_exec): its TLS is dropped
            # in the kernel, so neither its executable nor its maps (three
            # /proc rescans) can give us anything.  A library it loads that
            # a captured process also uses is found in that one's maps.
            self._stats["execs_excluded"] += 1
            return
        new = self.tracker.on_exec(pid)
        if not new:
            self._consider_runtime(pid)
        if self.options.attach_mode == "global":
            for t in new:
                self._attach(t, -1)
        elif self._included(pid):
            # Arm before the process maps its libraries: the kernel puts the
            # breakpoints in when it mmaps the file.
            for t in list(self.tracker.targets.values()):
                self._attach(t, pid)

    def _rescan(self, pid: int) -> None:
        used, new = self.tracker.scan_pid(pid)
        if self.options.attach_mode == "global":
            for t in new:
                self._attach(t, -1)
        elif self._included(pid):
            for t in used:
                self._attach(t, pid)

    def _forget_pid(self, pid: int, close_ts: int | None) -> None:
        for key in [k for k in self._partials if k[0] == pid]:
            self._emit_partial(key, self._partials[key], EventFlag.TRUNCATED)
        opened = self._open_conns.pop(pid, set())
        if close_ts is not None:
            for conn in sorted(opened):
                self._close_event(pid, pid, conn, close_ts)
        ign = self._ignored.pop(pid, set())
        if ign and self._bpf is not None:
            table = self._bpf.maps["ignored_conns"]
            for conn in ign:
                table.delete(_CONN_KEY.pack(pid, 0, conn))

    def _on_exit(self, pid: int, ts: int) -> None:
        self._stats["exits"] += 1
        self._names.exited(pid)
        self._forget_pid(pid, close_ts=ts)
        self.tracker.on_exit(pid)
        if self.options.attach_mode == "per-process":
            for tkey, p in [k for k in self._attached if k[1] == pid]:
                self._detach(tkey, p)
        # The pid may be reused by an unrelated process.
        self.include_pid(pid)

    # -- Go and Bun (runtimes.py) ---------------------------------------------
    def _consider_runtime(self, pid: int) -> None:
        """Queue the executable of ``pid`` for analysis unless it is a known target."""
        path = self.tracker.runtime_candidate(pid)
        if path is not None:
            self.runtimes.submit(path)

    def _take_runtimes(self) -> None:
        for res in self.runtimes.take():
            if res.probes:
                self._add_runtime_target(res)

    def _add_runtime_target(self, res: RuntimeResult) -> None:
        plan = [(f"{res.runtime}@{p.addr:#x}", p.addr, p.fn, p.ret_fn) for p in res.probes]
        t = self.tracker.add_runtime(res.path, res.dev, res.inode, res.runtime, plan)
        if t is None:
            return
        if self.options.attach_mode == "global":
            self._attach(t, -1)
        else:
            for pid in sorted(t.pids):
                if self._included(pid):
                    self._attach(t, pid)

    def tls_not_found(self) -> list[str]:
        """Executables with TLS of their own we could not probe, with the reason."""
        return self.runtimes.not_found_lines()

    # -- introspection -------------------------------------------------------
    def _counter(self, idx: int) -> int:
        if self._bpf is None:
            return 0
        return self._bpf.maps["counters"].sum_u64(_COUNTER.pack(idx))

    def stats(self) -> dict[str, int]:
        s = dict(self._stats)
        s["lost"] = self._counter(CNT_LOST)
        s["kernel_truncated"] = self._counter(CNT_TRUNCATED)
        s["args_map_full"] = self._counter(CNT_ARGS_FULL)
        s["ignored_calls"] = self._counter(CNT_IGNORED)
        s["targets_attached"] = len({k[0] for k in self._attached})
        s["probes_attached"] = sum(len(v) for v in self._attached.values())
        # Executables the analysis process gave no answer for, or that found its queue full.
        s["runtime_analysis_failed"] = self.runtimes.failed
        s["runtime_analysis_dropped"] = self.runtimes.dropped
        if self._reader is not None:
            # How well records are batched: records / ring_reads per read.
            s["ring_wakeups"] = self._reader.wakeups
            s["ring_reads"] = self._reader.reads
        return s

    def targets(self) -> list[AttachedTarget]:
        out = []
        by_target: dict[tuple[int, int], list[int]] = {}
        nprobes: dict[tuple[int, int], int] = {}
        for (tkey, pid), probes in self._attached.items():
            by_target.setdefault(tkey, []).append(pid)
            nprobes[tkey] = nprobes.get(tkey, 0) + len(probes)
        for tkey, pids in by_target.items():
            t = self.tracker.targets[tkey]
            if -1 in pids:
                out.append(AttachedTarget(t.path, t.kind, "global", tuple(sorted(t.pids)), nprobes[tkey]))
            else:
                out.append(AttachedTarget(t.path, t.kind, "per-process", tuple(sorted(pids)), nprobes[tkey]))
        return sorted(out, key=lambda a: a.path)
