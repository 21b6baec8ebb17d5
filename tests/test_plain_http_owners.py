"""Socket owners found early: batched sock_diag, the SYN thread, identities read while the process runs."""

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lumen_agent.capture.conversations import Conversations
from lumen_agent.capture.sock_diag import pids_of_inodes, socket_inodes
from lumen_agent.capture.socket_owner import Owner, SocketOwners
from lumen_agent.capture.syn_watch import syn_filter
from lumen_agent.capture.tcp_reassembly import ACK, SYN, Endpoint, Segment
from lumen_agent.pipeline.attribution import Attribution, ProcessIdentity, ProcessInfo

CLIENT = Endpoint("127.0.0.1", 50000)
CLIENT2 = Endpoint("127.0.0.1", 50001)
SERVER = Endpoint("127.0.0.1", 11434)
REMOTE = Endpoint("192.0.2.7", 40000)


def identity(pid, start=1000.0, name="curl"):
    return ProcessIdentity(pid, start, ProcessInfo(process=name, exe=f"/usr/bin/{name}", user="root"))


class FakeDiag:
    """The fast path as a table: (local, remote) -> pid; records each batch asked."""

    def __init__(self, table):
        self.table = table
        self.batches = []

    def __call__(self, pairs, candidates):
        self.batches.append(list(pairs))
        return [self.table.get(pair) for pair in pairs]


def owners_with(table, wall_ns):
    diag = FakeDiag(table)
    scans = []

    def scan():
        scans.append(wall_ns[0])
        return {}

    owners = SocketOwners(scan=scan, diag=diag, identify=lambda pid: identity(pid, start=pid * 10.0))
    owners._wall_ns = lambda: wall_ns[0]
    return owners, diag, scans


def test_new_connections_are_resolved_in_one_batch_with_their_process():
    wall = [1_000]
    owners, diag, scans = owners_with({(CLIENT, SERVER): 4242, (CLIENT2, SERVER): 4343}, wall)
    # Two SYNs of one read, one of them twice (a retransmitted SYN), and a
    # remote client (its server's socket does not exist yet: left to the run loop).
    owners.resolve_new([(CLIENT, SERVER, 990), (CLIENT2, SERVER, 995), (CLIENT, SERVER, 996), (REMOTE, SERVER, 997)])
    assert diag.batches == [[(CLIENT, SERVER), (CLIENT2, SERVER)]]
    assert owners.counters["owner_early"] == 2 and owners.counters["owner_fast"] == 2
    # The run loop reads the same SYNs later (after the clients exited): cached, with who they were.
    wall[0] = 5_000
    found = owners.lookup(CLIENT, SERVER, seen_ns=990)
    assert found == Owner(4242, True) and found.identity == identity(4242, start=42420.0)
    assert owners.lookup(CLIENT2, SERVER, seen_ns=995).identity.pid == 4343
    assert len(diag.batches) == 1 and scans == []


def test_a_reused_four_tuple_is_looked_up_afresh():
    wall = [1_000]
    table = {(CLIENT, SERVER): 4242}
    owners, diag, _ = owners_with(table, wall)
    owners.resolve_new([(CLIENT, SERVER, 990)])
    # Later another process connects from the same port: the answer found at
    # 1000 is older than this connection's SYN and does not answer for it.
    table[(CLIENT, SERVER)] = 5151
    wall[0] = 3_000
    assert owners.lookup(CLIENT, SERVER, seen_ns=2_000) == Owner(5151, True)
    assert len(diag.batches) == 2


def test_a_connection_read_late_takes_its_own_answer_not_a_later_connections_on_the_same_four_tuple():
    # Loopback reuses a client port within a second or two (tcp_tw_reuse):
    # seen in test_plain_http_short_lived, two curls 1.5 s apart on one port.
    wall = [1_000]
    table = {(CLIENT, SERVER): 4242}
    owners, diag, _ = owners_with(table, wall)
    owners.resolve_new([(CLIENT, SERVER, 990)])  # the SYN thread, at the first connection's SYN
    table[(CLIENT, SERVER)] = 5151  # it ended; another process connects from the same port
    wall[0] = 2_600
    owners.resolve_new([(CLIENT, SERVER, 2_500)])
    # The run loop, held up meanwhile, reads both connections' SYNs only now.
    wall[0] = 9_000
    assert owners.lookup(CLIENT, SERVER, seen_ns=990) == Owner(4242, True)
    assert owners.lookup(CLIENT, SERVER, seen_ns=2_500) == Owner(5151, True)
    assert len(diag.batches) == 2


