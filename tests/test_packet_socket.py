"""The live sniffer's packet socket: libpcap's filter, a real AF_PACKET socket on lo, kernel timestamps."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import pytest

from lumen_agent.capture.frames import frame_segment
from lumen_agent.capture.packet_socket import ARPHRD_LOOPBACK, DLT_EN10MB, FilterError, PacketSocket, compile_filter
from lumen_agent.capture.sniff import SNAPLEN, port_filter
from lumen_agent.capture.syn_watch import syn_filter

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="packet sockets need root (CAP_NET_RAW)")


@pytest.mark.parametrize("loopback", [True, False])
def test_filters_are_the_programs_scapy_and_tcpdump_get_from_libpcap(loopback):
    from scapy.arch.common import compile_filter as scapy_compile

    for expression in (port_filter([11434, 8000], loopback=loopback), syn_filter([4000], loopback=loopback)):
        ours = compile_filter(expression, DLT_EN10MB, 65535)
        program = scapy_compile(expression, "lo" if loopback else None, linktype=DLT_EN10MB)
        theirs = [(i.code, i.jt, i.jf, i.k & 0xFFFFFFFF) for i in program.bf_insns[: program.bf_len]]
        assert ours == theirs
    # The keep-N-bytes returns carry the snaplen asked for; "drop" stays 0.
    returns = [k for code, _jt, _jf, k in compile_filter("tcp port 80", DLT_EN10MB, SNAPLEN) if code == 0x06]
    assert returns == [SNAPLEN, 0]


def test_a_bad_expression_is_a_clear_error():
    with pytest.raises(FilterError, match="cannot compile 'tcp port'"):
        compile_filter("tcp port", DLT_EN10MB, 100)


@needs_root
def test_no_such_interface_is_a_clear_error():
    with pytest.raises(OSError, match="no such interface 'lumen-none0'"):
        PacketSocket.open("lumen-none0", "tcp", snaplen=100)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@needs_root
def test_lo_socket_reads_one_copy_of_each_filtered_segment_with_its_kernel_time():
    port, other = _free_port(), _free_port()
    sock = PacketSocket.open("lo", port_filter([port], loopback=True), snaplen=SNAPLEN, receive_buffer=1 << 20)
    try:
        before = time.time_ns()
        # Traffic on the sniffed port and on another one, from another process.
        client = _client_script(port, other)
        subprocess.run([sys.executable, "-c", client], check=True, timeout=30)
        after = time.time_ns()
        time.sleep(0.2)
        segments = []
        while True:
            try:
                link, frame, ts_ns = sock.recv_frame()
            except BlockingIOError:
                break
            assert link == ARPHRD_LOOPBACK
            assert before <= ts_ns <= after  # when the kernel took it, not when we read it
            segments.append(frame_segment(link, frame, ts_ns))
        assert sock.kernel_drops() == 0
    finally:
        sock.close()
    assert all(port in (s.src.port, s.dst.port) for s in segments)
    payloads = [s.payload for s in segments if s.payload]
    # Each segment once ("inbound" drops lo's outgoing copy), none of the other port's.
    assert payloads == [b"ping", b"pong"]
    syns = [s for s in segments if s.flags & 0x02]
    assert len(syns) == 2  # SYN and SYN-ACK


def _client_script(port: int, other: int) -> str:
    return f"""
import socket
for p, msg in (({port}, b"ping"), ({other}, b"other")):
    srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", p)); srv.listen()
    c = socket.create_connection(("127.0.0.1", p)); a, _ = srv.accept()
    c.sendall(msg); assert a.recv(10) == msg
    if p == {port}:
        a.sendall(b"pong"); assert c.recv(10) == b"pong"
    c.close(); a.close(); srv.close()
"""
