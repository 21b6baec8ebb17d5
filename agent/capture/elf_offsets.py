"""ELF virtual address -> file offset, which is where the kernel puts a uprobe.

A symbol's ``st_value`` is a virtual address.  The kernel places uprobes by
inode and *file* offset, so the address is translated through the
executable ``PT_LOAD`` segment that holds it:
``offset = vaddr - p_vaddr + p_offset``.  For most shared libraries the two
are equal; for non-PIE executables (Go programs, Node.js) they are not.  This
is what BCC's ``bcc_resolve_symname`` does before ``bpf_attach_uprobe``.
"""

from __future__ import annotations

import os
import struct
from functools import lru_cache

# Files whose segments are remembered (one entry per file version).
MAX_CACHED_FILES = 256

PT_LOAD = 1
PF_X = 1
# e_phnum's escape (ELF gABI): the real count is section header 0's sh_info.
PN_XNUM = 0xFFFF


def elf64_byte_order(ident: bytes, path: str | os.PathLike, error: type[Exception] = ValueError) -> str:
    """``struct``'s byte order ("<" or ">") of an ELF64 file from its first
    bytes (``e_ident``); ``error`` when they are not those of one."""
    if ident[:4] != b"\x7fELF":
        raise error(f"{path}: not ELF")
    if ident[4:5] != b"\x02":
        raise error(f"{path}: not ELF64")
    if ident[5:6] not in (b"\x01", b"\x02"):
        raise error(f"{path}: unknown byte order")
    return "<" if ident[5] == 1 else ">"


def file_offset(path: str, vaddr: int) -> int:
    """The file offset of ``vaddr`` in the ELF file ``path``; ValueError when
    no executable segment holds it or the file is no readable ELF64 (OSError
    when it cannot be read)."""
    st = os.stat(path)
    for start, end, offset in _text_segments(path, st.st_dev, st.st_ino, st.st_mtime_ns):
        if start <= vaddr < end:
            return vaddr - start + offset
    raise ValueError(f"{path}: address 0x{vaddr:x} is in no executable segment")


@lru_cache(maxsize=MAX_CACHED_FILES)
def _text_segments(path: str, _dev: int, _inode: int, _mtime_ns: int) -> tuple[tuple[int, int, int], ...]:
    """(p_vaddr, p_vaddr + p_memsz, p_offset) of each executable PT_LOAD segment.

    Read with ``struct`` from the ELF64 header and program headers (a few
    hundred bytes): pyelftools would do the same, but importing it keeps
    ~3 MB of code resident in the agent, which needs nothing else of it
    (Go and Bun binaries are analysed in a process of their own)."""
    with open(path, "rb") as f:
        ident = f.read(64)
        end = elf64_byte_order(ident, path)
        if len(ident) < 64:
            raise ValueError(f"{path}: truncated ELF")
        phoff, shoff = struct.unpack_from(end + "QQ", ident, 0x20)
        phentsize, phnum = struct.unpack_from(end + "HH", ident, 0x36)
        if phnum == PN_XNUM:
            f.seek(shoff + 0x2C)
            phnum, = struct.unpack(end + "I", _read(f, 4, path))
        if phentsize < 56:
            raise ValueError(f"{path}: program headers of {phentsize} bytes")
        f.seek(phoff)
        table = _read(f, phnum * phentsize, path)
    segments = []
    for i in range(phnum):
        p_type, p_flags, p_offset, p_vaddr, _paddr, _filesz, p_memsz = struct.unpack_from(
            end + "IIQQQQQ", table, i * phentsize)
        if p_type == PT_LOAD and p_flags & PF_X:
            segments.append((p_vaddr, p_vaddr + p_memsz, p_offset))
    return tuple(segments)


def _read(f, n: int, path: str) -> bytes:
    data = f.read(n)
    if len(data) < n:
        raise ValueError(f"{path}: truncated ELF")
    return data
