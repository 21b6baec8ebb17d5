"""Prometheus exposition: exact lines from synthetic calls, bounded labels, escaping, the HTTP server."""

from __future__ import annotations

import math
import re
import shutil
import socket
import subprocess
import threading
import urllib.error
import urllib.request
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal
from types import SimpleNamespace

import pytest

from lumen_agent.config import ConfigError
from lumen_agent.outputs import metrics as metrics_mod
from lumen_agent.outputs.metrics import (
    CONTENT_TYPE,
    Metrics,
    install,
    parse_addr,
)
from lumen_agent.pipeline.call import Call, Outcome

T0 = datetime(2025, 11, 13, 10, 0, tzinfo=UTC)


def make_call(**changes) -> Call:
    call = Call(
        id="c1", ts_start=T0, ts_end=T0, latency_ms=120.0, ttft_ms=None, host="h", pid=100, process="worker",
        exe="/usr/bin/python3", user="app", unit=None, container_id=None, provider="openai",
        endpoint="chat.completions", server_address="api.openai.com", server_port=443,
        request_model="gpt-4o-mini", model="gpt-4o-mini", streaming=False, status_code=200,
        outcome=Outcome.SUCCESS, request_id=None, input_tokens=1000, output_tokens=100, cache_read_tokens=0,
        cache_write_tokens=None, cache_write_1h_tokens=None, reasoning_tokens=None,
        cost_usd=Decimal("0.00021"), price_id="openai/gpt-4o-mini@2024-07-18", unpriced=False,
        usage_missing=False, api_key_hash=None, tenant="acme", feature=None, capture="hook",
    )
    return replace(call, **changes)


# The order the expected lines below write labels in.
LABEL_ORDER = ("provider", "model", "process", "tenant", "type", "outcome", "label", "metric", "reason", "le",
               "version", "python")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def plain(line: str) -> str:
    """A sample line as the expectations write it.  prometheus_client writes values
    in Go's float format ("3.0", "1.7e+09") and labels in name order; neither
    changes what a scraper reads."""
    if line.startswith("#") or " " not in line:
        return line
    head, value = line.rsplit(" ", 1)
    number = float(value)  # Go's float text ("1.7e+09") read back, written as Python writes it
    if number.is_integer() and abs(number) < 1e15:
        value = str(int(number))
    elif math.isfinite(number):
        value = repr(number)
    if "{" in head:
        name, inner = head.split("{", 1)
        pairs = _LABEL.findall(inner[:-1])
        pairs.sort(key=lambda kv: LABEL_ORDER.index(kv[0]))
        head = name + "{" + ",".join(f'{k}="{v}"' for k, v in pairs) + "}"
    return f"{head} {value}"


def sample_lines(text: str) -> list[str]:
    return [plain(line) for line in text.splitlines()]


def lines_of(text: str, name: str) -> list[str]:
    return [line for line in sample_lines(text) if line.startswith(name + "{") or line.startswith(name + " ")]


LABELS = 'provider="openai",model="gpt-4o-mini",process="worker",tenant="acme"'


def test_exact_lines_for_three_calls_and_one_error():
    m = Metrics()
    for _ in range(3):
        m.observe_call(make_call())
    m.observe_call(make_call(outcome=Outcome.RATE_LIMITED, status_code=429, input_tokens=None, output_tokens=None,
                             cache_read_tokens=None, cost_usd=None, price_id=None, usage_missing=True))
    text = m.render()
    assert lines_of(text, "lumen_cost_usd_total") == [f"lumen_cost_usd_total{{{LABELS}}} 0.00063"]
    assert lines_of(text, "lumen_calls_total") == [
        f'lumen_calls_total{{{LABELS},outcome="rate_limited"}} 1',
        f'lumen_calls_total{{{LABELS},outcome="success"}} 3',
    ]
    assert lines_of(text, "lumen_tokens_total") == [
        f'lumen_tokens_total{{{LABELS},type="cache_read"}} 0',
        f'lumen_tokens_total{{{LABELS},type="input"}} 3000',
        f'lumen_tokens_total{{{LABELS},type="output"}} 300',
    ]
    assert lines_of(text, "lumen_usage_missing_calls_total") == [
        'lumen_usage_missing_calls_total{provider="openai",model="gpt-4o-mini"} 1']
    assert "# TYPE lumen_cost_usd_total counter" in text.splitlines()
    assert "# HELP lumen_cost_usd_total Spend of priced calls, US dollars." in text.splitlines()
    assert text.endswith("\n")


