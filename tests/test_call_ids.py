"""Row ids of ordinary calls: random, unique, and version-4 UUIDs in hex."""

from __future__ import annotations

import uuid

from lumen_agent.pipeline.core import new_call_id


def test_ids_are_uuid4_hex_and_unique():
    ids = [new_call_id() for _ in range(10_000)]
    assert len(set(ids)) == 10_000
    for text in ids:
        parsed = uuid.UUID(hex=text)
        assert (len(text), parsed.hex, parsed.version, parsed.variant) == (32, text, 4, uuid.RFC_4122)
