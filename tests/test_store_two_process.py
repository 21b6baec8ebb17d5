"""The contract of DESIGN.md section 4, with two real processes: while the
agent writes, another process holds the file read-only for seconds; nothing
is lost and the writer saw the lock."""

from __future__ import annotations

import json
import subprocess
import time

import pytest
from test_store_support import script

from lumen_agent.outputs.queries import run_sql

N_CALLS = 2_000


@pytest.mark.slow
def test_reader_holding_the_file_mid_run_loses_nothing(tmp_path):
    db = tmp_path / "lumen.duckdb"
    # The writer adds 2,000 calls over ~4 s, flushing every 0.1 s.
    writer = subprocess.Popen(
        script("write", str(db), str(N_CALLS), "4", "0.1"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # Wait until the writer has flushed at least once, then hold the
        # file read-only for 3 s from this second process.
        deadline = time.monotonic() + 30
        while not db.exists():
            assert time.monotonic() < deadline, "writer never flushed"
            assert writer.poll() is None, writer.communicate()
            time.sleep(0.05)
        time.sleep(0.5)
        holder = subprocess.Popen(
            script("hold", str(db), "3"), stdout=subprocess.PIPE, text=True
        )
        assert holder.stdout.readline().strip() == "held"
        held_at = time.monotonic()
        assert holder.wait(timeout=60) == 0
        assert time.monotonic() - held_at >= 2.5
        out, err = writer.communicate(timeout=120)
    finally:
        if writer.poll() is None:
            writer.kill()
    assert writer.returncode == 0, err
    stats = json.loads(out.strip().splitlines()[-1])

    assert run_sql(db, "SELECT count(*), count(DISTINCT id) FROM llm_calls").rows == [(N_CALLS, N_CALLS)]
    assert stats["rows_written"] == N_CALLS
    assert stats["lock_conflicts"] > 0
    assert stats["dropped"] == 0
    assert stats["pending"] == 0
    counters = dict(run_sql(db, "SELECT name, value FROM lumen_counters").rows)
    assert counters["rows_written"] == N_CALLS
    assert counters["lock_conflicts"] == stats["lock_conflicts"]
    assert "rows_dropped" not in counters
