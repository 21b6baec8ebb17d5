"""The kernel's name of a process (EXEC and PROC records) reaching attribution.

Records are made here with the layout of bpf/events.h and handed to
EbpfCapture's record loop (no BPF needed); attribution is the real one,
reading the real /proc: a pid of a process that exited, and this process.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from lumen_agent.capture.ebpf import EV_EXEC, EV_PROC, HDR, CaptureOptions, EbpfCapture
from lumen_agent.capture.kernel_comm import KernelIdentities, comm_text
from lumen_agent.pipeline.attribution import Attribution, ProcessIdentity, ProcessInfo

MY_COMM = Path("/proc/self/comm").read_text().strip()
MY_EXE = os.path.realpath("/proc/self/exe")


def gone_pid() -> int:
    p = subprocess.Popen(["true"])
    p.wait()
    assert not os.path.exists(f"/proc/{p.pid}")
    return p.pid


def record(kind: int, pid: int, comm: bytes, ts: int = 1_000) -> tuple[tuple, bytes]:
    raw = comm.ljust(16, b"\0")
    hdr = HDR.unpack(HDR.pack(ts, 0, pid, pid, 0, 0, len(raw), 0, kind, 0))
    return hdr, raw


@pytest.fixture
def agent():
    """An EbpfCapture wired to an Attribution the way agent_main wires them; calls logged in order."""
    attribution = Attribution()
    calls: list[tuple[str, int]] = []

    def on_exec(pid):  # runner.Agent._on_exec: forget, then the gate observes
        calls.append(("exec", pid))
        attribution.forget(pid)
        attribution.observe(pid)

    def on_process(pid, identity):
        calls.append(("process", pid))
        attribution.remember(identity)

    cap = EbpfCapture(lambda ev: None, CaptureOptions(scan_executables=False), on_exec=on_exec,
                      on_process=on_process, identify=attribution.identify)

    def feed(*records):
        cap._records = list(records)
        cap._process_records()

    return cap, attribution, calls, feed


def test_comm_text_stops_at_the_nul():
    assert comm_text(b"curl\0\0\0\0\0\0\0\0\0\0\0\0") == "curl"
    assert comm_text(b"0123456789abcde\0") == "0123456789abcde"


def test_exec_of_a_process_gone_from_proc_keeps_the_kernels_name(agent):
    cap, attribution, calls, feed = agent
    pid = gone_pid()
    feed(record(EV_EXEC, pid, b"curl"))
    # Handed in before the run loop's exec handling, which keeps it (the process is gone).
    assert calls == [("process", pid), ("exec", pid)]
    assert attribution.lookup(pid) == ProcessInfo(process="curl")


def test_first_call_of_a_process_gone_from_proc_is_named_by_the_kernel(agent):
    cap, attribution, calls, feed = agent
    pid = gone_pid()
    feed(record(EV_PROC, pid, b"curl"))
    assert calls == [("process", pid)]
    assert attribution.lookup(pid) == ProcessInfo(process="curl")
    assert cap.stats()["process_names"] == 1


@pytest.mark.parametrize("kind", [EV_EXEC, EV_PROC], ids=["exec", "first call"])
def test_a_live_process_is_read_from_proc(agent, kind):
    cap, attribution, calls, feed = agent
    feed(record(kind, os.getpid(), MY_COMM.encode()))
    info = attribution.lookup(os.getpid())
    assert (info.process, info.exe) == (MY_COMM, MY_EXE)


def test_a_pid_that_now_runs_another_program_is_named_by_the_kernel(agent):
    cap, attribution, calls, feed = agent
    feed(record(EV_PROC, os.getpid(), b"curl"))
    assert attribution.lookup(os.getpid()) == ProcessInfo(process="curl")


def test_kernel_identities_one_per_gone_process():
    names = KernelIdentities(identify=lambda pid: None)
    first = names.identity(4242, "curl", 5_000_000_000)
    assert first == ProcessIdentity(4242, 5.0, ProcessInfo(process="curl"))
    assert names.identity(4242, "curl", 9_000_000_000) is first  # the same (pid, start) for all its calls
    assert names.identity(4242, "wget", 9_000_000_000).start == 9.0  # another program on the pid
    names.exited(4242)
    assert names.identity(4242, "wget", 12_000_000_000).start == 12.0
