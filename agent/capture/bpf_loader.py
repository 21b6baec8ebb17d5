"""BPF programs compiled and loaded by a short-lived child process, then held here by fd.

    bpf = load_bpf("ssl_probes.c", text, cflags, programs=["probe_write_enter", ...])
    bpf.maps["skip_tgids"].update(struct.pack("I", pid), b"\\x01")
    probe = bpf.attach_uprobe("/usr/lib/x86_64-linux-gnu/libssl.so.3", vaddr, "probe_write_enter", pid=-1)
    probe.close()
    bpf.close()

Why a child: BCC compiles C with the clang and LLVM linked into libbcc.
Loading that library into the agent makes about 10 MB resident for good (the
relocated data of libLLVM and libclang-cpp, in /proc/PID/smaps), and the
compile leaves ~3 MB more on the heap, a third of the agent's memory budget.
What the agent needs afterwards is file descriptors: programs to attach,
maps to read and update, and the tracepoint attachments BCC makes on its own
(``TRACEPOINT_PROBE``).  So ``python -m lumen_agent.capture.bpf_loader``
compiles and loads, hands every descriptor over a Unix socket (SCM_RIGHTS)
and exits; the kernel objects live on as long as the agent holds them.

The agent then works with bcc's own small C library of BPF calls,
``libbcc_bpf.so.0`` (the same package, without LLVM): map updates and
lookups, and uprobes through the perf ``uprobe`` PMU.  A uprobe is placed at
a *file offset*; the ELF virtual address of a symbol is turned into one here
as BCC does (``elf_offsets``).
"""

from __future__ import annotations

import ctypes as ct
import functools
import json
import os
import re
import socket
import struct
import subprocess
import sys
from dataclasses import dataclass, field

from lumen_agent.capture.kernel_setup import BCC_DIST_PACKAGES, CaptureError

# A compile on a loaded 2-core host takes a few seconds; this is a hang.
BUILD_TIMEOUT_S = 180
# One SCM_RIGHTS message carries at most 253 descriptors (SCM_MAX_FD).
MAX_FDS = 253
_MESSAGE_BYTES = 1 << 20
BPF_MAP_TYPE_PERCPU_HASH, BPF_MAP_TYPE_PERCPU_ARRAY, BPF_MAP_TYPE_LRU_PERCPU_HASH = 5, 6, 10
_PERCPU_TYPES = (BPF_MAP_TYPE_PERCPU_HASH, BPF_MAP_TYPE_PERCPU_ARRAY, BPF_MAP_TYPE_LRU_PERCPU_HASH)
BPF_ANY = 0
PROBE_ENTRY, PROBE_RETURN = 0, 1  # enum bpf_probe_attach_type
# Function name prefixes BCC attaches by itself when it loads a module.
_AUTO_ATTACHED = ("kprobe__", "kretprobe__", "tracepoint__", "raw_tracepoint__", "kfunc__", "kretfunc__", "lsm__")


def import_bcc():
    """Debian's bcc module: its dist-packages folder goes to the END of
    sys.path when bcc is not importable otherwise, so it never shadows the venv."""
    try:
        import bcc  # noqa: F401
    except ImportError:
        if BCC_DIST_PACKAGES not in sys.path:
            sys.path.append(BCC_DIST_PACKAGES)
        try:
            import bcc  # noqa: F401
        except ImportError as exc:
            raise CaptureError(f"bcc is not importable ({exc})", "apt-get install python3-bpfcc") from exc
    import bcc

    return bcc


# -- the agent's side -----------------------------------------------------------

_lib: ct.CDLL | None = None


def _bpf_lib() -> ct.CDLL:
    global _lib
    if _lib is None:
        try:
            lib = ct.CDLL("libbcc_bpf.so.0", use_errno=True)
        except OSError as exc:
            raise CaptureError(f"libbcc_bpf is missing ({exc})", "apt-get install libbpfcc") from exc
        lib.bpf_update_elem.argtypes = [ct.c_int, ct.c_void_p, ct.c_void_p, ct.c_ulonglong]
        lib.bpf_lookup_elem.argtypes = [ct.c_int, ct.c_void_p, ct.c_void_p]
        lib.bpf_delete_elem.argtypes = [ct.c_int, ct.c_void_p]
        lib.bpf_attach_uprobe.argtypes = [ct.c_int, ct.c_int, ct.c_char_p, ct.c_char_p, ct.c_ulonglong, ct.c_int,
                                          ct.c_uint32]
        lib.bpf_detach_uprobe.argtypes = [ct.c_char_p]
        lib.bpf_close_perf_event_fd.argtypes = [ct.c_int]
        _lib = lib
    return _lib


@functools.cache
def possible_cpus() -> int:
    """CPUs the kernel may ever bring up: the slots of a per-CPU map value (fixed at boot)."""
    with open("/sys/devices/system/cpu/possible") as f:
        text = f.read().strip()
    count = 0
    for part in text.split(","):
        low, _, high = part.partition("-")
        count += int(high or low) - int(low) + 1
    return count


