"""The proxy: plain HTTP/1.1 from local clients, TLS to the real providers.

One asyncio task per client connection reads a request head, picks the
upstream by path prefix, rewrites the request line and Host header, and
forwards the request; the response is relayed byte for byte as each piece
arrives (no buffering, framing untouched: chunked stays chunked, a
Content-Length stays exact), while ``BodyFramer`` only watches where it ends
so both connections can be kept alive.  Each client connection keeps its own
upstream connections (one per upstream), reused between its requests.

Everything the upstream connection carries is also handed to the event sink
(``sink.send`` / ``sink.recv``), a queue append; accounting happens on the
sink's thread, never on this path.

Failures the client can act on are answered with a JSON error (the shape the
provider SDKs print)::

    {"error": {"type": "lumen_proxy_error", "code": "upstream_unreachable", "message": "..."}}

400 a request the proxy cannot forward faithfully, 404 no route for the path,
502 the upstream cannot be reached, fails TLS verification or answers
garbage, 504 it does not answer in time.  Once response bytes have reached
the client an upstream failure can only be passed on by closing the
connection, as the provider itself would.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass

from lumen_agent.proxy.framing import (
    MAX_HEAD_BYTES,
    BadRequest,
    BadResponse,
    BodyFramer,
    Framing,
    Head,
    find_head_end,
    parse_request_head,
    parse_response_head,
)
from lumen_agent.proxy.routes import Routes, Upstream
from lumen_agent.proxy.sink import EventSink

log = logging.getLogger("lumen_agent")

READ_SIZE = 64 * 1024
# A client's keep-alive connection idle this long is closed.
CLIENT_IDLE_TIMEOUT_S = 300.0
# Reading a request head or body from a client that went quiet.
CLIENT_READ_TIMEOUT_S = 60.0
CONNECT_TIMEOUT_S = 15.0
# Silence from the upstream before its response is given up (504 before the
# first byte): reasoning models may think for minutes before answering.
UPSTREAM_READ_TIMEOUT_S = 600.0
# Request bodies up to this size are read whole before the request is sent,
# so a stale keep-alive upstream connection can be retried transparently.
MAX_BUFFERED_BODY = 8 * 1024 * 1024
# On shutdown, streams in flight get this long to finish.
SHUTDOWN_GRACE_S = 10.0

_REASONS = {400: "Bad Request", 404: "Not Found", 431: "Request Header Fields Too Large",
            502: "Bad Gateway", 504: "Gateway Timeout"}


class ProxyError(Exception):
    """Answered to the client as a JSON error, when nothing was sent yet."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


class _StaleConnection(Exception):
    """A reused upstream connection closed before answering: retry on a fresh one."""


class _ClientGone(Exception):
    pass


def error_response(status: int, code: str, message: str) -> bytes:
    body = json.dumps({"error": {"type": "lumen_proxy_error", "code": code, "message": message}}).encode()
    head = (f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\n"
            "Content-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n").encode()
    return head + body


def rewrite_head(req: Head, target: str, authority: str) -> bytes:
    """The request head as sent upstream: new target, Host = the upstream's."""
    lines = [b"%s %s %s" % (req.method, target.encode("latin-1"), req.version)]
    host_done = False
    for name, value in req.headers:
        if name.lower() == b"host":
            if host_done:
                continue
            value = authority.encode("ascii")
            host_done = True
        lines.append(name + b": " + value)
    if not host_done:
        lines.insert(1, b"Host: " + authority.encode("ascii"))
    return b"\r\n".join(lines) + b"\r\n\r\n"


def client_ssl_context() -> ssl.SSLContext:
    """Verifies upstream certificates with the system store (SSL_CERT_FILE / SSL_CERT_DIR honoured)."""
    context = ssl.create_default_context()
    context.set_alpn_protocols(["http/1.1"])
    return context


