"""Item 1 of the hardening issue: one bad row never stops the writer.

Hostile values go through the real pipeline into a real DuckDB file; the
rows land with the values made safe, and a row DuckDB still refuses is set
aside in a 0600 dead-letter file while the rest of its batch is written.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

import duckdb
import pytest
from builders import exchange_events, request_bytes, response_bytes
from test_store_support import make_call

from lumen_agent.outputs import schema
from lumen_agent.outputs.store import CallStore
from lumen_agent.pipeline.core import Pipeline
from lumen_agent.pricing.table import PriceTable

SALT = b"s" * 32
M = Decimal(1_000_000)


@pytest.fixture(scope="module")
def prices():
    return PriceTable.load()


def openai_call(usage_json: str, model_json: str = '"gpt-4o-mini"', conn: int = 1) -> list:
    """A chat completion whose response body is written by hand, hostile values and all."""
    request = request_bytes("POST", "https://api.openai.com/v1/chat/completions",
                            {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]})
    body = ('{"id":"chatcmpl-1","object":"chat.completion","model":' + model_json
            + ',"choices":[],"usage":' + usage_json + '}').encode()
    return exchange_events(request, response_bytes(body), conn=conn, close=True)


def stored(prices, tmp_path, *event_lists):
    db = tmp_path / "calls.duckdb"
    store = CallStore(db)
    pipeline = Pipeline(prices, store.add, salt=SALT)
    for events in event_lists:
        pipeline.feed_all(events)
    pipeline.close()
    store.close()  # on the old code: raises, and every row is lost
    con = duckdb.connect(str(db), read_only=True)
    try:
        rows = con.execute("SELECT model, input_tokens, output_tokens, cost_usd, price_id, unpriced, "
                           "usage_implausible FROM llm_calls ORDER BY ts_start").fetchall()
        counters = dict(con.execute("SELECT name, value FROM lumen_counters").fetchall())
    finally:
        con.close()
    return rows, counters, store


def test_hostile_values_do_not_stop_the_writer(prices, tmp_path):
    good = openai_call('{"prompt_tokens":10,"completion_tokens":20}', conn=1)
    surrogate = openai_call('{"prompt_tokens":10,"completion_tokens":20}', '"gpt-\\udfff"', conn=2)
    huge = openai_call('{"prompt_tokens":10,"completion_tokens":1000000000000000}', conn=3)
    negative = openai_call('{"prompt_tokens":-5,"completion_tokens":20}', conn=4)
    long_name = openai_call('{"prompt_tokens":1,"completion_tokens":1}', '"' + "m" * 10_000 + '"', conn=5)
    after = openai_call('{"prompt_tokens":10,"completion_tokens":20}', conn=6)
    rows, counters, store = stored(prices, tmp_path, good, surrogate, huge, negative, long_name, after)
    # gpt-4o-mini: $0.15 input, $0.60 output per 1M -> 10*0.15 + 20*0.6 = 13.5 / 1M
    cost = (10 * Decimal("0.15") + 20 * Decimal("0.6")) / M
    assert rows[0] == ("gpt-4o-mini", 10, 20, cost, rows[0][4], False, False)
    # The lone surrogate is escaped, the call priced by its request model.
    assert rows[1][0] == "gpt-\\udfff"
    assert rows[1][1:4] == (10, 20, cost)
    # 10^15 completion tokens: NULL, flagged, never priced.
    assert rows[2] == ("gpt-4o-mini", 10, None, None, None, False, True)
    # Partial usage (negative prompt): the completion is kept, nothing priced.
    assert rows[3] == ("gpt-4o-mini", None, 20, None, None, False, True)
    # A 10 KB model name is cut to the named limit, not dropped.
    assert rows[4][0] == "m" * 256
    assert rows[5][3] == cost
    assert counters["rows_written"] == 6
    assert store.stats()["dead_lettered"] == 0


def test_a_row_duckdb_refuses_is_dead_lettered_and_the_rest_written(tmp_path):
    db = tmp_path / "calls.duckdb"
    store = CallStore(db)
    # Built by hand, so past the pipeline's bounds: what a future bug would make.
    poison = make_call(1, model="gpt-\udfff", input_tokens=10**15)
    store.add_many([make_call(0), poison, make_call(2)])
    assert store.flush() == 2
    store.add(make_call(3))
    assert store.flush() == 1  # the writer keeps writing
    store.close()
    con = duckdb.connect(str(db), read_only=True)
    ids = [r[0] for r in con.execute("SELECT id FROM llm_calls ORDER BY id").fetchall()]
    counters = dict(con.execute("SELECT name, value FROM lumen_counters").fetchall())
    con.close()
    assert ids == ["call-000000", "call-000002", "call-000003"]
    assert counters["rows_dead_lettered"] == 1
    assert counters["rows_written"] == 3
    dead = store.dead_letter_path
    assert stat.S_IMODE(dead.stat().st_mode) == 0o600
    lines = dead.read_text("ascii").splitlines()
    assert len(lines) == 1
    record = json.loads(lines[0])
    assert record["id"] == "call-000001"
    assert record["model"] == "gpt-\udfff"
    assert "request_body" not in record and record["error"]


def test_a_real_agent_keeps_writing_past_a_refused_row_and_stops_cleanly(tmp_path):
    """A real agent process, a database whose table refuses one row (a CHECK
    constraint stands in for any row DuckDB cannot take), a real SIGTERM:
    the good rows are written, the refused one is dead-lettered, exit 0."""
    db = tmp_path / "db" / "calls.duckdb"
    db.parent.mkdir()
    con = duckdb.connect(str(db))
    schema.migrate(con)
    columns = ", ".join(f'"{n}" {t}' for n, t in schema.CALL_COLUMN_TYPES)
    con.execute("DROP TABLE llm_calls")
    con.execute(f"CREATE TABLE llm_calls ({columns}, CHECK (model IS NULL OR model <> 'poison-model'))")
    con.close()
    runtime = tmp_path / "run"
    env = dict(os.environ, LUMEN_STATE_DIR=str(tmp_path / "state"), LUMEN_RUNTIME_DIR=str(runtime),
               LUMEN_CONFIG_DIR=str(tmp_path / "etc"))
    agent = subprocess.Popen([str(Path(sys.executable).parent / "lumen-agent"), "run",
                              "--capture", "hook", "--db", str(db)], stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 60
    while not (runtime / "status.json").exists():
        assert agent.poll() is None, agent.stderr.read()
        assert time.monotonic() < deadline
        time.sleep(0.05)
    lines = []
    for conn, model in ((1, "gpt-4o-mini"), (2, "poison-model"), (3, "gpt-4o-mini")):
        for event in openai_call('{"prompt_tokens":10,"completion_tokens":20}', f'"{model}"', conn=conn):
            record = {"ts": event.ts_ns, "pid": 1, "conn": conn, "dir": event.direction.value,
                      "data": base64.b64encode(event.data).decode()}
            if event.flags:
                record["flags"] = ["close"]
            lines.append(json.dumps(record).encode())
    with socket.socket(socket.AF_UNIX) as sock:
        sock.connect(str(runtime / "ingest.sock"))
        sock.sendall(b'{"op":"events"}\n' + b"\n".join(lines) + b"\n")
    time.sleep(0.5)  # handed over; whether flushed yet or not, SIGTERM must keep them
    agent.send_signal(signal.SIGTERM)
    _, stderr = agent.communicate(timeout=60)
    assert agent.returncode == 0, stderr
    assert "Traceback" not in stderr
    con = duckdb.connect(str(db), read_only=True)
    models = [r[0] for r in con.execute("SELECT model FROM llm_calls ORDER BY ts_start").fetchall()]
    counters = dict(con.execute("SELECT name, value FROM lumen_counters").fetchall())
    con.close()
    assert models == ["gpt-4o-mini", "gpt-4o-mini"]
    assert counters["rows_dead_lettered"] == 1
    assert counters["rows_written"] == 2
    dead = db.with_name("calls.duckdb.deadletter.jsonl")
    assert stat.S_IMODE(dead.stat().st_mode) == 0o600
    assert [json.loads(line)["model"] for line in dead.read_text().splitlines()] == ["poison-model"]


def test_clean_text_passes_printable_ascii_as_the_pattern_would():
    """clean_text returns printable ASCII unscanned: the same text the
    escaping pattern gives, for every character below U+0200, lone
    surrogates and line separators, in short and multi-line fields."""
    import random

    from lumen_agent.pipeline import bounds

    def by_pattern(value: str, limit: int, multiline: bool) -> str:
        value = value[: limit * 6]
        value = (bounds._UNSAFE if multiline else bounds._UNSAFE_SHORT).sub(bounds._escape, value)
        return value[:limit]

    rng = random.Random(20)
    chars = [chr(i) for i in range(0x200)] + ["\ud800", "\udfff", "\u2028", "é"]
    for _ in range(20000):
        value = "".join(rng.choice(chars) for _ in range(rng.randint(0, 8)))
        for multiline in (False, True):
            for limit in (3, 1024):
                assert bounds.clean_text(value, limit, multiline=multiline) == by_pattern(value, limit, multiline)
    assert bounds.clean_text("api.openai.com") == "api.openai.com"
    assert bounds.clean_text("a\tb") == "a\\x09b" and bounds.clean_text("a\tb", multiline=True) == "a\tb"
