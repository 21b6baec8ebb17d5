"""Reading a BPF ring buffer in bulk: the map mmapped here, records walked in Python.

bcc's ``open_ring_buffer`` + ``ring_buffer_poll`` call back into Python
through ctypes once per record, and the kernel wakes the reader once per
record whenever it has caught up.  Both cost more than the record itself at
thousands of records a second.  This module maps the ring buffer the way
libbpf does (``tools/lib/bpf/ringbuf.c``) and walks a whole batch in one
loop of ``memoryview`` and ``struct`` reads:

    page 0           consumer position (u64), written by us
    page 1           producer position (u64), written by the kernel
    page 2..         the data area, mapped twice back to back, so a record
                     that wraps around the end still reads as one slice

Each record is an 8-byte kernel header (length with a BUSY and a DISCARD
bit, page offset) and the sample, padded to 8 bytes.

Fewer wake-ups: the kernel wakes a waiting reader when a record is submitted
at the consumer position, that is when the reader had read everything.  So
after a wake-up the reader lingers a few ms before reading: records
submitted meanwhile sit behind the unread one and wake nobody, and one read
takes them all.  The linger is ``coalesce_s`` while records come sparsely,
and ``streaming_coalesce_s`` once a lingered read brought
``STREAMING_BATCH_RECORDS`` or more (records stream in: streamed responses,
many calls at once), until a lingered read brings fewer again.  A wake-up
costs the agent ~0.9 ms of CPU beyond its records' work (its run-loop
turns, on caches gone cold; see STREAMING_COALESCE_S), so while records
stream in, fewer wake-ups are less CPU per call; while they come sparsely,
the short linger reads a new process's first records while it still runs
and /proc still names it.  A program that submits with BPF_RB_FORCE_WAKEUP
ends the linger early (the epoll registration is edge-triggered, so each
wake-up is one event).  Ours never need to: a byte threshold would need
bpf_ringbuf_query on the map, which bcc 0.26 cannot express ("invalid
bpf_table operation"), and in a few ms the 16 MiB buffer cannot fill (that
would take GB/s).  An idle host pays nothing: with nothing unread the reader
blocks in epoll.

Single consumer: only the thread that calls :meth:`wait` / :meth:`read`.
"""

from __future__ import annotations

import mmap
import select
import struct

# Kernel record header (struct bpf_ringbuf_hdr): u32 len, u32 pg_off.
RINGBUF_HDR_SIZE = 8
RINGBUF_BUSY_BIT = 1 << 31  # reserved, not yet submitted: stop here
RINGBUF_DISCARD_BIT = 1 << 30  # discarded by the program: skip it
_LEN_MASK = ~(RINGBUF_BUSY_BIT | RINGBUF_DISCARD_BIT) & 0xFFFFFFFF

# How long a woken reader lets records gather before reading them.  Long
# enough that a stream of small records is read in batches of dozens, short
# enough that `lumen-agent top` and the rows stay live (DESIGN: a few ms).
DEFAULT_COALESCE_S = 0.004
# The linger while records stream in.  Measured with 100 streamed calls/s
# of 100 chunks, the agent on a vCPU of its own, alternating runs: agent CPU
# per call 2,987 us (mean of 4) with 4 ms, 2,552 us with 12 ms (-15 %, half
# the wake-ups), 2,536 us with 24 ms against 2,700 us with 12 ms (-6 %).
STREAMING_COALESCE_S = 0.012
# A lingered read of this many records or more: records stream in (4 a ms
# over the short linger; the long one falls back below 16 in 12 ms, 1.3 a ms).
STREAMING_BATCH_RECORDS = 16
# Ring buffer bytes one read() takes at most.  What it takes is copied into
# Python objects and held until the caller has handled the batch: after the
# reader fell behind (a starved agent on a busy host) one read could copy
# all 16 MiB, and the heap keeps that high-water mark.  The rest waits in the
# ring (kernel memory, allocated anyway) for the next read.
MAX_BYTES_PER_READ = 1024 * 1024


