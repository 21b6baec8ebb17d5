"""Debian's tcpdump as a test fixture: record loopback traffic of one port to a pcap file.

    with Tcpdump(path, port) as dump:   # returns once tcpdump is capturing
        ... make calls ...
    # leaving the block stops tcpdump (SIGTERM) and waits for the file to be complete
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

TCPDUMP = shutil.which("tcpdump") or "/usr/bin/tcpdump"
# Kernel capture buffer (-B): in immediate mode each packet may take a ring
# block of its own, and the default 2 MiB drops bursts on a busy machine.
BUFFER_KIB = 64 * 1024


class Tcpdump:
    def __init__(self, path: Path, port: int, *, iface: str = "lo") -> None:
        self.path = path
        self.port = port
        self.iface = iface
        self.proc: subprocess.Popen[str] | None = None
        self.stderr = ""

    def __enter__(self) -> Tcpdump:
        # --immediate-mode: packets reach tcpdump as they arrive, not in
        # blocks a SIGTERM would lose; -U: each is written at once; -Z root:
        # keep writing to a root-owned tmp dir.
        argv = [TCPDUMP, "-i", self.iface, "--immediate-mode", "-B", str(BUFFER_KIB), "-U", "-Z", "root",
                "-w", str(self.path), f"tcp port {self.port}"]
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True)
        # tcpdump says "listening on ..." once the socket is open and filtered.
        deadline = time.monotonic() + 15
        line = ""
        while time.monotonic() < deadline:
            line = self.proc.stderr.readline()
            if "listening on" in line or not line:
                break
        if "listening on" not in line:
            self.proc.kill()
            raise RuntimeError(f"tcpdump did not start: {line!r}")
        return self

    def __exit__(self, *exc: object) -> None:
        time.sleep(0.3)  # the last packets (FIN/ACK) of the calls
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        _, err = self.proc.communicate(timeout=15)
        self.stderr = err
        if not re.search(r"(?m)^0 packets dropped by kernel", err):
            raise RuntimeError(f"tcpdump lost packets: {err.strip()}")

