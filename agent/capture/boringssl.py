"""BoringSSL linked statically into Bun: find SSL_read / SSL_write without symbols.

Bun links BoringSSL in and exports none of its functions, so there is no
symbol to resolve.  As AgentSight does for Bun, we look for the functions'
prologues, byte patterns kept as data in ``boringssl_patterns.json`` with the
Bun releases each was verified on.  A pattern match is only a candidate; it
is probed only when disassembly confirms it (``_confirm``):

* both functions raise BoringSSL errors attributed to ``ssl/ssl_lib.cc``
  (the ``__FILE__`` argument of OPENSSL_PUT_ERROR points at that string);
* SSL_write calls SSL_do_handshake directly, and SSL_read calls a function
  (``ssl_read_impl``) that calls the same SSL_do_handshake.

Both functions have OpenSSL's signature (``SSL *``, buffer, int) and return
the byte count, so the OpenSSL probes in ssl_probes.c serve them unchanged
(a uretprobe is fine here: this is C code on a normal stack).

A Bun executable none of whose patterns confirm is reported, never guessed:
``locate`` returns the reason as a string.
"""

from __future__ import annotations

import json
import mmap
import os
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import BinaryIO

from elftools.elf.elffile import ELFFile

PATTERNS_FILE = Path(__file__).with_name("boringssl_patterns.json")

# Candidates per function and pattern looked at; a pattern that matches
# more often than this is too loose to trust.
MAX_CANDIDATES = 8
# Bytes of a candidate disassembled (up to its first int3 padding): SSL_write
# and SSL_read are a few hundred bytes; their callees are checked the same way.
MAX_FUNCTION_BYTES = 4096
# The __FILE__ string OPENSSL_PUT_ERROR passes from ssl_lib.cc
# ("../../vendor/boringssl/ssl/ssl_lib.cc" in Bun's build).
SSL_LIB_FILE = b"ssl/ssl_lib.cc"
MAX_PATH_STRING = 256


@dataclass(frozen=True, slots=True)
class Pattern:
    name: str
    ssl_read: re.Pattern[bytes]
    ssl_write: re.Pattern[bytes]
    verified_on: tuple[str, ...]  # Bun versions


@dataclass(frozen=True, slots=True)
class BoringSslFunctions:
    ssl_write: int  # ELF virtual addresses
    ssl_read: int
    ssl_do_handshake: int
    pattern: str

    def describe(self) -> str:
        return (f"pattern {self.pattern}: SSL_read {self.ssl_read:#x}, SSL_write {self.ssl_write:#x}, "
                f"SSL_do_handshake {self.ssl_do_handshake:#x}")


def _hex_pattern(text: str) -> re.Pattern[bytes]:
    """"55 48 ?? e5" -> a bytes regex; ?? matches any byte."""
    parts = [b"." if tok == "??" else re.escape(bytes([int(tok, 16)])) for tok in text.split()]
    return re.compile(b"".join(parts), re.DOTALL)


@lru_cache(maxsize=1)
def load_patterns(path: Path = PATTERNS_FILE) -> tuple[Pattern, ...]:
    data = json.loads(path.read_text())
    return tuple(
        Pattern(
            name=p["name"],
            ssl_read=_hex_pattern(p["SSL_read"]),
            ssl_write=_hex_pattern(p["SSL_write"]),
            verified_on=tuple(v["bun"] for v in p.get("verified_on", [])),
        )
        for p in data["patterns"]
    )


# Read-only data of a Bun executable holds both (Bun before 1.3 has no `.bun` section).
BUN_MARKERS = (b"bun:main\0", b"/boringssl/ssl/ssl_lib.cc\0")
# .rodata searched for them at most (bun 1.2-1.4: 33-40 MB).
MAX_RODATA_SCAN = 128 * 1024 * 1024
# Bun executables are 90+ MB; smaller files skip the string search, which
# would otherwise hold the GIL for every new executable the host runs.
MIN_BUN_FILE_BYTES = 48 * 1024 * 1024


def looks_like_bun(elf: ELFFile) -> bool:
    """Bun, or an executable ``bun build --compile`` made: a ``.bun`` section, or
    Bun's module loader and BoringSSL's source paths among its strings."""
    if elf.get_section_by_name(".bun") is not None:
        return True
    ro = elf.get_section_by_name(".rodata")
    if ro is None or not ro["sh_size"] or os.fstat(elf.stream.fileno()).st_size < MIN_BUN_FILE_BYTES:
        return False
    start, end = ro["sh_offset"], ro["sh_offset"] + min(ro["sh_size"], MAX_RODATA_SCAN)
    with mmap.mmap(elf.stream.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        return all(mm.find(marker, start, end) >= 0 for marker in BUN_MARKERS)


class _Image:
    """The executable's bytes by virtual address (mmap, no copy)."""

    def __init__(self, elf: ELFFile, f: BinaryIO) -> None:
        text = elf.get_section_by_name(".text")
        if text is None:
            raise ValueError("no .text section")
        self.text_off, self.text_addr, self.text_size = text["sh_offset"], text["sh_addr"], text["sh_size"]
        self.segments = [(s["p_vaddr"], s["p_offset"], s["p_filesz"]) for s in elf.iter_segments()
                         if s["p_type"] == "PT_LOAD"]
        self.mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)

    def close(self) -> None:
        self.mm.close()

    def offset(self, addr: int) -> int | None:
        for vaddr, off, size in self.segments:
            if vaddr <= addr < vaddr + size:
                return off + addr - vaddr
        return None

    def read(self, addr: int, size: int) -> bytes:
        off = self.offset(addr)
        return b"" if off is None else self.mm[off : off + size]

    def find(self, pattern: re.Pattern[bytes]) -> list[int]:
        """Virtual addresses in .text where ``pattern`` matches (at most MAX_CANDIDATES + 1)."""
        out = []
        end = self.text_off + self.text_size
        for m in pattern.finditer(self.mm, self.text_off, end):
            out.append(m.start() - self.text_off + self.text_addr)
            if len(out) > MAX_CANDIDATES:
                break
        return out

    def matches_at(self, pattern: re.Pattern[bytes], addr: int) -> bool:
        off = self.offset(addr)
        return off is not None and pattern.match(self.mm, off) is not None

    def is_ssl_lib_path(self, addr: int) -> bool:
        raw = self.read(addr, MAX_PATH_STRING)
        nul = raw.find(b"\0")
        return nul > 0 and raw[:nul].endswith(SSL_LIB_FILE)


