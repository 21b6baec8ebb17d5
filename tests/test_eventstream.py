"""The AWS event-stream parser: framing, CRCs, limits, and the fuzz invariant
(any input parses or raises ParseError; whole and byte-by-byte agree)."""

from __future__ import annotations

import json
import struct
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lumen_agent.parsers.errors import LimitExceeded, ParseError
from lumen_agent.parsers.eventstream import (
    MAX_HEADERS_BYTES,
    MAX_MESSAGE_BYTES,
    EventMessage,
    EventStreamError,
    EventStreamParser,
    SkippedMessage,
    encode_message,
)

EVENT_HEADERS = {":event-type": "metadata", ":content-type": "application/json", ":message-type": "event"}
METADATA = json.dumps({"usage": {"inputTokens": 25, "outputTokens": 10, "totalTokens": 35},
                       "metrics": {"latencyMs": 812}, "p": "abcdefghi"}).encode()


def event(kind: str, payload: dict) -> bytes:
    return encode_message({":event-type": kind, ":content-type": "application/json", ":message-type": "event"},
                          json.dumps(payload).encode())


STREAM = (event("messageStart", {"role": "assistant"})
          + event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "Hi"}})
          + event("messageStop", {"stopReason": "end_turn"})
          + encode_message(EVENT_HEADERS, METADATA))


def parse(data: bytes, step: int | None = None) -> list:
    parser = EventStreamParser()
    out = []
    step = step or len(data) or 1
    for i in range(0, len(data), step):
        parser.receive_data(data[i : i + step])
        out.extend(parser.next_events())
    return out


# A message as the AWS docs lay it out, bytes written by hand (not by our encoder):
# total 28 = 12 prelude + 8 headers + 4 payload + 4 CRC; one header: name
# length 2, ":a", type 7 (string), value length 2, "bc"; payload "null".
_HAND_PRELUDE = struct.pack(">II", 28, 8)
_HAND = _HAND_PRELUDE + struct.pack(">I", zlib.crc32(_HAND_PRELUDE)) + b"\x02:a\x07\x00\x02bc" + b"null"
HAND_MESSAGE = _HAND + struct.pack(">I", zlib.crc32(_HAND))


def test_hand_built_message():
    (message,) = parse(HAND_MESSAGE)
    assert message == EventMessage(((":a", "bc"),), b"null")


def test_botocore_reads_what_we_encode_and_we_read_what_it_reads():
    # botocore (the AWS SDK's own parser) as the independent reference.
    eventstream = pytest.importorskip("botocore.eventstream")
    buffer = eventstream.EventStreamBuffer()
    buffer.add_data(STREAM)
    theirs = [(m.headers, m.payload) for m in buffer]
    ours = [(dict(m.headers), m.payload) for m in parse(STREAM)]
    assert ours == theirs
    assert len(ours) == 4 and ours[-1][0][":event-type"] == "metadata"


def test_whole_and_byte_by_byte_agree():
    whole = parse(STREAM)
    assert [m.event_type for m in whole] == ["messageStart", "contentBlockDelta", "messageStop", "metadata"]
    assert parse(STREAM, step=1) == whole
    assert parse(STREAM, step=7) == whole
    assert json.loads(whole[-1].payload)["usage"]["inputTokens"] == 25


def test_every_header_type():
    import uuid as uuidlib

    ident = uuidlib.UUID("12345678-1234-5678-1234-567812345678")
    block = (b"\x01t\x00" + b"\x01f\x01" + b"\x01b\x02\xff" + b"\x01s\x03\x01\x00" + b"\x01i\x04\x00\x00\x01\x00"
             + b"\x01l\x05" + struct.pack(">q", -5) + b"\x01y\x06\x00\x02\x00\x01" + b"\x01d\x08"
             + struct.pack(">q", 1700000000000) + b"\x01u\x09" + ident.bytes)
    prelude = struct.pack(">II", 16 + len(block), len(block))
    body = prelude + struct.pack(">I", zlib.crc32(prelude)) + block
    (message,) = parse(body + struct.pack(">I", zlib.crc32(body)))
    assert dict(message.headers) == {"t": True, "f": False, "b": -1, "s": 256, "i": 256, "l": -5,
                                     "y": b"\x00\x01", "d": 1700000000000, "u": str(ident)}


def test_bad_message_crc_is_a_counted_skip_and_the_stream_goes_on():
    first = event("messageStart", {"role": "assistant"})
    broken = bytearray(first)
    broken[-6] ^= 0x01  # a payload byte: the prelude is sound, the message CRC is not
    parser = EventStreamParser()
    parser.receive_data(bytes(broken) + encode_message(EVENT_HEADERS, METADATA))
    events = parser.next_events()
    assert events[0] == SkippedMessage("message_crc")
    assert isinstance(events[1], EventMessage) and events[1].event_type == "metadata"
    assert parser.skipped == 1


def test_headers_that_overrun_their_block_are_skipped():
    block = b"\x05:abc\x07\x00\x40x"  # a string header claiming 64 bytes in a 10-byte block
    prelude = struct.pack(">II", 16 + len(block), len(block))
    body = prelude + struct.pack(">I", zlib.crc32(prelude)) + block
    assert parse(body + struct.pack(">I", zlib.crc32(body))) == [SkippedMessage("headers")]


def test_bad_prelude_crc_loses_the_framing():
    broken = bytearray(STREAM)
    broken[8] ^= 0xFF
    with pytest.raises(EventStreamError, match="prelude CRC"):
        parse(bytes(broken))


