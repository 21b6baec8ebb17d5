"""TCP reassembly (agent/capture/tcp_reassembly.py): order, duplicates, overlaps, holes, limits."""

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from lumen_agent.capture import tcp_reassembly as tr
from lumen_agent.capture.tcp_reassembly import (
    ACK,
    FIN,
    RST,
    SYN,
    Endpoint,
    FlowTable,
    Segment,
    StreamClosed,
    StreamData,
)

CLIENT = Endpoint("127.0.0.1", 50000)
SERVER = Endpoint("127.0.0.1", 11434)


def seg(seq, payload=b"", flags=ACK, ts=1, src=CLIENT, dst=SERVER):
    return Segment(ts, src, dst, seq % tr.SEQ_MOD, flags, payload)


def stream_of(out, from_client=True):
    return b"".join(e.data for e in out if isinstance(e, StreamData) and e.from_client == from_client)


def open_flow(table, out, isn=1000, server_isn=5000):
    table.feed(seg(isn, flags=SYN), out)
    table.feed(seg(server_isn, flags=SYN | ACK, src=SERVER, dst=CLIENT), out)


@st.composite
def shuffled_segments(draw):
    """A byte stream cut into segments, then reordered, duplicated and overlapped."""
    data = draw(st.binary(min_size=1, max_size=2000))
    cuts = sorted(set(draw(st.lists(st.integers(1, len(data) - 1), max_size=20)))) if len(data) > 1 else []
    bounds = [0, *cuts, len(data)]
    pieces = list(itertools.pairwise(bounds))
    # Overlapping retransmissions: any span of the stream, sent again.
    extra = draw(st.lists(st.tuples(st.integers(0, len(data) - 1), st.integers(1, 400)), max_size=5))
    pieces += [(a, min(len(data), a + n)) for a, n in extra]
    pieces += draw(st.lists(st.sampled_from(pieces), max_size=5))  # exact duplicates
    order = draw(st.permutations(pieces))
    isn = draw(st.integers(0, tr.SEQ_MOD - 1))  # any start, wrap-around included
    return data, order, isn


@settings(max_examples=300, deadline=None)
@given(shuffled_segments())
def test_any_order_duplicates_and_overlaps_give_the_same_stream(case):
    data, order, isn = case
    table, out = FlowTable(), []
    open_flow(table, out, isn=isn)
    for a, b in order:
        table.feed(seg(isn + 1 + a, data[a:b]), out)
    assert stream_of(out) == data
    assert not any(e.gap for e in out if isinstance(e, StreamData))
    assert table.held_bytes == 0
    table.feed(seg(isn + 1 + len(data), flags=FIN | ACK), out)
    table.feed(seg(5001, flags=FIN | ACK, src=SERVER, dst=CLIENT), out)
    closed = [e for e in out if isinstance(e, StreamClosed)]
    assert [c.reason for c in closed] == ["fin"]
    assert len(table) == 0


def test_both_directions_and_client_from_syn():
    table, out = FlowTable(), []
    open_flow(table, out)
    table.feed(seg(1001, b"POST / HTTP/1.1\r\n"), out)
    table.feed(seg(5001, b"HTTP/1.1 200 OK\r\n", src=SERVER, dst=CLIENT), out)
    assert stream_of(out, True) == b"POST / HTTP/1.1\r\n"
    assert stream_of(out, False) == b"HTTP/1.1 200 OK\r\n"
    assert all(e.client == CLIENT and e.server == SERVER for e in out)


def test_client_from_server_ports_when_joined_mid_stream():
    table, out = FlowTable(server_ports={11434}), []
    table.feed(seg(77, b"late bytes", src=SERVER, dst=CLIENT), out)
    (event,) = out
    assert (event.client, event.server, event.from_client, event.gap) == (CLIENT, SERVER, False, True)


def test_fin_waits_for_the_data_before_it():
    table, out = FlowTable(), []
    open_flow(table, out)
    table.feed(seg(1006, b"world", flags=FIN | ACK), out)  # arrives before "hello"
    table.feed(seg(5001, flags=FIN | ACK, src=SERVER, dst=CLIENT), out)
    assert not any(isinstance(e, StreamClosed) for e in out)
    table.feed(seg(1001, b"hello"), out)
    assert stream_of(out) == b"helloworld"
    assert isinstance(out[-1], StreamClosed) and out[-1].reason == "fin"


