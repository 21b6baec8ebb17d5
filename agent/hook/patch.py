"""The hot path: wrappers around Python's ssl layer that record plaintext.

``ssl.SSLSocket`` (blocking sockets: http.client, urllib3/requests, httpx and
httpcore sync) and ``ssl.SSLObject`` (memory-BIO TLS: asyncio's SSL protocol,
anyio, thus httpx async, aiohttp and the async openai/anthropic clients) are
patched at class level, so every instance, including ones made before the
patch, is covered without touching the application's code.

What each wrapper records, after the original call returned:

- ``send``/``write`` (both classes): the bytes actually written (the return
  value counts them), as a SEND event.
- ``sendall``: everything, since it returns only when all was written.
- ``recv``/``read`` without a buffer: the bytes returned, as a RECV event.
- ``recv_into``/``read`` with a buffer: the first *n* bytes of the caller's
  buffer, *n* being the return value, copied before the caller reuses it.
- a read of a positive size that returns nothing is the end of the stream,
  recorded as CLOSE; so are ``unwrap()`` and the socket's real close.

Public methods call each other (``sendall`` -> ``send``, ``recv`` -> ``read``),
and which calls which differs between Python versions.  So every wrapper
notes, per thread, how many events the thread has recorded before calling
the original; if a nested wrapper recorded something meanwhile, the outer one
records nothing.  The innermost call is the one that knows exactly what
went over the wire (a ``sendall`` that fails halfway still has its completed
``send`` calls recorded).

A call that raises (``SSLWantReadError`` on every would-block read of a
memory BIO, timeouts) records nothing and costs one extra frame.  Recording
itself never raises into the application: any fault is counted by
``on_fault``.  Connections on the server side of TLS (``server_side``) are
never recorded: an inbound call is the other process's call.

Events are tuples ``(ts_ns, tid, conn, direction, data, flags)`` handed to
``sink(item, nbytes)``; ``conn`` is a number unique within the process,
kept on the SSL object, so a recycled ``id()`` can never join two
connections.
"""

from __future__ import annotations

import itertools
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any

# Event tuple fields (kept primitive: the worker thread builds DataEvents).
SEND = 0
RECV = 1
FLAG_CLOSE = 4  # lumen_agent.pipeline.events.EventFlag.CLOSE

# Attribute on each SSL object: its connection number, 0 = never record.
CONN_ATTR = "_lumen_conn"

Sink = Callable[[tuple, int], Any]

_time_ns = time.time_ns
_native_id = threading.get_native_id


class _PerThread(threading.local):
    """Per thread: events recorded so far (the nesting check) and the thread id
    (``get_native_id`` is a system call; asked once per thread)."""

    def __init__(self) -> None:
        self.n = 0
        self.tid = _native_id()


_tls = _PerThread()
_conn_numbers = itertools.count(1)

# Set by install(); the wrappers read them on every call.
_sink: Sink | None = None
_on_fault: Callable[[BaseException], None] | None = None
# Connections the pipeline said are not LLM traffic: stop copying them.
ignored: set[int] = set()

_originals: dict[tuple[type, str], Any] = {}


def _new_conn(obj: Any) -> int:
    conn = 0 if getattr(obj, "server_side", False) else next(_conn_numbers)
    obj.__dict__[CONN_ATTR] = conn
    return conn


def _emit(obj: Any, direction: int, data: bytes, t: _PerThread, flags: int = 0) -> None:
    conn = obj.__dict__.get(CONN_ATTR)
    if conn is None:
        conn = _new_conn(obj)
    if not conn or conn in ignored:
        return
    t.n += 1
    sink = _sink
    if sink is not None:
        sink((_time_ns(), t.tid, conn, direction, data, flags), len(data))


def _fault(exc: BaseException) -> None:
    handler = _on_fault
    if handler is not None:
        try:
            handler(exc)
        except Exception:  # noqa: BLE001 - nothing may escape into the application
            pass


def _copy(data: Any, n: int | None) -> bytes:
    """The first ``n`` bytes (all when None) of a bytes-like object, as bytes."""
    if type(data) is bytes:
        return data if n is None or n >= len(data) else data[:n]
    view = memoryview(data)
    if view.format != "B" or view.ndim != 1:
        view = view.cast("B")
    return bytes(view if n is None else view[:n])


def _buffer_arg(args: tuple, kwargs: dict, index: int | None, name: str | None) -> Any:
    if index is None:
        return None
    if len(args) > index:
        return args[index]
    return kwargs.get(name)


# -- wrapper factories ------------------------------------------------------
# Each takes the original function and returns the replacement.  The
# recording happens only when the call returned and no nested wrapper
# recorded (see the module docstring).


def _wrap_write(orig):
    """send(data, flags=0) / write(data): returns how many bytes went out."""

    def wrapper(self, data, *args, **kwargs):
        t = _tls
        mark = t.n
        n = orig(self, data, *args, **kwargs)
        if n and t.n == mark and _sink is not None:
            try:
                _emit(self, SEND, data if type(data) is bytes and n == len(data) else _copy(data, n), t)
            except Exception as exc:  # noqa: BLE001
                _fault(exc)
        return n

    return wrapper


