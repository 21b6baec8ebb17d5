"""Content-Encoding decoders that never produce more than a set budget.

A response body arrives in pieces; each decoder takes compressed pieces and
returns plaintext pieces.  The caller gives the budget (bytes of plaintext it
is still willing to hold); a decoder that would exceed it raises
``DecompressionLimit``, so a compression bomb costs at most the budget plus
one bounded step, never unbounded memory.

``decode`` returns all the plaintext of a piece at once (for bodies parsed
whole, whose budget is small); ``steps`` yields it a bounded step at a time,
for streams whose budget is large: the caller parses and drops each step, so
1.6 KB of brotli never becomes hundreds of MB held at once.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from typing import Protocol

import brotli
import zstandard

from lumen_agent.parsers.errors import LimitExceeded, ParseError

# zstd's streaming API has no output cap, so compressed input is fed in
# slices this small: one slice can expand to at most a few MiB (a zstd block
# holds at most 128 KiB and needs a few bytes of input), which bounds the
# overshoot past the budget.
_ZSTD_INPUT_SLICE = 64


class DecompressionLimit(LimitExceeded):
    """The decoded body would exceed its budget (likely a compression bomb)."""


class DecodingError(ParseError):
    """The body is not valid data for its Content-Encoding."""


class Decoder(Protocol):
    def decode(self, data: bytes, budget: int) -> bytes: ...

    def steps(self, data: bytes, budget: int, step: int) -> Iterator[bytes]: ...


class _Stepped:
    """``decode`` as the join of ``steps``."""

    def decode(self, data: bytes, budget: int) -> bytes:
        return b"".join(self.steps(data, budget, max(budget, 1)))


class IdentityDecoder(_Stepped):
    def steps(self, data: bytes, budget: int, step: int) -> Iterator[bytes]:
        if len(data) > budget:
            raise DecompressionLimit("body exceeds its limit")
        if data:
            yield data


class ZlibDecoder(_Stepped):
    """gzip (wbits 31) or deflate; deflate is zlib-wrapped, or raw from old servers."""

    def __init__(self, wbits: int) -> None:
        self._wbits = wbits
        self._obj = zlib.decompressobj(wbits)
        self._started = False

    def steps(self, data: bytes, budget: int, step: int) -> Iterator[bytes]:
        produced = 0
        pending = data
        while True:
            try:
                # At most budget + 1 bytes in all: one more than the budget
                # tells a bomb from a body that fits exactly.
                out = self._obj.decompress(pending, min(step, budget - produced + 1))
            except zlib.error as exc:
                if self._wbits == zlib.MAX_WBITS and not self._started:
                    # "deflate" sent without the zlib header: retry as raw deflate.
                    self._wbits = -zlib.MAX_WBITS
                    self._obj = zlib.decompressobj(self._wbits)
                    yield from self.steps(data, budget, step)
                    return
                raise DecodingError(f"invalid compressed body: {exc}") from None
            self._started = True
            produced += len(out)
            if produced > budget:
                raise DecompressionLimit("decoded body exceeds its limit")
            if out:
                yield out
            pending = self._obj.unconsumed_tail
            if not pending and len(out) < step:
                return


class BrotliDecoder(_Stepped):
    def __init__(self) -> None:
        self._obj = brotli.Decompressor()

    def steps(self, data: bytes, budget: int, step: int) -> Iterator[bytes]:
        produced = 0
        while True:
            try:
                # The decoder may overshoot the limit a little (one
                # meta-block); the total is checked against the budget.
                out = self._obj.process(data, output_buffer_limit=min(step, budget - produced + 1))
            except brotli.error as exc:
                raise DecodingError(f"invalid brotli body: {exc}") from None
            data = b""
            produced += len(out)
            if produced > budget:
                raise DecompressionLimit("decoded body exceeds its limit")
            if not out:  # input used up, nothing held back
                return
            yield out


class ZstdDecoder(_Stepped):
    def __init__(self) -> None:
        self._obj = zstandard.ZstdDecompressor().decompressobj()

    def steps(self, data: bytes, budget: int, step: int) -> Iterator[bytes]:
        produced = 0
        view = memoryview(data)
        for start in range(0, len(view), _ZSTD_INPUT_SLICE):
            try:
                piece = self._obj.decompress(view[start : start + _ZSTD_INPUT_SLICE].tobytes())
            except zstandard.ZstdError as exc:
                raise DecodingError(f"invalid zstd body: {exc}") from None
            produced += len(piece)
            if produced > budget:
                raise DecompressionLimit("decoded body exceeds its limit")
            if piece:
                yield piece


class ChainDecoder(_Stepped):
    """``Content-Encoding: gzip, br`` means gzip was applied first: undo in reverse."""

    def __init__(self, decoders: list[Decoder]) -> None:
        self._decoders = decoders

    def steps(self, data: bytes, budget: int, step: int) -> Iterator[bytes]:
        return self._through(0, data, budget, step)

    def _through(self, i: int, data: bytes, budget: int, step: int) -> Iterator[bytes]:
        if i == len(self._decoders):
            yield data
            return
        produced = 0
        for piece in self._decoders[i].steps(data, budget, step):
            for out in self._through(i + 1, piece, budget - produced, step):
                produced += len(out)
                yield out


class UnsupportedEncoding(ParseError):
    pass


def _one(name: str) -> Decoder:
    if name in ("gzip", "x-gzip"):
        return ZlibDecoder(zlib.MAX_WBITS | 16)
    if name == "deflate":
        return ZlibDecoder(zlib.MAX_WBITS)
    if name == "br":
        return BrotliDecoder()
    if name == "zstd":
        return ZstdDecoder()
    if name in ("identity", ""):
        return IdentityDecoder()
    raise UnsupportedEncoding(f"unsupported content-encoding {name!r}")


def decoder_for(content_encoding: str | None) -> Decoder:
    if not content_encoding:
        return IdentityDecoder()
    names = [n.strip().lower() for n in content_encoding.split(",") if n.strip()]
    if len(names) == 1:
        return _one(names[0])
    return ChainDecoder([_one(n) for n in reversed(names)])