def test_rst_closes_at_once():
    table, out = FlowTable(), []
    open_flow(table, out)
    table.feed(seg(1001, b"abc"), out)
    table.feed(seg(1004, flags=RST), out)
    assert isinstance(out[-1], StreamClosed) and out[-1].reason == "rst"
    assert len(table) == 0


def test_a_hole_that_never_fills_becomes_a_gap_when_the_buffer_is_full():
    table, out = FlowTable(), []
    open_flow(table, out)
    table.feed(seg(1001, b"a"), out)
    # byte 1002 is lost; what follows is held until the segment limit.
    for i in range(tr.MAX_REORDER_SEGMENTS + 1):
        table.feed(seg(1003 + i, b"x"), out)
    data = [e for e in out if isinstance(e, StreamData)]
    assert data[0].data == b"a" and not data[0].gap
    assert data[1].gap and data[1].data == b"x"
    assert stream_of(out) == b"a" + b"x" * (tr.MAX_REORDER_SEGMENTS + 1)
    assert table.counters["reorder_drops"] == 1
    assert table.counters["gaps"] == 1
    assert table.held_bytes == 0


def test_held_bytes_are_bounded_per_direction():
    table, out = FlowTable(), []
    open_flow(table, out)
    piece = b"y" * 60_000
    for i in range(1, 40):  # 2.3 MB, all after a hole at 1001
        table.feed(seg(1001 + i * len(piece), piece), out)
        assert table.held_bytes <= tr.MAX_REORDER_BYTES + len(piece)
    assert table.counters["reorder_drops"] >= 1


def test_far_ahead_segment_is_a_gap_not_held():
    table, out = FlowTable(), []
    open_flow(table, out)
    table.feed(seg(1001 + tr.MAX_REORDER_WINDOW + 1, b"junk"), out)
    assert out[-1].gap and out[-1].data == b"junk"
    assert table.held_bytes == 0


def test_syn_flood_is_bounded(monkeypatch):
    monkeypatch.setattr(tr, "MAX_FLOWS", 100)
    table, out = FlowTable(), []
    for port in range(1000, 1500):
        table.feed(seg(1, flags=SYN, src=Endpoint("10.0.0.1", port)), out)
    assert len(table) == 100
    assert table.counters["evicted_connections"] == 400
    assert sum(isinstance(e, StreamClosed) for e in out) == 400


def test_port_scan_and_stray_acks_create_nothing():
    table, out = FlowTable(), []
    table.feed(seg(1, flags=RST | ACK), out)
    table.feed(seg(1, flags=ACK), out)
    table.feed(seg(1, flags=FIN | ACK), out)
    assert len(table) == 0 and out == []


def test_ignored_flow_drops_bytes_and_still_closes():
    table, out = FlowTable(), []
    open_flow(table, out)
    table.feed(seg(1001, b"abc"), out)
    flow_id = out[0].flow_id
    table.feed(seg(1010, b"held"), out)
    table.ignore(flow_id)
    assert table.held_bytes == 0
    table.feed(seg(1004, b"more" * 1000), out)
    assert stream_of(out) == b"abc"
    assert table.counters["ignored_bytes"] == 4000
    table.feed(seg(9999, flags=FIN | ACK), out)
    table.feed(seg(5001, flags=FIN | ACK, src=SERVER, dst=CLIENT), out)
    assert isinstance(out[-1], StreamClosed)


def test_close_all_delivers_held_data_after_a_gap():
    table, out = FlowTable(), []
    open_flow(table, out)
    table.feed(seg(1001, b"ab"), out)
    table.feed(seg(1010, b"tail"), out)
    table.close_all(99, out)
    data = [e for e in out if isinstance(e, StreamData)]
    assert [(d.data, d.gap) for d in data] == [(b"ab", False), (b"tail", True)]
    assert isinstance(out[-1], StreamClosed) and out[-1].reason == "end"


