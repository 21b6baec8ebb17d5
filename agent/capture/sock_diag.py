"""One TCP socket's inode, asked of the kernel by its four-tuple (netlink ``sock_diag``).

The fast path of socket ownership: ``/proc/net/tcp`` lists every socket of
the namespace (thousands in TIME_WAIT on a busy host) where this asks the
kernel for exactly one, in one round trip.  Then the socket's inode is looked
for among the file descriptors of likely processes first (the newest pids,
and those that owned earlier connections), so a short call -- a curl that
lives three milliseconds -- is still found while it runs.  Any failure
returns None and the caller falls back to psutil's full scan.

Batches (the SYNs of one packet read) share one netlink socket and one walk
of /proc.  Each socket is still asked for by its exact four-tuple: a dump of
every socket on the sniffed ports would return each TIME_WAIT left behind by
earlier calls, thousands on a busy port, to answer for a handful.

No Python library wraps inet_diag (pyroute2 does, as a large dependency for
one request), hence the few structs below (linux/inet_diag.h, linux/sock_diag.h).
"""

from __future__ import annotations

import os
import socket
import struct
from collections.abc import Iterable, Sequence

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


def _request(family: int, src: bytes, dst: bytes, sport: int, dport: int, seq: int) -> bytes:
    body = (_REQ.pack(family, socket.IPPROTO_TCP, 0, 0, ALL_STATES)
            + _SOCKID.pack(sport, dport, src, dst, 0)
            + _COOKIE.pack(INET_DIAG_NOCOOKIE, INET_DIAG_NOCOOKIE))
    return _NLMSGHDR.pack(_NLMSGHDR.size + len(body), SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST, seq, 0) + body


def _inode_of(reply: bytes) -> int | None:
    if len(reply) < _NLMSGHDR.size + _MSG.size:
        return None  # an NLMSG_ERROR (ENOENT: no such socket) is shorter
    _length, kind, _flags, _seq, _pid = _NLMSGHDR.unpack_from(reply)
    if kind != SOCK_DIAG_BY_FAMILY:
        return None
    *_, inode = _MSG.unpack_from(reply, _NLMSGHDR.size)
    return inode or None  # 0: a socket no process holds any more (TIME_WAIT, orphaned)


def socket_inodes(pairs: Sequence[tuple[tuple[str, int], tuple[str, int]]]) -> list[int | None]:
    """The inode of each TCP socket bound to ``local`` and connected to ``remote`` (None: none).

    One netlink socket answers them all: a request costs one round trip into
    the kernel, the socket's setup is paid once per batch.
    """
    found: list[int | None] = [None] * len(pairs)
    try:
        nl = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_SOCK_DIAG)
    except OSError:
        return found
    with nl:
        nl.settimeout(TIMEOUT_S)
        for i, (local, remote) in enumerate(pairs):
            try:
                family, src = _address(local[0])
                remote_family, dst = _address(remote[0])
            except OSError:
                continue
            if family != remote_family:
                continue
            try:
                nl.sendto(_request(family, src, dst, local[1], remote[1], i + 1), (0, 0))
                found[i] = _inode_of(nl.recv(8192))
            except OSError:
                return found
    return found


def socket_inode(local: tuple[str, int], remote: tuple[str, int]) -> int | None:
    """The inode of the TCP socket bound to ``local`` and connected to ``remote``, or None."""
    return socket_inodes([(local, remote)])[0]


def pids_of_inodes(inodes: Iterable[int], candidates: Iterable[int], proc: str = "/proc") -> dict[int, int]:
    """inode -> the process holding it, for as many of ``inodes`` as are held.

    One walk for the whole batch: ``candidates`` first (recent owners), then
    every pid, newest first (a new connection is most often a new process),
    stopping as soon as every inode is placed.
    """
    wanted = {f"socket:[{inode}]": inode for inode in inodes}
    found: dict[int, int] = {}
    if not wanted:
        return found
    seen: set[int] = set()
    try:
        everyone = newest_first([int(name) for name in os.listdir(proc) if name.isdigit()], proc)
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
                inode = wanted.pop(os.readlink(f"{fd_dir}/{name}"), None)
            except OSError:
                continue
            if inode is not None:
                found[inode] = pid
                if not wanted:
                    return found
    return found


def newest_first(pids: list[int], proc: str = "/proc") -> list[int]:
    """``pids``, the most recently started first: counting back from the last pid handed out.

    Pids are handed out upwards and wrap at pid_max (32768 by default), so
    after a wrap the newest processes have the smallest numbers; sorting by
    number alone would look at every older process before a new curl.
    """
    try:
        with open(f"{proc}/sys/kernel/ns_last_pid") as f:
            last = int(f.read())
        with open(f"{proc}/sys/kernel/pid_max") as f:
            pid_max = int(f.read())
    except (OSError, ValueError):
        return sorted(pids, reverse=True)
    return sorted(pids, key=lambda pid: (last - pid) % pid_max)


def pid_of_inode(inode: int, candidates: list[int], proc: str = "/proc") -> int | None:
    """The process holding socket ``inode``: ``candidates`` first, then every pid, newest first."""
    return pids_of_inodes([inode], candidates, proc).get(inode)
