"""Where to probe Go's crypto/tls in one executable.

Go programs carry their own TLS (crypto/tls), so there is no SSL_write to
hook.  What we probe instead, on amd64 with Go's register ABI (Go >= 1.17):

* ``crypto/tls.(*Conn).Write`` at its entry: the receiver (*tls.Conn, our
  connection id) is in RAX, the plaintext slice in RBX (pointer) and RCX
  (length);
* ``crypto/tls.(*Conn).Read`` at its entry (receiver and buffer saved, keyed
  by the goroutine pointer in R14) and at *every RET instruction* of the
  function, where RAX holds n.  Never a uretprobe: it rewrites the return
  address on the goroutine stack, and Go copies (moves) goroutine stacks, so
  the process would later return to garbage;
* ``crypto/tls.(*Conn).Close`` at its entry: the end of the connection.

Functions are found in ``.symtab`` when the binary has one, else in
``.gopclntab``, which Go always keeps (it is how the runtime prints stack
traces), so ``-ldflags="-s -w"`` binaries work too.  RET sites come from a real
disassembler (capstone), not from scanning for 0xC3 bytes, which also occur
inside other instructions.

Go before 1.17 passes arguments on the stack (ABI0): that is detected from
the build info and reported as unsupported rather than probed wrongly.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass

from elftools.elf.elffile import ELFFile
from elftools.elf.sections import SymbolTableSection

WRITE_FUNC = "crypto/tls.(*Conn).Write"
READ_FUNC = "crypto/tls.(*Conn).Read"
CLOSE_FUNC = "crypto/tls.(*Conn).Close"
WANTED = (WRITE_FUNC, READ_FUNC, CLOSE_FUNC)

BUILDINFO_MAGIC = b"\xff Go buildinf:"
# First Go release with the register-based calling convention on amd64.
REGISTER_ABI_MIN = (1, 17)
# A function this large is not crypto/tls.(*Conn).Read: refuse to
# disassemble past it (a broken table would otherwise walk all of .text).
MAX_FUNC_BYTES = 64 * 1024
# RET sites probed at most; Read has a handful (about 4 in Go 1.19-1.23).
MAX_RET_SITES = 64

_VERSION_RE = re.compile(r"go(\d+)\.(\d+)")


class GoAnalysisError(Exception):
    """The binary is Go but cannot be probed; the message says why."""


@dataclass(frozen=True, slots=True)
class GoTlsProbes:
    """Virtual addresses (as in the ELF) of what to probe."""

    go_version: str
    write_entry: int
    read_entry: int
    read_returns: tuple[int, ...]
    close_entry: int | None
    source: str  # "symtab" or "gopclntab"


# --------------------------------------------------------------------------- build info


def go_version(elf: ELFFile) -> str | None:
    """The Go version from ``.go.buildinfo`` ("go1.19.8"), None for a non-Go file."""
    sec = elf.get_section_by_name(".go.buildinfo")
    if sec is None:
        return None
    data = sec.data()
    if not data.startswith(BUILDINFO_MAGIC) or len(data) < 32:
        return None
    ptr_size, flags = data[14], data[15]
    if flags & 2:
        # Go 1.18+: the version string follows the 32-byte header inline,
        # as a uvarint length and the bytes.
        n, i = _uvarint(data, 32)
        return data[i : i + n].decode("utf-8", "replace")
    # Go <= 1.17: two pointers to Go string headers (pointer, length).
    if ptr_size not in (4, 8):
        return None
    end = ">" if flags & 1 else "<"
    fmt = end + ("Q" if ptr_size == 8 else "I")
    (vptr,) = struct.unpack_from(fmt, data, 16)
    header = _read_vaddr(elf, vptr, 2 * ptr_size)
    if header is None:
        return None
    sptr, slen = struct.unpack(end + ("QQ" if ptr_size == 8 else "II"), header)
    raw = _read_vaddr(elf, sptr, min(slen, 64))
    return raw.decode("utf-8", "replace") if raw else None


def version_tuple(version: str) -> tuple[int, int] | None:
    m = _VERSION_RE.match(version)
    return (int(m.group(1)), int(m.group(2))) if m else None


def _uvarint(data: bytes, i: int) -> tuple[int, int]:
    value = shift = 0
    while i < len(data):
        b = data[i]
        i += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, i
        shift += 7
    return 0, i


def _read_vaddr(elf: ELFFile, addr: int, size: int) -> bytes | None:
    for seg in elf.iter_segments():
        if seg["p_type"] != "PT_LOAD":
            continue
        start = seg["p_vaddr"]
        if start <= addr and addr + size <= start + seg["p_filesz"]:
            stream = elf.stream
            stream.seek(seg["p_offset"] + addr - start)
            return stream.read(size)
    return None


# --------------------------------------------------------------------------- functions


def _from_symtab(elf: ELFFile) -> dict[str, tuple[int, int]]:
    """name -> (address, size) of the wanted functions from .symtab.

    The names are looked up in the string table first, then the symbols are
    compared by name offset with struct.iter_unpack: pyelftools' per-symbol
    objects take ~0.5 s on a Go binary's 10-100k symbols, this ~20 ms.
    """
    sec = elf.get_section_by_name(".symtab")
    if not isinstance(sec, SymbolTableSection) or elf.elfclass != 64 or not elf.little_endian:
        return {}
    strtab = elf.get_section(sec["sh_link"]).data()
    offsets = {}
    for name in WANTED:
        i = strtab.find(b"\0" + name.encode() + b"\0")
        if i >= 0:
            offsets[i + 1] = name
    if not offsets:
        return {}
    found: dict[str, tuple[int, int]] = {}
    data = sec.data()
    usable = len(data) - len(data) % 24
    for st_name, _info, _other, _shndx, value, size in struct.iter_unpack("<IBBHQQ", data[:usable]):
        name = offsets.get(st_name)
        if name is not None and value:
            found[name] = (value, size)
            if len(found) == len(offsets):
                break
    return found


def _from_pclntab(elf: ELFFile) -> dict[str, tuple[int, int]]:
    """name -> (address, size) of the wanted functions from .gopclntab.

    Hand-written: no maintained Python library reads the Go runtime's
    pclntab (pyelftools knows ELF/DWARF only; the readers that exist are Go
    programs).  Formats: Go 1.16/1.17 (magic 0xfffffffa), 1.18/1.19
    (0xfffffff0), 1.20+ (0xfffffff1); see runtime/symtab.go, moduledata.
    """
    sec = elf.get_section_by_name(".gopclntab")
    if sec is None:
        raise GoAnalysisError("no .gopclntab section")
    tab = sec.data()
    if len(tab) < 64:
        raise GoAnalysisError(".gopclntab too short")
    magic = struct.unpack_from("<I", tab, 0)[0]
    ptr = tab[7]
    if ptr != 8:
        raise GoAnalysisError(f".gopclntab pointer size {ptr} (only 64-bit is supported)")

    def word(i: int) -> int:
        return struct.unpack_from("<Q", tab, 8 + 8 * i)[0]

    if magic in (0xFFFFFFF0, 0xFFFFFFF1):  # Go 1.18+
        nfunc, text_start = word(0), word(2)
        funcname_off, pcln_off = word(3), word(7)
        entry_is_offset = True
    elif magic == 0xFFFFFFFA:  # Go 1.16, 1.17
        nfunc, text_start = word(0), 0
        funcname_off, pcln_off = word(2), word(6)
        entry_is_offset = False
    else:
        raise GoAnalysisError(f"unknown .gopclntab magic {magic:#x}")
    functab = pcln_off
    found: dict[str, tuple[int, int]] = {}
    wanted = {w.encode(): w for w in WANTED}
    # functab: nfunc+1 (entry, funcoff) pairs; the last entry is the end of text.
    pair, field = (8, "<II") if entry_is_offset else (16, "<QQ")
    for i in range(nfunc):
        entry, funcoff = struct.unpack_from(field, tab, functab + i * pair)
        next_entry = struct.unpack_from(field, tab, functab + (i + 1) * pair)[0]
        # _func starts with the entry (u32 offset or uintptr), then nameOff (int32).
        name_pos = pcln_off + funcoff + (4 if entry_is_offset else 8)
        (name_off,) = struct.unpack_from("<i", tab, name_pos)
        start = funcname_off + name_off
        end = tab.find(b"\0", start)
        name = wanted.get(tab[start:end])
        if name is not None:
            found[name] = (text_start + entry, next_entry - entry)
            if len(found) == len(wanted):
                break
    return found


def _ret_sites(elf: ELFFile, addr: int, size: int) -> tuple[int, ...]:
    from capstone import CS_ARCH_X86, CS_MODE_64, Cs
    from capstone.x86 import X86_INS_RET

    if not 0 < size <= MAX_FUNC_BYTES:
        raise GoAnalysisError(f"{READ_FUNC} size {size} out of range")
    code = _read_vaddr(elf, addr, size)
    if code is None:
        raise GoAnalysisError(f"{READ_FUNC} at {addr:#x} not in a loaded segment")
    md = Cs(CS_ARCH_X86, CS_MODE_64)
    rets = tuple(ins.address for ins in md.disasm(code, addr) if ins.id == X86_INS_RET)
    if not rets or len(rets) > MAX_RET_SITES:
        raise GoAnalysisError(f"{READ_FUNC}: {len(rets)} RET instructions found")
    return rets


def analyse(elf: ELFFile) -> GoTlsProbes | None:
    """Probe addresses for a Go executable; None when it is not Go or has no crypto/tls.

    Raises GoAnalysisError when it is Go with crypto/tls that we cannot probe.
    """
    version = go_version(elf)
    if version is None:
        return None
    if elf.get_machine_arch() != "x64":
        raise GoAnalysisError(f"Go on {elf.get_machine_arch()} is not supported (amd64 only)")
    funcs = _from_symtab(elf)
    source = "symtab"
    if not funcs:
        funcs = _from_pclntab(elf)
        source = "gopclntab"
    if WRITE_FUNC not in funcs or READ_FUNC not in funcs:
        return None  # a Go program without crypto/tls
    vt = version_tuple(version)
    if vt is None or vt < REGISTER_ABI_MIN:
        raise GoAnalysisError(
            f"{version} passes arguments on the stack (Go < 1.17); only the register ABI is supported"
        )
    read_addr, read_size = funcs[READ_FUNC]
    close = funcs.get(CLOSE_FUNC)
    return GoTlsProbes(
        go_version=version,
        write_entry=funcs[WRITE_FUNC][0],
        read_entry=read_addr,
        read_returns=_ret_sites(elf, read_addr, read_size),
        close_entry=close[0] if close else None,
        source=source,
    )
