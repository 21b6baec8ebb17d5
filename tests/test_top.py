"""`lumen-agent top`: the pure view, the agent's LiveFeed, the CLI, and a real terminal (tmux)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from builders import exchange_events, request_bytes, response_bytes
from rich.console import Console
from typer.testing import CliRunner

from lumen_agent.cli import app
from lumen_agent.control import ControlServer, request
from lumen_agent.outputs.live import LATEST_CALLS, MAX_KEYS_PER_BUCKET, OTHER, LiveFeed, install
from lumen_agent.pipeline.call import Call, Outcome
from lumen_agent.recording import event_to_json
from lumen_agent.top import build_view, count, duration, usd

# The installed command, as users run it.
LUMEN_AGENT = str(Path(sys.executable).with_name("lumen-agent"))
NOW = 1_800_000_000.0  # 2027-01-15 08:00:00 UTC, on a minute boundary


@pytest.fixture(autouse=True)
def utc(monkeypatch):
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


# -- formatting ---------------------------------------------------------------


@pytest.mark.parametrize("value, text", [
    (None, "-"), ("0", "$0"), ("0E-8", "$0"), ("0.00038700", "$0.000387"), ("0.02322000", "$0.02322"),
    ("0.012735", "$0.01274"), ("0.5", "$0.50"), ("0.1", "$0.10"), ("0.99999", "$1.00"), ("12.345", "$12.35"),
    ("1234.5", "$1,234.50"), ("0.00000001", "$0.00000001"), (Decimal("-0.25"), "-$0.25"),
])
def test_usd(value, text):
    assert usd(value) == text


def test_counts_and_durations():
    assert [count(n) for n in (None, 0, 999, 99_999, 100_000, 1_234_567, 250_000_000_000)] == [
        "-", "0", "999", "99,999", "100k", "1.2M", "250G"]
    assert [duration(s) for s in (None, 5, 3725, 90_000)] == ["-", "0m05s", "1h02m", "1d01h"]


# -- the pure view ------------------------------------------------------------

SNAPSHOT = {
    "now": NOW,
    "window": 300,
    "window_label": "5m",
    "rate": {"cost_per_min": "0.01273500", "cost_per_hour": "0.76410000", "calls_per_s": 0.05,
             "tokens_per_s": 30.75},
    "totals": {"cost": "0.11273500", "calls": 4, "tokens": 1995, "unpriced": 1},
    "unpriced": 1,
    "top": {
        "process": [
            {"name": "invoice-worker", "cost": "0.10000000", "calls": 2, "tokens": 300, "unpriced": 1},
            {"name": "python3", "cost": "0.01273500", "calls": 2, "tokens": 1695, "unpriced": 0},
        ],
        "model": [
            {"name": "gpt-4o", "cost": "0.10000000", "calls": 1, "tokens": 150, "unpriced": 0},
            {"name": "claude-sonnet-4-5-20250929", "cost": "0.01234800", "calls": 1, "tokens": 150, "unpriced": 0},
            {"name": "gpt-4o-mini-2024-07-18", "cost": "0.00038700", "calls": 1, "tokens": 1545, "unpriced": 0},
            {"name": "llama3", "cost": "0", "calls": 1, "tokens": 150, "unpriced": 1},
        ],
        "provider": [
            {"name": "openai", "cost": "0.10038700", "calls": 2, "tokens": 1695, "unpriced": 0},
            {"name": "anthropic", "cost": "0.01234800", "calls": 1, "tokens": 150, "unpriced": 0},
            {"name": "ollama", "cost": "0", "calls": 1, "tokens": 150, "unpriced": 1},
        ],
        "tenant": [
            {"name": "acme", "cost": "0.11234800", "calls": 3, "tokens": 1845, "unpriced": 1},
            {"name": "-", "cost": "0.00038700", "calls": 1, "tokens": 150, "unpriced": 0},
        ],
    },
    "latest": [
        {"ts": NOW - 1, "process": "invoice-worker", "pid": 4242, "provider": "ollama", "model": "llama3",
         "input_tokens": 100, "output_tokens": 50, "cost": None, "latency_ms": 93.4, "outcome": "success",
         "tenant": "acme"},
        {"ts": NOW - 2, "process": "invoice-worker", "pid": 4242, "provider": "openai", "model": "gpt-4o",
         "input_tokens": 100, "output_tokens": 50, "cost": "0.10000000", "latency_ms": 12_345.0,
         "outcome": "rate_limited", "tenant": "acme"},
        {"ts": NOW - 3, "process": "python3", "pid": 77, "provider": "openai", "model": "gpt-4o-mini-2024-07-18",
         "input_tokens": 1200, "output_tokens": 345, "cost": "0.00038700", "latency_ms": 812.0,
         "outcome": "success", "tenant": None},
    ],
    "calls_seen": 4,
    "health": {"pid": 1234, "uptime_s": 3725, "targets_attached": 1, "events": 120, "lost": 3, "truncated": 0,
               "ingested_events": 0, "calls": 4, "unpriced": 1, "skipped": 2, "open_connections": 1,
               "rows_written": 3, "rows_pending": 1, "rows_dropped": 0},
}


def screen(snapshot, window, width, height, **kw) -> list[str]:
    console = Console(width=width, height=height, color_system=None, legacy_windows=False)
    with console.capture() as capture:
        console.print(build_view(snapshot, window, width, height, **kw))
    return capture.get().splitlines()


def row(lines: list[str], first: str) -> list[str]:
    """The words of the first line that starts with ``first``."""
    return next(line.split() for line in lines if line.startswith(first))


def test_view_narrow_shows_exact_figures():
    lines = screen(SNAPSHOT, 300, 80, 60)
    assert lines[0].startswith("lumen-agent top  last 5 minutes  08:00:00")
    assert lines[0].endswith("1 1m  2 5m  3 1h  4 24h  q quit")
    assert lines[1] == "spend $0.01274/min  $0.7641/h   calls 0.05/s   tokens 30.8/s   (last minute)"
    assert lines[2] == "5m window: $0.1127  4 calls  1,995 tokens  1 unpriced"
    assert lines[3] == "agent pid 1234 up 1h02m  events 120  lost 3  truncated 0  rows dropped 0  pendi…"
    # a process whose calls were partly unpriced: its cost is a lower bound
    assert row(lines, "invoice-worker") == ["invoice-worker", "≥$0.10", "2", "300"]
    assert row(lines, "python3") == ["python3", "$0.01274", "2", "1,695"]
    assert row(lines, "gpt-4o-mini-2024-07-18") == ["gpt-4o-mini-2024-07-18", "$0.000387", "1", "1,545"]
    assert row(lines, "llama3") == ["llama3", "unpriced", "1", "150"]
    assert row(lines, "anthropic") == ["anthropic", "$0.01235", "1", "150"]
    assert row(lines, "acme") == ["acme", "≥$0.1123", "3", "1,845"]
    # at 80 columns the latest calls keep their most telling columns, names whole
    assert row(lines, "LATEST") == ["LATEST", "PROCESS", "MODEL", "COST", "LATENCY", "OUTCOME"]
    assert row(lines, "07:59:59") == ["07:59:59", "invoice-worker", "llama3", "unpriced", "93ms", "success"]
    assert row(lines, "07:59:58") == ["07:59:58", "invoice-worker", "gpt-4o", "$0.10", "12.3s", "rate_limited"]
    assert row(lines, "07:59:57") == ["07:59:57", "python3", "gpt-4o-mini-2024-07-18", "$0.000387", "812ms",
                                      "success"]
    for title in ("PROCESS", "MODEL", "PROVIDER", "TENANT"):
        assert row(lines, title) == [title, "COST", "CALLS", "TOKENS"]


def test_view_wide_pairs_tables_and_shows_every_latest_column():
    lines = screen(SNAPSHOT, 3600, 120, 40)
    assert lines[0].startswith("lumen-agent top  last hour")
    assert lines[2].startswith("1h window: $0.1127")
    assert lines[3] == "agent pid 1234 up 1h02m  events 120  lost 3  truncated 0  rows dropped 0  pending 1  skipped 2"
    assert row(lines, "PROCESS") == ["PROCESS", "COST", "CALLS", "TOKENS", "MODEL", "COST", "CALLS", "TOKENS"]
    assert row(lines, "invoice-worker") == ["invoice-worker", "≥$0.10", "2", "300", "gpt-4o", "$0.10", "1", "150"]
    assert row(lines, "LATEST") == ["LATEST", "PROCESS", "PID", "PROVIDER", "MODEL", "IN", "OUT", "COST",
                                    "LATENCY", "OUTCOME"]
    assert row(lines, "07:59:57") == ["07:59:57", "python3", "77", "openai", "gpt-4o-mini-2024-07-18", "1,200",
                                      "345", "$0.000387", "812ms", "success"]


@pytest.mark.parametrize("width", [1, 2, 5, 10, 20, 30, 40, 49, 50, 60, 80, 99, 100, 101, 120, 250])
@pytest.mark.parametrize("height", [1, 2, 3, 5, 6, 8, 10, 14, 15, 20, 24, 40, 80])
def test_view_fits_any_terminal(width, height):
    for snapshot, notice in ((SNAPSHOT, None), (SNAPSHOT, "agent gone since 08:00:00"), (None, "no agent")):
        lines = screen(snapshot, 60, width, height, notice=notice)
        assert 1 <= len(lines) <= height
        assert all(Console().measure(line).maximum <= width for line in lines)
        if width >= 16:
            assert lines[0].startswith("lumen-agent top")


def test_small_terminal_drops_tables_before_the_first_rows():
    lines = screen(SNAPSHOT, 60, 50, 15)
    assert lines[0].startswith("lumen-agent top  last minute")
    text = "\n".join(lines)
    assert "PROCESS" in text and "MODEL" in text and "LATEST" in text
    assert "TENANT" not in text and "PROVIDER" not in text
    assert row(lines, "invoice-worker") == ["invoice-worker", "≥$0.10", "2", "300"]
    tiny = screen(SNAPSHOT, 60, 30, 4)
    assert tiny[0] == "lumen-agent top  last minute …"
    assert len(tiny) <= 4


def test_view_of_an_empty_agent_and_of_a_lost_one():
    empty = {**SNAPSHOT, "top": {}, "latest": [], "health": {},
             "totals": {"cost": "0", "calls": 0, "tokens": 0, "unpriced": 0}}
    lines = screen(empty, 60, 80, 40)
    assert lines[2] == "1m window: $0  0 calls  0 tokens  0 unpriced"
    assert lines[3] == "agent: waiting for its first status"
    assert row(lines, "no") == ["no", "calls"]
    lost = screen(SNAPSHOT, 60, 100, 30, notice="agent gone since 08:00:05, figures frozen, retrying: nope")
    assert lost[1] == "agent gone since 08:00:05, figures frozen, retrying: nope"
    assert not any(line.startswith("agent pid") for line in lost)
    assert screen(None, 86400, 80, 24, notice="no lumen-agent is running") == [
        "lumen-agent top  last 24 hours                   1 1m  2 5m  3 1h  4 24h  q quit",
        "no lumen-agent is running"]


# -- the LiveFeed ---------------------------------------------------------------


def make_call(process="worker", model="gpt-4o-mini", cost="0.001", provider="openai", tenant=None,
              input_tokens=100, output_tokens=50, pid=4242, outcome=Outcome.SUCCESS, ts=NOW) -> Call:
    when = datetime.fromtimestamp(ts, UTC)
    return Call(
        id=str(uuid.uuid4()), ts_start=when, ts_end=when, latency_ms=250.0, ttft_ms=None, host="h", pid=pid,
        process=process, exe=None, user=None, unit=None, container_id=None, provider=provider,
        endpoint="chat.completions", server_address=None, server_port=None, request_model=model, model=model,
        streaming=False, status_code=200, outcome=outcome, request_id=None, input_tokens=input_tokens,
        output_tokens=output_tokens, cache_read_tokens=None, cache_write_tokens=None, cache_write_1h_tokens=None,
        reasoning_tokens=None, cost_usd=None if cost is None else Decimal(cost), price_id=None,
        unpriced=cost is None, usage_missing=False, api_key_hash=None, tenant=tenant, feature=None, capture="hook")


def top_of(snapshot, dim):
    return {e["name"]: (e["cost"], e["calls"], e["tokens"], e["unpriced"]) for e in snapshot["top"][dim]}


def test_feed_exact_sums_per_window():
    feed = LiveFeed()
    # seconds before NOW the agent saw each call -> (process, model, cost, tenant, tokens in, out)
    calls = [
        (10, "api", "gpt-4o-mini", "0.00038700", "acme", 1200, 345),
        (59, "api", "gpt-4o", "0.01000000", "acme", 1000, 750),
        (59, "batch", "llama3", None, None, 500, 20),  # unpriced: counted, costs nothing
        (60, "batch", "gpt-4o", "0.02000000", None, 2000, 1500),  # just outside the last minute
        (299, "batch", "gpt-4o", "0.03000000", "globex", 3000, 100),
        (301, "api", "claude-sonnet-4-5", "0.50000000", "globex", 10, 10),  # outside 5 min
        (3540, "api", "gpt-4o", "1.00000000", None, 1, 1),  # the 60th minute bucket: inside 1 h
        (3541, "cron", "gpt-4o", "2.00000000", None, 1, 1),  # the 61st: outside 1 h
        (86_340, "cron", "gpt-4o", "4.00000000", None, 1, 1),  # the 1440th minute bucket: inside 24 h
    ]
    for ago, process, model, cost, tenant, tin, tout in calls:
        feed.add(make_call(process, model, cost, tenant=tenant, input_tokens=tin, output_tokens=tout,
                           provider="anthropic" if "claude" in model else "openai"), now=NOW - ago)

    m1 = feed.snapshot(60, now=NOW)
    assert m1["totals"] == {"cost": "0.01038700", "calls": 3, "tokens": 1200 + 345 + 1000 + 750 + 520,
                            "unpriced": 1}
    assert m1["unpriced"] == 1
    assert m1["rate"] == {"cost_per_min": "0.01038700", "cost_per_hour": "0.62322000", "calls_per_s": 3 / 60,
                          "tokens_per_s": 3815 / 60}
    assert top_of(m1, "process") == {"api": ("0.01038700", 2, 3295, 0), "batch": ("0", 1, 520, 1)}
    assert [e["name"] for e in m1["top"]["process"]] == ["api", "batch"]
    assert top_of(m1, "tenant") == {"acme": ("0.01038700", 2, 3295, 0), "-": ("0", 1, 520, 1)}

    m5 = feed.snapshot(300, now=NOW)
    assert m5["totals"] == {"cost": "0.06038700", "calls": 5, "tokens": 3815 + 3500 + 3100, "unpriced": 1}
    assert m5["rate"] == m1["rate"]  # rates are always over the last minute
    assert top_of(m5, "process") == {"batch": ("0.05000000", 3, 7120, 1), "api": ("0.01038700", 2, 3295, 0)}
    assert top_of(m5, "model") == {"gpt-4o": ("0.06000000", 3, 8350, 0), "gpt-4o-mini": ("0.00038700", 1, 1545, 0),
                                   "llama3": ("0", 1, 520, 1)}
    assert list(top_of(m5, "model")) == ["gpt-4o", "gpt-4o-mini", "llama3"]

    h1 = feed.snapshot(3600, now=NOW)
    assert h1["totals"] == {"cost": "1.56038700", "calls": 7, "tokens": 10415 + 20 + 2, "unpriced": 1}
    assert top_of(h1, "provider") == {"openai": ("1.06038700", 6, 10417, 1), "anthropic": ("0.50000000", 1, 20, 0)}

    d1 = feed.snapshot(86400, now=NOW)
    assert d1["totals"] == {"cost": "7.56038700", "calls": 9, "tokens": 10441, "unpriced": 1}
    assert top_of(d1, "process")["cron"] == ("6.00000000", 2, 4, 0)
    # a minute later the oldest call has left the 24 h window
    assert feed.snapshot(86400, now=NOW + 60)["totals"]["calls"] == 8

    assert [c["model"] for c in m1["latest"]][:2] == ["gpt-4o", "gpt-4o"]  # newest first
    assert m1["latest"][-1] == {"ts": NOW, "process": "api", "pid": 4242, "provider": "openai",
                                "model": "gpt-4o-mini", "input_tokens": 1200, "output_tokens": 345,
                                "cost": "0.00038700", "latency_ms": 250.0, "outcome": "success", "tenant": "acme"}
    json.dumps(d1)  # JSON-able as it is


def test_feed_bounds_top_latest_names_and_buckets():
    feed = LiveFeed()
    for i in range(MAX_KEYS_PER_BUCKET + 30):
        feed.add(make_call(process=f"p{i:03d}", cost=f"0.{i + 1:08d}"), now=NOW)
    snap = feed.snapshot(60, now=NOW)
    names = [e["name"] for e in snap["top"]["process"]]
    assert len(names) == 10
    # the 30 names past the per-bucket bound are summed under OTHER
    other = sum(range(MAX_KEYS_PER_BUCKET + 1, MAX_KEYS_PER_BUCKET + 31))
    assert names[0] == OTHER and snap["top"]["process"][0] == {
        "name": OTHER, "cost": f"{Decimal(other) / 10**8:.8f}", "calls": 30, "tokens": 4500, "unpriced": 0}
    assert names[1:] == [f"p{i:03d}" for i in range(MAX_KEYS_PER_BUCKET - 1, MAX_KEYS_PER_BUCKET - 10, -1)]
    assert len(snap["latest"]) == LATEST_CALLS
    assert snap["latest"][0]["process"] == f"p{MAX_KEYS_PER_BUCKET + 29:03d}"
    # two days of one call a minute keep at most a day of minute buckets and 5 min of second buckets
    for minute in range(2 * 1440):
        feed.add(make_call(cost="0.00000001"), now=NOW + minute * 60)
    assert len(feed._minutes._buckets) <= 1440 and len(feed._seconds._buckets) <= 300
    assert feed.snapshot(86400, now=NOW + (2 * 1440 - 1) * 60)["totals"]["calls"] == 1440


def test_feed_readers_keep_their_buckets_when_the_clock_steps_back():
    feed = LiveFeed()
    feed.add(make_call(cost="0.1"), now=NOW)
    feed.add(make_call(cost="0.2"), now=NOW + 61)
    taken = feed._minutes.window(NOW + 61, 3600)  # what a snapshot sums after releasing the lock
    feed.add(make_call(cost="0.4"), now=NOW + 1)  # the clock stepped back into an older minute
    feed.add(make_call(cost="0.8"), now=NOW + 62)
    assert sorted(b.cost for b in taken) == [Decimal("0.1"), Decimal("0.2")]
    assert feed.snapshot(3600, now=NOW + 62)["totals"] == {"cost": "1.5", "calls": 4, "tokens": 600, "unpriced": 0}


def test_feed_rejects_other_windows():
    with pytest.raises(ValueError, match="window must be one of 60, 300, 3600, 86400"):
        LiveFeed().snapshot(120)


def test_feed_is_thread_safe():
    feed = LiveFeed()
    stop = threading.Event()
    seen: list[list[int]] = [[], []]

    def reader(mine: list[int]):
        while not stop.is_set():
            mine.append(feed.snapshot(86400)["totals"]["calls"])

    readers = [threading.Thread(target=reader, args=(mine,)) for mine in seen]
    writers = [threading.Thread(target=lambda n=n: [feed.add(make_call(process=f"w{n}", tenant=f"t{i % 7}"))
                                                    for i in range(2000)]) for n in range(4)]
    for t in readers + writers:
        t.start()
    for t in writers:
        t.join()
    stop.set()
    for t in readers:
        t.join()
    snap = feed.snapshot(300)
    assert snap["totals"] == {"cost": "8.000", "calls": 8000, "tokens": 8000 * 150, "unpriced": 0}
    assert {e["name"]: e["calls"] for e in snap["top"]["process"]} == {f"w{n}": 2000 for n in range(4)}
    for mine in seen:  # each reader saw the count only grow
        assert mine == sorted(mine)


class _StubAgent:
    """What install() uses of an Agent: listeners, the control server, the latest status."""

    def __init__(self, runtime_dir: Path) -> None:
        self.control = ControlServer(runtime_dir)
        self.listeners = []
        self._status = {"pid": 99, "started": 100.0, "updated": 160.0, "targets": ["ingest socket"],
                        "capture": {"events": 12, "lost": 2, "truncated": 1}, "pipeline": {"calls": 1},
                        "store": {"pending": 1}}

    def add_output(self, output):
        self.listeners.append(output.on_call)


def test_install_serves_snapshot_over_the_control_socket(tmp_path):
    agent = _StubAgent(tmp_path)
    install(agent, None)
    agent.control.start()
    try:
        for listener in agent.listeners:
            listener(make_call(cost="0.00038700"))
        snap = request(agent.control.control_path, "snapshot", window=300)
        assert snap["window"] == 300 and snap["window_label"] == "5m"
        assert snap["totals"] == {"cost": "0.00038700", "calls": 1, "tokens": 150, "unpriced": 0}
        assert snap["health"] == {"pid": 99, "uptime_s": 60, "targets_attached": 1, "events": 12, "lost": 2,
                                  "truncated": 1, "ingested_events": 0, "calls": 1, "unpriced": 0, "skipped": 0,
                                  "open_connections": 0, "rows_written": 0, "rows_pending": 1, "rows_dropped": 0}
        assert request(agent.control.control_path, "snapshot")["window"] == 60
        with pytest.raises(OSError, match="window must be one of"):
            request(agent.control.control_path, "snapshot", window="5m")
    finally:
        agent.control.close()


# -- the command ---------------------------------------------------------------


def test_top_once_without_agent_is_one_line_exit_1(tmp_path, monkeypatch):
    monkeypatch.setenv("LUMEN_RUNTIME_DIR", str(tmp_path / "run"))
    monkeypatch.setenv("LUMEN_CONFIG_DIR", str(tmp_path / "etc"))
    result = CliRunner().invoke(app, ["top", "--once"])
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr == f"no lumen-agent is running (nothing answers at {tmp_path / 'run' / 'agent.sock'})\n"


def test_top_options_errors(tmp_path, monkeypatch):
    monkeypatch.setenv("LUMEN_RUNTIME_DIR", str(tmp_path / "run"))
    monkeypatch.setenv("LUMEN_CONFIG_DIR", str(tmp_path / "etc"))
    bad = CliRunner().invoke(app, ["top", "--once", "--window", "2h"])
    assert bad.exit_code == 2 and "2h" in bad.stderr
    missing = CliRunner().invoke(app, ["top", "--config", str(tmp_path / "nope.toml")])
    assert missing.exit_code == 2
    assert missing.stderr == f"error: {tmp_path / 'nope.toml'}: no such configuration file\n"
    # the live view needs a terminal (CliRunner's stdin/stdout are not one)
    no_tty = CliRunner().invoke(app, ["top"])
    assert no_tty.exit_code == 2
    assert no_tty.stderr == "error: top needs a terminal; use `lumen-agent top --once` for one snapshot\n"


# -- a real agent, a real terminal ---------------------------------------------

# gpt-4o-mini: $0.15 input, $0.60 output per 1M tokens: 1200 x 0.15 + 345 x 0.60 = 387 per 1M
EXPECTED_COST = "$0.000387"
EXPECTED_PER_HOUR = "$0.02322/h"


def openai_call_events(conn: int):
    body = {"id": "chatcmpl-top", "object": "chat.completion", "created": 1, "model": "gpt-4o-mini-2024-07-18",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1200, "completion_tokens": 345, "total_tokens": 1545}}
    return exchange_events(request_bytes("POST", "https://api.openai.com/v1/chat/completions",
                                         {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}),
                           response_bytes(json.dumps(body).encode()), conn=conn)


def wait_for(predicate, timeout=15.0, what="condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


@pytest.fixture
def agent_env(tmp_path):
    env = {**os.environ, "LUMEN_RUNTIME_DIR": str(tmp_path / "run"), "LUMEN_STATE_DIR": str(tmp_path / "state"),
           "LUMEN_CONFIG_DIR": str(tmp_path / "etc")}
    return env


@pytest.fixture
def running_agent(tmp_path, agent_env):
    """`lumen-agent run --capture hook` with one OpenAI call handed in over its ingest socket."""
    log = open(tmp_path / "agent.log", "w")
    proc = subprocess.Popen([LUMEN_AGENT, "run", "--capture", "hook",
                             "--db", str(tmp_path / "x.duckdb")], env=agent_env, stdout=log, stderr=subprocess.STDOUT)
    control = tmp_path / "run" / "agent.sock"
    try:
        wait_for(lambda: _answers(control) or proc.poll() is not None, what="the agent's control socket")
        assert proc.poll() is None, (tmp_path / "agent.log").read_text()
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.connect(str(tmp_path / "run" / "ingest.sock"))
            lines = "".join(event_to_json(e) + "\n" for e in openai_call_events(conn=0x70B))
            sock.sendall(b'{"op":"events"}\n' + lines.encode())
        wait_for(lambda: request(control, "snapshot", window=60)["totals"]["calls"] == 1, what="the call")
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=15)
        log.close()


def _answers(path: Path) -> bool:
    try:
        request(path, "status", timeout=0.5)
        return True
    except (OSError, ValueError):
        return False


def test_top_once_with_a_running_agent(running_agent, agent_env):
    comm = Path("/proc/self/comm").read_text().strip()  # the ingest socket credits the sender's pid
    result = subprocess.run([LUMEN_AGENT, "top", "--once", "--window", "5m"],
                            env={**agent_env, "COLUMNS": "80"}, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("lumen-agent top  last 5 minutes")
    assert lines[1].startswith(f"spend {EXPECTED_COST}/min  {EXPECTED_PER_HOUR}")
    assert lines[2] == f"5m window: {EXPECTED_COST}  1 call  1,545 tokens  0 unpriced"
    assert row(lines, comm)[-3:] == [EXPECTED_COST, "1", "1,545"]
    assert row(lines, "gpt-4o-mini-2024-07-18") == ["gpt-4o-mini-2024-07-18", EXPECTED_COST, "1", "1,545"]


class Tmux:
    """A tmux server of our own (its socket in a short temporary folder, removed by close)."""

    def __init__(self, env: dict[str, str]) -> None:
        self.folder = tempfile.mkdtemp(prefix="lumen-tmux-")
        self.socket = os.path.join(self.folder, "s")
        self.env = env

    def close(self) -> None:
        subprocess.run(["tmux", "-S", self.socket, "kill-server"], capture_output=True, timeout=10)
        shutil.rmtree(self.folder, ignore_errors=True)

    def __call__(self, *args: str) -> str:
        result = subprocess.run(["tmux", "-S", self.socket, "-f", "/dev/null", *args], capture_output=True,
                                text=True, timeout=10, env=self.env)
        assert result.returncode == 0, result.stderr
        return result.stdout

    def screen(self) -> str:
        return self("capture-pane", "-p", "-t", "top")

    def wait_screen(self, predicate, what: str) -> str:
        last = [""]

        def check():
            last[0] = self.screen()
            return predicate(last[0])

        try:
            wait_for(check, what=what)
        except AssertionError:
            raise AssertionError(f"timed out waiting for {what}; screen:\n{last[0]}") from None
        return last[0]


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux (scripts/install.sh --test installs it)")
def test_top_in_a_real_terminal(running_agent, agent_env):
    comm = Path("/proc/self/comm").read_text().strip()
    env = {k: v for k, v in agent_env.items() if not k.startswith("TMUX")}
    tmux = Tmux(env)
    tmux("new-session", "-d", "-s", "top", "-x", "120", "-y", "40",
         *(arg for k in ("LUMEN_RUNTIME_DIR", "LUMEN_STATE_DIR", "LUMEN_CONFIG_DIR") for arg in ("-e", f"{k}={env[k]}")),
         "bash --norc --noprofile")
    try:
        tmux("send-keys", "-t", "top", f"{LUMEN_AGENT} top; echo top-exit=$?", "Enter")
        text = tmux.wait_screen(lambda s: EXPECTED_COST in s and "gpt-4o-mini" in s, "the call on screen")
        lines = text.splitlines()
        assert lines[0].startswith("lumen-agent top  last minute")
        assert lines[1].startswith(f"spend {EXPECTED_COST}/min  {EXPECTED_PER_HOUR}")
        assert row(lines, comm)[:4] == [comm, EXPECTED_COST, "1", "1,545"]  # the process table...
        assert "gpt-4o-mini-2024-07-18" in row(lines, comm)  # ...beside the model table
        assert row(lines, "openai")[:4] == ["openai", EXPECTED_COST, "1", "1,545"]

        tmux("send-keys", "-t", "top", "2")
        text = tmux.wait_screen(lambda s: s.startswith("lumen-agent top  last 5 minutes"), "the 5m window")
        assert f"5m window: {EXPECTED_COST}  1 call  1,545 tokens  0 unpriced" in text

        tmux("resize-window", "-t", "top", "-x", "50", "-y", "15")
        text = tmux.wait_screen(lambda s: "PROCESS" in s and len(max(s.splitlines(), key=len)) <= 50
                                and s.startswith("lumen-agent top  last 5 minutes"), "the view at 50x15")
        assert len(text.splitlines()) <= 15
        assert row(text.splitlines(), comm)[-3:] == [EXPECTED_COST, "1", "1,545"]

        # the agent goes away: top says so and keeps going
        running_agent.send_signal(signal.SIGTERM)
        running_agent.wait(timeout=15)
        tmux("resize-window", "-t", "top", "-x", "120", "-y", "40")
        text = tmux.wait_screen(lambda s: "agent gone since" in s and "no lumen-agent is running" in s,
                                "the lost-agent notice at 120 columns")
        assert f"5m window: {EXPECTED_COST}" in text  # the last figures stay

        tmux("send-keys", "-t", "top", "C-c")
        text = tmux.wait_screen(lambda s: any(line.startswith("top-exit=") for line in s.splitlines()),
                                "top to exit")
        assert "top-exit=0" in text
        assert "Traceback" not in text
    finally:
        tmux.close()
