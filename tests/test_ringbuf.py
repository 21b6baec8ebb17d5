"""The mapped ring buffer reader (capture/ringbuf.py) with real probes: a small
ring that wraps around many times still delivers every byte, in order, once.

A worker process makes SSL_write calls of many sizes (Python ssl over memory
BIOs: real OpenSSL calls, no sockets) in rounds; the test reads each round
before releasing the next, so the 256 KiB ring never overflows but wraps
about 80 times, with records of both sizes (small and 16 KiB) straddling
its end.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

import pytest
from ebpf_env import ebpf_skip_reason  # noqa: E402

from lumen_agent.pipeline.events import Direction

pytestmark = pytest.mark.ebpf

_reason = ebpf_skip_reason("openssl")
if _reason:
    pytest.skip(_reason, allow_module_level=True)

from lumen_agent.capture.ebpf import CaptureOptions, EbpfCapture  # noqa: E402

# A round is written whole before the test reads it: at most 10 calls of up to
# 20 KiB, two records each (16 KiB + 1 KiB reservations), ~175 KB, fits.
ROUNDS = 120
PER_ROUND = 10
RING_PAGES = 64  # 256 KiB

WORKER = textwrap.dedent(
    """
    import ssl, sys
    cert, key, rounds, per_round = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    sctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER); sctx.load_cert_chain(cert, key)
    cctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT); cctx.check_hostname = False
    cctx.verify_mode = ssl.CERT_NONE
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    cli = cctx.wrap_bio(c_in, c_out); srv = sctx.wrap_bio(s_in, s_out, server_side=True)
    for _ in range(50):
        for side in (cli, srv):
            try: side.do_handshake()
            except ssl.SSLWantReadError: pass
        d = c_out.read()
        if d: s_in.write(d)
        d = s_out.read()
        if d: c_in.write(d)
    print("ready", flush=True)
    for r in range(rounds):
        sys.stdin.readline()
        for i in range(per_round):
            n = r * per_round + i
            # sizes from 1 byte to 20 KiB: one small record, or a 16 KiB one and a small one
            size = 1 + (n * 7919) % 20480
            cli.write(bytes([65 + n % 26]) * size)
            s_in.write(c_out.read())
        print("done", flush=True)
    """
)


def expected_payloads() -> list[bytes]:
    out = []
    for n in range(ROUNDS * PER_ROUND):
        size = 1 + (n * 7919) % 20480
        out.append(bytes([65 + n % 26]) * size)
    return out


@pytest.fixture(scope="module")
def cert(tmp_path_factory):
    d = tmp_path_factory.mktemp("tls")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(d / "k.pem"),
                    "-out", str(d / "c.pem"), "-days", "1", "-subj", "/CN=localhost"],
                   check=True, capture_output=True)
    return str(d / "c.pem"), str(d / "k.pem")


def test_small_ring_wraps_and_every_call_arrives_once_in_order(cert):
    events = []
    worker = subprocess.Popen([sys.executable, "-c", WORKER, *cert, str(ROUNDS), str(PER_ROUND)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert worker.stdout.readline().strip() == "ready"
    # Probes on the worker only: other processes' TLS (other tests on the
    # host) cannot fill the small ring.
    cap = EbpfCapture(events.append, CaptureOptions(attach_mode="per-process", include_pids={worker.pid},
                                                    scan_executables=False, ringbuf_pages=RING_PAGES))
    cap.start()
    try:
        assert cap.stats()["probes_attached"] > 0
        lost0 = cap.stats()["lost"]

        def sent() -> list[bytes]:
            return [e.data for e in events if e.pid == worker.pid and e.direction is Direction.SEND and e.data]

        for r in range(ROUNDS):
            worker.stdin.write("go\n")
            worker.stdin.flush()
            assert worker.stdout.readline().strip() == "done"
            deadline = time.monotonic() + 20
            while len(sent()) < (r + 1) * PER_ROUND and time.monotonic() < deadline:
                cap.poll(50)
        worker.stdin.close()
        worker.wait(10)
        lost = cap.stats()["lost"] - lost0
        reader = cap._reader
        assert reader is not None and reader.size == RING_PAGES * 4096
    finally:
        cap.close()
        if worker.poll() is None:
            worker.kill()
    got = sent()
    want = expected_payloads()
    # 120 rounds x 10 calls of 1..20480 bytes: about 12 MB through a 256 KiB ring.
    assert sum(map(len, want)) > 40 * RING_PAGES * 4096
    assert lost == 0
    assert len(got) == len(want)
    assert got == want
