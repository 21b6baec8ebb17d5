"""Tell the service manager how the agent is doing: the sd_notify protocol.

When systemd starts the agent as a ``Type=notify`` unit it passes
``NOTIFY_SOCKET`` (an ``AF_UNIX`` datagram socket: a path, or ``@name`` in the
abstract namespace) and, with ``WatchdogSec=``, ``WATCHDOG_USEC`` (and
``WATCHDOG_PID``).  ``install`` rides along the run loop:

* ``READY=1`` (with a ``STATUS=`` line) once the agent captures: the probes
  are attached, the store and control socket are up (``Agent.ready_at``) and
  the status file is written, so ``lumen-agent status`` answers.
  Until then systemd keeps the unit in "activating", so ``systemctl start``
  returns only when calls are being recorded, and a start that fails or hangs
  (BCC compiling, a kernel without uprobes) fails the unit.
* ``WATCHDOG=1`` on every tick of the loop (about once a second) when the
  watchdog is on, so a wedged loop is restarted.
* ``STATUS=`` when the summary changes (targets, calls, rows written), at
  most every ``STATUS_EVERY_S``: what ``systemctl status`` shows.
* ``STOPPING=1`` when the agent starts to shut down (detach, flush), so a
  slow final flush is shown as "deactivating" rather than as a hang.

The protocol is one datagram of ``KEY=VALUE`` lines; we speak it ourselves
(no libsystemd or python-systemd).  Without ``NOTIFY_SOCKET`` everything here
is a no-op.  Nothing here can stop capture: send errors are logged once.

``python -m lumen_agent.service prepare`` is the unit's privileged
``ExecStartPre=+``: it links kernel headers and mounts tracefs when needed,
so the agent itself can run with only the capabilities capture needs.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import time
from collections.abc import Callable, Mapping, MutableMapping
from pathlib import Path
from typing import Any

from lumen_agent.outputs.base import Output

log = logging.getLogger("lumen_agent")

NOTIFY_SOCKET = "NOTIFY_SOCKET"
WATCHDOG_USEC = "WATCHDOG_USEC"
WATCHDOG_PID = "WATCHDOG_PID"
# The run loop ticks about once a second; a watchdog timeout shorter than two
# ticks would fire on a healthy agent.
MIN_WATCHDOG_S = 2.0
STATUS_EVERY_S = 10.0
# Ticks after the probes are attached before READY goes without a status file.
READY_AFTER_TICKS = 3


class NotifyError(ValueError):
    """``NOTIFY_SOCKET`` names something we cannot send to."""


def socket_address(value: str) -> str:
    """The ``connect``/``sendto`` address for a ``NOTIFY_SOCKET`` value.

    ``/run/systemd/notify`` is a path; ``@name`` is ``name`` in the abstract
    namespace (a leading NUL byte for the kernel).  systemd 254+ also accepts
    ``vsock:CID:PORT``, which a host service never gets; we refuse it.
    """
    if value.startswith("/"):
        return value
    if value.startswith("@") and len(value) > 1:
        return "\0" + value[1:]
    raise NotifyError(f"unsupported {NOTIFY_SOCKET}={value!r} (need /path or @abstract)")


class Notifier:
    """One datagram socket to the service manager."""

    def __init__(self, value: str) -> None:
        self.value = value
        self.address = socket_address(value)
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self._failed = False

    @classmethod
    def from_environment(cls, environ: MutableMapping[str, str] | None = None,
                         unset: bool = True) -> Notifier | None:
        """The notifier ``NOTIFY_SOCKET`` asks for, or None when it is unset or unusable.

        With ``unset`` the variable is removed (as sd_notify(3)'s
        ``unset_environment``), so programs we start (``mount``) do not talk
        to systemd in our name.
        """
        env = os.environ if environ is None else environ
        value = env.get(NOTIFY_SOCKET)
        if unset:
            env.pop(NOTIFY_SOCKET, None)
        if not value:
            return None
        try:
            return cls(value)
        except NotifyError as exc:
            log.warning("service manager notifications off: %s", exc)
            return None

    def send(self, *lines: str) -> bool:
        """Send one message (``"READY=1"``, ``"STATUS=..."``, ...); False when it failed."""
        message = "\n".join(lines).encode("utf-8", "replace")
        try:
            self._sock.sendto(message, self.address)
        except OSError as exc:
            if not self._failed:  # say it once; the manager may simply be gone
                log.warning("cannot notify the service manager socket=%s error=%s", self.value, exc)
                self._failed = True
            return False
        return True

    def close(self) -> None:
        self._sock.close()


def notify(*lines: str, environ: MutableMapping[str, str] | None = None) -> bool:
    """sd_notify(0, ...) for one message: False when there is no manager to tell."""
    notifier = Notifier.from_environment(environ, unset=False)
    if notifier is None:
        return False
    try:
        return notifier.send(*lines)
    finally:
        notifier.close()


def watchdog_interval(environ: MutableMapping[str, str] | None = None, pid: int | None = None,
                      unset: bool = True) -> float | None:
    """Seconds of the watchdog timeout meant for this process, or None.

    As sd_watchdog_enabled(3): ``WATCHDOG_PID``, when set, must be our pid.
    """
    env = os.environ if environ is None else environ
    usec = env.get(WATCHDOG_USEC)
    owner = env.get(WATCHDOG_PID)
    if unset:
        env.pop(WATCHDOG_USEC, None)
        env.pop(WATCHDOG_PID, None)
    if not usec:
        return None
    try:
        seconds = int(usec) / 1_000_000
        if owner and int(owner) != (os.getpid() if pid is None else pid):
            return None
    except ValueError:
        log.warning("ignoring bad %s=%r / %s=%r", WATCHDOG_USEC, usec, WATCHDOG_PID, owner)
        return None
    return seconds if seconds > 0 else None


def status_line(status: Mapping[str, Any]) -> str:
    """What ``systemctl status`` shows for a capturing agent."""
    targets = len(status.get("targets", ()))
    calls = status.get("pipeline", {}).get("calls", 0)
    rows = status.get("store", {}).get("rows_written", 0)
    return f"capturing: {targets} targets, {calls} calls, {rows} rows written"


class ServiceNotifications(Output):
    """Rides along the run loop as an output with no use for calls: its tick
    keeps the service manager informed (READY, STATUS, WATCHDOG)."""

    name = "service"

    def __init__(self, agent: Any, notifier: Notifier, watchdog_s: float | None,
                 clock: Callable[[], float] = time.monotonic, status_path: Path | None = None) -> None:
        self.agent = agent
        self.notifier = notifier
        self.watchdog_s = watchdog_s
        self.status_path = status_path
        self.ready_sent = False
        self._ready_ticks = 0
        self.stopping_sent = False
        self._clock = clock
        self._last_status = ""
        self._last_status_at = 0.0

    def _capturing(self) -> bool:
        """Probes attached, and ``lumen-agent status`` answers.

        The run loop calls each output's ``on_tick`` just before it writes the
        status file, so the first tick after ``ready_at`` usually finds no file yet:
        READY then goes one tick (about a second) later, when ``systemctl
        start`` returning also means ``lumen-agent status`` exits 0.  If the
        file cannot be written at all, READY goes anyway after
        ``READY_AFTER_TICKS``: capture works, only the status file does not.
        """
        if self.agent.ready_at is None:
            return False
        self._ready_ticks += 1
        if self.status_path is None or self._ready_ticks > READY_AFTER_TICKS:
            return True
        return self.status_path.exists()

    def on_ready(self) -> None:
        if not self.ready_sent:
            self._last_status = status_line(self.agent.status())
            self._last_status_at = self._clock()
            self.notifier.send("READY=1", f"STATUS={self._last_status}")
            self.ready_sent = True

    def on_tick(self, now: float | None = None) -> None:
        if not self.ready_sent and self._capturing():
            self.on_ready()
        elif self.ready_sent and self._clock() - self._last_status_at >= STATUS_EVERY_S:
            self._last_status_at = self._clock()
            line = status_line(self.agent.status())
            if line != self._last_status:
                self._last_status = line
                self.notifier.send(f"STATUS={line}")
        if self.watchdog_s is not None:
            self.notifier.send("WATCHDOG=1")

    def on_stopping(self) -> None:
        if not self.stopping_sent:
            self.stopping_sent = True
            self.notifier.send("STOPPING=1", "STATUS=stopping: detaching probes, flushing rows")


def install(agent: Any, config: Any) -> ServiceNotifications | None:
    """Hook the agent's run loop up to the service manager when one is listening."""
    notifier = Notifier.from_environment()
    watchdog_s = watchdog_interval()
    if notifier is None:
        return None
    if watchdog_s is not None and watchdog_s < MIN_WATCHDOG_S:
        log.warning("WatchdogSec=%.1fs is shorter than %.0fs; pings come about once a second",
                    watchdog_s, MIN_WATCHDOG_S)
    hooks = ServiceNotifications(agent, notifier, watchdog_s, status_path=getattr(config, "status_path", None))
    agent.add_output(hooks)
    agent.add_ready_listener(hooks.on_ready)
    agent.add_stop_listener(hooks.on_stopping)
    log.info("notifying the service manager socket=%s watchdog_s=%s", notifier.value, watchdog_s)
    return hooks


# -- ExecStartPre=+ ---------------------------------------------------------


def prepare_kernel() -> int:
    """Make the host ready for eBPF capture, with full privileges, before the agent starts.

    Links ``/lib/modules/$(uname -r)/build`` to installed headers and mounts
    tracefs, which the sandboxed agent cannot do (read-only /lib, no
    CAP_SYS_ADMIN).  What cannot be fixed is printed and left to the agent,
    whose own check fails with the fix (or which runs without eBPF when
    configured to).
    """
    from lumen_agent.capture import kernel_setup

    for step in (kernel_setup.ensure_kernel_headers, kernel_setup.ensure_tracefs):
        try:
            step()
        except kernel_setup.CaptureError as exc:
            # Not fatal here: the agent reports it, or is configured not to need eBPF.
            print(f"lumen-agent prepare: {exc}", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args == ["prepare"]:
        return prepare_kernel()
    print("usage: python -m lumen_agent.service prepare", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
