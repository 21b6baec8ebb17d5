"""Locating TLS functions in Go and Bun executables (no probes: pure file analysis).

Go binaries are built here with Debian's Go and checked against the Go
toolchain's own view of them (`go tool objdump`, `go tool nm`); Bun comes from
npm (tests/support/bun_client.py).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from elftools.elf.elffile import ELFFile
from support import bun_client, go_client

from lumen_agent.capture import boringssl, go_tls, runtime_analysis, runtimes

# ------------------------------------------------------------------------- Go


@pytest.fixture(scope="module")
def go_builds(tmp_path_factory) -> dict[str, Path]:
    reason = go_client.go_missing()
    if reason:
        pytest.skip(reason)
    d = tmp_path_factory.mktemp("go")
    return {"symtab": go_client.build(d / "plain"), "stripped": go_client.build(d / "stripped", stripped=True)}


def _toolchain_view(exe: Path) -> tuple[dict[str, int], list[int]]:
    """(function -> address) from `go tool nm`, RET addresses of Read from `go tool objdump`."""
    nm = subprocess.run(["go", "tool", "nm", str(exe)], capture_output=True, text=True, check=True).stdout
    addrs = {}
    for line in nm.splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[2] in go_tls.WANTED:
            addrs[parts[2]] = int(parts[0], 16)
    dump = subprocess.run(["go", "tool", "objdump", "-s", r"^crypto/tls\.\(\*Conn\)\.Read$", str(exe)],
                          capture_output=True, text=True, check=True).stdout
    rets = [int(m.group(1), 16) for m in re.finditer(r"\s(0x[0-9a-f]+)\s+c3\s+RET", dump)]
    return addrs, rets


def _analyse(path: Path) -> go_tls.GoTlsProbes | None:
    with open(path, "rb") as f:
        return go_tls.analyse(ELFFile(f))


def test_go_symtab_matches_the_go_toolchain(go_builds):
    p = _analyse(go_builds["symtab"])
    addrs, rets = _toolchain_view(go_builds["symtab"])
    assert p is not None and p.source == "symtab"
    assert p.go_version.startswith("go1.")
    assert (p.write_entry, p.read_entry, p.close_entry) == (
        addrs[go_tls.WRITE_FUNC], addrs[go_tls.READ_FUNC], addrs[go_tls.CLOSE_FUNC])
    assert list(p.read_returns) == rets and len(rets) >= 2


def test_go_stripped_binary_is_read_from_gopclntab(go_builds):
    stripped = go_builds["stripped"]
    with open(stripped, "rb") as f:
        assert ELFFile(f).get_section_by_name(".symtab") is None
    p = _analyse(stripped)
    assert p is not None and p.source == "gopclntab"
    # The same program linked without symbols: same code, so the same layout as the
    # symtab build, whose addresses the toolchain confirms.
    full = _analyse(go_builds["symtab"])
    assert (p.write_entry, p.read_entry, p.read_returns, p.close_entry) == (
        full.write_entry, full.read_entry, full.read_returns, full.close_entry)


def test_go_before_1_17_is_reported_not_probed(go_builds, monkeypatch):
    monkeypatch.setattr(go_tls, "go_version", lambda elf: "go1.16.15")
    with pytest.raises(go_tls.GoAnalysisError, match="stack"):
        _analyse(go_builds["symtab"])
    res = runtime_analysis.analyse_file(str(go_builds["symtab"]))
    assert res.runtime == "go" and res.probes == () and "Go < 1.17" in res.reason


def test_not_go_and_not_bun():
    assert runtime_analysis.analyse_file(shutil.which("ls")) is None
    assert go_tls.version_tuple("go1.19.8") == (1, 19) and go_tls.version_tuple("devel") is None


@pytest.mark.parametrize("cut", [64, 4096, 1 << 20])
def test_truncated_go_binary_gives_no_crash(go_builds, tmp_path, cut):
    data = go_builds["stripped"].read_bytes()[:cut]
    bad = tmp_path / "truncated"
    bad.write_bytes(data)
    try:
        res = runtime_analysis.analyse_file(str(bad))
    except Exception as exc:  # noqa: BLE001
        pytest.fail(f"analyse_file raised {exc!r}")
    assert res is None or res.probes == ()


def test_go_analysis_is_cached_by_build_id(go_builds):
    first = runtime_analysis.analyse_file(str(go_builds["symtab"]))
    cache = {first.build_id: first}
    again = runtime_analysis.analyse_file(str(go_builds["symtab"]), cache)
    assert first.build_id and again.probes == first.probes and again.detail.endswith("cached")


def test_analyser_looks_at_a_file_once(go_builds):
    a = runtimes.RuntimeAnalyser()
    a.submit(str(go_builds["symtab"]))
    a.submit(str(go_builds["symtab"]))
    deadline = time.monotonic() + 30
    got: list[runtimes.RuntimeResult] = []
    while time.monotonic() < deadline and not got:
        got = a.take()
        time.sleep(0.05)
    time.sleep(0.3)
    got += a.take()
    assert [r.runtime for r in got] == ["go"] and a.analysed == 1
    assert a.not_found_lines() == []
    a.close()



def _analysis_processes() -> list[psutil.Process]:
    """Our analysis processes, exited and not yet reaped ones included."""
    found = []
    for c in psutil.Process().children():
        try:
            if "lumen_agent.capture.runtime_analysis" in " ".join(c.cmdline()):
                found.append(c)
        except psutil.ZombieProcess:
            found.append(c)
        except psutil.NoSuchProcess:
            pass
    return found


def _take_one(a: runtimes.RuntimeAnalyser, timeout: float = 30) -> list[runtimes.RuntimeResult]:
    """What the analyser has for the file submitted last, once it has it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = a.take()
        if got or not a.busy():
            return got
        time.sleep(0.05)
    raise AssertionError("no analysis within the timeout")


