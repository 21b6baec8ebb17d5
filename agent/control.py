"""The running agent's local sockets: ask it things, or hand it events.

Two Unix sockets in the runtime directory, each speaking JSON lines (one
request object a line, one reply object a line):

``agent.sock`` (mode 0600: the agent's own user only)
    ``{"op": "status"}``, ``{"op": "snapshot", ...}`` (the live view of
    ``top``) and any op registered with ``ControlServer.register``.
``ingest.sock`` (mode 0666: any local process)
    only ``{"op": "events"}`` followed by recorded-event lines (the replay
    format) until the client closes.  The pid of every event is replaced by
    the sender's own pid (SO_PEERCRED), so a process can only report its own
    traffic.  ``{"op": "events", "trusted_pids": true}`` keeps the pids the
    sender gives, and is honoured only for root or the agent's own user (the
    proxy, which knows which local process each connection came from).

Requests are answered on a thread of their own; handlers must be
thread-safe.  Ingested events are queued for the run loop, which owns the
pipeline.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import select
import socket
import socketserver
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from lumen_agent.pipeline.events import DataEvent
from lumen_agent.recording import RecordingError, event_from_json

log = logging.getLogger("lumen_agent")

# Events waiting for the run loop; beyond this the sender is slowed down
# (put blocks), never a silent drop.
MAX_QUEUED_EVENTS = 100_000
# One request line; an event line carries at most one SSL call's bytes.
MAX_LINE_BYTES = 8 * 1024 * 1024

# How often wait_idle looks at the sockets.
IDLE_POLL_S = 0.05

Handler = Callable[[dict[str, Any]], Any]


def peer_credentials(sock: socket.socket) -> tuple[int, int] | None:
    """(pid, uid) of the process at the other end of a Unix socket."""
    option = getattr(socket, "SO_PEERCRED", None)  # Linux; macOS has none
    if option is None:
        return None
    try:
        creds = sock.getsockopt(socket.SOL_SOCKET, option, struct.calcsize("3i"))
    except OSError:
        return None
    pid, uid, _gid = struct.unpack("3i", creds)
    return pid, uid


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.active = 0  # accepted connections not yet finished
        self._active_lock = threading.Lock()

    def process_request(self, request: Any, client_address: Any) -> None:
        # Counted here, on the accepting thread, so no accepted connection is
        # ever invisible to wait_idle (a handler thread may not have run yet).
        with self._active_lock:
            self.active += 1
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        try:
            super().shutdown_request(request)
        finally:
            with self._active_lock:
                self.active -= 1


class ControlServer:
    def __init__(self, runtime_dir: Path) -> None:
        self.runtime_dir = runtime_dir
        self.events: queue.Queue[DataEvent] = queue.Queue(MAX_QUEUED_EVENTS)
        self._handlers: dict[str, Handler] = {}
        self._servers: list[_Server] = []
        self._threads: list[threading.Thread] = []
        self._bound: dict[Path, tuple[int, int]] = {}  # path -> (st_dev, st_ino) of our socket
        self.ingested = 0
        self.bad_lines = 0

    @property
    def control_path(self) -> Path:
        return self.runtime_dir / "agent.sock"

    @property
    def ingest_path(self) -> Path:
        return self.runtime_dir / "ingest.sock"

    def register(self, op: str, handler: Handler) -> None:
        self._handlers[op] = handler

    def start(self) -> None:
        self.runtime_dir.mkdir(parents=True, exist_ok=True, mode=0o755)
        self._serve(self.control_path, 0o600, ingest_only=False)
        self._serve(self.ingest_path, 0o666, ingest_only=True)

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no connection is open or waiting to be accepted; False at the timeout.

        For a host whose senders have exited: their last bytes are still in
        the sockets, and each connection ends once they are read.
        """
        deadline = time.monotonic() + timeout
        quiet = 0
        while True:
            listening = [server.socket for server in self._servers]
            pending = bool(listening) and bool(select.select(listening, [], [], 0)[0])
            busy = pending or any(server.active for server in self._servers)
            # Twice in a row: between accept() and the count there is a moment.
            quiet = 0 if busy else quiet + 1
            if quiet >= 2:
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(IDLE_POLL_S)

    def close(self) -> None:
        for server in self._servers:
            server.shutdown()
            server.server_close()
        for path, identity in self._bound.items():
            # Only the socket we bound: a path taken over by another agent
            # since is that agent's, and removing it would hide it.
            try:
                st = path.stat()
                if (st.st_dev, st.st_ino) == identity:
                    path.unlink()
            except OSError:
                pass
        self._bound.clear()
        self._servers.clear()

    def _serve(self, path: Path, mode: int, *, ingest_only: bool) -> None:
        try:
            path.unlink()
        except FileNotFoundError:
            pass
        control = self

        class RequestHandler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                control._handle(self.connection, self.rfile, self.wfile, ingest_only)

        old_umask = os.umask(0o777 ^ mode)
        try:
            server = _Server(str(path), RequestHandler)
        finally:
            os.umask(old_umask)
        os.chmod(path, mode)
        st = path.stat()
        self._bound[path] = (st.st_dev, st.st_ino)
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                                  name=f"lumen-{path.name}", daemon=True)
        thread.start()
        self._servers.append(server)
        self._threads.append(thread)

    def _handle(self, conn: socket.socket, rfile, wfile, ingest_only: bool) -> None:
        while True:
            line = rfile.readline(MAX_LINE_BYTES)
            if not line:
                return
            try:
                request = json.loads(line)
                op = request["op"]
            except (ValueError, KeyError, TypeError):
                self._reply(wfile, {"error": "bad request: expected a JSON object with an op"})
                return
            if op == "events":
                self._ingest(conn, rfile, bool(request.get("trusted_pids")))
                return
            if ingest_only:
                self._reply(wfile, {"error": f"op {op!r} is not served on this socket"})
                return
            handler = self._handlers.get(op)
            if handler is None:
                self._reply(wfile, {"error": f"unknown op {op!r}"})
                continue
            try:
                self._reply(wfile, {"ok": handler(request)})
            except Exception as exc:  # noqa: BLE001 - a bad request must not kill the server
                log.warning("control request failed op=%s error=%s", op, exc)
                self._reply(wfile, {"error": str(exc)})

    def _ingest(self, conn: socket.socket, rfile, trusted_pids: bool) -> None:
        creds = peer_credentials(conn)
        pid = creds[0] if creds is not None else None
        if trusted_pids and creds is not None and creds[1] in (0, os.getuid()):
            pid = None  # a trusted sender names the processes itself
        count = 0
        for line in iter(lambda: rfile.readline(MAX_LINE_BYTES), b""):
            try:
                event = event_from_json(line.decode("utf-8", "replace"))
            except RecordingError:
                self.bad_lines += 1
                continue
            if pid is not None and event.pid != pid:
                event = replace(event, pid=pid)
            self.events.put(event)
            count += 1
        self.ingested += count

    @staticmethod
    def _reply(wfile, obj: Any) -> None:
        try:
            wfile.write(json.dumps(obj, default=str).encode() + b"\n")
            wfile.flush()
        except OSError:
            pass


def request(path: Path, op: str, timeout: float = 2.0, **fields: Any) -> Any:
    """Ask the agent at ``path`` one thing; raises OSError when no agent answers."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(str(path))
        sock.sendall(json.dumps({"op": op, **fields}).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            piece = sock.recv(65536)
            if not piece:
                break
            data += piece
    reply = json.loads(data)
    if "error" in reply:
        raise OSError(reply["error"])
    return reply["ok"]
