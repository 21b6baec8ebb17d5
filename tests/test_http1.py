
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lumen_agent.parsers.http1 import (
    MAX_HUNT_BYTES,
    Body,
    EndOfMessage,
    Http1Parser,
    MessageHead,
    MessageKind,
    Skipped,
    Truncated,
)

REQUEST = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: api.openai.com\r\nContent-Length: 11\r\n\r\n"
           b"{\"a\": true}")
CHUNKED_RESPONSE = (b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
                    b"7\r\ndata: 1\r\n5\r\n\n\ndat\r\n0\r\n\r\n")


def parse(kind, data: bytes, step: int | None = None):
    parser = Http1Parser(kind)
    events = []
    step = step or len(data) or 1
    for i in range(0, len(data), step):
        parser.receive_data(data[i : i + step])
        events.extend(parser.next_events())
    return events


def merged(events):
    """Body pieces joined, so whole and byte-by-byte parses compare equal."""
    out = []
    for event in events:
        if isinstance(event, Body) and out and isinstance(out[-1], Body):
            out[-1] = Body(out[-1].data + event.data)
        else:
            out.append(event)
    return out


@pytest.mark.parametrize("kind,data", [
    (MessageKind.REQUEST, REQUEST + REQUEST),
    (MessageKind.RESPONSE, CHUNKED_RESPONSE * 3),
])
def test_whole_and_byte_by_byte_agree(kind, data):
    whole = merged(parse(kind, data))
    assert whole == merged(parse(kind, data, step=1))
    ends = [e for e in whole if isinstance(e, EndOfMessage)]
    assert len(ends) == (2 if kind is MessageKind.REQUEST else 3)


def test_request_head_and_body():
    head, body, end = parse(MessageKind.REQUEST, REQUEST)
    assert head == MessageHead("POST", "/v1/chat/completions", None,
                               (("host", "api.openai.com"), ("content-length", "11")), "1.1")
    assert body == Body(b'{"a": true}')
    assert end == EndOfMessage()


def test_chunked_body_is_dechunked():
    events = merged(parse(MessageKind.RESPONSE, CHUNKED_RESPONSE, step=3))
    assert events[0].status == 200
    assert events[1] == Body(b"data: 1\n\ndat")
    assert events[2] == EndOfMessage()


def test_joined_mid_stream_skips_to_next_message():
    tail = b"ld\"}\r\n\r\nsome body bytes\r\n"
    events = parse(MessageKind.RESPONSE, tail + CHUNKED_RESPONSE, step=5)
    assert events[0] == Skipped(len(tail), "joined mid-stream")
    assert isinstance(events[1], MessageHead) and events[1].status == 200
    assert isinstance(events[-1], EndOfMessage)


def test_body_until_close_ends_at_close():
    parser = Http1Parser(MessageKind.RESPONSE)
    parser.receive_data(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n{\"x\":1}")
    parser.connection_closed()
    events = parser.next_events()
    assert [type(e) for e in events] == [MessageHead, Body, EndOfMessage]


def test_cut_response_is_truncated():
    parser = Http1Parser(MessageKind.RESPONSE)
    parser.receive_data(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly a part")
    parser.connection_closed()
    assert isinstance(parser.next_events()[-1], Truncated)


def test_malformed_head_is_skipped_and_parser_recovers():
    bad = b"HTTP/1.1 200 OK\r\nContent-Length: nope\r\n\r\n"
    events = parse(MessageKind.RESPONSE, bad + CHUNKED_RESPONSE)
    assert any(isinstance(e, Skipped) and "malformed" in e.reason for e in events)
    # The parser hunts for the next boundary and still reads the good message.
    parser = Http1Parser(MessageKind.RESPONSE)
    parser.receive_data(bad)
    parser.receive_data(CHUNKED_RESPONSE)
    assert any(isinstance(e, EndOfMessage) for e in parser.next_events())


def test_garbage_is_bounded():
    parser = Http1Parser(MessageKind.REQUEST)
    for _ in range(100):
        parser.receive_data(b"x" * 10_000)
    skipped = sum(e.nbytes for e in parser.next_events() if isinstance(e, Skipped))
    assert len(parser._hunt_buffer) <= MAX_HUNT_BYTES
    assert skipped + len(parser._hunt_buffer) == 1_000_000


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=200), max_size=20), st.sampled_from(list(MessageKind)))
def test_fuzz_never_raises(chunks, kind):
    parser = Http1Parser(kind)
    for chunk in chunks:
        parser.receive_data(chunk)
        parser.next_events()
    parser.connection_closed()
    parser.next_events()


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300), st.integers(min_value=0, max_value=400))
def test_fuzz_mutated_messages(noise, position):
    data = bytearray(CHUNKED_RESPONSE * 2)
    data[position:position] = noise
    for step in (None, 1, 7):
        parse(MessageKind.RESPONSE, bytes(data), step)


@pytest.mark.parametrize("step", [1, 3, 7, len(CHUNKED_RESPONSE)])
def test_body_sink_takes_body_bytes_only_when_no_event_waits(step):
    """With a sink set from the head on (as the tap does), every body byte
    arrives once, in order: through the sink when no event waits, else as a
    Body event after the events before it."""
    parser = Http1Parser(MessageKind.RESPONSE)
    order = []
    for i in range(0, len(CHUNKED_RESPONSE), step):
        parser.receive_data(CHUNKED_RESPONSE[i : i + step])
        for event in parser.next_events():
            order.append(event)
            if isinstance(event, MessageHead):
                parser.body_sink = lambda data: order.append(("sink", data))
    assert isinstance(order[0], MessageHead) and order[-1] == EndOfMessage()
    body = b"".join(e.data if isinstance(e, Body) else e[1] for e in order[1:-1])
    assert body == b"data: 1\n\ndat"
    if step == 1:  # each body byte read on its own, with nothing waiting: all through the sink
        assert all(isinstance(e, tuple) for e in order[1:-1])
    if step == len(CHUNKED_RESPONSE):  # the head waits, so the body follows it as Body events
        assert all(isinstance(e, Body) for e in order[1:-1])
