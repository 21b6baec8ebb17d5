"""One TCP socket's inode, asked of the kernel by its four-tuple (netlink ``sock_diag``).

The fast path of socket ownership: ``/proc/net/tcp`` lists every socket of
the namespace (thousands in TIME_WAIT on a busy host) where this asks the
kernel for exactly one, in one round trip.  Then the socket's inode is looked
for among the file descriptors of likely processes first (the newest pids,
and those that owned earlier connections), so a short call -- a curl that
lives three milliseconds -- is still found while it runs.  Any failure
returns None and the caller falls back to psutil's full scan.

No Python library wraps inet_diag (pyroute2 does, as a large dependency for
one request), hence the few structs below (linux/inet_diag.h, linux/sock_diag.h).
"""

from __future__ import annotations

import os
import socket
import struct

NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
NLM_F_REQUEST = 1
NLMSG_ERROR = 2
INET_DIAG_NOCOOKIE = 0xFFFFFFFF
ALL_STATES = 0xFFFFFFFF

_NLMSGHDR = struct.Struct("=IHHII")
# inet_diag_req_v2: family, protocol, ext, pad, states; then inet_diag_sockid.
_REQ = struct.Struct("=BBBBI")
_SOCKID = struct.Struct(">HH16s16sI")  # ports and addresses in network order; interface
_COOKIE = struct.Struct("=II")
# inet_diag_msg: family, state, timer, retrans, sockid (48), expires, rqueue, wqueue, uid, inode
_MSG = struct.Struct("=BBBB48sIIIII")
# Longest we wait for the kernel's answer (it answers at once or not at all).
TIMEOUT_S = 0.05


def _address(ip: str) -> tuple[int, bytes]:
    if ":" in ip:
        return socket.AF_INET6, socket.inet_pton(socket.AF_INET6, ip)
    return socket.AF_INET, socket.inet_pton(socket.AF_INET, ip).ljust(16, b"\0")


def socket_inode(local: tuple[str, int], remote: tuple[str, int]) -> int | None:
    """The inode of the TCP socket bound to ``local`` and connected to ``remote``, or None."""
    try:
        family, src = _address(local[0])
        remote_family, dst = _address(remote[0])
    except OSError:
        return None
    if family != remote_family:
        return None
    body = (_REQ.pack(family, socket.IPPROTO_TCP, 0, 0, ALL_STATES)
            + _SOCKID.pack(local[1], remote[1], src, dst, 0)
            + _COOKIE.pack(INET_DIAG_NOCOOKIE, INET_DIAG_NOCOOKIE))
    message = _NLMSGHDR.pack(_NLMSGHDR.size + len(body), SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST, 1, 0) + body
    try:
        with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_SOCK_DIAG) as nl:
            nl.settimeout(TIMEOUT_S)
            nl.sendto(message, (0, 0))
            reply = nl.recv(8192)
    except OSError:
        return None
    if len(reply) < _NLMSGHDR.size + _MSG.size:
        return None  # an NLMSG_ERROR (ENOENT: no such socket) is shorter
    _length, kind, _flags, _seq, _pid = _NLMSGHDR.unpack_from(reply)
    if kind != SOCK_DIAG_BY_FAMILY:
        return None
    *_, inode = _MSG.unpack_from(reply, _NLMSGHDR.size)
    return inode or None


def pid_of_inode(inode: int, candidates: list[int], proc: str = "/proc") -> int | None:
    """The process holding socket ``inode``: ``candidates`` first, then every pid, newest first."""
    target = f"socket:[{inode}]"
    seen: set[int] = set()
    try:
        everyone = sorted((int(name) for name in os.listdir(proc) if name.isdigit()), reverse=True)
    except OSError:
        everyone = []
    for pid in [*candidates, *everyone]:
        if pid in seen:
            continue
        seen.add(pid)
        fd_dir = f"{proc}/{pid}/fd"
        try:
            names = os.listdir(fd_dir)
        except OSError:
            continue
        for name in names:
            try:
                if os.readlink(f"{fd_dir}/{name}") == target:
                    return pid
            except OSError:
                continue
    return None
