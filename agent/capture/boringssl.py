"""BoringSSL linked statically into Bun: find SSL_write / SSL_read without symbols."""

from __future__ import annotations

from dataclasses import dataclass

from elftools.elf.elffile import ELFFile


@dataclass(frozen=True, slots=True)
class BoringSslFunctions:
    ssl_write: int
    ssl_read: int
    pattern: str

    def describe(self) -> str:
        return f"pattern {self.pattern}"


def looks_like_bun(elf: ELFFile) -> bool:
    """Bun's executables (and `bun build --compile` output) carry a `.bun` section."""
    return elf.get_section_by_name(".bun") is not None


def locate(elf: ELFFile, f, cached=None) -> BoringSslFunctions | str:
    return "no known BoringSSL pattern matches"
