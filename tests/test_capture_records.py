"""EbpfCapture's record loop: the inline path for whole calls gives what the general path gives.

``_process_records`` delivers the commonest record (a whole SSL call, no
flags, no partial call held for its thread) inline, and hands every other
record to ``_on_data`` / ``_on_close``.  Here one sequence of records of
every shape (whole calls, calls split over several records, flags, a middle
record whose start was lost, empty payloads, closes, interleaved threads and
connections) goes through the loop and through a reference that sends each
record down the general path; the events and the counters must be equal.
Records are made with bpf/events.h's layout; no BPF is needed.
"""

from __future__ import annotations

import random

from lumen_agent.capture.ebpf import EV_CLOSE, EV_DATA, HDR, CaptureOptions, EbpfCapture
from lumen_agent.pipeline.events import Direction, EventFlag


def data_record(ts, pid, tid, conn, payload, *, total=None, offset=0, flags=0, direction=1):
    total = len(payload) if total is None else total
    return HDR.unpack(HDR.pack(ts, conn, pid, tid, total, offset, len(payload), flags, EV_DATA, direction)), payload


def close_record(ts, pid, tid, conn):
    return HDR.unpack(HDR.pack(ts, conn, pid, tid, 0, 0, 0, 0, EV_CLOSE, 0)), b""


def records_of_every_shape(seed: int = 7, n: int = 3000) -> list[tuple[tuple, bytes]]:
    rnd = random.Random(seed)
    out = []
    ts = 1_000_000
    for _ in range(n):
        ts += rnd.randint(1, 5000)
        pid = rnd.choice((100, 200))
        tid = pid + rnd.choice((0, 1))
        conn = rnd.choice((0xAA, 0xBB, 0xCC))
        shape = rnd.random()
        body = bytes(rnd.getrandbits(8) for _ in range(rnd.randint(1, 40)))
        if shape < 0.55:  # a whole call
            out.append(data_record(ts, pid, tid, conn, body, direction=rnd.choice((0, 1))))
        elif shape < 0.65:  # a call split over records (its pieces may interleave with other threads')
            total = len(body) * 3
            for i in range(3):
                out.append(data_record(ts + i, pid, tid, conn, body, total=total, offset=i * len(body)))
        elif shape < 0.70:  # the first piece only: the next record cuts it
            out.append(data_record(ts, pid, tid, conn, body, total=len(body) * 2))
        elif shape < 0.75:  # a middle piece whose start was lost
            out.append(data_record(ts, pid, tid, conn, body, total=len(body) * 2, offset=len(body)))
        elif shape < 0.82:  # flags from the kernel
            out.append(data_record(ts, pid, tid, conn, body, flags=rnd.choice((1, 2, 3))))
        elif shape < 0.86:  # fewer bytes than the call had (truncated in the kernel)
            out.append(data_record(ts, pid, tid, conn, body, total=len(body) + 10))
        elif shape < 0.88:  # an empty payload
            out.append(data_record(ts, pid, tid, conn, b"", total=0))
        else:
            out.append(close_record(ts, pid, tid, conn))
    return out


def capture_collecting() -> tuple[EbpfCapture, list]:
    events: list = []
    cap = EbpfCapture(lambda e: events.append((e.ts_ns, e.pid, e.tid, e.conn, e.direction, e.data, e.flags)),
                      CaptureOptions(scan_executables=False))
    cap._clock_offset = 5_000_000_000
    return cap, events


def through_the_general_path(cap: EbpfCapture, records) -> None:
    """What _process_records did before it had an inline path."""
    for hdr, payload in records:
        if hdr[8] == EV_DATA:
            cap._on_data(hdr, payload)
        elif hdr[8] == EV_CLOSE:
            cap._on_close(hdr[2], hdr[3], hdr[1], hdr[0])


def test_the_record_loop_gives_what_the_general_path_gives():
    records = records_of_every_shape()
    fast, fast_events = capture_collecting()
    fast._records = list(records)
    fast._process_records()
    fast._flush_stale_partials(force=True)
    slow, slow_events = capture_collecting()
    through_the_general_path(slow, records)
    slow._flush_stale_partials(force=True)

    assert fast_events == slow_events
    assert fast._stats == slow._stats
    assert fast._open_conns == slow._open_conns
    # The sequence has every shape in it (or the comparison proves little).
    flags = {e[6] for e in fast_events}
    assert {EventFlag.NONE, EventFlag.TRUNCATED, EventFlag.GAP, EventFlag.CLOSE} <= flags
    assert fast._stats["partial_dropped"] > 0 and fast._stats["closes"] > 0


def test_a_whole_call_is_one_event_with_the_wall_clock_time():
    cap, events = capture_collecting()
    cap._records = [data_record(1_000, 42, 43, 0xAA, b"POST / HTTP/1.1\r\n", direction=0),
                    data_record(2_000, 42, 43, 0xAA, b"HTTP/1.1 200 OK\r\n", direction=1)]
    cap._process_records()
    assert events == [
        (5_000_001_000, 42, 43, 0xAA, Direction.SEND, b"POST / HTTP/1.1\r\n", EventFlag.NONE),
        (5_000_002_000, 42, 43, 0xAA, Direction.RECV, b"HTTP/1.1 200 OK\r\n", EventFlag.NONE),
    ]
    assert cap._stats["events"] == 2 and cap._stats["bytes"] == 34
    assert cap._open_conns == {42: {0xAA}}


def test_a_whole_call_after_a_partial_one_of_its_thread_cuts_that_one_first():
    cap, events = capture_collecting()
    cap._records = [data_record(1_000, 42, 43, 0xAA, b"abc", total=6),  # 3 of 6 bytes
                    data_record(2_000, 42, 43, 0xAA, b"whole")]
    cap._process_records()
    assert [(e[5], e[6]) for e in events] == [(b"abc", EventFlag.TRUNCATED), (b"whole", EventFlag.NONE)]
    assert cap._stats["truncated"] == 1 and cap._stats["events"] == 2 and cap._stats["bytes"] == 8