@dataclass(slots=True)
class _Upstream:
    """One open connection to an upstream."""

    conn_id: int
    upstream: Upstream
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    requests: int = 0
    closed: bool = False

    def usable(self) -> bool:
        return not self.writer.is_closing() and not self.reader.at_eof()


class ProxyServer:
    def __init__(self, routes: Routes, sink: EventSink, *,
                 resolve: Mapping[tuple[str, int], str] | None = None,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self.routes = routes
        self.sink = sink
        self.resolve = dict(resolve or {})
        self.ssl_context = ssl_context or client_ssl_context()
        self._server: asyncio.base_events.Server | None = None
        self._client_ids = itertools.count(1)
        self._conn_ids = itertools.count(1)
        self._sessions: set[asyncio.Task] = set()
        self.address: tuple[str, int] | None = None
        self.counters = {"clients": 0, "requests": 0, "errors": 0}

    async def start(self, host: str, port: int) -> tuple[str, int]:
        self._server = await asyncio.start_server(self._client, host, port, limit=READ_SIZE,
                                                  reuse_address=True, backlog=512)
        sockname = self._server.sockets[0].getsockname()
        self.address = (sockname[0], sockname[1])
        return self.address

    async def stop(self, grace: float = SHUTDOWN_GRACE_S) -> None:
        if self._server is not None:
            self._server.close()
        if self._sessions:
            _, pending = await asyncio.wait(self._sessions, timeout=grace)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=2)

    # -- one client connection ------------------------------------------------------

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        self._sessions.add(task)
        client_id = next(self._client_ids)
        self.counters["clients"] += 1
        self.sink.client(client_id, writer.get_extra_info("peername"), writer.get_extra_info("sockname"))
        session = _Session(self, client_id, reader, writer)
        try:
            await session.run()
        except (ConnectionError, _ClientGone, asyncio.IncompleteReadError):
            pass
        except Exception:  # noqa: BLE001 - one bad connection must not stop the proxy
            log.exception("proxy: client connection failed")
        finally:
            session.close_upstreams()
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
            self.sink.client_closed(client_id)
            self._sessions.discard(task)

    async def open_upstream(self, client_id: int, upstream: Upstream) -> _Upstream:
        address = self.resolve.get((upstream.host, upstream.port), upstream.host)
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(
                    address, upstream.port, limit=READ_SIZE,
                    ssl=self.ssl_context if upstream.tls else None,
                    server_hostname=upstream.host if upstream.tls else None,
                ),
                CONNECT_TIMEOUT_S,
            )
        except TimeoutError:
            raise ProxyError(504, "upstream_timeout",
                             f"upstream {upstream} did not accept a connection within {CONNECT_TIMEOUT_S:g} s") from None
        except ssl.SSLCertVerificationError as exc:
            raise ProxyError(502, "upstream_tls_error",
                             f"upstream {upstream} failed TLS verification: {exc.verify_message or exc}") from None
        except (OSError, ssl.SSLError) as exc:
            reason = exc.strerror or str(exc) if isinstance(exc, OSError) else str(exc)
            raise ProxyError(502, "upstream_unreachable", f"cannot connect to upstream {upstream}: {reason}") from None
        return _Upstream(next(self._conn_ids), upstream, reader, writer)


