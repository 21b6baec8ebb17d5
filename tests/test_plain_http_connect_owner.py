"""Owners recorded in the kernel at connect() (bpf/connect_owner.c): the map's keys, the
lookup order in ``SocketOwners``, and the real BPF program naming a process that exited."""

import ipaddress
import os
import socket
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from lumen_agent.capture.connect_owner import ConnectOwners, owner_keys
from lumen_agent.capture.socket_owner import Owner, SocketOwners
from lumen_agent.capture.tcp_reassembly import Endpoint
from lumen_agent.pipeline.attribution import ProcessIdentity, ProcessInfo

CLIENT = Endpoint("127.0.0.1", 50000)
SERVER = Endpoint("127.0.0.1", 11434)


def test_an_ipv4_connection_is_looked_for_as_ipv4_then_as_v4_mapped_ipv6():
    v4, mapped = owner_keys(CLIENT, SERVER)
    assert (v4.family, v4.sport, v4.dport) == (socket.AF_INET, 50000, 11434)
    assert bytes(v4.saddr) == bytes([127, 0, 0, 1]) + bytes(12)
    assert (mapped.family, mapped.sport, mapped.dport) == (socket.AF_INET6, 50000, 11434)
    assert bytes(mapped.daddr) == ipaddress.IPv6Address("::ffff:127.0.0.1").packed
    (v6,) = owner_keys(Endpoint("::1", 40000), Endpoint("::1", 8000))
    assert (v6.family, bytes(v6.saddr), v6.sport) == (socket.AF_INET6, ipaddress.IPv6Address("::1").packed, 40000)


def test_the_kernels_answer_comes_first_and_saves_the_proc_walk():
    curl = ProcessIdentity(4242, 1000.0, ProcessInfo(process="curl"))
    asked, diags = [], []

    def kernel(client, server, seen_ns):
        asked.append((client, server, seen_ns))
        return curl if client == CLIENT else None

    def diag(pairs, candidates):
        diags.append(list(pairs))
        return [None] * len(pairs)

    owners = SocketOwners(scan=dict, diag=diag, identify=lambda pid: None, kernel=kernel)
    other = Endpoint("127.0.0.1", 50001)
    # At the SYN the kernel may not have filed ``other`` yet (its handshake not
    # over): handed back to be asked again, not looked for in sock_diag.
    assert owners.resolve_new([(CLIENT, SERVER, 10), (other, SERVER, 11)]) == [(other, SERVER, 11)]
    assert diags == []
    assert owners.lookup(CLIENT, SERVER, seen_ns=10) == Owner(4242, True, curl)
    assert owners.lookup(CLIENT, SERVER, seen_ns=10).identity.info.process == "curl"
    assert owners.counters["owner_kernel"] == 1
    assert (owners.counters["owner_kernel_pending"], owners.counters["owner_kernel_misses"]) == (1, 0)
    # Still not filed when the handshake has had its time: a miss, and only now sock_diag.
    assert owners.resolve_new([(other, SERVER, 11)], waited=True) == []
    assert diags == [[(other, SERVER)]]
    assert (owners.counters["owner_kernel_pending"], owners.counters["owner_kernel_misses"]) == (1, 1)
    assert owners.counters["owner_misses"] == 1
    # The SYN thread's miss is not final while the kernel may still answer (the
    # handshake ended after the SYN thread looked): the run loop asks again.
    late = ProcessIdentity(4343, 1000.0, ProcessInfo(process="python3"))
    kernel_table = {other: late}
    owners.kernel = lambda client, server, seen_ns: kernel_table.get(client)
    assert owners.lookup(other, SERVER, seen_ns=11) == Owner(4343, True, late)


