"""Executables with TLS of their own that export no SSL_write: Go and Bun.

At exec the capture hands each new executable (by device + inode) to
``RuntimeAnalyser``, which has it looked at off the hot path, in a process
of its own (``runtime_analysis.py`` says why):

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
import pickle
import queue
import select
import subprocess
import sys
import threading
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("lumen_agent.capture")

# Executables waiting for the worker; more than this at once (an exec storm
# of new binaries) are dropped and counted, they are looked at on next exec.
MAX_QUEUED = 1024
# Files remembered as already looked at; past this the memory is cleared and
# a file seen again is looked at again (cheap for non-Go/Bun files).
MAX_SEEN_FILES = 65536
# The analysis process exits after this long with nothing to look at (a
# host's executables are looked at once; then it would only hold memory).
PROCESS_IDLE_S = 30.0
# One executable's analysis, start-up included (bun's 107 MB: 0.4-1 s here);
# past this the process is killed and the file counted as failed.
ANALYSIS_TIMEOUT_S = 120.0
# Below the agent's CPU priority: capture comes first, analysis can wait.
ANALYSIS_NICE = 10
# close(): an analysis under way may take this long before the agent stops
# without it (the process then exits at the end of its input).
CLOSE_WAIT_S = 5.0


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


class AnalysisFailed(Exception):
    """The analysis process died, timed out or answered nonsense."""


class AnalysisProcess:
    """One ``python -m lumen_agent.capture.runtime_analysis``: a request, then its reply."""

    def __init__(self) -> None:
        self._proc = subprocess.Popen([sys.executable, "-m", "lumen_agent.capture.runtime_analysis"],
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE)

    def analyse(self, path: str, cache: dict[str, RuntimeResult]) -> tuple[RuntimeResult | None, str | None]:
        """(result, error) for ``path``; :class:`AnalysisFailed` when no answer came."""
        try:
            pickle.dump((path, cache), self._proc.stdin, protocol=pickle.HIGHEST_PROTOCOL)
            self._proc.stdin.flush()
            ready, _, _ = select.select([self._proc.stdout], [], [], ANALYSIS_TIMEOUT_S)
            if not ready:
                raise AnalysisFailed(f"no answer within {ANALYSIS_TIMEOUT_S:.0f} s")
            reply: Any = pickle.load(self._proc.stdout)
        except (OSError, EOFError, pickle.UnpicklingError) as exc:
            raise AnalysisFailed(f"the analysis process exited ({self._proc.poll()}): {exc}") from None
        if not (isinstance(reply, tuple) and len(reply) == 2):
            raise AnalysisFailed(f"unexpected reply {type(reply).__name__}")
        return reply

    def close(self) -> None:
        """End of input: it finishes and exits (killed if it does not)."""
        try:
            self._proc.stdin.close()
            self._proc.wait(5)
        except (OSError, subprocess.TimeoutExpired):
            self.kill()

    def kill(self) -> None:
        self._proc.kill()
        self._proc.wait()


class RuntimeAnalyser:
    """Queues executables; a worker thread has each analysed by the analysis
    process (started on demand, let go when idle); the capture polls results."""

    def __init__(self) -> None:
        self._queue: queue.Queue[str | None] = queue.Queue(MAX_QUEUED)
        self._results: list[RuntimeResult] = []
        self._lock = threading.Lock()
        self._seen: set[tuple[int, int, int]] = set()  # (dev, inode, mtime) queued once
        self.cache: dict[str, RuntimeResult] = {}  # build id -> last result
        self.not_found: dict[tuple[int, int], RuntimeResult] = {}
        self.dropped = 0
        self.analysed = 0
        self.failed = 0  # files the analysis process gave no answer for
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

    def close(self) -> None:
        """Let the analysis process go (what is still queued is not looked at)."""
        if self._thread is not None:
            try:
                self._queue.put_nowait(None)
            except queue.Full:
                return  # the daemon worker goes with the agent; the process, at end of its input
            self._thread.join(CLOSE_WAIT_S)

    def _run(self) -> None:
        worker: AnalysisProcess | None = None
        while True:
            try:
                path = self._queue.get(timeout=PROCESS_IDLE_S if worker is not None else None)
            except queue.Empty:
                worker.close()
                worker = None
                continue
            try:
                if path is None:
                    if worker is not None:
                        worker.close()
                    return
                worker = self._analyse(worker, path)
            finally:
                # After the result is in: busy() never sees neither.
                self._queue.task_done()

    def _analyse(self, worker: AnalysisProcess | None, path: str) -> AnalysisProcess | None:
        """Analyse ``path``; the process to use next (None: start a new one)."""
        try:
            if worker is None:
                worker = AnalysisProcess()
            res, error = worker.analyse(path, self.cache)
        except (AnalysisFailed, OSError) as exc:
            self.failed += 1
            log.warning("runtime analysis failed path=%s error=%s", path, exc)
            if worker is not None:
                worker.kill()
            return None
        if error is not None:
            log.debug("runtime analysis failed path=%s error=%s", path, error)
            return worker
        self.analysed += 1
        if res is None:
            return worker
        if res.build_id and res.probes:
            self.cache[res.build_id] = res
        with self._lock:
            self._results.append(res)
        return worker

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
