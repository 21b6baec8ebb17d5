"""A packet socket on one interface with a kernel filter: what the live sniffer reads.

    sock = PacketSocket.open("lo", "inbound and (tcp port 11434)", snaplen=SNAPLEN)
    link, frame, ts_ns = sock.recv_frame()      # BlockingIOError when nothing waits

Why not scapy's ``L2ListenSocket``: what it adds to a plain ``AF_PACKET``
socket is dissection, and importing scapy's layers costs the agent about
28 MB of resident memory, more than half of what the whole agent may use.
Frames are read by ``frames.py`` instead; scapy is still imported, lazily,
for a link type only it knows (and for capture files).

The filter expression is compiled by libpcap (Debian's libpcap0.8), the
compiler tcpdump uses, through its documented C API: ``pcap_open_dead`` for
the interface's link type, ``pcap_compile``, and the resulting classic BPF
program is attached with ``SO_ATTACH_FILTER``.  The socket is bound to the
interface only after the filter is attached, so no unfiltered packet ever
queues.  Each frame carries the kernel's receive time (``SO_TIMESTAMPNS``),
not the time we got round to reading it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import socket
import struct

ETH_P_ALL = 0x0003
SO_ATTACH_FILTER = 26  # <asm-generic/socket.h>
SO_RCVBUFFORCE = 33  # <asm-generic/socket.h>
SOL_PACKET, PACKET_STATISTICS = 263, 6  # <linux/if_packet.h>: struct tpacket_stats
_PACKET_STATISTICS = struct.Struct("II")
SO_TIMESTAMPNS = 35  # SO_TIMESTAMPNS_OLD: a struct timespec of two longs
_TIMESPEC = struct.Struct("@ll")
_ANCILLARY_BYTES = socket.CMSG_SPACE(_TIMESPEC.size)

# Link types of the interfaces (ARPHRD_*, /sys/class/net/IFACE/type) and the
# libpcap link type (DLT_*) their frames have on a packet socket.
ARPHRD_ETHER, ARPHRD_LOOPBACK, ARPHRD_NONE = 1, 772, 65534
DLT_EN10MB, DLT_RAW = 1, 12
_DLT_OF_ARPHRD = {ARPHRD_ETHER: DLT_EN10MB, ARPHRD_LOOPBACK: DLT_EN10MB, ARPHRD_NONE: DLT_RAW}
# A packet-socket snapshot length libpcap compiles against (the program's
# own "keep N bytes" returns are rewritten to the caller's snaplen).
_COMPILE_SNAPLEN = 65535
_PCAP_NETMASK_UNKNOWN = 0xFFFFFFFF
_BPF_RET_K = 0x06


class FilterError(OSError):
    """libpcap is missing, or it could not compile the expression."""


class _Insn(ctypes.Structure):
    _fields_ = [("code", ctypes.c_ushort), ("jt", ctypes.c_ubyte), ("jf", ctypes.c_ubyte), ("k", ctypes.c_uint32)]


class _Program(ctypes.Structure):  # struct bpf_program (libpcap) and struct sock_fprog (kernel) alike
    _fields_ = [("bf_len", ctypes.c_uint), ("bf_insns", ctypes.POINTER(_Insn))]


_libpcap: ctypes.CDLL | None = None


def _pcap() -> ctypes.CDLL:
    global _libpcap
    if _libpcap is None:
        name = ctypes.util.find_library("pcap")
        if name is None:
            raise FilterError("libpcap is not installed (apt install libpcap0.8)")
        lib = ctypes.CDLL(name)
        lib.pcap_open_dead.restype = ctypes.c_void_p
        lib.pcap_open_dead.argtypes = [ctypes.c_int, ctypes.c_int]
        lib.pcap_compile.argtypes = [ctypes.c_void_p, ctypes.POINTER(_Program), ctypes.c_char_p, ctypes.c_int,
                                     ctypes.c_uint32]
        lib.pcap_geterr.restype = ctypes.c_char_p
        lib.pcap_geterr.argtypes = [ctypes.c_void_p]
        lib.pcap_freecode.argtypes = [ctypes.POINTER(_Program)]
        lib.pcap_close.argtypes = [ctypes.c_void_p]
        _libpcap = lib
    return _libpcap


def link_type(iface: str) -> int:
    """The interface's ARPHRD_* link type."""
    try:
        with open(f"/sys/class/net/{iface}/type") as f:
            return int(f.read())
    except (OSError, ValueError) as exc:
        raise OSError(f"no such interface {iface!r}") from exc