def _wrap_sendall(orig):
    """sendall(data, flags=0): returns None once everything is written."""

    def wrapper(self, data, *args, **kwargs):
        t = _tls
        mark = t.n
        result = orig(self, data, *args, **kwargs)
        if t.n == mark and _sink is not None:
            try:
                payload = _copy(data, None)
                if payload:
                    _emit(self, SEND, payload, t)
            except Exception as exc:  # noqa: BLE001
                _fault(exc)
        return result

    return wrapper


def _wrap_read(orig, size_index: int, size_name: str, buffer_index: int | None, buffer_name: str | None,
               default_size: int | None):
    """recv(buflen) / read(len, buffer=None) / recv_into(buffer, nbytes=None).

    Returns bytes, or (with a buffer) the number of bytes written into it.
    """

    def wrapper(self, *args, **kwargs):
        t = _tls
        mark = t.n
        result = orig(self, *args, **kwargs)
        if t.n == mark and _sink is not None:
            try:
                if type(result) is bytes:
                    if result:
                        _emit(self, RECV, result, t)
                    else:
                        _maybe_eof(self, args, kwargs, size_index, size_name, default_size, None)
                elif type(result) is int:
                    buffer = _buffer_arg(args, kwargs, buffer_index, buffer_name)
                    if result > 0 and buffer is not None:
                        _emit(self, RECV, _copy(buffer, result), t)
                    elif result == 0:
                        _maybe_eof(self, args, kwargs, size_index, size_name, default_size, buffer)
                elif result:
                    _emit(self, RECV, _copy(result, None), t)
                else:
                    _maybe_eof(self, args, kwargs, size_index, size_name, default_size, None)
            except Exception as exc:  # noqa: BLE001
                _fault(exc)
        return result

    return wrapper


def _maybe_eof(obj, args, kwargs, size_index, size_name, default_size, buffer) -> None:
    """Nothing read: the peer closed, unless nothing was asked for."""
    size = _buffer_arg(args, kwargs, size_index, size_name)
    if size is None:
        size = default_size
    if not size and buffer is not None:
        size = len(buffer)
    if size:
        _emit_close(obj)


def _emit_close(obj: Any) -> None:
    """CLOSE for a connection that was recorded (others are nobody's business)."""
    conn = obj.__dict__.get(CONN_ATTR)
    if conn and conn not in ignored:
        t = _tls
        t.n += 1
        sink = _sink
        if sink is not None:
            sink((_time_ns(), t.tid, conn, RECV, b"", FLAG_CLOSE), 0)


def _wrap_close(orig):
    """unwrap() / _real_close(): the connection ends (only for recorded ones)."""

    def wrapper(self, *args, **kwargs):
        try:
            if _sink is not None:
                _emit_close(self)
        except Exception as exc:  # noqa: BLE001
            _fault(exc)
        return orig(self, *args, **kwargs)

    return wrapper


def _targets() -> list[tuple[type, str, Callable[[Any], Any]]]:
    sock, obj = ssl.SSLSocket, ssl.SSLObject
    recv_into = lambda f: _wrap_read(f, 1, "nbytes", 0, "buffer", None)  # noqa: E731
    return [
        (sock, "send", _wrap_write),
        (sock, "write", _wrap_write),
        (sock, "sendall", _wrap_sendall),
        (sock, "recv", lambda f: _wrap_read(f, 0, "buflen", None, None, 1024)),
        (sock, "read", lambda f: _wrap_read(f, 0, "len", 1, "buffer", 1024)),
        (sock, "recv_into", recv_into),
        (sock, "unwrap", _wrap_close),
        (sock, "_real_close", _wrap_close),
        (obj, "write", _wrap_write),
        (obj, "read", lambda f: _wrap_read(f, 0, "len", 1, "buffer", 1024)),
        (obj, "unwrap", _wrap_close),
    ]


def install(sink: Sink, on_fault: Callable[[BaseException], None]) -> None:
    """Patch the ssl classes; events go to ``sink(item, nbytes)``.  Idempotent."""
    global _sink, _on_fault
    _on_fault = on_fault
    if not _originals:
        for cls, name, factory in _targets():
            orig = cls.__dict__.get(name)
            if orig is None:  # not defined on this class in this Python
                continue
            wrapper = factory(orig)
            wrapper.__name__ = getattr(orig, "__name__", name)
            wrapper.__qualname__ = getattr(orig, "__qualname__", name)
            wrapper.__doc__ = getattr(orig, "__doc__", None)
            wrapper.__wrapped__ = orig
            setattr(cls, name, wrapper)
            _originals[(cls, name)] = orig
    _sink = sink


def uninstall() -> None:
    """Put the original methods back and stop recording."""
    global _sink
    _sink = None
    for (cls, name), orig in _originals.items():
        setattr(cls, name, orig)
    _originals.clear()


def stop_recording() -> None:
    """Leave the wrappers in place (other threads may be inside them) but record nothing."""
    global _sink
    _sink = None


def installed() -> bool:
    return bool(_originals)


def reset_after_fork() -> None:
    """In a forked child: a fresh per-thread counter (threads did not survive)."""
    global _tls
    _tls = _PerThread()
