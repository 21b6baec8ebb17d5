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
from functools import lru_cache

from elftools.common.utils import struct_parse
from elftools.elf.constants import P_FLAGS
from elftools.elf.elffile import ELFFile

# Files whose segments are remembered (one entry per file version).
MAX_CACHED_FILES = 256


def file_offset(path: str, vaddr: int) -> int:
    """The file offset of ``vaddr`` in the ELF file ``path``; ValueError when
    no executable segment holds it (OSError when the file cannot be read)."""
    st = os.stat(path)
    for start, end, offset in _text_segments(path, st.st_dev, st.st_ino, st.st_mtime_ns):
        if start <= vaddr < end:
            return vaddr - start + offset
    raise ValueError(f"{path}: address 0x{vaddr:x} is in no executable segment")


@lru_cache(maxsize=MAX_CACHED_FILES)
def _text_segments(path: str, _dev: int, _inode: int, _mtime_ns: int) -> tuple[tuple[int, int, int], ...]:
    """(p_vaddr, p_vaddr + p_memsz, p_offset) of each executable PT_LOAD segment."""
    with open(path, "rb") as f:
        elf = ELFFile(f)
        # The program headers alone, parsed with pyelftools' own struct:
        # iter_segments() makes a Segment object of each, and the PT_DYNAMIC
        # one reads the dynamic section and its GNU hash table on the way,
        # 0.2 s of CPU for node (at each start, for every target).
        phoff, phentsize = elf["e_phoff"], elf["e_phentsize"]
        headers = (struct_parse(elf.structs.Elf_Phdr, elf.stream, stream_pos=phoff + i * phentsize)
                   for i in range(elf.num_segments()))
        return tuple((h["p_vaddr"], h["p_vaddr"] + h["p_memsz"], h["p_offset"])
                     for h in headers if h["p_type"] == "PT_LOAD" and h["p_flags"] & P_FLAGS.PF_X)
