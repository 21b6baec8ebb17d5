"""Prometheus metrics: ``GET /metrics`` in the text exposition format 0.0.4.

``install(agent, config)`` does nothing unless ``config.metrics_addr`` is set.
Then it binds that address at once (so a taken port is a one-line error at
start, before any probe is attached), serves it from a daemon thread, and
feeds two kinds of metrics:

* per-call counters (spend, tokens, calls, unpriced calls), accumulated by a
  call listener on the run loop's thread.  Cost is summed in ``Decimal`` and
  only turned into a float when rendered, so the exposed total is the exact
  sum of the stored ``cost_usd`` values, rounded once.
* agent health (events, bytes, lost, skipped, store rows, flush latency...),
  read at scrape time from the status the run loop publishes every second
  (``Agent._status``: a fresh dict each time, never mutated afterwards, so
  the server thread may read it without a lock).

Scrapes run on the server's threads while listeners run on the loop thread:
every piece of state this module owns is changed under one lock, and a scrape
copies it under that lock and formats the copy outside it.

Cardinality is bounded: each call label keeps at most ``LABEL_LIMITS[label]``
distinct values (first come, first kept, for the life of the process); later
values are reported as ``"other"``.  Values are also cut to
``MAX_LABEL_CHARS`` characters, and each family holds at most ``MAX_SERIES``
series, past which new label sets are reported with every folded label as
``"other"``.  ``lumen_metrics_folded_total{label}`` counts what was folded.
docs/metrics.md lists every metric.

The exposition is prometheus_client's: one custom collector on a private
``CollectorRegistry`` builds the families at scrape time from the state
above.  Custom, because the bounded labels (folding to "other", a series
cap) are ours to enforce, and the health figures are read from the agent's
status rather than counted twice; private, so no default process or
platform collector adds names docs/metrics.md does not list.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import platform
import socket
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import psutil
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

from lumen_agent import __version__
from lumen_agent.config import ConfigError
from lumen_agent.outputs.base import Output
from lumen_agent.pipeline.call import Call

log = logging.getLogger("lumen_agent")

# The classic text format, which generate_latest writes.
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4
OTHER = "other"
# Distinct values kept per call label; later values become "other".  Sized for
# a host: a few providers, tens of models, one or two hundred processes/tenants.
LABEL_LIMITS: dict[str, int] = {"provider": 30, "model": 50, "process": 100, "tenant": 100}
# Distinct reasons kept for the skipped / untracked-connection counters (their
# reasons come from the code, so this only guards against a future bug).
MAX_REASONS = 50
# Longer label values are cut: a model name comes from the wire.
MAX_LABEL_CHARS = 128
# Series of one family, whatever the labels combine to.
MAX_SERIES = 20_000
# Distinct (provider, model, process, tenant) of calls whose sample keys are
# kept ready (Metrics.observe_call); past this, new ones are worked out per call.
MAX_KEY_CACHE = 4096
# Store flush latency buckets, seconds (a flush opens the file, appends, closes it).
FLUSH_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# Longest a scraper may take to send its request.
REQUEST_TIMEOUT_S = 10

CALL_LABELS = ("provider", "model", "process", "tenant")
TOKEN_TYPES = (
    ("input", "input_tokens"),
    ("output", "output_tokens"),
    ("cache_read", "cache_read_tokens"),
    ("cache_write", "cache_write_tokens"),
    ("reasoning", "reasoning_tokens"),
)

Number = int | float | Decimal
Sample = tuple[tuple[tuple[str, str], ...], Number]  # ((label, value), ...), value


# -- families -------------------------------------------------------------------


def counter(name: str, help_text: str, samples: Iterable[Sample]) -> CounterMetricFamily:
    """A counter family; ``name`` ends in ``_total`` (prometheus_client adds it back to each sample)."""
    labels = None
    family = None
    for label_pairs, value in samples:
        if family is None:
            labels = [k for k, _ in label_pairs]
            family = CounterMetricFamily(name, help_text, labels=labels)
        family.add_metric([v for _, v in label_pairs], float(value))
    return family if family is not None else CounterMetricFamily(name, help_text, labels=labels)


def gauge(name: str, help_text: str, samples: Iterable[Sample]) -> GaugeMetricFamily:
    family = None
    for label_pairs, value in samples:
        if family is None:
            family = GaugeMetricFamily(name, help_text, labels=[k for k, _ in label_pairs])
        family.add_metric([v for _, v in label_pairs], float(value))
    return family if family is not None else GaugeMetricFamily(name, help_text)


def family(name: str, kind: str, help_text: str, samples: Iterable[Sample]):
    return counter(name, help_text, samples) if kind == "counter" else gauge(name, help_text, samples)


class Histogram:
    """Cumulative buckets, sum and count; not thread-safe (callers hold a lock)."""

    def __init__(self, buckets: tuple[float, ...]) -> None:
        self.buckets = buckets
        self.counts = [0] * len(buckets)
        self.total = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        for i, bound in enumerate(self.buckets):
            if value <= bound:
                self.counts[i] += 1
        self.total += value
        self.count += 1

    def copy(self) -> Histogram:
        h = Histogram(self.buckets)
        h.counts, h.total, h.count = list(self.counts), self.total, self.count
        return h

    def family(self, name: str, help_text: str) -> HistogramMetricFamily:
        buckets = [(repr(float(bound)), n) for bound, n in zip(self.buckets, self.counts, strict=False)]
        buckets.append(("+Inf", self.count))
        return HistogramMetricFamily(name, help_text, buckets=buckets, sum_value=self.total)


# -- bounded labels --------------------------------------------------------------


class LabelFolder:
    """Keeps the first ``limit`` distinct values of a label; maps the rest to "other".

    The empty value (label unknown) is always kept and does not count.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.seen: set[str] = set()
        self.folded = 0

    def __call__(self, value: str | None) -> str:
        if not value:
            return ""
        value = clean_label_value(value)
        if value in self.seen or value == OTHER:
            return value
        if len(self.seen) < self.limit:
            self.seen.add(value)
            return value
        self.folded += 1
        return OTHER


