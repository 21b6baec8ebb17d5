"""`lumen-agent replay FILE.pcap|FILE.pcapng`: tcpdump records real plain-HTTP calls, replay makes the rows.

Bad captures (truncated, something else entirely, garbage after a pcap
header, a flood of non-HTTP bytes) give counted skips and no crash.
"""

import struct
from decimal import Decimal
from pathlib import Path

import duckdb
import pytest
from pcap_tools import Tcpdump
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import Ether
from scapy.packet import Raw
from scapy.utils import PcapReader, wrpcap, wrpcapng
from support import clients
from support import fake_provider as fp
from typer.testing import CliRunner

from lumen_agent.cli import app

# Explicit addresses: a bare Ether() would make scapy ARP for the destination.
MAC_A, MAC_B = "02:00:00:00:00:01", "02:00:00:00:00:02"

COLUMNS = ("provider", "endpoint", "request_model", "model", "streaming", "status_code", "input_tokens",
           "cache_read_tokens", "output_tokens", "cost_usd", "unpriced", "capture", "pid", "server_port")


@pytest.fixture(scope="module")
def recorded(tmp_path_factory, certs):
    """A tcpdump capture of three real calls to the plain-HTTP fake provider."""
    work = tmp_path_factory.mktemp("pcap")
    path = work / "calls.pcap"
    with fp.spawn(None, plain=True, workdir=work) as server, Tcpdump(path, server.port):
        results = [
            clients.curl(server.url, certs, "openai.chat"),
            clients.curl(server.url, certs, "ollama.chat.stream"),
            clients.curl_get(server.url, certs, "/healthz"),  # not an LLM call: no row
        ]
    assert all(r.ok for r in results), [r.describe() for r in results]
    return path, server.port


def replay(path: Path, tmp_path: Path, monkeypatch, *extra: str):
    monkeypatch.setenv("LUMEN_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("LUMEN_CONFIG_DIR", str(tmp_path / "config"))
    db = tmp_path / f"{path.stem}.duckdb"
    result = CliRunner().invoke(app, ["replay", str(path), "--db", str(db), *extra])
    assert result.exit_code == 0, result.output
    if not db.exists():
        return result, []
    with duckdb.connect(str(db), read_only=True) as con:
        rows = con.execute(f"SELECT {', '.join(COLUMNS)} FROM llm_calls ORDER BY ts_start").fetchall()
    return result, [dict(zip(COLUMNS, row, strict=True)) for row in rows]


def expected_rows(port: int) -> list[dict]:
    # gpt-4o-mini: 276 uncached x $0.15/M + 1024 cached x $0.075/M + 12 out x $0.60/M
    #   = 0.0000414 + 0.0000768 + 0.0000072 = $0.0001254
    # The provider is named by the response headers (openai-organization): openai.
    # llama3.2 on a local server: no public price -> tokens kept, cost NULL, unpriced.
    return [
        dict(provider="openai", endpoint="chat.completions", request_model="gpt-4o-mini",
             model="gpt-4o-mini-2024-07-18", streaming=False, status_code=200, input_tokens=1300,
             cache_read_tokens=1024, output_tokens=12, cost_usd=Decimal("0.00012540"), unpriced=False,
             capture="pcap", pid=0, server_port=port),
        dict(provider="ollama", endpoint="chat", request_model="llama3.2", model="llama3.2", streaming=True,
             status_code=200, input_tokens=31, cache_read_tokens=0, output_tokens=12, cost_usd=None,
             unpriced=True, capture="pcap", pid=0, server_port=port),
    ]


def test_tcpdump_capture_replays_into_exact_rows(recorded, tmp_path, monkeypatch):
    path, port = recorded
    result, rows = replay(path, tmp_path, monkeypatch)
    assert rows == expected_rows(port)
    packets = sum(1 for _ in PcapReader(str(path)))
    assert result.stdout.startswith(f"replayed {packets} packets, 3 TCP connections, ")
    assert "2 calls (1 unpriced), 2 rows written, 0 bytes/items skipped" in result.stdout


def test_pcapng_gives_the_same_rows(recorded, tmp_path, monkeypatch):
    path, port = recorded
    ng = tmp_path / "calls.pcapng"
    wrpcapng(str(ng), list(PcapReader(str(path))))
    assert ng.read_bytes()[:4] == b"\x0a\x0d\x0d\x0a"
    _, rows = replay(ng, tmp_path, monkeypatch)
    assert rows == expected_rows(port)


def test_packets_out_of_order_and_duplicated_give_the_same_rows(recorded, tmp_path, monkeypatch):
    path, port = recorded
    packets = list(PcapReader(str(path)))
    # Swap neighbours and send every fifth packet twice, as a lossy path would.
    shuffled = []
    for i in range(0, len(packets) - 1, 2):
        shuffled += [packets[i + 1], packets[i]]
    shuffled += packets[len(shuffled):]
    shuffled += packets[::5]
    messy = tmp_path / "messy.pcap"
    wrpcap(str(messy), shuffled)
    _, rows = replay(messy, tmp_path, monkeypatch)
    assert rows == expected_rows(port)


def test_truncated_capture_is_counted_not_fatal(recorded, tmp_path, monkeypatch):
    path, port = recorded
    data = path.read_bytes()
    cut = tmp_path / "cut.pcap"
    cut.write_bytes(data[: len(data) - 37])  # ends inside the last packet
    result, rows = replay(cut, tmp_path, monkeypatch)
    # The last packet is the final ACK: both calls are whole before it.
    assert rows == expected_rows(port)
    assert "replayed" in result.stdout


def test_capture_of_something_else(tmp_path, monkeypatch):
    other = tmp_path / "dns.pcap"
    wrpcap(str(other), [Ether(src=MAC_A, dst=MAC_B) / IP(src="192.0.2.1", dst="192.0.2.2") / UDP(sport=5353, dport=53) / Raw(b"x" * 40)
                        for _ in range(10)])
    result, rows = replay(other, tmp_path, monkeypatch)
    assert rows == []
    assert result.stdout == ("replayed 10 packets, 0 TCP connections, 0 events: 0 calls (0 unpriced), "
                             "0 rows written, 10 bytes/items skipped\n")
    assert "skipped packet_not_tcp" in result.stderr


def test_garbage_after_a_pcap_header(tmp_path, monkeypatch):
    bad = tmp_path / "bad.pcap"
    header = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)
    bad.write_bytes(header + struct.pack("<IIII", 1, 0, 4_000_000_000, 4_000_000_000) + b"\xff" * 100)
    result, rows = replay(bad, tmp_path, monkeypatch)
    assert rows == []
    # scapy hands back the 100 bytes there are as one packet: not TCP, skipped.
    assert result.stdout == ("replayed 1 packets, 0 TCP connections, 0 events: 0 calls (0 unpriced), "
                             "0 rows written, 1 bytes/items skipped\n")


