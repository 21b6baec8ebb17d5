"""The recorded-capture file: DataEvents as JSON lines.

One event a line, a JSON object with at least::

    {"ts": 1732312345123456789, "pid": 4242, "tid": 4242, "conn": 94613810, "dir": "send",
     "data": "UE9TVCAvdjEvY2hhdC9jb21wbGV0aW9ucyBIVFRQLzEuMQ0K..."}

``ts`` is wall-clock nanoseconds, ``conn`` an id unique within the process,
``dir`` is ``send`` (bytes the process wrote) or ``recv`` (bytes it read),
``data`` is base64.  Optional: ``flags``, a list of ``truncated``, ``gap``,
``close``.  Other keys are allowed and ignored, so a recording can carry
notes.  ``lumen-agent run --record FILE`` writes this format and
``lumen-agent replay FILE`` reads it.

Who a process was is written once, before its first event (and again when it
exec'd another program), as a line of kind ``process``::

    {"kind": "process", "pid": 4242, "process": "curl", "exe": "/usr/bin/curl",
     "user": "alice", "unit": "app.service", "container_id": null}

Replay attributes calls from these lines, never from the replaying host's
/proc: pid 4242 there is some other process, or none.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import asdict
from typing import IO

from lumen_agent.errors import LumenError
from lumen_agent.pipeline.attribution import MAX_PROCESSES, UNKNOWN, ProcessInfo
from lumen_agent.pipeline.events import DataEvent, Direction, EventFlag
from lumen_agent.redaction import REDACTED, Redactor, redact_credentials  # noqa: F401 - part of this module's API

log = logging.getLogger("lumen_agent")

_FLAG_NAMES = {"truncated": EventFlag.TRUNCATED, "gap": EventFlag.GAP, "close": EventFlag.CLOSE}


# Credentials never reach a recording: header values and query parameters
# are replaced, in both directions (agent/redaction.py).


class RecordingError(LumenError, ValueError):
    """A line that is not a recorded event."""


class NotARecording(RecordingError):
    """A whole file without a single recorded event (a pcap, a log...)."""


# One recorded line: an event carries at most one SSL call's bytes, base64
# (4/3 larger); a longer line is skipped without being held whole.
MAX_RECORDING_LINE = 16 * 1024 * 1024


def event_to_json(event: DataEvent) -> str:
    record = {
        "ts": event.ts_ns,
        "pid": event.pid,
        "tid": event.tid,
        "conn": event.conn,
        "dir": event.direction.value,
        "data": base64.b64encode(event.data).decode("ascii"),
    }
    if event.flags:
        record["flags"] = [name for name, flag in _FLAG_NAMES.items() if event.flags & flag]
    return json.dumps(record, separators=(",", ":"))


def event_from_json(line: str | bytes) -> DataEvent:
    try:
        record = json.loads(line)  # bytes: UTF-8 checked here (UnicodeDecodeError is a ValueError)
        flags = EventFlag.NONE
        for name in record.get("flags", ()):
            flags |= _FLAG_NAMES[name]
        return DataEvent(
            ts_ns=int(record["ts"]),
            pid=int(record["pid"]),
            tid=int(record.get("tid", record["pid"])),
            conn=int(record["conn"]),
            direction=Direction(record["dir"]),
            data=base64.b64decode(record.get("data", ""), validate=True),
            flags=flags,
        )
    except (ValueError, KeyError, TypeError, AttributeError, binascii.Error, RecursionError, OverflowError) as exc:
        # RecursionError: "[[[[..." nested past the parser's stack.
        raise RecordingError(f"not a recorded event: {_short(exc)}") from None


def _short(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 200 else text[:200] + "..."


def _lines(stream: IO[str] | IO[bytes]) -> Iterator[str | bytes | None]:
    """The stream's lines, each read at most ``MAX_RECORDING_LINE`` at a time;
    None stands for a line that was longer (skipped, never held whole)."""
    while True:
        line = stream.readline(MAX_RECORDING_LINE)
        if not line:
            return
        if len(line) >= MAX_RECORDING_LINE and line[-1:] not in ("\n", b"\n"):
            while (more := stream.readline(MAX_RECORDING_LINE)) and more[-1:] not in ("\n", b"\n"):
                pass
            yield None
            continue
        yield line


def process_to_json(pid: int, info: ProcessInfo) -> str:
    return json.dumps({"kind": "process", "pid": pid, **asdict(info)}, separators=(",", ":"))


def process_from_json(line: str | bytes) -> tuple[int, ProcessInfo] | None:
    """``(pid, info)`` of a process line; None for any other line."""
    if ('"kind"' if isinstance(line, str) else b'"kind"') not in line:
        return None
    try:
        record = json.loads(line)
        if not isinstance(record, dict) or record.get("kind") != "process":
            return None
        fields = {name: record.get(name) for name in ProcessInfo.__slots__}
        if not all(value is None or isinstance(value, str) for value in fields.values()):
            raise TypeError("process fields must be strings")
        return int(record["pid"]), ProcessInfo(**fields)
    except (ValueError, KeyError, TypeError, RecursionError) as exc:
        raise RecordingError(f"not a process record: {_short(exc)}") from None


def read_events(stream: IO[str] | IO[bytes], on_bad_line=None,
                on_process: Callable[[int, ProcessInfo], None] | None = None) -> Iterator[DataEvent]:
    """Events of a recording (a text or binary stream); bad lines go to
    ``on_bad_line(lineno, error)``, process lines to ``on_process(pid, info)``."""
    for lineno, line in enumerate(_lines(stream), 1):
        try:
            if line is None:
                raise RecordingError(f"not a recorded event: line longer than {MAX_RECORDING_LINE} bytes")
            if not line.strip():
                continue
            process = process_from_json(line)
            if process is not None:
                if on_process is not None:
                    on_process(*process)
                continue
            yield event_from_json(line)
        except RecordingError as exc:
            if on_bad_line is None:
                raise RecordingError(f"line {lineno}: {exc}") from None
            on_bad_line(lineno, exc)


def open_private(path) -> IO[str]:
    """The recording, opened for appending and kept 0600 whatever the umask:
    it holds prompts and replies even with credentials redacted."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.fchmod(fd, 0o600)
    except OSError:
        pass
    return os.fdopen(fd, "a", encoding="utf-8")


