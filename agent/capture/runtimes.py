"""Executables with TLS of their own that export no SSL_write: Go and Bun.

At exec the capture hands each new executable (by device + inode) to
``RuntimeAnalyser``, which looks at it on a worker thread, off the hot path:

* a Go program (``.go.buildinfo``) that links crypto/tls -> probes on
  ``crypto/tls.(*Conn).Write/Read/Close`` (``go_tls.py``);
* a Bun executable (``bun`` itself or one made by ``bun build --compile``)
  -> BoringSSL's ``SSL_write``/``SSL_read`` located by prologue patterns
  (``boringssl.py``), probed like OpenSSL's.

Results are cached by build id, so a binary is analysed at most once however
many copies of it run (``bun build --compile`` output shares bun's build id:
only its bytes at the cached addresses are re-checked).  A binary that looks
like one of these runtimes but cannot be probed is remembered with its reason
and shown by ``status`` and ``doctor`` as "TLS functions not found".
"""

from __future__ import annotations

import logging
import os
import queue
import struct
import threading
import time
from dataclasses import dataclass

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile

from lumen_agent.capture import boringssl, go_tls

log = logging.getLogger("lumen_agent.capture")

# Executables waiting for the worker; more than this at once (an exec storm
# of new binaries) are dropped and counted, they are looked at on next exec.
MAX_QUEUED = 1024
# Files remembered as already looked at; past this the memory is cleared and
# a file seen again is looked at again (cheap for non-Go/Bun files).
MAX_SEEN_FILES = 65536


@dataclass(frozen=True, slots=True)
class ProbeSpec:
    """One uprobe: at ``addr`` (ELF virtual address) run BPF function ``fn``."""

    addr: int
    fn: str
    ret_fn: str | None = None  # a uretprobe too (C functions only, never Go)


@dataclass(frozen=True, slots=True)
class RuntimeResult:
    path: str
    dev: int
    inode: int
    runtime: str  # "go" or "bun"
    build_id: str
    probes: tuple[ProbeSpec, ...]  # empty: not probeable, see `reason`
    reason: str = ""
    detail: str = ""  # e.g. "go1.19.8, gopclntab" or "bun 1.4.5, pattern bun-1.4"
    seconds: float = 0.0  # analysis time


def build_id(elf: ELFFile) -> str:
    """GNU build id, else Go build id, else "" (then the cache is by file only)."""
    for name in (".note.gnu.build-id", ".note.go.buildid"):
        sec = elf.get_section_by_name(name)
        if sec is None:
            continue
        for note in sec.iter_notes():
            desc = note["n_desc"]
            if isinstance(desc, bytes):
                return desc.hex() if name.endswith("build-id") else desc.decode("ascii", "replace")
            return str(desc)
    return ""


def go_probe_specs(p: go_tls.GoTlsProbes) -> tuple[ProbeSpec, ...]:
    specs = [ProbeSpec(p.write_entry, "go_write_enter"), ProbeSpec(p.read_entry, "go_read_enter")]
    specs += [ProbeSpec(a, "go_read_return") for a in p.read_returns]
    if p.close_entry is not None:
        specs.append(ProbeSpec(p.close_entry, "go_close_enter"))
    return tuple(specs)


def analyse_file(path: str, cache: dict[str, RuntimeResult] | None = None) -> RuntimeResult | None:
    """What to probe in ``path``; None when it is neither a Go TLS program nor Bun.

    A file that is not a readable ELF (truncated, corrupt, not an executable)
    is None too: it cannot be probed and it is nothing to report.
    """
    try:
        return _analyse_file(path, cache)
    except (ELFError, struct.error, ValueError, OSError):
        return None


