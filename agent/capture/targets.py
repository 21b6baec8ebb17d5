"""Find the TLS code to probe: OpenSSL libraries and executables with their own.

A *target* is one file (identified by device + inode, as uprobes are) that
exports ``SSL_write`` and ``SSL_read``:

* every ``libssl.so*`` a process maps (``/proc/PID/maps``), including ones in
  containers, reached through ``/proc/PID/root/...``;
* ``libssl.so*`` in the dynamic linker's cache, so a process started after the
  agent is covered from its first call even if nothing mapped libssl before;
* executables that export ``SSL_write`` themselves (Node.js links OpenSSL
  statically and exports it).

Symbols are read from the ELF dynamic symbol table by a small reader here (no
bcc), so the addresses are the ones the dynamic linker resolves.  This module
does no attaching; ``ebpf.py`` drives ``TargetTracker`` from exec/exit events.
"""

from __future__ import annotations

import mmap
import os
import re
import struct
import subprocess
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from lumen_agent.capture.elf_offsets import elf64_byte_order

# Functions we probe.  SSL_write/SSL_read are required; the rest are used
# when present (OpenSSL 1.0 has no _ex functions).
REQUIRED_SYMBOLS = ("SSL_write", "SSL_read")
OPTIONAL_SYMBOLS = ("SSL_write_ex", "SSL_read_ex", "SSL_shutdown", "SSL_free")
PROBED_SYMBOLS = REQUIRED_SYMBOLS + OPTIONAL_SYMBOLS

LIBSSL_RE = re.compile(r"(^|/)libssl\.so(\.[0-9][^/]*)?$")

# When a process execs, its libraries are not mapped yet; look at its maps
# again after these delays (seconds) to find libssl files never seen before.
RESCAN_DELAYS = (0.05, 0.5, 3.0)

PROC = Path("/proc")


class ElfError(Exception):
    """Not an ELF file we can read symbols from."""