def test_flood_of_non_http_bytes_on_a_connection(tmp_path, monkeypatch):
    client, server = ("192.0.2.1", 40000), ("192.0.2.2", 11434)
    packets = [Ether(src=MAC_A, dst=MAC_B) / IP(src=client[0], dst=server[0]) / TCP(sport=client[1], dport=server[1], flags="S",
                                                                 seq=100)]
    seq = 101
    for _ in range(200):  # 200 x 1400 bytes of junk, no HTTP start line anywhere
        packets.append(Ether(src=MAC_A, dst=MAC_B) / IP(src=client[0], dst=server[0]) /
                       TCP(sport=client[1], dport=server[1], flags="A", seq=seq) / Raw(b"\x00junk" * 280))
        seq += 1400
    flood = tmp_path / "flood.pcap"
    wrpcap(str(flood), packets)
    result, rows = replay(flood, tmp_path, monkeypatch)
    assert rows == []
    # Past the pipeline's MAX_SNIFF_BYTES without a start line the connection
    # is given up on (counted as connections.non_http_connection, not a skip).
    assert result.stdout == ("replayed 201 packets, 1 TCP connections, 201 events: 0 calls (0 unpriced), "
                             "0 rows written, 0 bytes/items skipped\n")


def test_local_model_priced_by_an_internal_rate(recorded, tmp_path, monkeypatch):
    """The chargeback example of docs/plain-http.md: an override row for provider ollama."""
    path, port = recorded
    prices = tmp_path / "prices.toml"
    prices.write_text('[[price]]\nprovider = "ollama"\nmodel = "llama3.2"\ninput = "0.05"\noutput = "0.20"\n'
                      'source = "internal chargeback"\n')
    result, rows = replay(path, tmp_path, monkeypatch, "--prices", str(prices))
    want = expected_rows(port)
    # 31 in x $0.05/M + 12 out x $0.20/M = 0.00000155 + 0.0000024 = $0.00000395
    want[1].update(cost_usd=Decimal("0.00000395"), unpriced=False)
    assert rows == want
    assert "2 calls (0 unpriced)" in result.stdout