def test_cost_is_summed_in_decimal_not_float():
    m = Metrics()
    for _ in range(3):
        m.observe_call(make_call(cost_usd=Decimal("0.1")))
    assert 0.1 + 0.1 + 0.1 != 0.3  # what float accumulation would have exposed
    assert lines_of(m.render(), "lumen_cost_usd_total") == [f"lumen_cost_usd_total{{{LABELS}}} 0.3"]


def test_unpriced_calls_count_but_add_no_cost():
    m = Metrics()
    m.observe_call(make_call(model="new-model-9", cost_usd=None, price_id=None, unpriced=True))
    text = m.render()
    assert lines_of(text, "lumen_unpriced_calls_total") == [
        'lumen_unpriced_calls_total{provider="openai",model="new-model-9"} 1']
    assert lines_of(text, "lumen_cost_usd_total") == []
    assert 'type="input"} 1000' in lines_of(text, "lumen_tokens_total")[1]


def test_every_token_type_and_request_model_fallback():
    m = Metrics()
    m.observe_call(make_call(model=None, request_model="claude-x", provider="anthropic", input_tokens=10,
                             output_tokens=20, cache_read_tokens=3, cache_write_tokens=4, reasoning_tokens=5))
    lab = 'provider="anthropic",model="claude-x",process="worker",tenant="acme"'
    assert lines_of(m.render(), "lumen_tokens_total") == [
        f'lumen_tokens_total{{{lab},type="cache_read"}} 3',
        f'lumen_tokens_total{{{lab},type="cache_write"}} 4',
        f'lumen_tokens_total{{{lab},type="input"}} 10',
        f'lumen_tokens_total{{{lab},type="output"}} 20',
        f'lumen_tokens_total{{{lab},type="reasoning"}} 5',
    ]


def test_unknown_labels_are_empty_values():
    m = Metrics()
    m.observe_call(make_call(process=None, tenant=None))
    assert lines_of(m.render(), "lumen_cost_usd_total") == [
        'lumen_cost_usd_total{provider="openai",model="gpt-4o-mini",process="",tenant=""} 0.00021']


def test_label_values_past_the_limit_fold_into_other():
    m = Metrics(limits={"model": 2, "tenant": 1})
    for model, tenant in [("m1", "t1"), ("m2", "t2"), ("m3", "t3"), ("m4", "t1"), ("m1", "t4")]:
        m.observe_call(make_call(model=model, tenant=tenant))
    text = m.render()
    assert lines_of(text, "lumen_calls_total") == [
        'lumen_calls_total{provider="openai",model="m1",process="worker",tenant="other",outcome="success"} 1',
        'lumen_calls_total{provider="openai",model="m1",process="worker",tenant="t1",outcome="success"} 1',
        'lumen_calls_total{provider="openai",model="m2",process="worker",tenant="other",outcome="success"} 1',
        'lumen_calls_total{provider="openai",model="other",process="worker",tenant="other",outcome="success"} 1',
        'lumen_calls_total{provider="openai",model="other",process="worker",tenant="t1",outcome="success"} 1',
    ]
    # m1 was kept before the limit, so it stays itself; m3 and m4 came after it
    assert lines_of(text, "lumen_metrics_folded_total") == [
        'lumen_metrics_folded_total{label="model"} 2',
        'lumen_metrics_folded_total{label="process"} 0',
        'lumen_metrics_folded_total{label="provider"} 0',
        'lumen_metrics_folded_total{label="tenant"} 3',
    ]
    # totals are never lost by folding
    assert sum(int(line.rsplit(" ", 1)[1]) for line in lines_of(text, "lumen_calls_total")) == 5