def _analyse_file(path: str, cache: dict[str, RuntimeResult] | None) -> RuntimeResult | None:
    started = time.perf_counter()
    st = os.stat(path)
    with open(path, "rb") as f:
        elf = ELFFile(f)
        bid = build_id(elf)
        cached = cache.get(bid) if (cache is not None and bid) else None

        def result(runtime: str, probes: tuple[ProbeSpec, ...], reason: str = "", detail: str = "") -> RuntimeResult:
            return RuntimeResult(path, st.st_dev, st.st_ino, runtime, bid, probes, reason, detail,
                                 time.perf_counter() - started)

        if cached is not None and cached.runtime == "go":
            return result("go", cached.probes, cached.reason, cached.detail + ", cached")
        try:
            go = go_tls.analyse(elf)
        except go_tls.GoAnalysisError as exc:
            return result("go", (), str(exc))
        except Exception as exc:  # noqa: BLE001 - a corrupt file must not stop the worker
            if go_tls.go_version(elf) is None:
                go = None
            else:
                return result("go", (), f"cannot read Go tables: {exc}")
        if go is not None:
            return result("go", go_probe_specs(go), detail=f"{go.go_version}, {go.source}")
        if not boringssl.looks_like_bun(elf):
            return None
        found = boringssl.locate(elf, f, cached=cached)
        if isinstance(found, str):
            return result("bun", (), found)
        probes = (
            ProbeSpec(found.ssl_write, "probe_write_enter", "probe_rw_return"),
            ProbeSpec(found.ssl_read, "probe_read_enter", "probe_rw_return"),
        )
        return result("bun", probes, detail=found.describe())


class RuntimeAnalyser:
    """A worker thread that analyses executables; the capture polls results."""

    def __init__(self) -> None:
        self._queue: queue.Queue[str] = queue.Queue(MAX_QUEUED)
        self._results: list[RuntimeResult] = []
        self._lock = threading.Lock()
        self._seen: set[tuple[int, int, int]] = set()  # (dev, inode, mtime) queued once
        self.cache: dict[str, RuntimeResult] = {}  # build id -> last result
        self.not_found: dict[tuple[int, int], RuntimeResult] = {}
        self.dropped = 0
        self.analysed = 0
        self._thread: threading.Thread | None = None

    def submit(self, path: str) -> None:
        """Queue ``path`` unless this file was queued before (cheap: one stat)."""
        try:
            st = os.stat(path)
        except OSError:
            return
        key = (st.st_dev, st.st_ino, st.st_mtime_ns)
        if key in self._seen:
            return
        if len(self._seen) >= MAX_SEEN_FILES:
            self._seen.clear()
        self._seen.add(key)
        try:
            self._queue.put_nowait(path)
        except queue.Full:
            self.dropped += 1
            self._seen.discard(key)
            return
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="lumen-runtime-analysis", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while True:
            path = self._queue.get()
            try:
                self._analyse(path)
            finally:
                # After the result is in: busy() never sees neither.
                self._queue.task_done()

    def _analyse(self, path: str) -> None:
        try:
            res = analyse_file(path, self.cache)
        except Exception as exc:  # noqa: BLE001 - one bad file must not stop the worker
            log.debug("runtime analysis failed path=%s error=%s", path, exc)
            return
        self.analysed += 1
        if res is None:
            return
        if res.build_id and res.probes:
            self.cache[res.build_id] = res
        with self._lock:
            self._results.append(res)

    def busy(self) -> bool:
        """Files queued or being analysed, or results not yet taken."""
        return bool(self._results) or self._queue.unfinished_tasks > 0

    def take(self) -> list[RuntimeResult]:
        if not self._results:
            return []
        with self._lock:
            out, self._results = self._results, []
        for res in out:
            if res.probes:
                log.info("tls runtime found path=%s runtime=%s build_id=%s probes=%d detail=%s analysis_s=%.3f",
                         res.path, res.runtime, res.build_id, len(res.probes), res.detail, res.seconds)
            elif (res.dev, res.inode) not in self.not_found:
                log.warning("TLS functions not found path=%s runtime=%s build_id=%s reason=%s",
                            res.path, res.runtime, res.build_id, res.reason)
            if not res.probes:
                self.not_found[(res.dev, res.inode)] = res
        return out

    def not_found_lines(self) -> list[str]:
        """"EXE (build id): reason" for each executable we could not probe."""
        return [f"{r.path} ({r.build_id or 'no build id'}): {r.reason}"
                for r in sorted(self.not_found.values(), key=lambda r: r.path)]
