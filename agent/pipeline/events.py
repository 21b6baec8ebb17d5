"""The one input type every capture source produces.

A ``DataEvent`` is a run of plaintext bytes that one thread of one process
wrote to (``SEND``) or read from (``RECV``) one TLS connection.  Everything
after capture consumes these and nothing else, so the kernel probes, the
user-space hook, pcap files and recorded captures all behave the same.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Direction(enum.Enum):
    SEND = "send"  # bytes the process wrote (SSL_write)
    RECV = "recv"  # bytes the process read (SSL_read)


class EventFlag(enum.IntFlag):
    NONE = 0
    # The capture could not copy all bytes of the call: ``data`` is a prefix.
    TRUNCATED = 1
    # Bytes before this event on this connection were lost (ring buffer
    # overflow, joined mid-stream): the parser must resynchronise.
    GAP = 2
    # The connection ended (SSL_shutdown / SSL_free / socket closed); ``data``
    # is empty.  Lets the pipeline tell a finished exchange from a cut one.
    CLOSE = 4


@dataclass(slots=True)
class DataEvent:
    """Never changed once made (``dataclasses.replace`` makes another), but
    not ``frozen``: one is made per captured SSL call (a streamed response is
    ~100), and a frozen dataclass sets each field through
    ``object.__setattr__``, 4x the cost of the whole plain ``__init__``."""

    ts_ns: int  # CLOCK_REALTIME nanoseconds
    pid: int
    tid: int
    conn: int  # opaque per-process connection id (the SSL* for eBPF)
    direction: Direction
    data: bytes
    flags: EventFlag = EventFlag.NONE

    @property
    def conn_key(self) -> tuple[int, int]:
        """Connection ids are only unique within a process."""
        return (self.pid, self.conn)