def test_default_limits():
    assert metrics_mod.LABEL_LIMITS == {"provider": 30, "model": 50, "process": 100, "tenant": 100}
    m = Metrics()
    for i in range(120):
        m.observe_call(make_call(process=f"p{i}"))
    processes = {line.split('process="')[1].split('"')[0] for line in lines_of(m.render(), "lumen_calls_total")}
    assert len(processes) == 101 and "other" in processes and "p99" in processes and "p100" not in processes


def test_series_cap_folds_every_bounded_label(monkeypatch):
    monkeypatch.setattr(metrics_mod, "MAX_SERIES", 2)
    m = Metrics()
    for tenant in ("a", "b", "c", "d"):
        m.observe_call(make_call(tenant=tenant))
    text = m.render()
    assert lines_of(text, "lumen_calls_total") == [
        'lumen_calls_total{provider="openai",model="gpt-4o-mini",process="worker",tenant="a",outcome="success"} 1',
        'lumen_calls_total{provider="openai",model="gpt-4o-mini",process="worker",tenant="b",outcome="success"} 1',
        'lumen_calls_total{provider="other",model="other",process="other",tenant="other",outcome="success"} 2',
    ]
    assert 'lumen_metrics_series_overflow_total{metric="lumen_calls_total"} 2' in sample_lines(text)


def test_label_escaping_of_quotes_backslashes_and_newlines():
    m = Metrics()
    m.observe_call(make_call(process='we"ird\\proc\nname', tenant="t"))
    text = m.render()
    assert lines_of(text, "lumen_cost_usd_total") == [
        'lumen_cost_usd_total{provider="openai",model="gpt-4o-mini",process="we\\"ird\\\\proc\\nname",tenant="t"} '
        '0.00021']
    # And a Prometheus parser reads the very value back.
    from prometheus_client.parser import text_string_to_metric_families

    [cost] = [f for f in text_string_to_metric_families(text) if f.name == "lumen_cost_usd"]
    assert [s.labels["process"] for s in cost.samples] == ['we"ird\\proc\nname']


def test_long_and_undecodable_label_values_are_cleaned():
    m = Metrics()
    m.observe_call(make_call(model="x" * 500, process="bad\udcffname"))
    (line,) = lines_of(m.render(), "lumen_cost_usd_total")
    assert f'model="{"x" * 128}"' in line and 'process="bad?name"' in line
    m.render().encode("utf-8")  # a scrape can always be encoded


@pytest.mark.parametrize("cost,text", [
    (Decimal("0.00063"), "0.00063"), (Decimal("12.50000000"), "12.5"), (Decimal("3"), "3"),
    (Decimal("0.0000001"), "1e-07"),
])
def test_cost_values_are_exposed_exactly(cost, text):
    m = Metrics()
    m.observe_call(make_call(cost_usd=cost))
    assert lines_of(m.render(), "lumen_cost_usd_total") == [f"lumen_cost_usd_total{{{LABELS}}} {text}"]


STATUS = {
    "pid": 1, "started": 1_700_000_000.0, "updated": 1_700_000_100.5,
    "targets": ["/usr/lib/x86_64-linux-gnu/libssl.so.3 (lib, global, 4 processes)"],
    "capture": {"events": 40, "bytes": 9000, "lost": 2, "truncated": 1, "kernel_truncated": 1, "gaps": 0,
                "attach_errors": 3, "ignored_calls": 7, "probes_attached": 4, "targets_attached": 1},
    "pipeline": {"events": 44, "bytes": 9100, "calls": 3, "calls.unpriced": 1, "skipped.request_cut": 2,
                 "skipped.http1_response_bytes": 500, "connections.inbound_connection": 1,
                 "processes.excluded": 5},
    "ingest": {"events": 4, "bad_lines": 1},
    "open_connections": 6,
    "store": {"rows_written": 3, "pending": 2, "dropped": 0, "flushes": 2, "lock_conflicts": 1,
              "flush_errors": 0, "last_flush_ms": 12.5},
}


