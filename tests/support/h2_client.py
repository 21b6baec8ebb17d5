"""A raw HTTP/2 client on the ``h2`` library: calls, then (optionally) waits, then calls again
on the same connection.  For tests of a capture that starts while a connection is open.

    python tests/support/h2_client.py --url https://localhost:PORT --scenario openai.chat.stream \
        [--before 1] [--trigger FILE] [--after 1] [--never-index]

``--before`` calls are made first; then, with ``--trigger``, the client prints
``{"waiting": true}`` and waits until FILE exists before the ``--after`` calls.
``--never-index`` sends every header as a never-indexed literal (RFC 7541
section 6.2.3), and asks the fake provider to do the same, so the HPACK tables
stay empty: what a capture joined after the start can still decode.
Prints one JSON line per call: call, status, request_id, body.  Trust comes from SSL_CERT_FILE.
"""

from __future__ import annotations

import argparse
import json
import socket
import ssl
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import h2.config
import h2.connection
import h2.events
from hpack import HeaderTuple, NeverIndexedHeaderTuple

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from support import clients  # noqa: E402  (request_for: the same requests the other clients send)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--scenario", default="openai.chat.stream")
    parser.add_argument("--before", type=int, default=1)
    parser.add_argument("--after", type=int, default=1)
    parser.add_argument("--trigger")
    parser.add_argument("--never-index", action="store_true")
    parser.add_argument("--timeout", type=float, default=120)
    args = parser.parse_args(argv)

    url = urlsplit(args.url)
    path, body, headers = clients.request_for(args.scenario)
    if args.never_index:
        headers = {**headers, "x-fake-h2-never-index": "1"}
    tuple_type = NeverIndexedHeaderTuple if args.never_index else HeaderTuple
    raw = socket.create_connection((url.hostname, url.port), timeout=args.timeout)
    ctx = ssl.create_default_context()
    ctx.set_alpn_protocols(["h2"])
    tls = ctx.wrap_socket(raw, server_hostname=url.hostname)
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
    conn.initiate_connection()
    tls.sendall(conn.data_to_send())

    def call(i: int) -> None:
        sid = conn.get_next_available_stream_id()
        pairs = [(":method", "POST"), (":scheme", "https"), (":authority", url.netloc), (":path", path),
                 *((name.lower(), value) for name, value in headers.items())]
        conn.send_headers(sid, [tuple_type(name, value) for name, value in pairs])
        conn.send_data(sid, json.dumps(body).encode(), end_stream=True)
        tls.sendall(conn.data_to_send())
        status, request_id, chunks, done = None, None, [], False
        while not done:
            data = tls.recv(65536)
            if not data:
                raise ConnectionError("server closed the connection")
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.ResponseReceived) and event.stream_id == sid:
                    head = dict(event.headers)
                    status = int(head[":status"])
                    request_id = head.get("x-request-id") or head.get("request-id")
                elif isinstance(event, h2.events.DataReceived):
                    conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                    if event.stream_id == sid:
                        chunks.append(event.data)
                elif isinstance(event, h2.events.StreamEnded) and event.stream_id == sid:
                    done = True
                elif isinstance(event, h2.events.StreamReset) and event.stream_id == sid:
                    raise ConnectionError("stream reset by the server")
            out = conn.data_to_send()
            if out:
                tls.sendall(out)
        print(json.dumps({"call": i, "status": status, "request_id": request_id,
                          "body": b"".join(chunks).decode("utf-8", "replace")}), flush=True)

    for i in range(args.before):
        call(i)
    if args.trigger:
        print(json.dumps({"waiting": True}), flush=True)
        deadline = time.monotonic() + args.timeout
        while not Path(args.trigger).exists():
            if time.monotonic() > deadline:
                raise SystemExit("trigger never came")
            time.sleep(0.05)
    for i in range(args.before, args.before + args.after):
        call(i)
    conn.close_connection()
    tls.sendall(conn.data_to_send())
    tls.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