def test_a_local_client_gone_before_it_was_looked_up_is_counted_and_not_looked_for_again():
    wall = [1_000]
    owners, diag, scans = owners_with({}, wall)
    owners.resolve_new([(CLIENT, SERVER, 990)])
    assert owners.counters["owner_misses"] == 1 and owners.counters["owner_early"] == 0
    # The socket was gone at 1000, after its SYN at 990: no lookup and no
    # /proc scan could find it later.  The connection stays the client's, pid 0.
    assert owners.lookup(CLIENT, SERVER, seen_ns=990) is None
    assert len(diag.batches) == 1 and scans == []


def test_a_syn_flood_spends_the_lookup_budget_and_no_more():
    from lumen_agent.capture.socket_owner import MAX_DIAGS_PER_S

    wall = [1_000]
    owners, diag, _ = owners_with({}, wall)
    now = [50.0]
    owners._clock = lambda: now[0]
    owners._diag_refilled = now[0]
    flood = [(Endpoint("127.0.0.1", 1024 + i), SERVER, 990) for i in range(MAX_DIAGS_PER_S + 500)]
    owners.resolve_new(flood)
    assert sum(len(b) for b in diag.batches) == MAX_DIAGS_PER_S
    assert owners.counters["owner_diags_refused"] == 500


def test_run_loop_retry_asks_with_the_connections_first_packet_time():
    asked = []
    answers = [None, Owner(4242, True, identity(4242))]

    def owner_of(client, server, seen_ns, connecting):
        asked.append((seen_ns, connecting))
        return answers[len(asked) - 1]

    events = []
    conversations = Conversations({11434}, owner_of=owner_of)
    conversations.feed(Segment(10, CLIENT, SERVER, 100, SYN), events.append)
    conversations.feed(Segment(20, SERVER, CLIENT, 500, SYN | ACK), events.append)
    conversations.feed(Segment(30, CLIENT, SERVER, 101, ACK, b"POST /v1/chat/completions HTTP/1.1\r\n"), events.append)
    # Asked at the SYN (the handshake maybe not over), then again at the first bytes
    # (t=30) about the connection that opened at t=10.
    assert asked == [(10, True), (10, False)]
    assert [e.pid for e in events] == [4242]


def test_attribution_remembers_an_identity_read_elsewhere():
    child = subprocess.Popen(["sleep", "0"])
    child.wait()
    attribution = Attribution()
    # Read while it ran (by the sniffer's thread); it has exited since.
    assert attribution.remember(identity(child.pid, start=77.0)) is False
    assert attribution.lookup(child.pid).process == "curl"
    assert attribution.observe(child.pid).exe == "/usr/bin/curl"  # gone: what was read stays
    # Another process on the same pid (another start time) replaces it, and says so.
    assert attribution.remember(identity(child.pid, start=78.0, name="python3")) is True
    assert attribution.lookup(child.pid).process == "python3"


def test_identify_names_a_running_process_with_its_start_time():
    import psutil

    found = Attribution().identify(os.getpid())
    assert found.pid == os.getpid()
    assert found.start == psutil.Process().create_time()
    assert found.info.process == Path("/proc/self/comm").read_text().strip()
    assert Attribution().identify(2**22 + 12345) is None


def test_batched_sock_diag_and_one_proc_walk_find_live_sockets():
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen()
        clients = [socket.create_connection(srv.getsockname()) for _ in range(3)]
        try:
            pairs = [(c.getsockname(), srv.getsockname()) for c in clients]
            inodes = socket_inodes([*pairs, (("127.0.0.1", 1), ("127.0.0.1", 2))])
            assert inodes == [os.fstat(c.fileno()).st_ino for c in clients] + [None]
            assert pids_of_inodes(inodes[:3], candidates=[]) == dict.fromkeys(inodes[:3], os.getpid())
            owners = SocketOwners(scan=lambda: {})
            owners.resolve_new([(Endpoint(*c.getsockname()), Endpoint(*srv.getsockname()), 0) for c in clients])
            assert owners.counters["owner_early"] == 3
            found = owners.lookup(Endpoint(*clients[0].getsockname()), Endpoint(*srv.getsockname()), seen_ns=0)
            assert found.pid == os.getpid()
            assert found.identity.info.process == Path("/proc/self/comm").read_text().strip()
        finally:
            for c in clients:
                c.close()


