"""Hold each packet of a netfilter queue for a while, then let it go: slow TCP handshakes, on demand.

A connection's owner is filed in the kernel's map when the client's socket
turns ESTABLISHED, on the SYN-ACK; the sniffer reads the SYN before that.
Usually the gap is ~0.1 ms, but a client descheduled inside connect()
stretches it to milliseconds, and that race is rare and timing-bound.  In a
network namespace of its own (``unshare -n``), an iptables rule sends the
SYN-ACKs to NFQUEUE and this program gives them back ``delay_ms`` later, so
every connection's handshake ends well after its SYN was read:

    iptables-legacy -A OUTPUT -o lo -p tcp --tcp-flags SYN,ACK SYN,ACK -j NFQUEUE --queue-num 0 --queue-bypass
    python tests/support/syn_ack_delay.py --queue 0 --delay-ms 5

or, from a test, for the processes it starts:

    with slow_handshakes(delay_ms=5):    # this thread in a new network namespace until the end
        ...start a server, an agent, clients...

iptables-legacy: Debian's default iptables (nf_tables) turns NFQUEUE into
nft's queue expression, which kernels without CONFIG_NFT_QUEUE lack; the
legacy tables use the xt target.

The nfnetlink_queue protocol is spoken directly over a netlink socket
(<linux/netfilter/nfnetlink_queue.h>): the kernel has it built in, and its
Python bindings (NetfilterQueue) have no wheel, a C build for three messages.
Packets are copied as metadata only (NFQNL_COPY_META) and always accepted.
"""

from __future__ import annotations

import argparse
import ctypes
import heapq
import os
import select
import shutil
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

NETLINK_NETFILTER = 12
NFNL_SUBSYS_QUEUE = 3
NFQNL_MSG_PACKET, NFQNL_MSG_VERDICT, NFQNL_MSG_CONFIG = 0, 1, 2
NFQA_CFG_CMD, NFQA_CFG_PARAMS = 1, 2
NFQA_PACKET_HDR, NFQA_VERDICT_HDR = 1, 2
NFQNL_CFG_CMD_BIND = 1
NFQNL_COPY_META = 1
NF_ACCEPT = 1
NLM_F_REQUEST, NLM_F_ACK = 1, 4
NLMSG_ERROR = 2
CLONE_NEWNET = 0x40000000  # <linux/sched.h>

_NLMSGHDR = struct.Struct("=IHHII")
_NFGENMSG = struct.Struct("=BBH")  # family, version, res_id (big-endian: packed by hand)
_NLATTR = struct.Struct("=HH")


def _attr(kind: int, payload: bytes) -> bytes:
    raw = _NLATTR.pack(_NLATTR.size + len(payload), kind) + payload
    return raw + b"\0" * (-len(raw) % 4)


def _message(msg: int, queue: int, attrs: bytes, seq: int, flags: int = NLM_F_REQUEST) -> bytes:
    body = _NFGENMSG.pack(socket.AF_UNSPEC, 0, socket.htons(queue)) + attrs
    return _NLMSGHDR.pack(_NLMSGHDR.size + len(body), (NFNL_SUBSYS_QUEUE << 8) | msg, flags, seq, 0) + body


def _check_ack(nl: socket.socket) -> None:
    reply = nl.recv(65536)
    _length, kind, _flags, _seq, _pid = _NLMSGHDR.unpack_from(reply)
    if kind == NLMSG_ERROR:
        (error,) = struct.unpack_from("=i", reply, _NLMSGHDR.size)
        if error:
            raise OSError(-error, f"nfqueue config refused: {error}")


