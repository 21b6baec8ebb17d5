"""The plain-HTTP sniffer's pure parts: whose side a connection is seen from, socket-owner scans, config."""

import pytest
from typer.testing import CliRunner

from lumen_agent import config as config_mod
from lumen_agent.capture.conversations import CONN_ID_BASE, Conversations, capture_of_conn
from lumen_agent.capture.socket_owner import MAX_SCANS_PER_S, Owner, SocketOwners
from lumen_agent.capture.tcp_reassembly import ACK, FIN, SYN, Endpoint, Segment
from lumen_agent.cli import app
from lumen_agent.pipeline.events import Direction, EventFlag

CLIENT = Endpoint("127.0.0.1", 50000)
SERVER = Endpoint("127.0.0.1", 11434)


def call(conversations, events):
    """A request, a response and both FINs."""
    for seg in (
        Segment(1, CLIENT, SERVER, 100, SYN),
        Segment(2, SERVER, CLIENT, 500, SYN | ACK),
        Segment(3, CLIENT, SERVER, 101, ACK, b"POST /api/chat HTTP/1.1\r\n"),
        Segment(4, SERVER, CLIENT, 501, ACK, b"HTTP/1.1 200 OK\r\n"),
        Segment(5, CLIENT, SERVER, 126, FIN | ACK),
        Segment(6, SERVER, CLIENT, 518, FIN | ACK),
    ):
        conversations.feed(seg, events.append)


@pytest.mark.parametrize(("owner", "pid", "request_direction"), [
    (Owner(4242, True), 4242, Direction.SEND),  # the client is local (both ends local: the client's call)
    (Owner(77, False), 77, Direction.RECV),  # only the server is local: its inbound side, dropped later
    (None, 0, Direction.SEND),  # no local owner: the client's view, unattributed
])
def test_connection_is_seen_from_its_local_owner(owner, pid, request_direction):
    asked = []

    def owner_of(client, server, seen_ns, connecting):
        asked.append((client, server, seen_ns))
        return owner

    events = []
    call(Conversations({11434}, owner_of=owner_of), events)
    assert asked[0] == (CLIENT, SERVER, 1)
    request, response, close = events
    assert (request.pid, request.direction, request.data) == (pid, request_direction, b"POST /api/chat HTTP/1.1\r\n")
    assert response.direction is not request_direction
    assert close.flags == EventFlag.CLOSE and close.data == b""
    assert request.conn == response.conn == close.conn >= CONN_ID_BASE
    assert capture_of_conn(request.conn) == "plain" and capture_of_conn(0x7F00_1234_5678) is None


def test_owner_scans_are_rate_limited_and_not_repeated_for_old_packets():
    now = [100.0]
    wall = [1_000]
    scans = []
    remote = Endpoint("192.0.2.7", 40000)
    table = {(CLIENT, SERVER): 4242, (SERVER, remote): 77}

    def scan():
        scans.append(wall[0])
        return dict(table)

    owners = SocketOwners(scan=scan, clock=lambda: now[0], diag=lambda pairs, candidates: [None] * len(pairs))
    owners._wall_ns = lambda: wall[0]
    assert owners.lookup(CLIENT, SERVER, seen_ns=999) == Owner(4242, True)
    # A remote client: the local server's side (inbound; the pipeline drops it).
    assert owners.lookup(remote, SERVER, seen_ns=999) == Owner(77, False)
    # A client on this host is never taken for the server's side, even when
    # only the other socket is known (its process has exited): unattributed.
    assert owners.lookup(SERVER, CLIENT, seen_ns=999) is None
    other = Endpoint("127.0.0.1", 50001)
    # A packet older than the last scan: that scan would have seen its socket.
    assert owners.lookup(other, SERVER, seen_ns=900) is None
    assert len(scans) == 1
    # Newer packets: scans, until the budget is spent.
    for _ in range(MAX_SCANS_PER_S * 2):
        wall[0] += 10
        owners.lookup(other, SERVER, seen_ns=wall[0] - 1)
    assert len(scans) == MAX_SCANS_PER_S
    # 40 asked, 19 scans left in the first second's budget (one went to the first lookup)
    assert owners.counters["owner_scans_refused"] == 2 * MAX_SCANS_PER_S - (MAX_SCANS_PER_S - 1)
    now[0] += 1.0  # a second later the budget is back
    wall[0] += 10
    table[(other, SERVER)] = 99
    assert owners.lookup(other, SERVER, seen_ns=wall[0] - 1) == Owner(99, True)


def write(tmp_path, text):
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


def test_plain_http_ports_config(tmp_path):
    assert config_mod.load(write(tmp_path, "")).plain_http_ports == (11434, 8000, 8080, 1234, 4000)
    config = config_mod.load(write(tmp_path, "[capture]\nplain_http_ports = [11434, 9000]\n"))
    assert config.plain_http_ports == (11434, 9000)
    again = config_mod.load(write(tmp_path, config_mod.as_toml(config)))
    assert again.plain_http_ports == (11434, 9000)
    assert config_mod.load(write(tmp_path, "[capture]\nplain_http_ports = []\n")).plain_http_ports == ()
    for bad in ('["11434"]', "[0]", "[70000]", "[true]", "11434"):
        with pytest.raises(config_mod.ConfigError, match="plain_http_ports"):
            config_mod.load(write(tmp_path, f"[capture]\nplain_http_ports = {bad}\n"))