@dataclass
class BpfMap:
    """One map, by fd: keys and values are the C structs' bytes."""

    name: str
    fd: int
    map_type: int
    key_size: int
    value_size: int
    max_entries: int

    def update(self, key: bytes, value: bytes) -> None:
        self._check(key, value)
        if _bpf_lib().bpf_update_elem(self.fd, key, value, BPF_ANY) < 0:
            err = ct.get_errno()
            raise OSError(err, f"updating BPF map {self.name}: {os.strerror(err)}")

    def lookup(self, key: bytes) -> bytes | None:
        self._check(key)
        value = ct.create_string_buffer(self._value_bytes())
        if _bpf_lib().bpf_lookup_elem(self.fd, key, value) < 0:
            return None
        return value.raw

    def delete(self, key: bytes) -> bool:
        self._check(key)
        return _bpf_lib().bpf_delete_elem(self.fd, key) == 0

    def sum_u64(self, key: bytes) -> int:
        """A per-CPU u64 summed over the CPUs (a counter), 0 when absent."""
        raw = self.lookup(key)
        if raw is None:
            return 0
        return sum(struct.unpack(f"={len(raw) // 8}Q", raw))

    def _value_bytes(self) -> int:
        if self.map_type in _PERCPU_TYPES:
            return ((self.value_size + 7) & ~7) * possible_cpus()
        return self.value_size

    def _check(self, key: bytes, value: bytes | None = None) -> None:
        # A wrong size would read or write past the caller's buffer in the kernel copy.
        if len(key) != self.key_size or (value is not None and len(value) != self.value_size):
            raise ValueError(f"BPF map {self.name}: key/value of {len(key)}/{len(value or b'')} bytes, "
                             f"the map takes {self.key_size}/{self.value_size}")


@dataclass
class Uprobe:
    """One attached uprobe; closing it detaches it."""

    fd: int
    event: bytes  # BCC's event name, for the tracefs fallback of old kernels

    def close(self) -> None:
        if self.fd < 0:
            return
        lib = _bpf_lib()
        lib.bpf_close_perf_event_fd(self.fd)
        lib.bpf_detach_uprobe(self.event)  # a no-op unless the probe went through tracefs
        self.fd = -1


_EVENT_NAME_CHARS = re.compile(rb"[^a-zA-Z0-9_]")


@dataclass
class LoadedBpf:
    """The programs, maps and tracepoint attachments of one compiled source."""

    name: str
    maps: dict[str, BpfMap]
    programs: dict[str, int]
    tracepoints: dict[str, int] = field(default_factory=dict)

    def attach_uprobe(self, path: str, vaddr: int, program: str, *, pid: int = -1,
                      retprobe: bool = False) -> Uprobe:
        """Run ``program`` when a process (``pid``, or -1: every process) reaches
        ``vaddr`` (an ELF virtual address, as in the symbol table) of ``path``."""
        # Imported here: the loader child, which never attaches, skips pyelftools.
        from lumen_agent.capture.elf_offsets import file_offset

        offset = file_offset(path, vaddr)
        raw_path = path.encode()
        # BCC's name for the event (only a tracefs-based attach on old kernels uses it).
        event = b"%s_%s_0x%x" % (b"r" if retprobe else b"p", _EVENT_NAME_CHARS.sub(b"_", raw_path), offset)
        if pid != -1:
            event += b"_%d" % pid
        fd = _bpf_lib().bpf_attach_uprobe(self.programs[program], PROBE_RETURN if retprobe else PROBE_ENTRY,
                                          event, raw_path, offset, pid, 0)
        if fd < 0:
            err = ct.get_errno()
            raise OSError(err, f"attaching {program} at {path}+0x{offset:x}: {os.strerror(err) if err else 'failed'}")
        return Uprobe(fd, event)

    def close(self) -> None:
        """Close every descriptor: programs and maps go once nothing else holds them."""
        for fd in [*self.tracepoints.values(), *self.programs.values(), *(m.fd for m in self.maps.values())]:
            try:
                os.close(fd)
            except OSError:
                pass
        self.tracepoints.clear()
        self.programs.clear()
        self.maps.clear()


def load_bpf(name: str, text: bytes, cflags: list[str], programs: list[str] | None = None) -> LoadedBpf:
    """Compile and load ``text`` in a child process: the TRACEPOINT_PROBEs, which
    BCC attaches, and ``programs`` (uprobe programs; None: every other function)."""
    return BpfBuild(name, text, cflags, programs).result()