def test_the_run_loop_at_a_syn_the_kernel_has_not_filed_waits_for_the_first_bytes():
    """The kernel files a connection when the client's handshake ends; a lookup
    at the SYN can come first (a client descheduled inside connect()).  Then no
    sock_diag and no scan: the lookup at the first bytes gets the kernel's answer."""
    curl = ProcessIdentity(4242, 1000.0, ProcessInfo(process="curl"))
    kernel_table, diags, scans = {}, [], []

    def diag(pairs, candidates):
        diags.append(list(pairs))
        return [None] * len(pairs)

    def scan():
        scans.append(1)
        return {}

    owners = SocketOwners(scan=scan, diag=diag, identify=lambda pid: None,
                          kernel=lambda client, server, seen_ns: kernel_table.get(client))
    assert owners.lookup(CLIENT, SERVER, seen_ns=10, connecting=True) is None
    assert (diags, scans) == ([], [])
    kernel_table[CLIENT] = curl  # the handshake ended
    assert owners.lookup(CLIENT, SERVER, seen_ns=10) == Owner(4242, True, curl)
    assert {k: owners.counters[k] for k in ("owner_kernel", "owner_kernel_pending", "owner_kernel_misses",
                                            "owner_fast", "owner_misses", "owner_scans")} == {
        "owner_kernel": 1, "owner_kernel_pending": 1, "owner_kernel_misses": 0,
        "owner_fast": 0, "owner_misses": 0, "owner_scans": 0}
    # Without the kernel's map a lookup at the SYN goes on to sock_diag as before.
    plain = SocketOwners(scan=scan, diag=diag, identify=lambda pid: None)
    assert plain.lookup(CLIENT, SERVER, seen_ns=10, connecting=True) is None
    assert diags == [[(CLIENT, SERVER)]]


def test_the_syn_thread_asks_the_kernel_again_until_the_handshake_has_ended(monkeypatch):
    from lumen_agent.capture import syn_watch
    from lumen_agent.capture.socket_owner import HANDSHAKE_WAIT_S

    curl = ProcessIdentity(4242, 1000.0, ProcessInfo(process="curl"))
    kernel_table, diags, asked = {}, [], []

    def kernel(client, server, seen_ns):
        asked.append((client, round((now[0] - 100.0) * 1000)))
        return kernel_table.get(client)

    def diag(pairs, candidates):
        diags.append(list(pairs))
        return [None] * len(pairs)

    owners = SocketOwners(scan=dict, diag=diag, identify=lambda pid: None, kernel=kernel)
    watcher = syn_watch.SynWatcher(owners)
    now = [100.0]
    monkeypatch.setattr(syn_watch.time, "monotonic", lambda: now[0])
    slow = Endpoint("127.0.0.1", 50002)
    watcher._resolve([(CLIENT, SERVER, 10), (slow, SERVER, 11)])
    assert [p.flow for p in watcher._pending] == [(CLIENT, SERVER, 10), (slow, SERVER, 11)]
    assert watcher._timeout() == pytest.approx(syn_watch.PENDING_POLL_S)
    kernel_table[CLIENT] = curl  # CLIENT's handshake ends
    # The thread's turns, a millisecond apart, for the whole wait.
    for _ in range(round(HANDSHAKE_WAIT_S * 1000)):
        now[0] += 0.001
        watcher._ask_pending()
        if now[0] - 100.0 < 0.0015:
            assert [p.flow for p in watcher._pending] == [(slow, SERVER, 11)]
            assert owners.lookup(CLIENT, SERVER, seen_ns=10) == Owner(4242, True, curl)
            assert diags == []
    # ``slow`` was never filed (say its SYN went unanswered): asked after 1, 3, 7 ... 63 ms,
    # and after HANDSHAKE_WAIT_S (100 ms) for the last time, then sock_diag once.
    assert [ms for client, ms in asked if client == slow] == [0, 1, 3, 7, 15, 31, 63, 100]
    assert watcher._pending == []
    assert diags == [[(slow, SERVER)]]
    assert (owners.counters["owner_kernel"], owners.counters["owner_kernel_misses"]) == (1, 1)
    watcher.close()