class RingBufferReader:
    """Consumer side of one BPF_MAP_TYPE_RINGBUF map, given its fd and data size.

    ``header`` is the struct every sample starts with; ``length_field`` the
    index in it of the payload length that follows the header.  :meth:`read`
    returns ``(header tuple, payload bytes)`` per record.
    """

    def __init__(self, map_fd: int, size: int, header: struct.Struct, length_field: int,
                 *, coalesce_s: float = DEFAULT_COALESCE_S,
                 streaming_coalesce_s: float = STREAMING_COALESCE_S) -> None:
        if size <= 0 or size & (size - 1):
            raise ValueError(f"ring buffer size {size} is not a power of two")
        page = mmap.PAGESIZE
        self.size = size
        self.coalesce_s = coalesce_s
        self.streaming_coalesce_s = streaming_coalesce_s
        self.streaming = False  # the last lingered read found records streaming in
        self._lingered = False  # the next read follows a linger
        self._mask = size - 1
        self._header = header
        self._length_field = length_field
        self._consumer_map = mmap.mmap(map_fd, page, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE, offset=0)
        self._producer_map = mmap.mmap(map_fd, page + 2 * size, mmap.MAP_SHARED, mmap.PROT_READ, offset=page)
        # 8-byte views: an item store/load is one aligned 64-bit access.
        self._consumer_pos = memoryview(self._consumer_map).cast("Q")
        self._producer_pos = memoryview(self._producer_map)[:8].cast("Q")
        self._data = memoryview(self._producer_map)[page:]
        self._lens = self._data.cast("I")  # record headers are 8-aligned
        self._data_start = page
        self._epoll = select.epoll()
        self._epoll.register(map_fd, select.EPOLLIN | select.EPOLLET)
        self._watched: set[int] = set()
        self.wakeups = 0  # epoll reports (kernel wake-ups seen)
        self.reads = 0  # read() calls that found records
        self.records = 0

    # -- waiting ------------------------------------------------------------

    def watch(self, fds: set[int]) -> None:
        """Also end :meth:`wait` when one of ``fds`` is readable (level-triggered).

        So one thread blocks in one epoll_wait for everything it serves (the
        plain-HTTP sniffer's sockets, say) instead of taking turns with short
        timeouts: an idle agent then does not wake at all.
        """
        # All again: a closed fd leaves the epoll set by itself, and its
        # number may come back as another socket's.
        for fd in self._watched:
            try:
                self._epoll.unregister(fd)
            except (OSError, ValueError):
                pass
        for fd in fds:
            try:
                self._epoll.register(fd, select.EPOLLIN)
            except FileExistsError:
                self._epoll.modify(fd, select.EPOLLIN)
        self._watched = set(fds)

    def pending_bytes(self) -> int:
        return self._producer_pos[0] - self._consumer_pos[0]

    def readable(self) -> bool:
        """The record at the consumer position is submitted (there is something to read)."""
        consumer = self._consumer_pos[0]
        if consumer >= self._producer_pos[0]:
            return False
        return not self._lens[(consumer & self._mask) >> 2] & RINGBUF_BUSY_BIT

    def wait(self, timeout_s: float) -> bool:
        """Block until records wait (at most ``timeout_s``), then linger up to
        ``coalesce_s`` so more gather; True when there is something to read.

        A record still being written at the consumer position is not
        something to read: its submit wakes us (it is the first unread one).
        Returning at once instead would spin, on a busy host against the very
        producer that was preempted holding it, while everything behind it
        fills the buffer."""
        if self.readable():
            return True  # records came while the caller was busy (or it is behind): read now
        if self._epoll.poll(timeout_s):
            self.wakeups += 1
        if not self.readable():
            return False
        linger = self.streaming_coalesce_s if self.streaming else self.coalesce_s
        if linger > 0:
            # An edge-triggered event now is a forced wake-up: read at once.
            if self._epoll.poll(linger):
                self.wakeups += 1
            self._lingered = True
        return True

    def _took(self, records: int) -> None:
        """What one read found; after a linger it says whether records stream in."""
        if self._lingered:
            self._lingered = False
            self.streaming = records >= STREAMING_BATCH_RECORDS

    # -- reading ------------------------------------------------------------

    def read(self, limit: int = MAX_BYTES_PER_READ) -> list[tuple[tuple, bytes]]:
        """Submitted records up to the first still being written, about ``limit`` bytes at most."""
        out: list[tuple[tuple, bytes]] = []
        append = out.append
        lens = self._lens
        mask = self._mask
        unpack_from = self._header.unpack_from
        hsize = self._header.size
        nfield = self._length_field
        data = self._data
        raw = self._producer_map
        base = self._data_start + RINGBUF_HDR_SIZE
        consumer = self._consumer_pos[0]
        stop = consumer + limit
        busy = False
        while not busy and consumer < stop:
            producer = self._producer_pos[0]
            if consumer >= producer:
                break
            while consumer < producer:
                off = consumer & mask
                length = lens[off >> 2]
                if length & RINGBUF_BUSY_BIT:
                    busy = True  # not submitted yet: it and what follows wait
                    break
                size = length & _LEN_MASK
                consumer += (size + RINGBUF_HDR_SIZE + 7) & ~7
                if length & RINGBUF_DISCARD_BIT or size < hsize:
                    continue
                hdr = unpack_from(data, off + RINGBUF_HDR_SIZE)
                n = hdr[nfield]
                if n and n <= size - hsize:
                    start = base + off + hsize
                    append((hdr, raw[start : start + n]))
                else:
                    append((hdr, b""))
                if consumer >= stop:
                    break
            # Release the space now, so the producers have it back while the
            # caller works on this batch.
            self._consumer_pos[0] = consumer
        self._took(len(out))
        if out:
            self.reads += 1
            self.records += len(out)
        return out

    def close(self) -> None:
        self._epoll.close()
        for view in (self._lens, self._data, self._producer_pos, self._consumer_pos):
            view.release()
        self._producer_map.close()
        self._consumer_map.close()

