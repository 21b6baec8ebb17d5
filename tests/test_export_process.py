"""The exporter process (outputs/export_process.py) with a real redis-server:
the parent's queue bound, a child killed with -9 and started again, stop drains."""

from __future__ import annotations

import os
import signal
import time

import pytest
from test_export_redis import REDIS_SERVER, RedisServer, free_port, wait_for
from test_store_support import make_call

from lumen_agent.errors import LumenError
from lumen_agent.outputs.export_process import ExportProcess, ForwardedExport

pytestmark = pytest.mark.skipif(REDIS_SERVER is None, reason="redis-server not installed")


def redis_export(url: str, max_queued: int) -> ForwardedExport:
    return ForwardedExport("redis", ExportProcess({"redis": {"url": url, "maxlen": 10_000}},
                                                  max_queued={"redis": max_queued}))


def test_stop_drains_everything_queued_into_the_stream(tmp_path):
    server = RedisServer(tmp_path, free_port())
    try:
        export = redis_export(server.url, 1000)
        for i in range(300):
            export.on_call(make_call(i))
        export.close()  # right away: what waits here and in the child is delivered before it returns
        ids = [fields[b"id"].decode() for _, fields in server.client.xrange("lumen:calls")]
        assert ids == [make_call(i).id for i in range(300)]
        stats = export.stats()
        assert (stats["sent"], stats["queued"], stats["dropped"], stats["process_restarts"]) == (300, 0, 0, 0)
    finally:
        server.stop()


def test_queue_bound_counts_rows_here_and_in_the_child():
    export = redis_export(f"redis://127.0.0.1:{free_port()}/0", 20)  # nobody listens
    try:
        for i in range(30):
            started = time.monotonic()
            export.on_call(make_call(i))
            assert time.monotonic() - started < 0.4  # under the first retry backoff (0.5 s): capture never waits on it
        assert export.stats()["dropped"] == 10
        wait_for(lambda: export.stats()["failures"] >= 1 and not export.stats()["connected"])
        assert export.stats()["queued"] == 20
        export.on_call(make_call(99))  # still full, though the rows now wait in the child
        assert export.stats()["dropped"] == 11
    finally:
        export.close()
    # At stop the child gave up on Redis after its close timeout: those 20 are dropped too.
    assert export.stats() | {"failures": 0} == {"sent": 0, "queued": 0, "dropped": 31, "failures": 0,
                                                 "reconnects": 0, "connected": False, "lost_in_crash": 0,
                                                 "process_restarts": 0}


def test_a_killed_child_is_restarted_and_what_it_held_is_counted(tmp_path):
    port = free_port()
    export = redis_export(f"redis://127.0.0.1:{port}/0", 1000)
    server = None
    try:
        for i in range(10):  # Redis is down: the child holds these, retrying
            export.on_call(make_call(i))
        wait_for(lambda: export.stats()["failures"] >= 1)
        time.sleep(0.5)  # > FORWARD_INTERVAL_S: all 10 are in the child
        first = export.process.child_pid()
        os.kill(first, signal.SIGKILL)
        wait_for(lambda: export.stats()["process_restarts"] == 1)
        assert export.process.child_pid() != first
        assert (export.stats()["lost_in_crash"], export.stats()["dropped"]) == (10, 10)
        server = RedisServer(tmp_path, port)
        for i in range(10, 15):
            export.on_call(make_call(i))
        wait_for(lambda: export.stats()["sent"] == 5)
        ids = [fields[b"id"].decode() for _, fields in server.client.xrange("lumen:calls")]
        assert ids == [make_call(i).id for i in range(10, 15)]
    finally:
        export.close()
        if server is not None:
            server.stop()
    assert export.stats()["sent"] == 5 and export.stats()["dropped"] == 10


def test_an_exporter_that_cannot_start_is_a_clean_error():
    with pytest.raises(LumenError, match="exporter process could not start"):
        redis_export("nonsense://x", 10)