def test_syn_filter_expressions():
    assert syn_filter([8000, 11434, 8000], loopback=False) == (
        "(tcp dst port 8000 or tcp dst port 11434) and "
        "((ip and tcp[13] & 0x12 == 0x02) or (ip6 and ip6[6] == 6 and ip6[53] & 0x12 == 0x02))")
    assert syn_filter([11434], loopback=True).startswith("inbound and (tcp dst port 11434) and ")


@pytest.mark.skipif(os.geteuid() != 0, reason="packet sockets need root (CAP_NET_RAW)")
def test_syn_thread_finds_a_client_that_exits_before_the_run_loop_reads_its_packets():
    """A real child process connects, sends, and exits; the capture's poll runs only afterwards."""
    from lumen_agent.capture.sniff import PlainHttpCapture

    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen()
        port = srv.getsockname()[1]
        events = []
        told = []
        capture = PlainHttpCapture(events.append, [port], interfaces=["lo"],
                                   on_process=lambda pid, who: told.append((pid, who)))
        capture.start()
        try:
            child = subprocess.Popen([sys.executable, "-c", (
                "import socket,sys,time; s=socket.create_connection(('127.0.0.1', int(sys.argv[1]))); "
                "s.sendall(b'POST /v1/chat/completions HTTP/1.1\\r\\n\\r\\n'); time.sleep(0.2); s.close()"), str(port)])
            assert child.wait(10) == 0
            conn, _ = srv.accept()
            conn.close()
            deadline = time.monotonic() + 10
            while capture.stats()["plain.owner_early"] < 1 and time.monotonic() < deadline:
                time.sleep(0.01)
            capture.poll(100)
            capture.poll(0)
        finally:
            capture.close()
    stats = capture.stats()
    assert stats["plain.syn_packets"] == 1 and stats["plain.owner_early"] == 1, stats
    assert stats["plain.owner_misses"] == 0
    assert [pid for pid, _ in told] == [child.pid]
    who = told[0][1]
    assert (who.pid, who.info.process, who.info.exe) == (child.pid, Path(sys.executable).name[:15],
                                                          os.path.realpath(sys.executable))
    assert {e.pid for e in events} == {child.pid}
    assert events[0].data == b"POST /v1/chat/completions HTTP/1.1\r\n\r\n"


def test_proc_walk_looks_at_the_newest_processes_first_across_a_pid_wrap(tmp_path):
    from lumen_agent.capture.sock_diag import newest_first

    (tmp_path / "sys" / "kernel").mkdir(parents=True)
    (tmp_path / "sys" / "kernel" / "pid_max").write_text("32768\n")
    # Pids wrapped: the last handed out is 120, so 118 and 100 are newer than 32000.
    (tmp_path / "sys" / "kernel" / "ns_last_pid").write_text("120\n")
    assert newest_first([1, 100, 118, 32000, 32767, 500], str(tmp_path)) == [118, 100, 1, 32767, 32000, 500]
    # No such files (another kernel): highest pid first.
    assert newest_first([1, 100, 500], str(tmp_path / "nowhere")) == [500, 100, 1]


@pytest.mark.skipif(os.geteuid() != 0, reason="packet sockets need root (CAP_NET_RAW)")
def test_syn_thread_follows_interfaces_and_stops_with_the_capture(monkeypatch):
    from lumen_agent.capture import sniff

    up = ["lo"]
    monkeypatch.setattr(sniff, "host_interfaces", lambda: list(up))
    capture = sniff.PlainHttpCapture(lambda event: None, [11434])
    capture.start()
    watcher = capture._watcher

    def sockets_held(n):
        deadline = time.monotonic() + 5
        while len(watcher._sockets) != n and time.monotonic() < deadline:
            time.sleep(0.01)
        return len(watcher._sockets)

    try:
        assert watcher._thread.is_alive() and sockets_held(1) == 1
        up.clear()
        capture._follow_interfaces()
        assert sockets_held(0) == 0  # the thread closed lo's SYN socket
        up.append("lo")
        capture._follow_interfaces()
        assert sockets_held(1) == 1
    finally:
        capture.close()
    assert not watcher._thread.is_alive() and watcher._sockets == {}
    capture.close()  # twice: harmless