@dataclass(frozen=True, slots=True)
class _Shape:
    calls: frozenset[int]  # direct call targets
    refs_ssl_lib: bool  # passes ssl_lib.cc's __FILE__ to the error queue


def _shape(img: _Image, addr: int) -> _Shape:
    from capstone import CS_ARCH_X86, CS_MODE_64, Cs
    from capstone.x86 import (
        X86_INS_CALL,
        X86_INS_INT3,
        X86_INS_LEA,
        X86_INS_MOV,
        X86_OP_IMM,
        X86_OP_MEM,
        X86_REG_RIP,
    )

    md = Cs(CS_ARCH_X86, CS_MODE_64)
    md.detail = True
    calls: set[int] = set()
    refs = False
    for ins in md.disasm(img.read(addr, MAX_FUNCTION_BYTES), addr):
        if ins.id == X86_INS_INT3:
            break  # padding after the function
        ops = ins.operands
        if ins.id == X86_INS_CALL and ops and ops[0].type == X86_OP_IMM:
            calls.add(ops[0].imm)
        elif not refs and ins.id == X86_INS_MOV and len(ops) == 2 and ops[1].type == X86_OP_IMM:
            refs = ops[1].imm > 0x10000 and img.is_ssl_lib_path(ops[1].imm)  # non-PIE: absolute address
        elif not refs and ins.id == X86_INS_LEA and len(ops) == 2 and ops[1].type == X86_OP_MEM \
                and ops[1].mem.base == X86_REG_RIP:
            refs = img.is_ssl_lib_path(ins.address + ins.size + ops[1].mem.disp)  # PIE: rip-relative
    return _Shape(frozenset(calls), refs)


def _confirm(img: _Image, read: int, write: int) -> int | str:
    """SSL_do_handshake's address when the pair has the expected shape, else why not."""
    r, w = _shape(img, read), _shape(img, write)
    if not (r.refs_ssl_lib and w.refs_ssl_lib):
        return "candidate does not raise ssl_lib.cc errors"
    # SSL_read -> ssl_read_impl -> SSL_do_handshake <- SSL_write
    via_read: set[int] = set()
    for callee in r.calls:
        via_read |= _shape(img, callee).calls
    # Both also call the error-queue helpers; of the common callees only
    # SSL_do_handshake raises ssl_lib.cc errors itself.
    common = [c for c in w.calls & via_read if _shape(img, c).refs_ssl_lib]
    if len(common) != 1:
        return f"call graph does not fit ({len(common)} common callees raising ssl_lib.cc errors)"
    return common[0]


def locate(elf: ELFFile, f: BinaryIO, cached=None) -> BoringSslFunctions | str:
    """SSL_read/SSL_write of a Bun executable, or the reason they were not found.

    ``cached``: an earlier result for the same build id (runtimes.RuntimeResult);
    its addresses are re-checked against this file's bytes before reuse, so an
    altered copy with bun's build id is not probed at stale addresses.
    """
    if elf.get_machine_arch() != "x64":
        return f"no BoringSSL patterns for {elf.get_machine_arch()}"
    img = _Image(elf, f)
    try:
        patterns = load_patterns()
        if cached is not None and len(cached.probes) >= 2:
            write, read = cached.probes[0].addr, cached.probes[1].addr
            for p in patterns:
                if img.matches_at(p.ssl_read, read) and img.matches_at(p.ssl_write, write):
                    hs = _confirm(img, read, write)
                    if isinstance(hs, int):
                        return BoringSslFunctions(write, read, hs, p.name)
        reasons = []
        for p in patterns:
            reads, writes = img.find(p.ssl_read), img.find(p.ssl_write)
            if not reads or not writes:
                continue
            if len(reads) > MAX_CANDIDATES or len(writes) > MAX_CANDIDATES:
                reasons.append(f"pattern {p.name} matches too often")
                continue
            for read in reads:
                for write in writes:
                    hs = _confirm(img, read, write)
                    if isinstance(hs, int):
                        return BoringSslFunctions(write, read, hs, p.name)
                    reasons.append(f"pattern {p.name} at {read:#x}/{write:#x}: {hs}")
        names = ", ".join(p.name for p in patterns)
        return "; ".join(reasons) if reasons else f"no known BoringSSL pattern matches (tried {names})"
    finally:
        img.close()