def test_idle_flows_expire():
    table, out = FlowTable(), []
    open_flow(table, out)
    table.expire(1 + tr.FLOW_IDLE_TIMEOUT_NS - 1, out)
    assert len(table) == 1
    table.expire(1 + tr.FLOW_IDLE_TIMEOUT_NS, out)
    assert len(table) == 0 and out[-1].reason == "idle"


def test_fast_header_reader_agrees_with_scapy():
    from scapy.layers.inet import IP, TCP
    from scapy.layers.inet6 import IPv6
    from scapy.layers.l2 import Ether
    from scapy.packet import Raw

    from lumen_agent.capture.frames import ethernet_segment
    from lumen_agent.capture.packets import to_segment

    macs = {"src": "02:00:00:00:00:01", "dst": "02:00:00:00:00:02"}
    frames = [
        Ether(**macs) / IP(src="127.0.0.1", dst="127.0.0.1") / TCP(sport=5, dport=11434, seq=7, flags="PA")
        / Raw(b"POST /"),
        Ether(**macs) / IP(src="127.0.0.1", dst="127.0.0.1", options=b"\x01\x01\x01\x00")
        / TCP(sport=5, dport=8000, seq=2**32 - 1, flags="S", options=[("MSS", 1460)]),
        Ether(**macs) / IPv6(src="::1", dst="::ffff:127.0.0.1") / TCP(sport=6, dport=1234, flags="FA") / Raw(b"x"),
        Ether(**macs) / IP(src="192.0.2.1", dst="192.0.2.2") / TCP(sport=1, dport=4000) / Raw(b"y" * 10),
    ]
    for frame in frames:
        raw = bytes(frame)
        assert ethernet_segment(raw, 1) == to_segment(Ether(raw), 1)
    # Ethernet pads short frames: the IP length says where the segment ends.
    assert ethernet_segment(bytes(frames[3]) + b"\x00" * 6, 1).payload == b"y" * 10
    assert ethernet_segment(bytes(frames[0])[:50], 1) is None  # too short for the headers: scapy decides
    assert ethernet_segment(bytes(frames[0])[:-2], 1) == "truncated_packet"


def test_raw_ip_frames_and_scapy_fallback_give_the_same_segments():
    from scapy.layers.inet import IP, TCP
    from scapy.layers.inet6 import IPv6
    from scapy.layers.l2 import Dot1Q, Ether
    from scapy.packet import Raw

    from lumen_agent.capture.frames import frame_segment
    from lumen_agent.capture.packet_socket import ARPHRD_ETHER, ARPHRD_NONE
    from lumen_agent.capture.packets import to_segment
    from lumen_agent.capture.tcp_reassembly import Endpoint

    v4 = IP(src="10.0.0.1", dst="10.0.0.2") / TCP(sport=40000, dport=4000, seq=9, flags="PA") / Raw(b"GET /")
    v6 = IPv6(src="fd00::1", dst="fd00::2") / TCP(sport=40001, dport=8000, seq=3, flags="A") / Raw(b"HTTP")
    # A tun/WireGuard interface (ARPHRD_NONE): the frame starts at the IP header.
    for packet in (v4, v6):
        assert frame_segment(ARPHRD_NONE, bytes(packet), 5) == to_segment(packet.__class__(bytes(packet)), 5)
    segment = frame_segment(ARPHRD_NONE, bytes(v4), 5)
    assert (segment.src, segment.dst, segment.seq, segment.payload) == (
        Endpoint("10.0.0.1", 40000), Endpoint("10.0.0.2", 4000), 9, b"GET /")
    # A VLAN-tagged frame is not read by hand: scapy dissects it, with the same result.
    tagged = bytes(Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / Dot1Q(vlan=7) / v4)
    assert frame_segment(ARPHRD_ETHER, tagged, 5) == segment
    assert frame_segment(ARPHRD_ETHER, tagged[:20], 5) == "not_tcp"
    # A link type neither we nor scapy read is a reason to skip, not an exception.
    assert frame_segment(0xFFF0, bytes(v4), 5) == "undissectable"
