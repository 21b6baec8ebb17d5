"""The run loop's long waits: one wait for the ring buffer, the sniffer's
sockets and the wake-up pipe (capture/combined.py, capture/ringbuf.py,
runner.py).  Unit tests: no BPF, no packets."""

from __future__ import annotations

import os
import select

from lumen_agent.capture.combined import PRIMARY_POLL_MS, CombinedCapture
from lumen_agent.capture.conversations import is_sniffed_conn


class Primary:
    """A source whose wait can also end on other fds (like EbpfCapture)."""

    def __init__(self, due=None):
        self.polls, self.watched, self.due = [], [], due

    def start(self):
        pass

    def poll(self, timeout_ms=100):
        self.polls.append(timeout_ms)

    def watch_fds(self, fds):
        self.watched.append(set(fds))
        return True

    def next_due_s(self):
        return self.due


class Secondary(Primary):
    def __init__(self, fds, due=None):
        super().__init__(due)
        self.sockets = frozenset(fds)

    def fds(self):
        return self.sockets


def test_the_primary_waits_the_whole_timeout_on_the_secondary_sockets_and_the_callers_fds():
    primary, secondary = Primary(due=0.05), Secondary({(7, 1), (8, 2)}, due=None)
    both = CombinedCapture(primary, secondary, secondary_name="plain-HTTP", secondary_conn=is_sniffed_conn)
    both.start()
    assert both.watch_fds({3}) is True
    both.poll(1000)
    both.poll(1000)
    assert primary.polls == [1000, 1000] and secondary.polls == [0, 0]
    # registered once (not per poll), with the pipe of the caller
    assert primary.watched == [{3, 7, 8}]
    secondary.sockets = frozenset({(7, 1), (9, 3)})  # an interface came, one went
    both.poll(1000)
    assert primary.watched[-1] == {3, 7, 9}
    assert both.next_due_s() == 0.05


def test_a_source_that_cannot_say_when_it_is_due_is_polled_as_before():
    class Plain:
        def start(self):
            pass

        def poll(self, timeout_ms=100):
            pass

    both = CombinedCapture(Primary(due=None), Plain(), secondary_name="plain-HTTP", secondary_conn=is_sniffed_conn)
    assert both.next_due_s() == PRIMARY_POLL_MS / 1000
    idle = CombinedCapture(Primary(due=None), Secondary(set(), due=None), secondary_name="plain-HTTP",
                           secondary_conn=is_sniffed_conn)
    assert idle.next_due_s() is None  # nothing scheduled: the caller may sleep until its own deadline


def test_ring_reader_wait_ends_on_a_watched_fd(monkeypatch):
    from lumen_agent.capture import ringbuf

    # Only the waiting half of RingBufferReader: an epoll with nothing readable in the ring.
    reader = object.__new__(ringbuf.RingBufferReader)
    reader._epoll = select.epoll()
    reader._watched = set()
    reader.wakeups = 0
    reader.coalesce_s = 0.0
    monkeypatch.setattr(ringbuf.RingBufferReader, "readable", lambda self: False)
    r, w = os.pipe()
    try:
        reader.watch({r})
        assert reader.wait(0.0) is False and reader.wakeups == 0
        os.write(w, b"x")
        # The pipe is readable: the wait returns at once (a 30 s timeout would hang the test).
        assert reader.wait(30.0) is False and reader.wakeups == 1
        reader.watch(set())
        assert reader.wait(0.0) is False and reader.wakeups == 1  # no longer watched
    finally:
        reader._epoll.close()
        os.close(r)
        os.close(w)


def test_ring_reader_lingers_longer_while_records_stream_in(monkeypatch):
    from lumen_agent.capture import ringbuf

    # The waiting half of RingBufferReader over an epoll that records each
    # wait: the first of a wake-up blocks until a record comes, the second is
    # the linger.  _took(n) is what read() reports after taking n records.
    waits = []

    class Epoll:
        def poll(self, timeout):
            waits.append(timeout)
            return []

    reader = object.__new__(ringbuf.RingBufferReader)
    reader._epoll = Epoll()
    reader.wakeups = 0
    reader.coalesce_s, reader.streaming_coalesce_s = 0.004, 0.012
    reader.streaming, reader._lingered = False, False
    readable = []
    monkeypatch.setattr(ringbuf.RingBufferReader, "readable", lambda self: readable.pop(0))

    def woken_then_read(records):
        readable.extend([False, True])  # nothing unread, then a record came
        waits.clear()
        assert reader.wait(30.0) is True
        reader._took(records)
        return waits[1]

    assert woken_then_read(3) == 0.004  # sparse records: the short linger
    assert woken_then_read(ringbuf.STREAMING_BATCH_RECORDS) == 0.004 and reader.streaming
    assert woken_then_read(40) == 0.012
    # Records that came while the last batch was handled are read at once,
    # with no linger: a small read then says nothing of the rate.
    readable.append(True)
    waits.clear()
    assert reader.wait(30.0) is True and waits == []
    reader._took(2)
    assert reader.streaming
    assert woken_then_read(ringbuf.STREAMING_BATCH_RECORDS - 1) == 0.012 and not reader.streaming
    assert woken_then_read(1) == 0.004
