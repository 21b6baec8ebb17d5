"""The fuzz run of the hardening issue over whole recordings (hypothesis).

Invariants (tests/support/hostile.py): no exception escapes, no row has an
unbounded or invalid value, the writer takes every row after any input, and
peak memory per recording stays under ``MEMORY_CEILING``.  The long run is
``bench/fuzz_recordings.py``.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from support.hostile import check_run, recordings

from lumen_agent.outputs.store import CallStore
from lumen_agent.pricing.table import PriceTable


@pytest.fixture(scope="module")
def prices():
    return PriceTable.load()


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return CallStore(tmp_path_factory.mktemp("fuzz") / "fuzz.duckdb")


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(recording=recordings(max_bomb_mib=1))
def test_hostile_recordings_keep_every_invariant(prices, store, recording):
    check_run(recording, prices, store)


def test_the_writer_still_writes_after_the_fuzzing(prices, store):
    """A plain call after all of the above lands too."""
    from builders import exchange_events, request_bytes, response_bytes

    from lumen_agent.pipeline.core import Pipeline

    calls = []
    pipeline = Pipeline(prices, calls.append, salt=b"s" * 32)
    request = request_bytes("POST", "https://api.openai.com/v1/chat/completions", {"model": "gpt-4o-mini"})
    pipeline.feed_all(exchange_events(request, response_bytes(
        b'{"model":"gpt-4o-mini","usage":{"prompt_tokens":3,"completion_tokens":4}}'), close=True))
    pipeline.close()
    store.add_many(calls)
    assert store.flush() == 1