def clean_label_value(value: str) -> str:
    """At most MAX_LABEL_CHARS characters of valid UTF-8 (lone surrogates replaced)."""
    value = value[:MAX_LABEL_CHARS]
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        value = value.encode("utf-8", "replace").decode("utf-8")
    return value


class _Counter:
    """One labelled counter family: label values tuple -> running total."""

    def __init__(self, name: str, help_text: str, labels: tuple[str, ...], folded: tuple[int, ...]) -> None:
        self.name = name
        self.help = help_text
        self.labels = labels
        self.folded = folded  # positions of the labels that fold to "other" when full
        self.values: dict[tuple[str, ...], Number] = {}
        self.overflowed = 0

    def add(self, key: tuple[str, ...], amount: Number) -> None:
        if key not in self.values and len(self.values) >= MAX_SERIES:
            key = tuple(OTHER if i in self.folded else v for i, v in enumerate(key))
            self.overflowed += 1
        self.values[key] = self.values.get(key, 0) + amount

    def samples(self, values: Mapping[tuple[str, ...], Number]) -> list[Sample]:
        return [(tuple(zip(self.labels, key, strict=False)), value) for key, value in sorted(values.items())]


# -- the metrics -------------------------------------------------------------------


class Metrics:
    """State fed by the run loop (calls, flushes) and rendered for each scrape."""

    def __init__(self, *, started: float | None = None, version: str = __version__,
                 limits: Mapping[str, int] | None = None) -> None:
        self.started = time.time() if started is None else started
        self.version = version
        self._lock = threading.Lock()
        limits = {**LABEL_LIMITS, **(limits or {})}
        self._folders = {label: LabelFolder(limits[label]) for label in CALL_LABELS}
        self._reason_folders = {"skipped": LabelFolder(MAX_REASONS), "connections": LabelFolder(MAX_REASONS)}
        four = (0, 1, 2, 3)
        self.cost = _Counter("lumen_cost_usd_total", "Spend of priced calls, US dollars.", CALL_LABELS, four)
        self.tokens = _Counter("lumen_tokens_total", "Tokens of calls by type (input includes cache_read and "
                               "cache_write; output includes reasoning).", CALL_LABELS + ("type",), four)
        self.calls = _Counter("lumen_calls_total", "LLM API calls by outcome.", CALL_LABELS + ("outcome",), four)
        self.unpriced = _Counter("lumen_unpriced_calls_total", "Calls with token counts but no price for the "
                                 "model (their cost is unknown, never counted as 0).", ("provider", "model"), (0, 1))
        self.usage_missing = _Counter("lumen_usage_missing_calls_total", "Calls whose response reported no "
                                      "token usage.", ("provider", "model"), (0, 1))
        self.counters = (self.cost, self.tokens, self.calls, self.unpriced, self.usage_missing)
        self.flush_seconds = Histogram(FLUSH_BUCKETS)
        self._flushes_seen = 0
        # A call's raw label values -> its sample keys (see _call_keys).
        self._keys: dict[tuple, tuple] = {}
        # More families from other outputs (alerts): each returns prometheus_client
        # metric families at scrape time (a custom collector's ``collect``).
        self.extra: list[Callable[[], Iterable[Any]]] = []

    # -- fed on the run loop's thread --------------------------------------------

    def observe_call(self, call: Call) -> None:
        raw = (call.provider, call.model or call.request_model, call.process, call.tenant)
        with self._lock:
            keys = self._keys.get(raw)
            if keys is None:
                keys = self._call_keys(raw)
            else:
                for folder in keys[3]:  # folded again, as the folder would count it
                    folder.folded += 1
            key, pair, token_keys, _ = keys
            self.calls.add(key + (call.outcome.value,), 1)
            if call.cost_usd is not None:
                self.cost.add(key, call.cost_usd)
            for attr, token_key in token_keys:
                n = getattr(call, attr)
                if n is not None:
                    self.tokens.add(token_key, n)
            if call.unpriced:
                self.unpriced.add(pair, 1)
            if call.usage_missing:
                self.usage_missing.add(pair, 1)

    def _call_keys(self, raw: tuple) -> tuple:
        """The sample keys of calls with these label values (caller holds the lock).

        A folder's answer for a value never changes (kept values stay kept; a
        full folder stays full), so it is worked out once per distinct value
        set: each label through its folder (cleaning the value), the keys of
        the token samples, and which folders folded (counted on every call)."""
        values = []
        folded = []
        for label, value in zip(CALL_LABELS, raw, strict=True):
            folder = self._folders[label]
            before = folder.folded
            values.append(folder(value))
            if folder.folded != before:
                folded.append(folder)
        key = tuple(values)
        keys = (key, key[:2], tuple((attr, key + (kind,)) for kind, attr in TOKEN_TYPES), tuple(folded))
        if len(self._keys) < MAX_KEY_CACHE:
            self._keys[raw] = keys
        return keys

    def observe_store(self, stats: Mapping[str, Any]) -> None:
        """After each housekeeping turn: record the latency of a flush that just happened."""
        flushes = int(stats.get("flushes") or 0)
        ms = stats.get("last_flush_ms")
        with self._lock:
            if flushes > self._flushes_seen and ms is not None:
                self.flush_seconds.observe(float(ms) / 1000)
            self._flushes_seen = flushes

    # -- on a scrape ---------------------------------------------------------------

    def render(self, status: Mapping[str, Any] | None = None) -> str:
        """The exposition of one scrape, given the agent's status (tests, one-off use)."""
        registry = CollectorRegistry(auto_describe=False)
        registry.register(MetricsCollector(self, lambda: status))
        return generate_latest(registry).decode("utf-8")

    def families(self, status: Mapping[str, Any] | None) -> list[Any]:
        """Every metric family of one scrape, built from copies taken under the lock."""
        status = status or {}
        pipeline = status.get("pipeline") or {}
        with self._lock:
            values = [dict(c.values) for c in self.counters]
            flush = self.flush_seconds.copy()
            folded = {label: folder.folded for label, folder in self._folders.items()}
            overflowed = {c.name: c.overflowed for c in self.counters}
            skipped = self._by_reason(pipeline, "skipped.", "skipped")
            untracked = self._by_reason(pipeline, "connections.", "connections")
        out: list[Any] = []
        for c, vals in zip(self.counters, values, strict=False):
            out.append(counter(c.name, c.help, c.samples(vals)))
        out += self._health(status, skipped, untracked, flush)
        out.append(counter(
            "lumen_metrics_folded_total",
            f"Label values reported as \"{OTHER}\" because the label already had its limit of distinct values.",
            [((("label", label),), n) for label, n in sorted(folded.items())]))
        out.append(counter(
            "lumen_metrics_series_overflow_total",
            f"Samples reported with every bounded label as \"{OTHER}\" because the family had {MAX_SERIES} series.",
            [((("metric", name),), n) for name, n in sorted(overflowed.items())]))
        for extra in self.extra:
            out += extra()
        return out

    def _by_reason(self, pipeline: Mapping[str, Any], prefix: str, folder: str) -> dict[str, int]:
        out: dict[str, int] = {}
        fold = self._reason_folders[folder]
        for key, n in pipeline.items():
            if key.startswith(prefix):
                reason = fold(key[len(prefix):])
                out[reason] = out.get(reason, 0) + int(n)
        return out

    def _health(self, status: Mapping[str, Any], skipped: dict[str, int], untracked: dict[str, int],
                flush: Histogram) -> list[Any]:
        capture = status.get("capture") or {}
        pipeline = status.get("pipeline") or {}
        store = status.get("store") or {}
        ingest = status.get("ingest") or {}
        lines: list[Any] = []

        def one(name: str, kind: str, help_text: str, value: Any) -> None:
            lines.append(family(name, kind, help_text, [((), _number(value))]))

        one("lumen_events_total", "counter",
            "Data events (one SSL read or write each) that reached the pipeline, from any capture source.",
            pipeline.get("events"))
        one("lumen_event_bytes_total", "counter", "Bytes of those events.", pipeline.get("bytes"))
        one("lumen_capture_events_total", "counter", "Events read from the eBPF ring buffer.", capture.get("events"))
        one("lumen_capture_bytes_total", "counter", "Bytes read from the eBPF ring buffer.", capture.get("bytes"))
        one("lumen_capture_lost_events_total", "counter",
            "Events the kernel could not hand over (ring buffer full): their bytes are missing.", capture.get("lost"))
        one("lumen_capture_truncated_events_total", "counter",
            "Events delivered incomplete (cut at max_call_bytes, or pieces missing).", capture.get("truncated"))
        one("lumen_capture_oversized_calls_total", "counter",
            "SSL calls larger than max_call_bytes, copied only in part by the probes.",
            capture.get("kernel_truncated"))
        one("lumen_capture_gaps_total", "counter", "Events after which bytes of the connection are missing.",
            capture.get("gaps"))
        one("lumen_capture_args_map_full_total", "counter",
            "SSL calls not captured because the probes' in-flight map was full.", capture.get("args_map_full"))
        one("lumen_capture_ignored_calls_total", "counter",
            "SSL calls not copied because their connection or process is ignored in the kernel.",
            capture.get("ignored_calls"))
        one("lumen_attach_errors_total", "counter", "Probe attachments that failed.", capture.get("attach_errors"))
        one("lumen_targets_attached", "gauge", "TLS libraries or executables with probes attached.",
            len(status.get("targets") or ()))
        one("lumen_probes_attached", "gauge", "Uprobes attached.", capture.get("probes_attached"))
        if "plain.packets" in capture:  # the plain-HTTP sniffer runs (docs/plain-http.md)
            for key, kind, help_text in (
                ("packets", "counter", "TCP segments the plain-HTTP sniffer read (past the kernel filter)."),
                ("bytes", "counter", "TCP payload bytes the plain-HTTP sniffer read."),
                ("connections", "counter", "TCP connections the plain-HTTP sniffer saw."),
                ("reorder_drops", "counter", "Holes in a TCP stream given up on (reorder buffer full)."),
                ("kernel_drops", "counter", "Packets the kernel dropped for the sniffer (socket buffer full)."),
            ):
                one(f"lumen_plain_{key}_total", kind, help_text, capture.get(f"plain.{key}"))
        one("lumen_ingest_events_total", "counter", "Events handed in by hooked processes over the ingest socket.",
            ingest.get("events"))
        one("lumen_ingest_bad_lines_total", "counter", "Ingest socket lines that were not valid events.",
            ingest.get("bad_lines"))
        lines.append(counter(
            "lumen_skipped_total",
            "Input the pipeline skipped, by reason, in the reason's unit (reasons ending in _bytes count bytes).",
            [((("reason", r),), n) for r, n in sorted(skipped.items())]))
        lines.append(counter(
            "lumen_connections_untracked_total",
            "Connections the pipeline stopped tracking before they closed, by reason (idle, inbound, non-HTTP, "
            "non-LLM, evicted).",
            [((("reason", r),), n) for r, n in sorted(untracked.items())]))
        one("lumen_processes_excluded_total", "counter", "Processes excluded by the process filters.",
            pipeline.get("processes.excluded"))
        one("lumen_open_connections", "gauge", "Connections the pipeline is tracking.", status.get("open_connections"))
        one("lumen_store_rows_written_total", "counter", "Rows appended to the database.", store.get("rows_written"))
        one("lumen_store_rows_pending", "gauge", "Rows waiting in memory for the next flush.", store.get("pending"))
        one("lumen_store_rows_dropped_total", "counter", "Rows lost because the pending buffer was full.",
            store.get("dropped"))
        one("lumen_store_flushes_total", "counter", "Flushes that appended rows.", store.get("flushes"))
        one("lumen_store_flush_errors_total", "counter", "Flushes that failed with an error other than a lock.",
            store.get("flush_errors"))
        one("lumen_store_lock_conflicts_total", "counter",
            "Flush attempts that found the database held by another process or DuckDB (rows stay pending).",
            store.get("lock_conflicts"))
        last_ms = store.get("last_flush_ms")
        lines.append(gauge("lumen_store_last_flush_duration_seconds", "Duration of the last flush.",
                           [] if last_ms is None else [((), float(last_ms) / 1000)]))
        lines.append(flush.family("lumen_store_flush_duration_seconds", "Duration of flushes."))
        updated = status.get("updated")
        lines.append(gauge("lumen_last_tick_timestamp_seconds",
                           "When the run loop last published its status (stale: the loop is stuck).",
                           [] if updated is None else [((), float(updated))]))
        lines.append(gauge("lumen_build_info", "Version of the running agent; always 1.",
                           [((("version", self.version), ("python", platform.python_version())), 1)]))
        one("process_start_time_seconds", "gauge", "Start time of the process since the Unix epoch, seconds.",
            self.started)
        times = os.times()
        one("process_cpu_seconds_total", "counter", "User and system CPU time spent, seconds.",
            times.user + times.system)
        rss = _resident_bytes()
        if rss is not None:
            one("process_resident_memory_bytes", "gauge", "Resident memory size, bytes.", rss)
        fds = _open_fds()
        if fds is not None:
            one("process_open_fds", "gauge", "Open file descriptors.", fds)
        return lines


