import gzip
import zlib

import brotli
import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from lumen_agent.parsers.encodings import DecodingError, DecompressionLimit, decoder_for
from lumen_agent.parsers.errors import ParseError
from lumen_agent.parsers.sse import SseEvent, SseParser

TEXT = b'{"usage": {"prompt_tokens": 12}}' * 50
ENCODED = {
    "gzip": gzip.compress(TEXT),
    "deflate": zlib.compress(TEXT),
    "br": brotli.compress(TEXT),
    "zstd": zstandard.ZstdCompressor().compress(TEXT),
}


@pytest.mark.parametrize("name", sorted(ENCODED))
@pytest.mark.parametrize("step", [None, 1, 13])
def test_decoders_whole_and_in_pieces(name, step):
    data = ENCODED[name]
    decoder = decoder_for(name)
    step = step or len(data)
    out = b"".join(decoder.decode(data[i : i + step], 10**6) for i in range(0, len(data), step))
    assert out == TEXT


def test_raw_deflate_is_accepted():
    raw = zlib.compressobj(wbits=-15)
    data = raw.compress(TEXT) + raw.flush()
    assert decoder_for("deflate").decode(data, 10**6) == TEXT


@pytest.mark.parametrize("name", sorted(ENCODED))
def test_compression_bomb_is_cut(name):
    bomb_plain = b"\0" * (64 * 1024 * 1024)
    bomb = {"gzip": gzip.compress, "deflate": zlib.compress, "br": brotli.compress,
            "zstd": zstandard.ZstdCompressor().compress}[name](bomb_plain)
    assert len(bomb) < 2 * 1024 * 1024
    with pytest.raises(DecompressionLimit):
        decoder_for(name).decode(bomb, 1024 * 1024)


def test_corrupt_and_unknown_encodings_raise_parse_errors():
    with pytest.raises(DecodingError):
        decoder_for("gzip").decode(b"definitely not gzip", 1000)
    with pytest.raises(ParseError):
        decoder_for("compress")


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300), st.sampled_from(sorted(ENCODED) + ["identity"]))
def test_decoders_raise_only_parse_errors(data, name):
    try:
        decoder_for(name).decode(data, 4096)
    except ParseError:
        pass


SSE = (b"event: message_start\ndata: {\"a\":1}\n\n: comment\r\n\r\n"
       b"data: line1\r\ndata: line2\r\n\r\nevent: ping\rdata: {}\r\r")


def sse_events(data: bytes, step: int) -> list[SseEvent]:
    parser = SseParser()
    out = []
    for i in range(0, len(data), step):
        parser.receive_data(data[i : i + step])
        out += parser.next_events()
    parser.end_of_stream()
    return out + parser.next_events()


@pytest.mark.parametrize("step", [len(SSE), 1, 5])
def test_sse_events_with_every_line_ending(step):
    assert sse_events(SSE, step) == [
        SseEvent("message_start", '{"a":1}'),
        SseEvent(None, "line1\nline2"),
        SseEvent("ping", "{}"),
    ]


def test_sse_stream_without_final_blank_line():
    assert sse_events(b"data: [DONE]", 1) == [SseEvent(None, "[DONE]")]


@pytest.mark.parametrize("step", [len(SSE), 1, 2, 5, 13])
def test_sse_receive_gives_the_pairs_of_the_events(step):
    parser = SseParser()
    pairs = []
    for i in range(0, len(SSE), step):
        pairs += parser.receive(SSE[i : i + step])
    pairs += parser.finish()
    assert pairs == [(e.event, e.data) for e in sse_events(SSE, step)]
    assert pairs == [("message_start", '{"a":1}'), (None, "line1\nline2"), ("ping", "{}")]


def test_sse_receive_reads_every_field_form():
    # "data:" without its space, a value that itself starts with a space,
    # an unknown field, an event name and two data lines joined by LF.
    parser = SseParser()
    assert parser.receive(b"data:x\n\ndata:  y\nid: 7\nretry: 5\n\nevent: e\ndata: a\ndata: b\n\n") == [
        (None, "x"), (None, " y"), ("e", "a\nb")]
    assert parser.finish() == []


def test_sse_receive_raises_past_max_event_bytes():
    from lumen_agent.parsers.errors import LimitExceeded
    from lumen_agent.parsers.sse import MAX_EVENT_BYTES

    parser = SseParser()
    piece = b"data: " + b"x" * (64 * 1024) + b"\n"  # data lines of one event that never ends
    with pytest.raises(LimitExceeded):
        for _ in range(MAX_EVENT_BYTES // len(piece) + 2):
            parser.receive(piece)


def test_sse_receive_one_line_events_with_and_without_pending_fields():
    parser = SseParser()
    assert parser.receive(b'data: {"a":1}\n\n') == [(None, '{"a":1}')]
    assert parser.receive(b"event: ping\n") == []
    assert parser.receive(b"data: {}\n\n") == [("ping", "{}")]  # the name read before is kept
    assert parser.receive(b"data: a\n") == []
    assert parser.receive(b"data: b\n\n") == [(None, "a\nb")]  # so is a data line
    assert parser.receive(b"data: \xff\n\n") == [(None, "\ufffd")]  # undecodable bytes replaced, as per line
    assert parser.finish() == []
