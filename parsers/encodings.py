"""Content-Encoding decoders that never produce more than a set budget.

A response body arrives in pieces; each decoder takes compressed pieces and
returns plaintext pieces.  The caller gives the budget (bytes of plaintext it
is still willing to hold); a decoder that would exceed it raises
``DecompressionLimit``, so a compression bomb costs at most the budget plus
one bounded step, never unbounded memory.
"""

from __future__ import annotations

import zlib
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


class IdentityDecoder:
    def decode(self, data: bytes, budget: int) -> bytes:
        if len(data) > budget:
            raise DecompressionLimit("body exceeds its limit")
        return data


class ZlibDecoder:
    """gzip (wbits 31) or deflate; deflate is zlib-wrapped, or raw from old servers."""

    def __init__(self, wbits: int) -> None:
        self._wbits = wbits
        self._obj = zlib.decompressobj(wbits)
        self._started = False

    def decode(self, data: bytes, budget: int) -> bytes:
        try:
            out = self._obj.decompress(data, budget + 1)
        except zlib.error as exc:
            if self._wbits == zlib.MAX_WBITS and not self._started:
                # "deflate" sent without the zlib header: retry as raw deflate.
                self._wbits = -zlib.MAX_WBITS
                self._obj = zlib.decompressobj(self._wbits)
                return self.decode(data, budget)
            raise DecodingError(f"invalid compressed body: {exc}") from None
        self._started = True
        if len(out) > budget or self._obj.unconsumed_tail:
            raise DecompressionLimit("decoded body exceeds its limit")
        return out


class BrotliDecoder:
    def __init__(self) -> None:
        self._obj = brotli.Decompressor()

    def decode(self, data: bytes, budget: int) -> bytes:
        try:
            out = self._obj.process(data, output_buffer_limit=budget + 1)
        except brotli.error as exc:
            raise DecodingError(f"invalid brotli body: {exc}") from None
        if len(out) > budget or not self._obj.can_accept_more_data():
            raise DecompressionLimit("decoded body exceeds its limit")
        return out


class ZstdDecoder:
    def __init__(self) -> None:
        self._obj = zstandard.ZstdDecompressor().decompressobj()

    def decode(self, data: bytes, budget: int) -> bytes:
        parts: list[bytes] = []
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
            parts.append(piece)
        return b"".join(parts)


class ChainDecoder:
    """``Content-Encoding: gzip, br`` means gzip was applied first: undo in reverse."""

    def __init__(self, decoders: list[Decoder]) -> None:
        self._decoders = decoders

    def decode(self, data: bytes, budget: int) -> bytes:
        for decoder in self._decoders:
            data = decoder.decode(data, budget)
        return data


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