def test_health_lines_from_the_agent_status():
    lines = set(sample_lines(Metrics().render(STATUS)))
    for expected in [
        "lumen_events_total 44", "lumen_event_bytes_total 9100", "lumen_capture_events_total 40",
        "lumen_capture_bytes_total 9000", "lumen_capture_lost_events_total 2",
        "lumen_capture_truncated_events_total 1", "lumen_capture_oversized_calls_total 1",
        "lumen_attach_errors_total 3", "lumen_capture_ignored_calls_total 7", "lumen_targets_attached 1",
        "lumen_probes_attached 4", "lumen_ingest_events_total 4", "lumen_ingest_bad_lines_total 1",
        'lumen_skipped_total{reason="http1_response_bytes"} 500', 'lumen_skipped_total{reason="request_cut"} 2',
        'lumen_connections_untracked_total{reason="inbound_connection"} 1', "lumen_processes_excluded_total 5",
        "lumen_open_connections 6", "lumen_store_rows_written_total 3", "lumen_store_rows_pending 2",
        "lumen_store_rows_dropped_total 0", "lumen_store_flushes_total 2", "lumen_store_lock_conflicts_total 1",
        "lumen_store_flush_errors_total 0", "lumen_store_last_flush_duration_seconds 0.0125",
        "lumen_last_tick_timestamp_seconds 1700000100.5",
        "# TYPE lumen_store_rows_pending gauge", "# TYPE lumen_store_rows_written_total counter",
    ]:
        assert expected in lines, expected
    assert any(line.startswith('lumen_build_info{version="0.1.0",python="') and line.endswith('"} 1')
               for line in lines)


def test_health_before_the_first_status_is_all_zero():
    text = Metrics(started=1_700_000_000.0).render(None)
    lines = sample_lines(text)
    assert "lumen_events_total 0" in lines and "lumen_store_rows_pending 0" in lines
    assert "process_start_time_seconds 1700000000" in lines
    assert not lines_of(text, "lumen_store_last_flush_duration_seconds")


def test_skip_reasons_are_bounded(monkeypatch):
    monkeypatch.setattr(metrics_mod, "MAX_REASONS", 2)
    pipeline = {f"skipped.r{i}": 1 for i in range(5)}
    assert lines_of(Metrics().render({"pipeline": pipeline}), "lumen_skipped_total") == [
        'lumen_skipped_total{reason="other"} 3', 'lumen_skipped_total{reason="r0"} 1',
        'lumen_skipped_total{reason="r1"} 1']


def test_flush_histogram_observes_each_new_flush_once():
    m = Metrics()
    m.observe_store({"flushes": 0, "last_flush_ms": None})
    m.observe_store({"flushes": 1, "last_flush_ms": 7.0})
    m.observe_store({"flushes": 1, "last_flush_ms": 7.0})  # no new flush this second
    m.observe_store({"flushes": 2, "last_flush_ms": 300.0})
    name = "lumen_store_flush_duration_seconds"
    assert [line for line in sample_lines(m.render()) if line.startswith(name)] == [
        f'{name}_bucket{{le="0.005"}} 0', f'{name}_bucket{{le="0.01"}} 1', f'{name}_bucket{{le="0.025"}} 1',
        f'{name}_bucket{{le="0.05"}} 1', f'{name}_bucket{{le="0.1"}} 1', f'{name}_bucket{{le="0.25"}} 1',
        f'{name}_bucket{{le="0.5"}} 2', f'{name}_bucket{{le="1.0"}} 2', f'{name}_bucket{{le="2.5"}} 2',
        f'{name}_bucket{{le="5.0"}} 2', f'{name}_bucket{{le="10.0"}} 2', f'{name}_bucket{{le="+Inf"}} 2',
        f"{name}_count 2", f"{name}_sum 0.307",
    ]


def test_every_family_is_declared_once_and_well_formed():
    m = Metrics()
    m.observe_call(make_call())
    m.observe_store({"flushes": 1, "last_flush_ms": 3.0})
    text = m.render(STATUS)
    types = [line.split()[2] for line in text.splitlines() if line.startswith("# TYPE ")]
    assert len(types) == len(set(types))
    for line in text.splitlines():
        if not line.startswith("#"):
            name = line.split("{")[0].split(" ")[0]
            assert any(name == t or name.startswith(t + "_") for t in types), line


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool (Debian package prometheus) not installed")
def test_promtool_accepts_the_exposition():
    m = Metrics()
    m.observe_call(make_call(tenant='q"uote\\back\nline'))
    m.observe_call(make_call(model="unpriced-1", cost_usd=None, unpriced=True))
    m.observe_store({"flushes": 1, "last_flush_ms": 3.0})
    result = subprocess.run(["promtool", "check", "metrics"], input=m.render(STATUS), capture_output=True,
                            text=True, timeout=30)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "" and result.stderr.strip() == ""