class BpfBuild:
    """A compile running in its child process; :meth:`result` waits for it.

    Started early, two builds share the machine's cores instead of taking
    turns (the agent's start-up compiles two sources)."""

    def __init__(self, name: str, text: bytes, cflags: list[str], programs: list[str] | None = None) -> None:
        self.name = name
        request = json.dumps({"text": text.decode("latin-1"), "cflags": list(cflags),
                              "programs": None if programs is None else list(programs)})
        self._sock, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self._child = subprocess.Popen([sys.executable, "-m", "lumen_agent.capture.bpf_loader",
                                            str(theirs.fileno())], stdin=subprocess.PIPE, pass_fds=(theirs.fileno(),))
        except BaseException:
            self._sock.close()
            raise
        finally:
            theirs.close()
        self._child.stdin.write(request.encode())
        self._child.stdin.close()

    def result(self) -> LoadedBpf:
        try:
            try:
                self._child.wait(timeout=BUILD_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.cancel()
                raise CaptureError(f"compiling {self.name} took over {BUILD_TIMEOUT_S} s",
                                   "run `lumen-agent doctor`") from None
            self._sock.setblocking(False)
            try:
                message, fds, _flags, _addr = socket.recv_fds(self._sock, _MESSAGE_BYTES, MAX_FDS)
            except BlockingIOError:
                message, fds = b"", []
        finally:
            self._sock.close()
        if not message:
            raise CaptureError(f"compiling/loading {self.name} failed: the BPF loader exited with "
                               f"{self._child.returncode}", "run `lumen-agent doctor`")
        reply = json.loads(message)
        if "error" in reply:
            for fd in fds:
                os.close(fd)
            raise CaptureError(f"compiling/loading {self.name} failed: {reply['error']}",
                               "run `lumen-agent doctor`; check kernel headers in /lib/modules/$(uname -r)/build")
        maps = {m["name"]: BpfMap(m["name"], fds[m["fd"]], m["type"], m["key_size"], m["value_size"],
                                  m["max_entries"]) for m in reply["maps"]}
        return LoadedBpf(self.name, maps, {p: fds[i] for p, i in reply["programs"].items()},
                         {t: fds[i] for t, i in reply["tracepoints"].items()})

    def cancel(self) -> None:
        """Stop the compile (the agent stops before it was needed)."""
        if self._child.poll() is None:
            self._child.kill()
            self._child.wait()
        self._sock.close()


# -- the child's side -------------------------------------------------------------


def _build(request: dict) -> tuple[dict, list[int]]:
    """Compile and load; the reply and the descriptors it refers to by index."""
    bcc = import_bcc()
    bpf = bcc.BPF(text=request["text"].encode("latin-1"), cflags=request["cflags"])
    lib, module = bcc.lib, bpf.module
    fds: list[int] = []
    programs = {}
    names = request["programs"]
    if names is None:  # every program BCC does not attach by itself
        names = [lib.bpf_function_name(module, i).decode() for i in range(lib.bpf_num_functions(module))]
        names = [n for n in names if not n.startswith(_AUTO_ATTACHED)]
    for program in names:
        programs[program] = len(fds)
        fds.append(bpf.load_func(program.encode(), bcc.BPF.KPROBE).fd)
    tracepoints = {}
    for tracepoint, fd in bpf.tracepoint_fds.items():
        tracepoints[tracepoint.decode()] = len(fds)
        fds.append(fd)
    # bcc's C API for a module's maps (bcc_common.h); its Python module declares only some.
    lib.bpf_num_tables.restype = ct.c_size_t
    lib.bpf_num_tables.argtypes = [ct.c_void_p]
    for getter, restype in (("bpf_table_name", ct.c_char_p), ("bpf_table_fd_id", ct.c_int),
                            ("bpf_table_type_id", ct.c_int), ("bpf_table_key_size_id", ct.c_size_t),
                            ("bpf_table_leaf_size_id", ct.c_size_t), ("bpf_table_max_entries_id", ct.c_ulonglong)):
        getattr(lib, getter).restype = restype
        getattr(lib, getter).argtypes = [ct.c_void_p, ct.c_size_t]
    maps = []
    for i in range(lib.bpf_num_tables(module)):
        table = lib.bpf_table_name(module, i)
        maps.append({"name": table.decode(), "fd": len(fds), "type": lib.bpf_table_type_id(module, i),
                     "key_size": lib.bpf_table_key_size_id(module, i),
                     "value_size": lib.bpf_table_leaf_size_id(module, i),
                     "max_entries": lib.bpf_table_max_entries_id(module, i)})
        fds.append(lib.bpf_table_fd_id(module, i))
    if len(fds) > MAX_FDS:
        raise ValueError(f"{len(fds)} descriptors, more than one message carries ({MAX_FDS})")
    return {"maps": maps, "programs": programs, "tracepoints": tracepoints}, fds


def _child_main(sock_fd: int) -> int:
    sock = socket.socket(fileno=sock_fd)
    request = json.loads(sys.stdin.buffer.read())
    try:
        reply, fds = _build(request)
    except Exception as exc:  # noqa: BLE001 - bcc raises plain Exception; the agent gets one line
        text = str(exc).strip()
        sock.send(json.dumps({"error": text.splitlines()[0] if text else type(exc).__name__}).encode())
        return 1
    socket.send_fds(sock, [json.dumps(reply).encode()], fds)
    return 0


if __name__ == "__main__":
    code = _child_main(int(sys.argv[1]))
    sys.stdout.flush()
    sys.stderr.flush()
    # Not sys.exit: BCC's atexit cleanup would disable the tracepoint events
    # the agent now shares (PERF_EVENT_IOC_DISABLE acts on the event, not the fd).
    os._exit(code)