def _number(value: Any) -> Number:
    if value is None:
        return 0
    if isinstance(value, (int, float, Decimal)):
        return value
    try:
        return float(value)
    except (TypeError, ValueError):
        return 0


def _resident_bytes() -> int | None:
    try:
        return psutil.Process().memory_info().rss
    except psutil.Error:
        return None


def _open_fds() -> int | None:
    try:
        return psutil.Process().num_fds()
    except (psutil.Error, AttributeError):  # num_fds: POSIX only
        return None


class MetricsCollector:
    """The custom collector: the families of ``metrics`` with the status ``status()`` returns."""

    def __init__(self, metrics: Metrics, status: Callable[[], Mapping[str, Any] | None]) -> None:
        self._metrics = metrics
        self._status = status

    def collect(self) -> Iterable[Any]:
        return self._metrics.families(self._status())


# -- the server ----------------------------------------------------------------------


def parse_addr(addr: str) -> tuple[str, int]:
    """``HOST:PORT``, ``[IPv6]:PORT`` or ``:PORT`` (every IPv4 interface) -> (host, port)."""
    host, sep, port_text = addr.strip().rpartition(":")
    if not sep or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ConfigError(f"metrics_addr {addr!r} must be HOST:PORT, e.g. 127.0.0.1:9464")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ConfigError(f"metrics_addr {addr!r}: write an IPv6 address in brackets, e.g. [::1]:9464")
    return host, int(port_text)


