"""Analysing one executable for Go or Bun TLS, and the process that does it.

The analysis (pyelftools, and capstone for Go's return sites) runs in a
process of its own, ``python -m lumen_agent.capture.runtime_analysis``,
which ``runtimes.RuntimeAnalyser`` starts when an executable is waiting and
lets go when none has come for a while.  Why not a thread of the agent:
importing pyelftools keeps ~4.6 MB of code objects resident in the
agent for good, capstone (once a Go program was seen) 5.1 MB more, the
analysis of a 100 MB binary leaves its heap fragmented behind it, and its
Python work holds the GIL that capture needs.  The process reads pickled
``(path, cache)`` requests on stdin and writes a pickled ``(result, error)``
for each on stdout.
"""

from __future__ import annotations

import os
import pickle
import struct
import sys
import time

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile

from lumen_agent.capture import boringssl, go_tls
from lumen_agent.capture.runtimes import ANALYSIS_NICE, ProbeSpec, RuntimeResult
from lumen_agent.helper_process import become_helper


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


def main() -> int:
    out = become_helper(ANALYSIS_NICE)  # at the end of its input (the agent stopped) it exits
    requests = sys.stdin.buffer
    while True:
        try:
            path, cache = pickle.load(requests)
        except (EOFError, pickle.UnpicklingError, OSError):
            return 0
        try:
            reply = (analyse_file(path, cache), None)
        except Exception as exc:  # noqa: BLE001 - one bad file must not stop the others
            reply = (None, f"{type(exc).__name__}: {exc}")
        pickle.dump(reply, out, protocol=pickle.HIGHEST_PROTOCOL)
        out.flush()


if __name__ == "__main__":
    sys.exit(main())