def test_headers_len_beyond_the_message_is_impossible():
    prelude = struct.pack(">II", 20, 4_000_000_000)
    with pytest.raises(EventStreamError, match="impossible lengths"):
        parse(prelude + struct.pack(">I", zlib.crc32(prelude)) + b"\x00" * 8)


def test_huge_lengths_hit_the_named_limits_without_buffering():
    prelude = struct.pack(">II", MAX_MESSAGE_BYTES + 1, 0)
    parser = EventStreamParser()
    with pytest.raises(LimitExceeded):
        parser.receive_data(prelude + struct.pack(">I", zlib.crc32(prelude)))
    assert parser.pending_bytes == 0
    prelude = struct.pack(">II", MAX_HEADERS_BYTES + 1000, MAX_HEADERS_BYTES + 1)
    with pytest.raises(LimitExceeded):
        parse(prelude + struct.pack(">I", zlib.crc32(prelude)))


def test_truncated_message_waits_and_reports_pending_bytes():
    parser = EventStreamParser()
    parser.receive_data(STREAM[:-5])
    assert [m.event_type for m in parser.next_events()] == ["messageStart", "contentBlockDelta", "messageStop"]
    assert parser.pending_bytes == len(encode_message(EVENT_HEADERS, METADATA)) - 5


def test_exception_messages_carry_their_type():
    raw = encode_message({":exception-type": "throttlingException", ":content-type": "application/json",
                          ":message-type": "exception"}, b'{"message":"slow down"}')
    (message,) = parse(raw)
    assert (message.message_type, message.event_type) == ("exception", "throttlingException")


# -- fuzz: any input parses or raises ParseError; chunking never changes the result


def _run(chunks: list[bytes]) -> tuple[list, str | None]:
    parser = EventStreamParser()
    out = []
    try:
        for chunk in chunks:
            parser.receive_data(chunk)
            out.extend(parser.next_events())
    except ParseError as exc:
        out.extend(parser.next_events())  # what was whole before the damage
        return out, type(exc).__name__
    return out, None


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=120), max_size=12))
def test_fuzz_random_bytes_only_parse_error(chunks):
    _run(chunks)


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=0, max_value=len(STREAM) - 1), st.integers(min_value=0, max_value=255),
       st.integers(min_value=1, max_value=64))
def test_fuzz_mutated_stream_whole_vs_pieces(position, value, step):
    data = bytearray(STREAM)
    data[position] = value
    data = bytes(data)
    whole = _run([data])
    pieces = _run([data[i : i + step] for i in range(0, len(data), step)])
    bytewise = _run([data[i : i + 1] for i in range(len(data))])
    assert whole == pieces == bytewise
    # Whatever was damaged, nothing was invented: each message kept is one we sent.
    sent = parse(STREAM)
    assert all(m in sent for m in whole[0] if isinstance(m, EventMessage))


# -- the AWS event-stream test vectors (as botocore's tests/unit/test_eventstream.py
# carries them): bytes written by AWS, not by our encoder.

AWS_VECTORS = [
    (b"\x00\x00\x00\x10\x00\x00\x00\x00\x05\xc2H\xeb}\x98\xc8\xff", {}, b""),
    (b"\x00\x00\x00\x1e\x00\x00\x00\x0e]J\xdb\x8d\x04long\x05\xff\xff\xff\xff\xff\xff\xff\xffK\xc22\xda",
     {"long": -1}, b""),
    (b"\x00\x00\x00=\x00\x00\x00 \x07\xfd\x83\x96\x0ccontent-type\x07\x00\x10application/json{'foo':'bar'}"
     b"\x8d\x9c\x08\xb1", {"content-type": "application/json"}, b"{'foo':'bar'}"),
    (b"\x00\x00\x00\x52\x00\x00\x00\x42\xbf\x23\x63\x7e\x0d:message-type\x07\x00\x05error"
     b"\x0b:error-code\x07\x00\x04code\x0e:error-message\x07\x00\x07message\x6b\x6c\xea\x3d",
     {":message-type": "error", ":error-code": "code", ":error-message": "message"}, b""),
]


def test_aws_vectors_decode_alone_and_together():
    for raw, headers, payload in AWS_VECTORS:
        (message,) = parse(raw)
        assert (dict(message.headers), message.payload) == (headers, payload)
    together = b"".join(raw for raw, _, _ in AWS_VECTORS)
    assert parse(together, step=1) == parse(together)
    assert parse(together)[-1].message_type == "error"


def test_aws_corrupted_vectors():
    # payload byte changed: the message CRC fails -> one counted skip
    corrupted_payload = b"\x00\x00\x00\x1d\x00\x00\x00\x00\xfdR\x8cZ{'foo':'bar'\x8d\xc3e96"
    assert parse(corrupted_payload) == [SkippedMessage("message_crc")]
    # a header name changed ("content+type"): same
    corrupted_headers = (b"\x00\x00\x00=\x00\x00\x00 \x07\xfd\x83\x96\x0ccontent+type\x07\x00\x10"
                         b"application/json{'foo':'bar'}\x8d\x9c\x08\xb1")
    assert parse(corrupted_headers) == [SkippedMessage("message_crc")]
    # the total length or the headers length changed: the prelude CRC fails, framing is lost
    for raw in (b"\x01\x00\x00\x1d\x00\x00\x00\x00\xfdR\x8cZ{'foo':'bar'}\xc3e96",
                b"\x00\x00\x00=\xff\x00\x01\x02\x07\xfd\x83\x96\x0ccontent-type\x07\x00"
                b"\x10application/json{'foo':'bar'}\x8d\x9c\x08\xb1"):
        with pytest.raises(EventStreamError, match="prelude CRC"):
            parse(raw)