class Recorder:
    """Appends events to a recording as they are captured, credentials redacted.

    ``describe(pid)`` says who a process is; that is written before the
    process's first event, so a replay attributes from the recording.
    """

    def __init__(self, stream: IO[str], describe: Callable[[int], ProcessInfo] | None = None) -> None:
        self._stream = stream
        self._describe = describe
        self._written: dict[int, ProcessInfo] = {}
        self._redactor = Redactor()

    def write(self, event: DataEvent) -> None:
        if self._describe is not None:
            info = self._describe(event.pid)
            if self._written.get(event.pid) != info:
                if len(self._written) >= MAX_PROCESSES:
                    self._written.clear()
                self._written[event.pid] = info
                self._stream.write(process_to_json(event.pid, info) + "\n")
        if event.data:
            # Both directions: a local server reads the same headers its client sent.
            data = self._redactor.redact((event.pid, event.conn, event.direction), event.data)
            event = DataEvent(event.ts_ns, event.pid, event.tid, event.conn, event.direction, data, event.flags)
        self._stream.write(event_to_json(event) + "\n")

    def flush(self) -> None:
        self._stream.flush()


class RecordedAttribution:
    """Attribution from a recording's process lines (never from this host's /proc)."""

    def __init__(self) -> None:
        self._by_pid: dict[int, ProcessInfo] = {}

    def remember(self, pid: int, info: ProcessInfo) -> None:
        self._by_pid[pid] = info

    def observe(self, pid: int) -> ProcessInfo:
        return self._by_pid.get(pid, UNKNOWN)

    lookup = observe

    def forget(self, pid: int) -> None:
        pass
