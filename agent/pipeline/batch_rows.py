"""Rows from batch results downloads: their ids, the re-download memory and
the counters (parsers/providers/batch.py reads the lines).

A row's id is derived from the line's key (OpenAI's ``batch_req_`` id;
Anthropic's batch id + ``custom_id``), so the same billed request always
gets the same id.  The pipeline remembers the keys it turned into rows and
drops a line it sees again (a client that downloads the results twice).
That memory is per agent process and bounded by
``MAX_REMEMBERED_BATCH_LINES``; a re-download after a restart is caught by
the store, which leaves out batch rows whose id the file already holds
(outputs/store.py).
"""

from __future__ import annotations

import uuid
from collections import OrderedDict

from lumen_agent.parsers.providers.batch import BatchLine

# Line keys remembered for dropping re-downloads: two full Anthropic batches
# (100,000 requests each).  About 100 bytes a key: ~20 MB at the limit.
MAX_REMEMBERED_BATCH_LINES = 200_000

# uuid5 namespace of batch line row ids (a fixed random value).
_BATCH_NAMESPACE = uuid.UUID("6f1c1d52-4a83-4c1e-9a53-0b2f6a3d7c41")


def batch_call_id(line: BatchLine) -> str:
    """The row id of a billed batch line: the same on every download."""
    return uuid.uuid5(_BATCH_NAMESPACE, line.key).hex


class BatchLineMemory:
    """The line keys already turned into rows, oldest forgotten first."""

    __slots__ = ("_keys", "_limit")

    def __init__(self, limit: int = MAX_REMEMBERED_BATCH_LINES) -> None:
        self._keys: OrderedDict[str, None] = OrderedDict()
        self._limit = limit

    def first_time(self, key: str) -> bool:
        if key in self._keys:
            return False
        if len(self._keys) >= self._limit:
            self._keys.popitem(last=False)
        self._keys[key] = None
        return True

    def __len__(self) -> int:
        return len(self._keys)


def count_batch_download(counters, exchange) -> None:
    """What one download held: billed lines, unbilled ones, and skips."""
    reader = exchange.batch_reader
    if reader is None:
        return
    if not (reader.billed or reader.unbilled):
        return  # not batch output (fine-tuning data, any other file): nothing to count
    counters.add("batch.downloads")
    counters.add("batch.lines_billed", reader.billed)
    counters.add("batch.lines_unbilled", reader.unbilled)
    for reason, n in (("batch_line.not_a_result", reader.not_batch), ("batch_line.not_json", exchange.bad_lines),
                      ("batch_line.too_long", exchange.long_lines), ("batch_line.over_limit", reader.over_limit)):
        if n:
            counters.skip(reason, "batch results download", n)