def bind(queue: int) -> socket.socket:
    nl = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
    nl.bind((0, 0))
    nl.send(_message(NFQNL_MSG_CONFIG, queue, _attr(NFQA_CFG_CMD, struct.pack("!BxH", NFQNL_CFG_CMD_BIND,
                                                                                socket.AF_INET)),
                     1, NLM_F_REQUEST | NLM_F_ACK))
    _check_ack(nl)
    nl.send(_message(NFQNL_MSG_CONFIG, queue, _attr(NFQA_CFG_PARAMS, struct.pack("!IB", 0, NFQNL_COPY_META)),
                     2, NLM_F_REQUEST | NLM_F_ACK))
    _check_ack(nl)
    return nl


def _packet_ids(data: bytes) -> list[int]:
    ids = []
    offset = 0
    while offset + _NLMSGHDR.size <= len(data):
        length, kind, _flags, _seq, _pid = _NLMSGHDR.unpack_from(data, offset)
        if length < _NLMSGHDR.size:
            break
        if kind == (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET:
            at = offset + _NLMSGHDR.size + _NFGENMSG.size
            while at + _NLATTR.size <= offset + length:
                alen, atype = _NLATTR.unpack_from(data, at)
                if alen < _NLATTR.size:
                    break
                if atype & 0x7FFF == NFQA_PACKET_HDR:
                    ids.append(struct.unpack_from("!I", data, at + _NLATTR.size)[0])
                at += (alen + 3) & ~3
        offset += (length + 3) & ~3
    return ids


def run(queue: int, delay_s: float) -> None:
    nl = bind(queue)
    print(f"holding packets of queue {queue} for {delay_s * 1000:g} ms", flush=True)
    due: list[tuple[float, int]] = []
    seq = 10
    while True:
        timeout = max(0.0, due[0][0] - time.monotonic()) if due else None
        ready, _, _ = select.select([nl], [], [], timeout)
        if ready:
            now = time.monotonic()
            for packet_id in _packet_ids(nl.recv(65536)):
                heapq.heappush(due, (now + delay_s, packet_id))
        now = time.monotonic()
        while due and due[0][0] <= now:
            _when, packet_id = heapq.heappop(due)
            seq += 1
            nl.send(_message(NFQNL_MSG_VERDICT, queue, _attr(NFQA_VERDICT_HDR, struct.pack("!II", NF_ACCEPT,
                                                                                             packet_id)), seq))


def available() -> str | None:
    """Why :func:`slow_handshakes` cannot run here, or None."""
    if os.geteuid() != 0:
        return "network namespaces and iptables need root"
    for tool in ("ip", "iptables-legacy"):
        if shutil.which(tool) is None:
            return f"{tool} not installed (apt install iproute2 iptables)"
    return None


@contextmanager
def slow_handshakes(delay_ms: float, queue: int = 0) -> Iterator[None]:
    """This thread, and every process it starts meanwhile, in a new network
    namespace whose loopback SYN-ACKs are held ``delay_ms``.

    A network namespace belongs to a thread, not to the process: the test's
    other threads stay where they are, and this one returns at the end.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    delayer = None
    try:
        if libc.unshare(CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWNET) failed")
        subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
        subprocess.run(["iptables-legacy", "-A", "OUTPUT", "-o", "lo", "-p", "tcp", "--tcp-flags", "SYN,ACK",
                        "SYN,ACK", "-j", "NFQUEUE", "--queue-num", str(queue),
                        "--queue-bypass"], check=True)  # no reader (it died): packets pass, not dropped
        delayer = subprocess.Popen([sys.executable, __file__, "--queue", str(queue), "--delay-ms", str(delay_ms)],
                                   stdout=subprocess.PIPE, text=True)
        assert delayer.stdout.readline().startswith("holding"), "the SYN-ACK delayer did not start"
        yield
    finally:
        if delayer is not None:
            delayer.terminate()
            delayer.wait(5)
        if libc.setns(home, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), "cannot return to the test's network namespace")
        os.close(home)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queue", type=int, default=0)
    parser.add_argument("--delay-ms", type=float, default=5.0)
    args = parser.parse_args(argv)
    try:
        run(args.queue, args.delay_ms / 1000)
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