class Ok(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("content-length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args):
        pass


@pytest.mark.ebpf
@pytest.mark.skipif(os.geteuid() != 0, reason="BPF programs need root")
def test_the_kernel_names_a_curl_that_has_exited_and_a_live_process_from_proc():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Ok)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    table = ConnectOwners([port])
    table.start()
    try:
        curl = subprocess.Popen(["curl", "-sS", "-o", "/dev/null", "-w", "%{local_port}", f"http://127.0.0.1:{port}/"],
                                stdout=subprocess.PIPE, text=True)
        local_port, _ = curl.communicate(timeout=30)
        assert curl.returncode == 0
        seen = time.time_ns()
        client = Endpoint("127.0.0.1", int(local_port))
        # curl has exited: pid and comm from the kernel, nothing else readable.
        gone = table.owner(client, Endpoint("127.0.0.1", port), seen)
        assert gone is not None
        assert (gone.pid, gone.info.process, gone.info.exe, gone.info.user) == (curl.pid, "curl", None, None)
        # A connection seen before the map's entry was written belongs to another connection.
        assert table.owner(client, Endpoint("127.0.0.1", port), seen - 10**9) is None

        # This process, alive, over IPv6 with a v4-mapped address: /proc fills in the rest.
        with socket.socket(socket.AF_INET6) as s6:
            s6.connect(("::ffff:127.0.0.1", port))
            me = table.owner(Endpoint("127.0.0.1", s6.getsockname()[1]), Endpoint("127.0.0.1", port), time.time_ns())
        assert me is not None and me.pid == os.getpid()
        assert me.info.exe == os.path.realpath(f"/proc/{os.getpid()}/exe") and me.info.user == "root"
        # A port nobody asked for is not recorded.
        with socket.create_connection(("127.0.0.1", server.server_address[1])) as s, \
                socket.create_server(("127.0.0.1", 0)) as other:
            with socket.create_connection(other.getsockname()) as o:
                assert table.owner(Endpoint("127.0.0.1", o.getsockname()[1]),
                                   Endpoint("127.0.0.1", other.getsockname()[1]), time.time_ns()) is None
            assert table.owner(Endpoint("127.0.0.1", s.getsockname()[1]), Endpoint("127.0.0.1", port),
                               time.time_ns()).pid == os.getpid()
    finally:
        table.close()
        server.shutdown()


def test_an_exec_read_after_the_process_exited_keeps_what_a_capture_source_handed_in():
    from lumen_agent.pipeline.attribution import Attribution

    attribution = Attribution()
    gone = subprocess.Popen(["true"])
    gone.wait()
    # The sniffer handed in the curl it found at connect(); the eBPF exec record comes later.
    attribution.remember(ProcessIdentity(gone.pid, 1000.0, ProcessInfo(process="curl")))
    attribution.forget(gone.pid)
    assert attribution.lookup(gone.pid).process == "curl"
    # A live process that exec'd is read again from /proc.
    attribution.remember(ProcessIdentity(os.getpid(), 1000.0, ProcessInfo(process="bash")))
    attribution.forget(os.getpid())
    assert attribution.lookup(os.getpid()).process == open("/proc/self/comm").read().strip()


def test_a_flood_of_syns_nobody_answers_keeps_the_pending_list_short():
    from lumen_agent.capture import syn_watch

    diags = []

    def diag(pairs, candidates):
        diags.append(list(pairs))
        return [None] * len(pairs)

    owners = SocketOwners(scan=dict, diag=diag, identify=lambda pid: None,
                          kernel=lambda client, server, seen_ns: None)
    watcher = syn_watch.SynWatcher(owners)
    flood = [(Endpoint("127.0.0.1", 20000 + i), SERVER, i) for i in range(syn_watch.MAX_PENDING + 6)]
    watcher._resolve(flood)
    # The newest MAX_PENDING wait for their handshake; the 6 oldest go to sock_diag at once.
    assert [p.flow for p in watcher._pending] == flood[6:]
    assert diags == [[(client, server) for client, server, _seen in flood[:6]]]
    assert owners.counters["owner_kernel_misses"] == 6
    watcher.close()