def _read_dynsym(path: str | os.PathLike, wanted: Iterable[str]) -> dict[str, int]:
    """st_value of the wanted defined FUNC symbols in .dynsym (ELF64 LE/BE)."""
    wanted = set(wanted)
    with open(path, "rb") as f:
        try:
            mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        except ValueError as exc:  # empty file
            raise ElfError(f"{path}: empty") from exc
    try:
        end = elf64_byte_order(mm[:6], path, ElfError)
        e_shoff, = struct.unpack_from(end + "Q", mm, 0x28)
        e_shentsize, e_shnum = struct.unpack_from(end + "HH", mm, 0x3A)
        if e_shoff == 0 or e_shentsize < 64:
            raise ElfError(f"{path}: no section headers")
        sections = []
        for i in range(e_shnum):
            off = e_shoff + i * e_shentsize
            # name, type, flags, addr, offset, size, link, info, align, entsize
            sections.append(struct.unpack_from(end + "IIQQQQIIQQ", mm, off))
        found: dict[str, int] = {}
        for sec in sections:
            if sec[1] != 11:  # SHT_DYNSYM
                continue
            sym_off, sym_size, link, entsize = sec[4], sec[5], sec[6], sec[9] or 24
            str_off = sections[link][4]
            str_end = str_off + sections[link][5]
            # Names are read in place: a copy of the string table is 5 MB
            # for node, freed at once, and glibc then serves allocations up
            # to that size from the heap, where they fragment it.
            for j in range(sym_size // entsize):
                st_name, st_info, _other, st_shndx, st_value, _size = struct.unpack_from(
                    end + "IBBHQQ", mm, sym_off + j * entsize
                )
                if st_shndx == 0 or (st_info & 0xF) != 2 or st_value == 0:
                    continue  # undefined, or not STT_FUNC
                start = str_off + st_name
                nul = mm.find(b"\0", start, str_end)
                name = mm[start : nul if nul >= 0 else str_end].decode("ascii", "replace")
                if name in wanted:
                    found[name] = st_value
            break
        return found
    except struct.error as exc:
        raise ElfError(f"{path}: truncated ELF") from exc
    finally:
        mm.close()


@dataclass(slots=True)
class TlsTarget:
    """One file to put uprobes on."""

    path: str  # a path the agent can open (host path, or /proc/PID/root/...)
    dev: int
    inode: int
    kind: str  # "libssl", "exe", or a runtime without SSL_* symbols: "go", "bun"
    symbols: dict[str, int]  # name -> st_value (what bcc's attach_uprobe takes as addr)
    pids: set[int] = field(default_factory=set)  # processes seen mapping it
    # Go / Bun (runtimes.py): (label, address, entry program, return program or None);
    # when set it replaces the SSL_* symbol probes.
    probes: list[tuple[str, int, str, str | None]] = field(default_factory=list)

    @property
    def key(self) -> tuple[int, int]:
        return (self.dev, self.inode)


class SymbolCache:
    """ELF lookups per (dev, inode, mtime): node is ~100 MB, read it once."""

    def __init__(self) -> None:
        self._cache: dict[tuple[int, int, int], dict[str, int] | None] = {}

    def ssl_symbols(self, path: str) -> dict[str, int] | None:
        """Probed symbols of ``path`` when it exports SSL_write+SSL_read."""
        try:
            st = os.stat(path)
        except OSError:
            return None
        k = (st.st_dev, st.st_ino, st.st_mtime_ns)
        if k not in self._cache:
            try:
                syms = _read_dynsym(path, PROBED_SYMBOLS)
            except (OSError, ElfError):
                syms = {}
            ok = all(s in syms for s in REQUIRED_SYMBOLS)
            self._cache[k] = syms if ok else None
        return self._cache[k]


def _maps_entries(pid: int) -> Iterator[tuple[int, int, str]]:
    """(dev, inode, path) of file mappings of ``pid``; dev as st_dev.

    Read by hand: psutil's memory_maps() reads /proc/PID/smaps (far slower,
    per-mapping memory figures we do not need) and gives neither device nor
    inode, which tell a container's libssl from the host's.
    """
    try:
        text = (PROC / str(pid) / "maps").read_text()
    except (OSError, UnicodeDecodeError):
        return
    seen = set()
    for line in text.splitlines():
        parts = line.split(None, 5)
        if len(parts) < 6 or parts[4] == "0":
            continue
        path = parts[5]
        if path in seen or not path.startswith("/"):
            continue
        seen.add(path)
        major, minor = (int(x, 16) for x in parts[3].split(":"))
        yield os.makedev(major, minor), int(parts[4]), path


def _host_path(pid: int, path: str, dev: int, inode: int) -> str | None:
    """A path to the same file from the agent's mount namespace."""
    if path.endswith(" (deleted)"):
        path = path[: -len(" (deleted)")]
    for cand in (path, f"/proc/{pid}/root{path}"):
        try:
            st = os.stat(cand)
        except OSError:
            continue
        if st.st_ino == inode and (st.st_dev == dev or dev == 0):
            return cand
    return None


def _exe_path(pid: int) -> str | None:
    # The link itself, not psutil's exe(): a replaced binary keeps its
    # " (deleted)" mark here, and _host_path / _same_file decide what to open.
    try:
        exe = os.readlink(PROC / str(pid) / "exe")
    except OSError:
        return None
    return exe


def list_pids() -> list[int]:
    return psutil.pids()


def ldconfig_libssl() -> list[str]:
    """libssl.so* files the dynamic linker knows, plus the usual directories."""
    paths: set[str] = set()
    try:
        out = subprocess.run(
            ["ldconfig", "-p"], capture_output=True, text=True, timeout=10
        ).stdout
        for line in out.splitlines():
            if "=>" in line:
                p = line.split("=>", 1)[1].strip()
                if LIBSSL_RE.search(p):
                    paths.add(p)
    except (OSError, subprocess.SubprocessError):
        pass
    for d in ("/lib", "/usr/lib", "/lib64", "/usr/lib64", "/usr/local/lib",
              "/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu",
              "/lib/aarch64-linux-gnu", "/usr/lib/aarch64-linux-gnu"):
        try:
            for name in os.listdir(d):
                if LIBSSL_RE.search(name):
                    paths.add(os.path.join(d, name))
        except OSError:
            continue
    return sorted(paths)


# Where executables with their own OpenSSL (node, ...) are looked for at start.
EXECUTABLE_DIRS = ("/usr/bin", "/usr/local/bin", "/bin", "/usr/sbin", "/usr/local/sbin", "/opt")


def find_tls_executables(
    dirs: Iterable[str] | None = None, symbols: SymbolCache | None = None
) -> list[tuple[str, os.stat_result, dict[str, int]]]:
    """Executables in ``dirs`` (and $PATH) that define SSL_write themselves.

    A byte search for the symbol name skips most files cheaply; the ELF
    dynamic symbol table then tells a definition from an import (curl,
    openssl import it from libssl).  ~0.5 s warm, a few s cold: run it off
    the hot path.
    """
    symbols = symbols or SymbolCache()
    if dirs is None:
        dirs = [*EXECUTABLE_DIRS, *os.environ.get("PATH", "").split(":")]
    seen: set[tuple[int, int]] = set()
    found = []
    for d in dirs:
        if not d:
            continue
        try:
            names = os.listdir(d)
        except OSError:
            continue
        for name in names:
            p = os.path.join(d, name)
            try:
                st = os.stat(p)
            except OSError:
                continue
            key = (st.st_dev, st.st_ino)
            if key in seen or not (st.st_mode & 0o111) or not os.path.isfile(p) or st.st_size < 1024:
                continue
            seen.add(key)
            try:
                with open(p, "rb") as f:
                    if f.read(4) != b"\x7fELF":
                        continue
                    with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
                        if mm.find(b"\0SSL_write\0") < 0:
                            continue
            except (OSError, ValueError):
                continue
            syms = symbols.ssl_symbols(p)
            if syms is not None:
                found.append((os.path.realpath(p), st, syms))
    return found


class TargetTracker:
    """Which TLS files exist and which processes map them.

    Pure bookkeeping over /proc; the caller attaches probes to what
    ``add_*``/``scan_*`` return as new.
    """

    def __init__(self, symbols: SymbolCache | None = None) -> None:
        self.symbols = symbols or SymbolCache()
        self.targets: dict[tuple[int, int], TlsTarget] = {}
        self._not_tls: set[tuple[int, int]] = set()  # files known to have no SSL_write
        self._rescans: list[tuple[float, int]] = []
        self._runtime_pids: dict[tuple[int, int], set[int]] = {}  # analysed executables' pids

    # -- files -------------------------------------------------------------
    def _consider_file(self, path: str, dev: int, inode: int, kind: str) -> tuple[TlsTarget | None, bool]:
        """(target or None, is_new)."""
        key = (dev, inode)
        t = self.targets.get(key)
        if t is not None:
            return t, False
        if key in self._not_tls:
            return None, False
        syms = self.symbols.ssl_symbols(path)
        if syms is None:
            self._not_tls.add(key)
            return None, False
        t = TlsTarget(path=path, dev=dev, inode=inode, kind=kind, symbols=syms)
        self.targets[key] = t
        return t, True

    def add_known(self, path: str, st: os.stat_result, kind: str, syms: dict[str, int]) -> TlsTarget | None:
        """Add a file whose symbols were read elsewhere; the target when new."""
        key = (st.st_dev, st.st_ino)
        if key in self.targets:
            return None
        t = TlsTarget(path=path, dev=st.st_dev, inode=st.st_ino, kind=kind, symbols=syms)
        self.targets[key] = t
        self._not_tls.discard(key)
        return t

    def add_file(self, path: str, kind: str = "libssl") -> TlsTarget | None:
        """Add a file by path; returns the target when it is new."""
        try:
            st = os.stat(path)
        except OSError:
            return None
        t, new = self._consider_file(os.path.realpath(path), st.st_dev, st.st_ino, kind)
        return t if new else None

    # -- processes ---------------------------------------------------------
    def scan_pid(self, pid: int) -> tuple[list[TlsTarget], list[TlsTarget]]:
        """(targets ``pid`` uses, the subset of them that is new)."""
        used: list[TlsTarget] = []
        new: list[TlsTarget] = []
        exe = _exe_path(pid)
        for dev, inode, path in _maps_entries(pid):
            is_lib = bool(LIBSSL_RE.search(path))
            is_exe = exe is not None and path == exe
            if not (is_lib or is_exe):
                continue
            key = (dev, inode)
            t = self.targets.get(key)
            if t is None:
                if key in self._not_tls:
                    continue
                hp = _host_path(pid, path, dev, inode)
                if hp is None:
                    continue
                t, is_new = self._consider_file(hp, dev, inode, "libssl" if is_lib else "exe")
                if t is None:
                    continue
                if is_new:
                    new.append(t)
            t.pids.add(pid)
            used.append(t)
        return used, new

    def scan_all(self) -> list[TlsTarget]:
        """Scan every process; returns the new targets."""
        new: list[TlsTarget] = []
        for pid in list_pids():
            new.extend(self.scan_pid(pid)[1])
        return new

    def running_pids(self) -> list[int]:
        return list_pids()

    def runtime_candidate(self, pid: int) -> str | None:
        """A path to ``pid``'s executable when it is no target yet (a Go or Bun
        program, maybe), remembering the pid for when it becomes one."""
        hp = f"/proc/{pid}/exe"
        try:
            st = os.stat(hp)
        except OSError:
            return None
        key = (st.st_dev, st.st_ino)
        if key in self.targets:
            return None
        self._runtime_pids.setdefault(key, set()).add(pid)
        exe = _exe_path(pid)
        return exe if exe is not None and _same_file(exe, st) else hp

    def add_runtime(self, path: str, dev: int, inode: int, kind: str,
                    probes: list[tuple[str, int, str, str | None]]) -> TlsTarget | None:
        """Add an analysed Go/Bun executable; the target when new."""
        key = (dev, inode)
        if key in self.targets:
            return None
        pids = {p for p in self._runtime_pids.pop(key, set()) if os.path.exists(f"/proc/{p}")}
        t = TlsTarget(path=path, dev=dev, inode=inode, kind=kind, symbols={}, pids=pids, probes=probes)
        self.targets[key] = t
        return t

    def add_system_libraries(self) -> list[TlsTarget]:
        new = []
        for p in ldconfig_libssl():
            t = self.add_file(p, "libssl")
            if t is not None:
                new.append(t)
        return new

    def on_exec(self, pid: int, now: float | None = None) -> list[TlsTarget]:
        """A process exec'd: check its executable now, its maps later.

        Returns new targets (an executable with its own OpenSSL, like node).
        """
        now = time.monotonic() if now is None else now
        for d in RESCAN_DELAYS:
            self._rescans.append((now + d, pid))
        new: list[TlsTarget] = []
        exe = _exe_path(pid)
        if exe is not None:
            hp = f"/proc/{pid}/exe"
            try:
                st = os.stat(hp)
            except OSError:
                return new
            path = exe if _same_file(exe, st) else hp
            t, is_new = self._consider_file(path, st.st_dev, st.st_ino, "exe")
            if t is not None:
                t.pids.add(pid)
                if is_new:
                    new.append(t)
        return new

    def next_rescan(self) -> float | None:
        """Monotonic time of the next scheduled rescan, None when none is."""
        return min(t for t, _pid in self._rescans) if self._rescans else None

    def due_rescans(self, now: float | None = None) -> list[int]:
        now = time.monotonic() if now is None else now
        due = [pid for t, pid in self._rescans if t <= now]
        if due:
            self._rescans = [(t, pid) for t, pid in self._rescans if t > now]
        return due

    def on_exit(self, pid: int) -> None:
        for t in self.targets.values():
            t.pids.discard(pid)
        for key in [k for k, pids in self._runtime_pids.items() if pid in pids]:
            self._runtime_pids[key].discard(pid)
            if not self._runtime_pids[key]:
                del self._runtime_pids[key]  # every other executable ever run would pile up
        self._rescans = [(t, p) for t, p in self._rescans if p != pid]


def _same_file(path: str, st: os.stat_result) -> bool:
    try:
        s2 = os.stat(path)
    except OSError:
        return False
    return s2.st_ino == st.st_ino and s2.st_dev == st.st_dev