def warn_if_exposed(bound_host: str, addr: str) -> bool:
    """Metrics name models, tenants and spend: say so when they leave the host."""
    try:
        loopback = ipaddress.ip_address(bound_host.split("%")[0]).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        log.warning("metrics are served on a non-loopback address %s (metrics_addr %s): anyone who can reach "
                    "this host can read them; use 127.0.0.1:PORT unless that is intended", bound_host or "0.0.0.0",
                    addr)
    return not loopback


class _Server(ThreadingHTTPServer):
    daemon_threads = True


class _Server6(_Server):
    address_family = socket.AF_INET6


class MetricsServer:
    """``/metrics`` on ``addr``, served by a daemon thread; binds in the constructor."""

    def __init__(self, addr: str, render: Callable[[], str]) -> None:
        host, port = parse_addr(addr)
        server_cls = _Server
        try:
            if host and isinstance(ipaddress.ip_address(host), ipaddress.IPv6Address):
                server_cls = _Server6
        except ValueError:
            pass  # a host name: resolved by bind, IPv4
        handler = _handler(render)
        try:
            self._server = server_cls((host, port), handler)
        except OSError as exc:
            reason = exc.strerror or str(exc)
            raise OSError(f"cannot serve metrics on {addr}: {reason} (set another metrics_addr, "
                          f"or stop what listens there)") from None
        self.port = self._server.server_address[1]
        warn_if_exposed(self._server.server_address[0], addr)
        self.url = f"http://{'[' + host + ']' if ':' in host else (host or '0.0.0.0')}:{self.port}/metrics"
        self._thread = threading.Thread(target=self._server.serve_forever, name="lumen-metrics", daemon=True)
        self.metrics: Metrics | None = None

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        if self._thread.is_alive():
            self._server.shutdown()
        self._server.server_close()


