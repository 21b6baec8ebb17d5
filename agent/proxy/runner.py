"""Wiring for ``lumen-agent proxy``: routes, sink, the server, signals.

``run_proxy`` runs in the foreground until SIGTERM/SIGINT, then stops
accepting, lets streams in flight finish (``SHUTDOWN_GRACE_S``), and flushes
the accounting.  ``ProxyThread`` runs the same thing on a background thread
(tests, benchmarks, embedding).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lumen_agent.proxy.routes import RouteError, Routes
from lumen_agent.proxy.server import SHUTDOWN_GRACE_S, ProxyServer
from lumen_agent.proxy.sink import AgentSink, EventSink, LocalSink, NullSink

log = logging.getLogger("lumen_agent")

SINKS = ("auto", "agent", "local", "none")
# See run_proxy.
SWITCH_INTERVAL_S = 0.0005


@dataclass(frozen=True, slots=True)
class ProxyOptions:
    listen: str | None = None  # HOST:PORT; None: the configuration's proxy_listen
    upstreams: tuple[str, ...] = ()  # --upstream values: PREFIX=URL, or one URL for everything
    resolve: tuple[str, ...] = ()  # --resolve HOST:PORT:ADDRESS, as curl's
    sink: str = "auto"  # auto | agent | local | none
    db: Path | None = None  # given: always the local pipeline into this file
    resolve_pids: bool = True
    grace_s: float = SHUTDOWN_GRACE_S
    extra: dict[str, Any] = field(default_factory=dict)


def parse_listen(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise RouteError(f"--listen {value!r} must be HOST:PORT")
    host = host.strip("[]") or "127.0.0.1"
    return host, int(port)


def parse_resolve(values: Iterable[str]) -> dict[tuple[str, int], str]:
    out: dict[tuple[str, int], str] = {}
    for value in values:
        host, _, rest = value.partition(":")
        port, _, address = rest.partition(":")
        if not host or not port.isdigit() or not address:
            raise RouteError(f"--resolve {value!r} must be HOST:PORT:ADDRESS")
        out[(host.lower(), int(port))] = address.strip("[]")
    return out


def build_routes(config: Any, options: ProxyOptions) -> Routes:
    return Routes.build(config.proxy_upstreams, options.upstreams)


def choose_sink(config: Any, options: ProxyOptions) -> EventSink:
    """Where events go: no agent of the database -> a pipeline here; its ingest-only agent -> its socket.

    An agent that captures with eBPF already sees the proxy's TLS traffic to
    the providers, so shipping the events too would count every call twice:
    then the proxy only forwards (``none``).  The agent looked for is the one
    of ``--db`` (the configuration's database without it): a second writer
    of the same file would record every call twice as well.
    """
    choice = options.sink
    runtime_dir = config.runtime_dir
    if options.db is not None and options.db != config.db:
        from lumen_agent import paths

        runtime_dir = paths.runtime_dir(options.db)
    ingest = runtime_dir / "ingest.sock"
    if choice == "auto":
        from lumen_agent.runner import read_status

        status = read_status(runtime_dir)
        if status is None or not ingest.exists():
            choice = "local"
        elif status.get("capture_mode") in ("hook", "proxy"):
            choice = "agent"
        else:
            log.warning("an agent capturing with eBPF is running (pid %s): it sees this proxy's TLS traffic "
                        "itself, so the proxy sends it no events; its rows name this proxy as the process",
                        status.get("pid"))
            choice = "none"
    if choice == "local":
        return LocalSink(config, db=options.db, resolve_pids=options.resolve_pids)
    if choice == "agent":
        return AgentSink(ingest, resolve_pids=options.resolve_pids)
    if choice == "none":
        return NullSink()
    raise RouteError(f"--sink must be one of {', '.join(SINKS)}, not {choice!r}")


def _describe_sink(sink: EventSink, options: ProxyOptions, config: Any) -> str:
    if isinstance(sink, LocalSink):
        return f"pipeline here, db={options.db or config.db}"
    if isinstance(sink, AgentSink):
        return f"agent ingest socket {config.runtime_dir / 'ingest.sock'}"
    return "none"


async def _serve(server: ProxyServer, host: str, port: int, stop: asyncio.Event,
                 started: threading.Event | None, grace: float) -> None:
    await server.start(host, port)
    if started is not None:
        started.set()
    await stop.wait()
    await server.stop(grace)


def run_proxy(config: Any, options: ProxyOptions) -> None:
    """Foreground until SIGTERM/SIGINT."""
    from lumen_agent.logs import setup_logging

    setup_logging(config.log_level)
    # The accounting thread shares the GIL with the forwarding loop: hand it
    # back sooner than the default 5 ms, so a busy pipeline delays a relayed
    # chunk by at most this much.
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    host, port = parse_listen(options.listen or config.proxy_listen)
    routes = build_routes(config, options)
    resolve = parse_resolve(options.resolve)
    sink = choose_sink(config, options)
    sink.start()
    server = ProxyServer(routes, sink, resolve=resolve)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await server.start(host, port)
        bound = server.address
        shown = f"[{bound[0]}]" if ":" in bound[0] else bound[0]
        log.info("proxy listening url=http://%s:%d events=%s", shown, bound[1], _describe_sink(sink, options, config))
        for route in routes:
            log.info("proxy route %s -> %s", route.prefix, route.upstream)
        print(f"listening on http://{shown}:{bound[1]}", file=sys.stderr, flush=True)
        await stop.wait()
        log.info("proxy stopping: letting streams in flight finish (up to %g s)", options.grace_s)
        await server.stop(options.grace_s)

    try:
        asyncio.run(main())
    finally:
        sink.close()
        log.info("proxy stopped requests=%d events=%d dropped=%d", server.counters["requests"],
                 sink.events, sink.dropped)


class ProxyThread:
    """The proxy on a background thread: ``with ProxyThread(routes, sink) as p: p.url``."""

    def __init__(self, routes: Routes, sink: EventSink, *, host: str = "127.0.0.1", port: int = 0,
                 resolve: dict[tuple[str, int], str] | None = None, grace: float = 2.0,
                 ssl_context: Any = None) -> None:
        self.sink = sink
        self.server = ProxyServer(routes, sink, resolve=resolve, ssl_context=ssl_context)
        self._host, self._port, self._grace = host, port, grace
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    @property
    def port(self) -> int:
        return self.server.address[1]

    @property
    def url(self) -> str:
        return f"http://{self._host}:{self.port}"

    def start(self) -> ProxyThread:
        started = threading.Event()
        self.sink.start()

        def run() -> None:
            self._loop = asyncio.new_event_loop()
            self._stop = asyncio.Event()
            try:
                self._loop.run_until_complete(
                    _serve(self.server, self._host, self._port, self._stop, started, self._grace))
            except BaseException as exc:  # noqa: BLE001 - reported to start()
                self._error = exc
                started.set()
            finally:
                self._loop.close()

        self._thread = threading.Thread(target=run, name="lumen-proxy", daemon=True)
        self._thread.start()
        started.wait(10)
        if self._error is not None:
            raise self._error
        return self

    def stop(self) -> None:
        if self._thread is None:
            return
        if self._loop is not None and self._stop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(self._grace + 10)
        self._thread = None
        self.sink.close()

    def __enter__(self) -> ProxyThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