def test_capture_plain_without_ports_is_a_clean_error(tmp_path, monkeypatch):
    monkeypatch.setenv("LUMEN_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("LUMEN_RUNTIME_DIR", str(tmp_path / "run"))
    path = write(tmp_path, "[capture]\nplain_http_ports = []\n")
    result = CliRunner().invoke(app, ["run", "--capture", "plain", "--config", str(path),
                                      "--db", str(tmp_path / "x.duckdb")])
    assert result.exit_code == 2
    assert result.stderr.startswith("error: --capture plain has no ports to sniff")


class FakeSource:
    def __init__(self, fail_start=False, fail_poll=False):
        self.fail_start, self.fail_poll = fail_start, fail_poll
        self.polls, self.ignored, self.excluded = [], [], []

    def start(self):
        if self.fail_start:
            raise OSError("no CAP_NET_RAW")

    def poll(self, timeout_ms=100):
        self.polls.append(timeout_ms)
        if self.fail_poll:
            raise RuntimeError("bug")

    def ignore_connection(self, pid, conn):
        self.ignored.append((pid, conn))

    def exclude_pid(self, pid):
        self.excluded.append(pid)

    def include_pid(self, pid):
        pass

    def stats(self):
        return {"events": 5, "plain.packets": 9}

    def targets(self):
        return ["t"]

    def close(self):
        pass


def test_combined_capture_routes_and_survives_its_secondary():
    from lumen_agent.capture.combined import PRIMARY_POLL_MS, CombinedCapture
    from lumen_agent.capture.conversations import is_sniffed_conn

    primary, secondary = FakeSource(), FakeSource(fail_poll=True)
    both = CombinedCapture(primary, secondary, secondary_name="plain-HTTP", secondary_conn=is_sniffed_conn)
    both.start()
    both.poll(100)
    both.poll(100)
    assert primary.polls == [PRIMARY_POLL_MS] * 2 and secondary.polls == [0, 0]
    both.ignore_connection(1, 0x7F00_0000_1000)
    both.ignore_connection(1, CONN_ID_BASE + 3)
    assert primary.ignored == [(1, 0x7F00_0000_1000)] and secondary.ignored == [(1, CONN_ID_BASE + 3)]
    both.exclude_pid(7)
    assert primary.excluded == secondary.excluded == [7]
    assert both.stats() == {"events": 5, "plain.packets": 9, "secondary_faults": 2}
    assert both.targets() == ["t", "t"]

    lonely = CombinedCapture(FakeSource(), FakeSource(fail_start=True), secondary_name="plain-HTTP",
                             secondary_conn=is_sniffed_conn)
    lonely.start()
    lonely.poll(100)
    assert lonely.targets() == ["t"] and lonely.secondary_error == "no CAP_NET_RAW"


def test_sniffer_counters_are_metrics_only_while_it_runs():
    from lumen_agent.outputs.metrics import Metrics

    base = {"pid": 1, "updated": 0, "capture": {"events": 1}, "pipeline": {}, "store": {}, "targets": []}
    assert "lumen_plain_packets_total" not in Metrics().render(base)
    sniffing = {**base, "capture": {"events": 1, "plain.packets": 31, "plain.bytes": 4096, "plain.connections": 2,
                                    "plain.reorder_drops": 1, "plain.kernel_drops": 0}}
    lines = Metrics().render(sniffing).splitlines()
    assert "lumen_plain_packets_total 31.0" in lines
    assert "lumen_plain_bytes_total 4096.0" in lines
    assert "lumen_plain_connections_total 2.0" in lines
    assert "lumen_plain_reorder_drops_total 1.0" in lines
    assert "lumen_plain_kernel_drops_total 0.0" in lines


@pytest.mark.skipif(__import__("os").geteuid() != 0, reason="packet sockets need root")
def test_sniffer_follows_interfaces_that_come_and_go(monkeypatch):
    from lumen_agent.capture import sniff

    up = ["lo"]
    monkeypatch.setattr(sniff, "host_interfaces", lambda: list(up))
    capture = sniff.PlainHttpCapture(lambda event: None, [11434])
    capture.start()
    try:
        assert capture.attached == ["lo"]
        up.clear()
        capture._follow_interfaces()
        assert capture.attached == [] and capture.targets() == []
        up.append("lo")
        capture._follow_interfaces()
        assert capture.attached == ["lo"] and capture.targets() == ["plain HTTP on lo ports 11434"]
    finally:
        capture.close()


def test_fast_path_finds_a_live_socket_and_its_process():
    import os
    import socket

    from lumen_agent.capture.sock_diag import pid_of_inode, socket_inode

    for family, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
        with socket.socket(family) as srv:
            srv.bind((host, 0))
            srv.listen()
            with socket.socket(family) as client:
                client.connect(srv.getsockname()[:2])
                accepted, _ = srv.accept()
                with accepted:
                    local, remote = client.getsockname()[:2], srv.getsockname()[:2]
                    inode = socket_inode(local, remote)
                    assert inode == os.fstat(client.fileno()).st_ino
                    assert socket_inode(remote, local) == os.fstat(accepted.fileno()).st_ino
                    assert pid_of_inode(inode, [os.getpid()]) == os.getpid()
                    owners = SocketOwners(scan=lambda: {})
                    found = owners.lookup(Endpoint(host, local[1]), Endpoint(host, remote[1]), seen_ns=0)
                    assert found == Owner(os.getpid(), True)
                    assert owners.counters["owner_fast"] == 1 and owners.counters["owner_scans"] == 0
    assert socket_inode(("127.0.0.1", 1), ("127.0.0.1", 2)) is None