def test_scrapes_and_calls_on_two_threads():
    m = Metrics()
    stop = threading.Event()
    errors = []

    def scrape():
        while not stop.is_set():
            try:
                m.render(STATUS)
            except Exception as exc:  # noqa: BLE001
                errors.append(exc)

    thread = threading.Thread(target=scrape)
    thread.start()
    try:
        for i in range(3000):
            m.observe_call(make_call(tenant=f"t{i % 300}"))
    finally:
        stop.set()
        thread.join()
    assert errors == []
    cost = sum(Decimal(line.rsplit(" ", 1)[1]) for line in lines_of(m.render(), "lumen_cost_usd_total"))
    assert cost == Decimal("0.63")


# -- the server ---------------------------------------------------------------------


@pytest.mark.parametrize("addr,expected", [
    ("127.0.0.1:9464", ("127.0.0.1", 9464)), (":9464", ("", 9464)), ("[::1]:0", ("::1", 0)),
    ("localhost:80", ("localhost", 80)),
])
def test_parse_addr(addr, expected):
    assert parse_addr(addr) == expected


@pytest.mark.parametrize("addr", ["9464", "127.0.0.1", "127.0.0.1:http", "127.0.0.1:70000", "::1:9464"])
def test_parse_addr_rejects(addr):
    with pytest.raises(ConfigError, match="metrics_addr"):
        parse_addr(addr)


class StubAgent:
    def __init__(self, status=None):
        self._status = status or {}
        self._started = 1_700_000_000.0
        self.call_listeners = []
        self.tick_listeners = []
        self.store = SimpleNamespace(stats=lambda: {"flushes": 1, "last_flush_ms": 4.0})

    def add_output(self, output):
        self.call_listeners.append(output.on_call)
        self.tick_listeners.append(lambda: output.on_tick(0.0))


def get(url):
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.status, response.headers["Content-Type"], response.read().decode()


def test_install_does_nothing_when_off():
    agent = StubAgent()
    assert install(agent, SimpleNamespace(metrics_addr=None)) is None
    assert agent.call_listeners == [] and agent.tick_listeners == []


def test_served_over_http_from_listeners():
    agent = StubAgent(STATUS)
    server = install(agent, SimpleNamespace(metrics_addr="127.0.0.1:0"))
    try:
        (on_call,), (on_tick,) = agent.call_listeners, agent.tick_listeners
        on_call(make_call())
        on_tick()
        status, content_type, body = get(f"http://127.0.0.1:{server.port}/metrics")
        assert status == 200 and content_type == CONTENT_TYPE
        assert f"lumen_cost_usd_total{{{LABELS}}} 0.00021" in sample_lines(body)
        assert "lumen_store_flush_duration_seconds_count 1" in sample_lines(body)
        assert "lumen_events_total 44" in sample_lines(body)
        assert get(f"http://127.0.0.1:{server.port}/")[0] == 200
        with pytest.raises(urllib.error.HTTPError) as err:
            get(f"http://127.0.0.1:{server.port}/nope")
        assert err.value.code == 404
    finally:
        server.close()


def test_ipv6_loopback():
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    try:
        server = install(StubAgent(), SimpleNamespace(metrics_addr="[::1]:0"))
    except OSError as exc:
        pytest.skip(f"IPv6 loopback unavailable: {exc}")
    try:
        assert get(f"http://[::1]:{server.port}/metrics")[0] == 200
    finally:
        server.close()


def test_address_in_use_is_one_clear_line():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        agent = StubAgent()
        with pytest.raises(OSError) as err:
            install(agent, SimpleNamespace(metrics_addr=f"127.0.0.1:{port}"))
    message = str(err.value)
    assert message.startswith(f"cannot serve metrics on 127.0.0.1:{port}: Address already in use")
    assert "\n" not in message
    assert agent.call_listeners == []  # nothing half-installed