def test_the_analysis_process_goes_when_idle_and_comes_back_when_needed(go_builds, tmp_path, monkeypatch):
    monkeypatch.setattr(runtimes, "PROCESS_IDLE_S", 1.0)
    a = runtimes.RuntimeAnalyser()
    a.submit(str(go_builds["symtab"]))
    assert [r.runtime for r in _take_one(a)] == ["go"]
    assert len(_analysis_processes()) == 1
    deadline = time.monotonic() + 10
    while _analysis_processes() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _analysis_processes() == []  # exited, and reaped
    copy = tmp_path / "again"
    shutil.copy2(go_builds["stripped"], copy)
    a.submit(str(copy))
    got = _take_one(a)
    assert [(r.path, r.runtime, bool(r.probes)) for r in got] == [(str(copy), "go", True)]
    assert (a.analysed, a.failed) == (2, 0)
    a.close()
    assert _analysis_processes() == []


def test_an_analysis_that_gives_no_answer_is_counted_and_the_next_file_still_analysed(go_builds, monkeypatch):
    monkeypatch.setattr(runtimes, "ANALYSIS_TIMEOUT_S", 0.001)  # no process answers that fast
    a = runtimes.RuntimeAnalyser()
    a.submit(str(go_builds["symtab"]))
    assert _take_one(a) == [] and (a.analysed, a.failed) == (0, 1)
    assert _analysis_processes() == []  # killed
    monkeypatch.setattr(runtimes, "ANALYSIS_TIMEOUT_S", 120.0)
    a.submit(str(go_builds["stripped"]))
    assert [r.runtime for r in _take_one(a)] == ["go"] and (a.analysed, a.failed) == (1, 1)
    a.close()


def test_the_capture_process_does_not_import_pyelftools_or_capstone():
    code = ("import sys, lumen_agent.run_process, lumen_agent.capture.ebpf, lumen_agent.capture.elf_offsets; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'elftools', 'capstone'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"

# ------------------------------------------------------------------------- Bun


@pytest.fixture(scope="module")
def bun() -> Path:
    reason = bun_client.bun_missing()
    if reason:
        pytest.skip(reason)
    try:
        return bun_client.ensure_bun()
    except Exception as exc:  # noqa: BLE001
        pytest.skip(f"cannot install bun from npm: {exc}")


def test_hex_pattern():
    pat = boringssl._hex_pattern("55 ?? e5")
    assert pat.fullmatch(b"\x55\x00\xe5") and pat.fullmatch(b"\x55\n\xe5") and not pat.fullmatch(b"\x55\x00\xe6")


def test_bun_functions_are_the_verified_ones(bun):
    res = runtime_analysis.analyse_file(str(bun))
    assert res is not None and res.runtime == "bun", res
    data = json.loads(boringssl.PATTERNS_FILE.read_text())
    verified = {v["build_id"]: v for p in data["patterns"] for v in p["verified_on"]}
    v = verified[res.build_id]
    assert v["bun"] == bun_client.BUN_VERSION
    write, read = res.probes
    assert (write.addr, read.addr) == (int(v["SSL_write"], 16), int(v["SSL_read"], 16))
    assert (write.fn, write.ret_fn, read.fn, read.ret_fn) == (
        "probe_write_enter", "probe_rw_return", "probe_read_enter", "probe_rw_return")
    assert f"SSL_do_handshake {v['SSL_do_handshake']}" in res.detail


def test_bun_compiled_executable_shares_the_cached_result(bun, tmp_path):
    exe = bun_client.compile_script(bun, tmp_path)
    first = runtime_analysis.analyse_file(str(bun))
    res = runtime_analysis.analyse_file(str(exe), {first.build_id: first})
    assert res.build_id == first.build_id and res.probes == first.probes


def test_altered_bun_is_not_probed_even_with_a_cached_result(bun, tmp_path):
    good = runtime_analysis.analyse_file(str(bun))
    copy = tmp_path / "bun-altered"
    shutil.copy2(bun, copy)
    with open(copy, "r+b") as f:
        text = ELFFile(f).get_section_by_name(".text")
        for probe in good.probes:
            f.seek(probe.addr - text["sh_addr"] + text["sh_offset"])
            f.write(bytes.fromhex("55488bec"))  # same instructions, other encoding
    for cache in (None, {good.build_id: good}):
        res = runtime_analysis.analyse_file(str(copy), cache)
        assert res.runtime == "bun" and res.probes == ()
        assert res.reason.startswith("no known BoringSSL pattern matches"), res.reason
    a = runtimes.RuntimeAnalyser()
    a.not_found[(res.dev, res.inode)] = res
    assert a.not_found_lines() == [f"{copy} ({good.build_id}): {res.reason}"]
