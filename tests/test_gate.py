"""The process gate: filters decided once per process, and the process always
observed on first sight (it may exit before its call completes)."""

from __future__ import annotations

import os
import subprocess
import sys

from lumen_agent.pipeline.attribution import Attribution
from lumen_agent.pipeline.filters import ProcessFilter
from lumen_agent.pipeline.gate import ProcessGate


def test_a_process_seen_by_the_gate_stays_attributed_after_it_exits():
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    attribution = Attribution()
    gate = ProcessGate(ProcessFilter(), attribution)  # no filters at all
    assert gate.allows(child.pid)
    child.stdin.close()
    child.wait(10)
    info = attribution.lookup(child.pid)
    assert info.exe == os.path.realpath(sys.executable)
    assert info.process == os.path.basename(sys.executable)[:15]  # comm: the name it was run by


def test_excluded_once_then_decided_again_after_exec():
    excluded = []
    attribution = Attribution()
    gate = ProcessGate(ProcessFilter(exclude={"process": ("pytho*",)}), attribution, on_exclude=excluded.append)
    me = os.getpid()
    assert not gate.allows(me) and not gate.allows(me)
    assert excluded == [me]  # decided (and reported) once
    assert gate.forget(me) is True  # it exec'd: decide afresh
    assert not gate.allows(me)
    assert excluded == [me, me]
