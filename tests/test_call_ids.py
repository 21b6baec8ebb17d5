"""Row ids of ordinary calls: random, unique, and version-4 UUIDs in hex."""

from __future__ import annotations

import os
import uuid

from lumen_agent.pipeline.core import new_call_id


def test_ids_are_uuid4_hex_and_unique():
    ids = [new_call_id() for _ in range(10_000)]
    assert len(set(ids)) == 10_000
    for text in ids:
        parsed = uuid.UUID(hex=text)
        assert (len(text), parsed.hex, parsed.version, parsed.variant) == (32, text, 4, uuid.RFC_4122)


def test_a_forked_child_does_not_repeat_its_parents_ids():
    # The generator's state is copied by fork: without the reseed in the
    # child, its ids would be the very ids the parent makes next.
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next 100 ids, then exit without cleanup
        os.close(read_end)
        os.write(write_end, "".join(new_call_id() for _ in range(100)).encode())
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        text = pipe.read().decode()
    os.waitpid(pid, 0)
    child_ids = {text[i : i + 32] for i in range(0, len(text), 32)}
    parent_ids = {new_call_id() for _ in range(100)}
    assert len(child_ids) == 100
    assert not child_ids & parent_ids