def compile_filter(expression: str, dlt: int, snaplen: int) -> list[tuple[int, int, int, int]]:
    """``expression`` compiled by libpcap for link type ``dlt``: the classic BPF
    instructions (code, jt, jf, k), returning ``snaplen`` bytes of a match."""
    lib = _pcap()
    handle = lib.pcap_open_dead(dlt, _COMPILE_SNAPLEN)
    if not handle:
        raise FilterError(f"libpcap cannot open a handle for link type {dlt}")
    program = _Program()
    try:
        if lib.pcap_compile(handle, ctypes.byref(program), expression.encode(), 1, _PCAP_NETMASK_UNKNOWN) != 0:
            raise FilterError(f"libpcap cannot compile {expression!r}: {lib.pcap_geterr(handle).decode()}")
        insns = [program.bf_insns[i] for i in range(program.bf_len)]
        # A nonzero "return k" keeps k bytes of the packet: keep snaplen.
        out = [(i.code, i.jt, i.jf, snaplen if i.code == _BPF_RET_K and i.k else i.k) for i in insns]
        lib.pcap_freecode(ctypes.byref(program))
        return out
    finally:
        lib.pcap_close(handle)


def attach_filter(sock: socket.socket, instructions: list[tuple[int, int, int, int]]) -> None:
    array = (_Insn * len(instructions))(*(_Insn(*i) for i in instructions))
    program = _Program(len(instructions), ctypes.cast(array, ctypes.POINTER(_Insn)))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, bytes(ctypes.string_at(ctypes.addressof(program),
                                                                                 ctypes.sizeof(program))))


class PacketSocket:
    """One interface's filtered ``AF_PACKET`` socket, non-blocking."""

    def __init__(self, sock: socket.socket, iface: str, link: int, snaplen: int) -> None:
        self.socket = sock
        self.iface = iface
        self.link = link  # ARPHRD_* of every frame read here
        self.snaplen = snaplen

    @classmethod
    def open(cls, iface: str, expression: str, *, snaplen: int, receive_buffer: int | None = None) -> PacketSocket:
        link = link_type(iface)
        dlt = _DLT_OF_ARPHRD.get(link)
        if dlt is None:
            # A link type we do not read by hand: scapy knows its DLT.
            from scapy.data import ARPHRD_TO_DLT

            dlt = ARPHRD_TO_DLT.get(link)
            if dlt is None or dlt < 0:
                raise FilterError(f"{iface}: link type {link} has no libpcap equivalent")
        instructions = compile_filter(expression, dlt, snaplen)
        # Protocol 0: the socket receives nothing until bound, after the filter is on.
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        try:
            attach_filter(sock, instructions)
            sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
            if receive_buffer:
                set_receive_buffer(sock, receive_buffer)
            sock.bind((iface, ETH_P_ALL))
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        return cls(sock, iface, link, snaplen)

    def fileno(self) -> int:
        return self.socket.fileno()

    def recv_frame(self) -> tuple[int, bytes, int | None]:
        """(link type, frame, kernel receive time in ns or None); BlockingIOError when none waits."""
        data, ancillary, _flags, _addr = self.socket.recvmsg(self.snaplen, _ANCILLARY_BYTES)
        ts_ns = None
        for level, kind, value in ancillary:
            if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(value) >= _TIMESPEC.size:
                sec, nsec = _TIMESPEC.unpack_from(value)
                ts_ns = sec * 1_000_000_000 + nsec
        return self.link, data, ts_ns

    def kernel_drops(self) -> int:
        """Packets the kernel dropped for this socket since the last call (a full buffer)."""
        try:
            _packets, drops = _PACKET_STATISTICS.unpack(self.socket.getsockopt(SOL_PACKET, PACKET_STATISTICS,
                                                                               _PACKET_STATISTICS.size))
        except OSError:
            return 0
        return drops

    def close(self) -> None:
        self.socket.close()


def set_receive_buffer(sock: socket.socket, size: int) -> None:
    # SO_RCVBUFFORCE (root) passes net.core.rmem_max, which is a few hundred KiB by default.
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, size)
    except OSError:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