class _Session:
    """The requests of one client connection, one at a time."""

    def __init__(self, proxy: ProxyServer, client_id: int, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter) -> None:
        self.proxy = proxy
        self.sink = proxy.sink
        self.client_id = client_id
        self.reader = reader
        self.writer = writer
        self.buf = bytearray()  # client bytes read but not yet used
        self.upstreams: dict[tuple, _Upstream] = {}

    async def run(self) -> None:
        while True:
            head = await self._read_head()
            if head is None:
                return
            self.proxy.counters["requests"] += 1
            try:
                req = parse_request_head(head)
                keep = await self._request(req)
            except ProxyError as exc:
                self.proxy.counters["errors"] += 1
                await self._send_error(exc)
                return
            except BadRequest as exc:
                self.proxy.counters["errors"] += 1
                await self._send_error(ProxyError(400, "bad_request", str(exc)))
                return
            if not keep:
                return

    async def _read_head(self) -> bytes | None:
        searched = 0
        first = True
        while True:
            end = find_head_end(self.buf, max(0, searched - 3))
            if end > MAX_HEAD_BYTES or (end < 0 and len(self.buf) > MAX_HEAD_BYTES):
                await self._send_error(ProxyError(431, "head_too_large", "request head too large"))
                return None
            if end >= 0:
                head = bytes(self.buf[:end])
                del self.buf[:end]
                return head
            searched = len(self.buf)
            timeout = CLIENT_IDLE_TIMEOUT_S if first and not self.buf else CLIENT_READ_TIMEOUT_S
            try:
                data = await asyncio.wait_for(self.reader.read(READ_SIZE), timeout)
            except TimeoutError:
                return None
            first = False
            if not data:
                if self.buf.strip():
                    await self._send_error(ProxyError(400, "bad_request", "connection closed inside a request head"))
                return None
            self.buf += data

    async def _read_client(self) -> bytes:
        try:
            data = await asyncio.wait_for(self.reader.read(READ_SIZE), CLIENT_READ_TIMEOUT_S)
        except TimeoutError:
            raise _ClientGone() from None
        if not data:
            raise _ClientGone()
        return data

    async def _send_error(self, exc: ProxyError) -> None:
        log.info("proxy: %d %s: %s", exc.status, exc.code, exc.message)
        with contextlib.suppress(ConnectionError, RuntimeError):
            self.writer.write(error_response(exc.status, exc.code, exc.message))
            await self.writer.drain()

    # -- one request ---------------------------------------------------------------

    async def _request(self, req: Head) -> bool:
        """Forward one request and relay its response; True to keep the client connection."""
        target = req.target.decode("latin-1")
        if not target.startswith("/"):
            raise BadRequest("the proxy takes origin-form targets (/prefix/path): point the client's base URL "
                             "at http://HOST:PORT/PREFIX instead of using it as an HTTP proxy")
        hosts = [v for k, v in req.headers if k.lower() == b"host"]
        if len(hosts) > 1:
            raise BadRequest("more than one Host header")
        found = self.proxy.routes.match(target)
        if found is None:
            prefixes = ", ".join(r.prefix for r in self.proxy.routes)
            raise ProxyError(404, "no_route", f"no upstream for {target.split('?')[0]!r}; prefixes: {prefixes}")
        route, upstream_target = found
        upstream = route.upstream
        out_head = rewrite_head(req, upstream_target, upstream.authority)

        expects_continue = (req.get(b"expect") or b"").lower() == b"100-continue"
        buffered = req.framing is Framing.NONE or (
            req.framing is Framing.LENGTH and req.length <= MAX_BUFFERED_BODY and not expects_continue)
        payload = out_head
        if buffered and req.framing is Framing.LENGTH:
            while len(self.buf) < req.length:
                self.buf += await self._read_client()
            payload = out_head + bytes(self.buf[: req.length])
            del self.buf[: req.length]

        guard = self.sink.guard
        if guard is not None:
            refused = await self._enforce(guard, req, upstream_target, upstream, out_head, payload, buffered)
            if refused is not None:
                return refused

        for attempt in range(2):
            conn = self.upstreams.get(upstream.key)
            reused = conn is not None
            if conn is not None and not conn.usable():
                self._drop(conn)
                conn, reused = None, False
            if conn is None:
                conn = await self.proxy.open_upstream(self.client_id, upstream)
                self.upstreams[upstream.key] = conn
            conn.requests += 1
            retryable = reused and buffered and attempt == 0
            try:
                conn.writer.write(payload)
                # A request that may be retried is accounted once its answer
                # starts, so a stale connection's attempt leaves no phantom call.
                deferred = (time.time_ns(), payload) if retryable else None
                if deferred is None:
                    self.sink.send(self.client_id, conn.conn_id, payload)
                pump = None
                if not buffered:
                    pump = asyncio.create_task(self._pump_body(req, conn))
                    # A body that fails (client gone, bad chunk) ends the exchange.
                    pump.add_done_callback(lambda t, c=conn: t.cancelled() or t.exception() is None
                                           or c.writer.close())
                return await self._relay(req, conn, pump, deferred)
            except _StaleConnection:
                self._drop(conn)
                continue
        raise ProxyError(502, "upstream_closed", f"upstream {upstream} closed the connection without answering")

    async def _enforce(self, guard, req: Head, target: str, upstream: Upstream, out_head: bytes, payload: bytes,
                       buffered: bool) -> bool | None:
        """A spent "block" budget: answer 429 in the provider's format, and record it as a call.

        Returns whether to keep the client connection, or None to forward.
        """
        from lumen_agent.outputs.alerts.guard import refusal, response_bytes

        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in req.headers}
        body = payload[len(out_head):] if buffered else None
        scope = guard.scope(headers, target, upstream.authority, body, self.client_id)
        state = guard.check(scope)
        if state is None:
            return None
        status, extra, reply = refusal(scope.provider, state, guard.retry_after(state))
        keep = buffered and req.keep_alive  # an unread streamed body cannot stay on the connection
        answer = response_bytes(status, extra, reply, close=not keep)
        conn_id = next(self.proxy._conn_ids)  # the refused call is accounted like a forwarded one
        self.sink.send(self.client_id, conn_id, payload if buffered else out_head)
        self.sink.recv(self.client_id, conn_id, answer)
        self.sink.closed(self.client_id, conn_id)
        log.info("proxy: 429 budget %s is spent (%s of %s)", state.budget.name, state.spent, state.budget.amount_usd)
        self.writer.write(answer)
        await self.writer.drain()
        return keep

    async def _pump_body(self, req: Head, conn: _Upstream) -> None:
        """Stream a request body (chunked, large, or after 100-continue) to the upstream."""
        framer = BodyFramer(req.framing, req.length, BadRequest)
        while not framer.done:
            data = bytes(self.buf) if self.buf else await self._read_client()
            self.buf.clear()
            n = framer.feed(data)
            if n < len(data):
                self.buf += data[n:]  # the next (pipelined) request
            if n:
                piece = data[:n]
                conn.writer.write(piece)
                self.sink.send(self.client_id, conn.conn_id, piece)
                await conn.writer.drain()

    async def _upstream_read(self, conn: _Upstream) -> bytes:
        try:
            return await asyncio.wait_for(conn.reader.read(READ_SIZE), UPSTREAM_READ_TIMEOUT_S)
        except TimeoutError:
            raise ProxyError(504, "upstream_timeout",
                             f"upstream {conn.upstream} sent nothing for {UPSTREAM_READ_TIMEOUT_S:g} s") from None
        except (ConnectionError, ssl.SSLError, OSError) as exc:
            log.debug("proxy: upstream read failed: %s", exc)
            return b""

    async def _relay(self, req: Head, conn: _Upstream, pump: asyncio.Task | None,
                     deferred: tuple[int, bytes] | None) -> bool:
        """Relay the response; ``deferred`` (send time, request) marks a request that may be retried."""
        sink, client_id, conn_id, writer = self.sink, self.client_id, conn.conn_id, self.writer
        rbuf = bytearray()
        sent_any = False
        try:
            # Heads: any 1xx interim responses, then the final one.
            while True:
                searched = 0
                while (end := find_head_end(rbuf, max(0, searched - 3))) < 0:
                    searched = len(rbuf)
                    if searched > MAX_HEAD_BYTES:
                        raise ProxyError(502, "bad_upstream_response", f"upstream {conn.upstream}: head too large")
                    data = await self._upstream_read(conn)
                    if not data:
                        if pump is not None and pump.done() and not pump.cancelled() and pump.exception():
                            raise pump.exception()
                        if deferred is not None:
                            raise _StaleConnection()
                        raise ProxyError(502, "upstream_closed",
                                         f"upstream {conn.upstream} closed the connection without a complete answer")
                    if deferred is not None:
                        sink.send(client_id, conn_id, deferred[1], deferred[0])
                        deferred = None
                    sink.recv(client_id, conn_id, data)
                    rbuf += data
                try:
                    head = parse_response_head(bytes(rbuf[:end]), req.method)
                except BadResponse as exc:
                    raise ProxyError(502, "bad_upstream_response", f"upstream {conn.upstream}: {exc}") from None
                if head.status == 101:
                    writer.write(bytes(rbuf))
                    await self._tunnel(conn)
                    return False
                if head.status < 200:
                    writer.write(bytes(rbuf[:end]))
                    sent_any = True
                    del rbuf[:end]
                    continue
                break

            # The final response: relay each piece as it arrives.
            framer = BodyFramer(head.framing, head.length)
            rest = bytes(rbuf[end:])
            n = framer.feed(rest)
            writer.write(bytes(rbuf[:end]) + rest[:n] if n < len(rest) else bytes(rbuf))
            sent_any = True
            clean = n == len(rest)
            await writer.drain()
            while not framer.done:
                data = await self._upstream_read(conn)
                if not data:
                    if framer.connection_closed():
                        break
                    log.info("proxy: upstream %s closed mid-response", conn.upstream)
                    self._drop(conn)
                    return False
                sink.recv(client_id, conn_id, data)
                n = framer.feed(data)
                if n < len(data):
                    clean = False
                    data = data[:n]
                writer.write(data)
                await writer.drain()
        except ProxyError:
            if deferred is not None:  # it did reach the provider: account it (a cut call)
                sink.send(client_id, conn_id, deferred[1], deferred[0])
            self._drop(conn)
            if pump is not None:
                pump.cancel()
            if sent_any:
                return False
            raise
        except BadResponse as exc:
            log.info("proxy: upstream %s sent a malformed body: %s", conn.upstream, exc)
            self._drop(conn)
            return False
        except (ConnectionError, RuntimeError):
            # The client went away: stop the upstream too (the provider stops generating).
            self._drop(conn)
            if pump is not None:
                pump.cancel()
            raise _ClientGone() from None

        if pump is not None:
            if not pump.done():
                # Answered before the request body ended (an early error): the
                # rest of the body can no longer be framed, close both sides.
                pump.cancel()
                self._drop(conn)
                return False
            if pump.cancelled() or pump.exception() is not None:
                self._drop(conn)
                return False
        if not (head.keep_alive and clean):
            self._drop(conn)
            return False
        return req.keep_alive

    async def _tunnel(self, conn: _Upstream) -> None:
        """After 101 Switching Protocols: copy both ways until either side closes."""

        async def copy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, pending: bytes) -> None:
            if pending:
                writer.write(pending)
            while data := await reader.read(READ_SIZE):
                writer.write(data)
                await writer.drain()
            with contextlib.suppress(OSError, RuntimeError):
                writer.write_eof()

        pending, self.buf = bytes(self.buf), bytearray()
        tasks = [asyncio.create_task(copy(self.reader, conn.writer, pending)),
                 asyncio.create_task(copy(conn.reader, self.writer, b""))]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            self._drop(conn)

    def _drop(self, conn: _Upstream) -> None:
        if self.upstreams.get(conn.upstream.key) is conn:
            del self.upstreams[conn.upstream.key]
        if not conn.closed:
            conn.closed = True
            conn.writer.close()
            self.sink.closed(self.client_id, conn.conn_id)

    def close_upstreams(self) -> None:
        for conn in list(self.upstreams.values()):
            self._drop(conn)
