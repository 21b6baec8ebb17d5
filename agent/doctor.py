"""``lumen-agent doctor``: every prerequisite of capture, each with a fix."""

from __future__ import annotations

import os
import re
from pathlib import Path

from lumen_agent.capture import kernel_setup
from lumen_agent.capture.kernel_setup import Check


def _libssl_by_process(limit: int = 200) -> dict[str, list[int]]:
    """TLS libraries mapped now, with the pids mapping them (a sample)."""
    found: dict[str, list[int]] = {}
    pattern = re.compile(r"\s(/\S*libssl\.so[^\s]*)$")
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/maps") as f:
                for line in f:
                    m = pattern.search(line.rstrip("\n"))
                    if m:
                        pids = found.setdefault(m.group(1), [])
                        if int(entry.name) not in pids and len(pids) < limit:
                            pids.append(int(entry.name))
        except OSError:
            continue
    return found


def run_checks(db_path: Path) -> list[Check]:
    checks = kernel_setup.check_prerequisites()
    libs = _libssl_by_process()
    if libs:
        detail = "; ".join(f"{path} ({len(pids)} processes)" for path, pids in sorted(libs.items()))
        checks.append(Check("tls libraries", True, detail))
    else:
        checks.append(Check("tls libraries", False, "no process maps a libssl now",
                            "start a TLS client, or it will be found when it starts"))
    checks.append(_database_check(db_path))
    checks.extend(_runtime_checks())
    return checks


def _runtime_checks() -> list[Check]:
    """Go/Bun executables the running agent could not probe (it analyses them at exec)."""
    from lumen_agent.runner import read_status

    status = read_status()
    if status is None:
        return []
    missing = status.get("tls_not_found") or []
    if not missing:
        return [Check("tls runtimes", True, "every Go/Bun executable seen so far is probed")]
    return [Check("tls runtimes", False, "; ".join(f"TLS functions not found: {m}" for m in missing),
                  "this build's TLS code matches no known pattern: its calls are not captured "
                  "(see docs/runtimes.md)")]


def _database_check(db_path: Path) -> Check:
    directory = db_path.parent
    probe = directory
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if os.access(probe, os.W_OK) and (not db_path.exists() or os.access(db_path, os.W_OK)):
        return Check("database writable", True, str(db_path))
    return Check("database writable", False, f"cannot write {db_path}",
                 "run as root or pass --db with a writable path")