def _handler(render: Callable[[], str]) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        timeout = REQUEST_TIMEOUT_S
        server_version = f"lumen-agent/{__version__}"

        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            self._answer(send_body=True)

        def do_HEAD(self) -> None:  # noqa: N802
            self._answer(send_body=False)

        def _answer(self, send_body: bool) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                try:
                    body = render().encode("utf-8")
                except Exception:  # noqa: BLE001 - a bug here must not kill the server thread
                    log.exception("rendering metrics failed")
                    self._send(500, "text/plain; charset=utf-8", b"rendering metrics failed\n", send_body)
                    return
                self._send(200, CONTENT_TYPE, body, send_body)
            elif path == "/":
                self._send(200, "text/html; charset=utf-8",
                           b'<html><body><a href="/metrics">/metrics</a></body></html>\n', send_body)
            else:
                self._send(404, "text/plain; charset=utf-8", b"not found: try /metrics\n", send_body)

        def _send(self, code: int, content_type: str, body: bytes, send_body: bool) -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if send_body:
                self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            log.debug("metrics %s - %s", self.address_string(), format % args)

    return Handler


class MetricsOutput(Output):
    """Feeds the metrics from every call, and the store's counts once a second."""

    name = "metrics"

    def __init__(self, metrics: Metrics, store) -> None:
        self._metrics = metrics
        self._store = store

    def on_call(self, call) -> None:
        self._metrics.observe_call(call)

    def on_tick(self, now: float) -> None:
        if self._store is not None:
            self._metrics.observe_store(self._store.stats())


def install(agent, config) -> MetricsServer | None:
    """Serve ``/metrics`` on ``config.metrics_addr`` (nothing when unset) and feed it from ``agent``."""
    addr = getattr(config, "metrics_addr", None)
    if not addr:
        return None
    metrics = Metrics(started=getattr(agent, "_started", None))
    registry = CollectorRegistry(auto_describe=False)  # ours alone: no default collectors
    registry.register(MetricsCollector(metrics, lambda: getattr(agent, "_status", None)))
    server = MetricsServer(addr, lambda: generate_latest(registry).decode("utf-8"))
    agent.add_output(MetricsOutput(metrics, getattr(agent, "store", None)))
    server.metrics = metrics
    server.start()
    log.info("metrics url=%s", server.url)
    return server
