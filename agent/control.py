"""The running agent's local sockets: ask it things, or hand it events.

Two Unix sockets in the runtime directory, each speaking JSON lines (one
request object a line, one reply object a line):

``agent.sock`` (mode 0600: the agent's own user only)
    ``{"op": "status"}``, ``{"op": "snapshot", ...}`` (the live view of
    ``top``) and any op registered with ``ControlServer.register``.
``ingest.sock`` (mode 0666, but only some senders are heard)
    only ``{"op": "events"}`` followed by recorded-event lines (the replay
    format) until the client closes.  Who may send is decided by the
    sender's credentials (SO_PEERCRED), not the file mode: root, the agent's
    own user and members of the ``ingest_group`` (configuration); anyone
    else is refused with one error line, counted and logged.  The pid of
    every event is replaced by the sender's own pid, so a process can only
    report its own traffic.  ``{"op": "events", "trusted_pids": true}``
    keeps the pids the sender gives, and is honoured only for root or the
    agent's own user (the proxy, which knows which local process each
    connection came from).  Every event is queued with its :class:`Origin`:
    rows made from it say ``capture='proxy'`` (trusted) or ``'hook'``,
    whatever the sender claims, and carry the sender's uid.

Requests are answered on a thread of their own; handlers must be
thread-safe.  Ingested events are queued for the run loop, which owns the
pipeline.
"""

from __future__ import annotations

import grp
import json
import logging
import os
import pwd
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

from lumen_agent.pipeline.core import Origin
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
# How often an idle socket thread wakes to look for a stop request.  close()
# does not wait for it: it connects to the socket to end the wait at once.
SERVE_POLL_S = 5.0

Handler = Callable[[dict[str, Any]], Any]

# Refusals are logged the first time and then every this many.
REFUSED_LOG_EVERY = 1000
# How long a refused sender's request line is waited for.
REFUSED_READ_TIMEOUT_S = 1.0


def group_id(name: str | None) -> int | None:
    if not name:
        return None
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        return None


def in_group(uid: int, gid: int, group: int | None) -> bool:
    """Whether the sender (uid, primary gid) belongs to ``group``."""
    if group is None:
        return False
    if gid == group:
        return True
    try:
        user = pwd.getpwuid(uid)
    except KeyError:
        return False
    return user.pw_gid == group or group in os.getgrouplist(user.pw_name, user.pw_gid)


def peer_credentials(sock: socket.socket) -> tuple[int, int] | None:
    """(pid, uid) of the process at the other end of a Unix socket."""
    creds = peer_credentials_full(sock)
    return None if creds is None else creds[:2]


def peer_credentials_full(sock: socket.socket) -> tuple[int, int, int] | None:
    """(pid, uid, gid) of the process at the other end of a Unix socket."""
    option = getattr(socket, "SO_PEERCRED", None)  # Linux; macOS has none
    if option is None:
        return None
    try:
        creds = sock.getsockopt(socket.SOL_SOCKET, option, struct.calcsize("3i"))
    except OSError:
        return None
    pid, uid, gid = struct.unpack("3i", creds)
    return pid, uid, gid


def _poke(address: str) -> None:
    """Connect to our own socket and hang up: a serving thread's select returns."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(0.5)
            sock.connect(address)
    except OSError:
        pass


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
    def __init__(self, runtime_dir: Path, ingest_group: str | None = None) -> None:
        self.runtime_dir = runtime_dir
        self.ingest_group = ingest_group
        self.events: queue.Queue[tuple[DataEvent, Origin]] = queue.Queue(MAX_QUEUED_EVENTS)
        self.refused = 0
        self._handlers: dict[str, Handler] = {}
        self._servers: list[_Server] = []
        self._threads: list[threading.Thread] = []
        self._bound: dict[Path, tuple[int, int]] = {}  # path -> (st_dev, st_ino) of our socket
        self.ingested = 0
        self.bad_lines = 0
        # Called (on a socket thread) after an ingested event is queued: wakes the run loop.
        self.on_queued: Callable[[], None] | None = None

    @property
    def control_path(self) -> Path:
        return self.runtime_dir / "agent.sock"

    @property
    def ingest_path(self) -> Path:
        return self.runtime_dir / "ingest.sock"

    def register(self, op: str, handler: Handler) -> None:
        self._handlers[op] = handler

    def start(self) -> None:
        created = not self.runtime_dir.exists()
        self.runtime_dir.mkdir(parents=True, exist_ok=True, mode=0o755)
        if created:  # whatever the umask (the agent's is 077): hooked processes must reach ingest.sock
            os.chmod(self.runtime_dir, 0o755)
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
        stoppers = []
        for server in self._servers:
            stopper = threading.Thread(target=server.shutdown, daemon=True)
            stopper.start()
            stoppers.append((server, stopper))
        for server, stopper in stoppers:
            while stopper.is_alive():
                _poke(server.server_address)  # ends the thread's select; it then sees the request
                stopper.join(0.05)
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
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": SERVE_POLL_S},
                                  name=f"lumen-{path.name}", daemon=True)
        thread.start()
        self._servers.append(server)
        self._threads.append(thread)

    def may_send(self, uid: int, gid: int) -> bool:
        """Root, the agent's own user, or a member of ``ingest_group``."""
        return uid in (0, os.getuid()) or in_group(uid, gid, group_id(self.ingest_group))

    def _refuse(self, wfile, creds: tuple[int, int, int] | None) -> None:
        self.refused += 1
        who = "unknown sender" if creds is None else f"pid {creds[0]} uid {creds[1]}"
        if self.refused == 1 or self.refused % REFUSED_LOG_EVERY == 0:
            log.warning("ingest refused %s: not root, the agent's user or in group %s refused=%d",
                        who, self.ingest_group or "(none configured)", self.refused)
        self._reply(wfile, {"error": f"not allowed to send events: only root, the agent's user and members of "
                                     f"group {self.ingest_group or '(none configured)'} may"})

    def _handle(self, conn: socket.socket, rfile, wfile, ingest_only: bool) -> None:
        if ingest_only:
            creds = peer_credentials_full(conn)
            if creds is None or not self.may_send(creds[1], creds[2]):
                # Read (briefly) the request line first, so the sender is
                # still listening when the refusal arrives.
                conn.settimeout(REFUSED_READ_TIMEOUT_S)
                try:
                    rfile.readline(MAX_LINE_BYTES)
                except OSError:
                    pass
                self._refuse(wfile, creds)
                return
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
        trusted = trusted_pids and creds is not None and creds[1] in (0, os.getuid())
        if trusted:
            pid = None  # a trusted sender names the processes itself
        # Whatever the lines say: the proxy is the only trusted sender.
        origin = Origin("proxy" if trusted else "hook", creds[1] if creds is not None else None)
        count = 0
        for line in iter(lambda: rfile.readline(MAX_LINE_BYTES), b""):
            try:
                event = event_from_json(line.decode("utf-8", "replace"))
            except RecordingError:
                self.bad_lines += 1
                continue
            if pid is not None and event.pid != pid:
                event = replace(event, pid=pid)
            self.events.put((event, origin))
            if self.on_queued is not None:
                self.on_queued()
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
