"""Credentials taken out of captured bytes before they are written anywhere.

A recording holds what processes wrote and read on TLS connections: the
requests a client sends (SEND) and, when the server is a local process too,
the same requests as the server reads them (RECV).  Both directions carry
credentials, in headers and in query strings (``?key=``, ``?api-key=``).
:class:`Redactor` replaces their values with ``[redacted]`` in every event.

A header may be split across two writes (``Authorization: Bea`` then
``rer sk-...``), so the redactor remembers, per connection and direction,
the start of a line that has not ended yet.  It is a filter for HTTP/1.x
text; HTTP/2 header blocks are HPACK-encoded and not matched here.
"""

from __future__ import annotations

import re
from collections import OrderedDict

REDACTED = b"[redacted]"

# Header names whose values are credentials.
CREDENTIAL_HEADERS = (
    b"authorization", b"proxy-authorization", b"x-api-key", b"x-goog-api-key", b"api-key",
    b"ocp-apim-subscription-key", b"x-amz-security-token", b"cookie",
)
# Query parameters whose values are credentials (Google ?key=, Azure and
# gateways ?api-key=, OAuth ?access_token=, presigned AWS session tokens).
CREDENTIAL_PARAMS = (
    b"key", b"api-key", b"api_key", b"apikey", b"access_token", b"x-goog-api-key", b"x-amz-security-token",
)

_NAMES = b"|".join(re.escape(n) for n in CREDENTIAL_HEADERS)
_HEADER = re.compile(rb"(?im)^(" + _NAMES + rb")[ \t]*:[^\r\n]*")
_HEADER_START = re.compile(rb"(?i)(" + _NAMES + rb")[ \t]*:")
_PARAM = re.compile(rb"(?i)([?&](?:" + b"|".join(re.escape(n) for n in CREDENTIAL_PARAMS) + rb")=)[^&\s#\"']*")

# Longest line start remembered across events: enough for any header name
# above plus its colon and spaces.
MAX_LINE_START = 64
# Connections whose unfinished line is remembered; the oldest are forgotten.
MAX_STREAMS = 65536


def redact_credentials(data: bytes) -> bytes:
    """Credential header values and query parameters of ``data`` replaced."""
    if not data:
        return data
    data = _HEADER.sub(lambda m: m.group(1) + b": " + REDACTED, data)
    return _PARAM.sub(lambda m: m.group(1) + REDACTED, data)


class Redactor:
    """``redact_credentials`` for a stream of events, headers split across
    events included."""

    def __init__(self) -> None:
        # key -> (start of the unfinished last line, its length so far)
        self._open_lines: OrderedDict[object, tuple[bytes, int]] = OrderedDict()

    def redact(self, key: object, data: bytes) -> bytes:
        if not data:
            return data
        start, length = self._open_lines.pop(key, (b"", 0))
        head = b""
        rest = data
        if length:
            # The first line of ``data`` continues a line an earlier event began.
            end = _line_end(data)
            piece, rest = data[:end], data[end:]
            head = piece
            if length == len(start):  # the whole line start is known
                seen = start + piece[: MAX_LINE_START]
                match = _HEADER_START.match(seen)
                if match:
                    value_at = match.end() - length  # where the value starts in ``piece``
                    if value_at <= 0:
                        head = b""  # the value began earlier and was redacted there
                    else:
                        head = piece[:value_at] + b" " + REDACTED
        out = head + redact_credentials(rest)
        self._remember(key, start, length, data)
        return out

    def _remember(self, key: object, start: bytes, length: int, data: bytes) -> None:
        cut = max(data.rfind(b"\n"), data.rfind(b"\r"))
        if cut == -1:
            line = start + data[: max(0, MAX_LINE_START - len(start))] if length == len(start) else start
            length += len(data)
        else:
            tail = data[cut + 1 :]
            line, length = tail[:MAX_LINE_START], len(tail)
        if not length:
            return
        self._open_lines[key] = (line[:MAX_LINE_START], length)
        if len(self._open_lines) > MAX_STREAMS:
            self._open_lines.popitem(last=False)


def _line_end(data: bytes) -> int:
    ends = [i for i in (data.find(b"\n"), data.find(b"\r")) if i != -1]
    return min(ends) if ends else len(data)
