"""Soak: a running agent under good and hostile traffic for N minutes.

The agent runs as ``lumen-agent run --capture hook`` (its ingest socket is
the door a hostile local user has; no probes needed).  For ``--minutes``:

* good calls: well-formed priced chat completions, each with its own
  ``x-lumen-feature`` so every one can be found in the database;
* hostile traffic on the same socket, mixed in at random: poison usage
  (10^15 tokens, negative counts, lone surrogates, 10 KB model names), junk
  and deeply nested lines, a 10 MiB NDJSON line, brotli SSE bombs, responses
  cut off, connections never closed;
* with root and useradd, a second uid outside the ingest group hammering
  the socket (refused and counted).

Then SIGTERM, and figures: good calls sent and found (lost must be 0),
hostile calls by kind, refusals, dead letters, the agent's RSS over time.

    .venv/bin/python bench/soak_agent.py --minutes 10
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import pwd
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import brotli
import duckdb

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from builders import request_bytes, response_bytes  # noqa: E402

LUMEN = str(Path(sys.executable).parent / "lumen-agent")
OUTSIDER = "lumen-outsider"
OUTSIDER_SCRIPT = """
import socket, sys, time
deadline, refused = time.time() + float(sys.argv[2]), 0
while time.time() < deadline:
    try:
        s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])
        s.sendall(b'{"op":"events","trusted_pids":true}\\n'); s.settimeout(2)
        if b"not allowed" in s.recv(4096): refused += 1
        s.close()
    except OSError:
        pass
    time.sleep(0.05)
print(refused)
"""

_conn = iter(range(1, 1 << 62))


def lines_of(request: bytes, response: bytes, *, close: bool = True) -> list[bytes]:
    conn, ts = next(_conn), time.time_ns()
    out = [json.dumps({"ts": ts, "pid": 1, "conn": conn, "dir": d, "data": base64.b64encode(b).decode()}).encode()
           for d, b in (("send", request), ("recv", response))]
    if close:
        out.append(json.dumps({"ts": ts + 1, "pid": 1, "conn": conn, "dir": "recv", "data": "",
                               "flags": ["close"]}).encode())
    return out


def chat(feature: str, model: str = '"gpt-4o-mini"', usage: str = '{"prompt_tokens":10,"completion_tokens":20}',
         **response_kw) -> tuple[bytes, bytes]:
    request = request_bytes("POST", "https://api.openai.com/v1/chat/completions",
                            {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]},
                            {"x-lumen-feature": feature})
    body = ('{"id":"c","object":"chat.completion","model":' + model + ',"choices":[],"usage":' + usage + '}').encode()
    return request, response_bytes(body, **response_kw)


def hostile(kind: str, bomb: bytes) -> list[bytes]:
    if kind == "huge_tokens":
        return lines_of(*chat("soak-hostile", usage='{"prompt_tokens":1,"completion_tokens":1000000000000000}'))
    if kind == "negative_tokens":
        return lines_of(*chat("soak-hostile", usage='{"prompt_tokens":-5,"completion_tokens":20}'))
    if kind == "surrogate_model":
        return lines_of(*chat("soak-hostile", model='"gpt-\\udfff\\u0000"'))
    if kind == "long_model":
        return lines_of(*chat("soak-hostile", model='"' + "m" * 10_000 + '"'))
    if kind == "junk_lines":
        return [b"not json", b"[" * 100_000, b"\xff\xfe\x00", b'{"ts":1e999,"pid":1,"conn":1,"dir":"send"}']
    if kind == "ndjson_10mib_line":
        request = request_bytes("POST", "http://localhost:11434/api/chat", {"model": "llama3.2", "messages": []},
                                {"x-lumen-feature": "soak-hostile"})
        body = b'{"junk":"' + b"x" * (10 * 1024 * 1024) + b'"}\n{"model":"llama3.2","done":true}\n'
        return lines_of(request, response_bytes(body, content_type="application/x-ndjson", chunked=True,
                                                chunk_size=256 * 1024))
    if kind == "brotli_sse_bomb":
        request = request_bytes("POST", "https://api.anthropic.com/v1/messages",
                                {"model": "claude-sonnet-4-5", "stream": True, "messages": []},
                                {"x-lumen-feature": "soak-hostile"})
        head = (b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Encoding: br\r\n"
                b"Content-Length: %d\r\n\r\n" % len(bomb))
        return lines_of(request, head + bomb)
    if kind == "cut_off":
        request, response = chat("soak-hostile")
        return lines_of(request, response[: len(response) // 2], close=False)
    raise ValueError(kind)


HOSTILE_KINDS = ("huge_tokens", "negative_tokens", "surrogate_model", "long_model", "junk_lines",
                 "ndjson_10mib_line", "brotli_sse_bomb", "cut_off")


def send(sock_path: Path, lines: list[bytes]) -> None:
    with socket.socket(socket.AF_UNIX) as sock:
        sock.connect(str(sock_path))
        sock.sendall(b'{"op":"events"}\n' + b"\n".join(lines) + b"\n")


def rss_mib(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--good-per-s", type=float, default=20.0)
    parser.add_argument("--hostile-per-s", type=float, default=0.5)
    args = parser.parse_args()

    folder = Path(tempfile.mkdtemp(prefix="lumen-soak-", dir="/tmp"))
    os.chmod(folder, 0o755)  # the outsider must reach the socket to be refused
    db, runtime = folder / "state" / "soak.duckdb", folder / "run"
    config = folder / "config.toml"
    config.write_text(f'[agent]\ndb = "{db}"\nruntime_dir = "{runtime}"\nflush_interval_s = 1.0\n'
                      'ingest_group = ""\n')
    env = dict(os.environ, LUMEN_STATE_DIR=str(folder / "state"), LUMEN_RUNTIME_DIR=str(runtime),
               LUMEN_CONFIG_DIR=str(folder / "etc"))
    log = open(folder / "agent.log", "w")
    agent = subprocess.Popen([LUMEN, "run", "--config", str(config), "--capture", "hook"], stderr=log, env=env)
    while not (runtime / "status.json").exists():
        if agent.poll() is not None:
            print((folder / "agent.log").read_text())
            return 1
        time.sleep(0.1)
    sock_path = runtime / "ingest.sock"
    bomb = brotli.compress(b"data: {}\n\n" * (64 * 1024 * 1024 // 10), quality=11)
    duration = args.minutes * 60

    outsider = None
    if os.geteuid() == 0 and shutil.which("useradd") and os.path.exists("/usr/bin/python3"):
        try:
            pwd.getpwnam(OUTSIDER)
        except KeyError:
            subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", OUTSIDER],
                           check=True)
        script = folder / "outsider.py"
        script.write_text(OUTSIDER_SCRIPT)
        outsider = subprocess.Popen(["runuser", "-u", OUTSIDER, "--", "/usr/bin/python3", str(script),
                                     str(sock_path), str(duration)], stdout=subprocess.PIPE, text=True)

    rng = random.Random(1)
    good_sent = 0
    hostile_sent: Counter[str] = Counter()
    rss: list[tuple[float, float]] = []
    started = time.monotonic()
    next_sample = started
    good_credit = hostile_credit = 0.0
    last = started
    while (now := time.monotonic()) - started < duration:
        good_credit += (now - last) * args.good_per_s
        hostile_credit += (now - last) * args.hostile_per_s
        last = now
        batch: list[bytes] = []
        while good_credit >= 1:
            good_credit -= 1
            batch += lines_of(*chat(f"soak-good-{good_sent}"))
            good_sent += 1
        if batch:
            send(sock_path, batch)
        while hostile_credit >= 1:
            hostile_credit -= 1
            kind = rng.choice(HOSTILE_KINDS)
            send(sock_path, hostile(kind, bomb))
            hostile_sent[kind] += 1
        if now >= next_sample:
            rss.append((now - started, rss_mib(agent.pid)))
            next_sample = now + 10
        time.sleep(0.1)
    time.sleep(3)  # let the last events through the run loop
    try:
        status = json.loads((runtime / "status.json").read_text())
    except (OSError, ValueError):
        status = {}
    agent.send_signal(signal.SIGTERM)
    exit_code = agent.wait(timeout=120)
    refused_seen = int(outsider.communicate(timeout=60)[0] or 0) if outsider else None

    con = duckdb.connect(str(db), read_only=True)
    good_found = con.execute("SELECT count(DISTINCT feature) FROM llm_calls WHERE feature LIKE 'soak-good-%'"
                             ).fetchall()[0][0]
    good_cost = con.execute("SELECT count(*) FROM llm_calls WHERE feature LIKE 'soak-good-%' AND cost_usd = 0.0000135"
                            ).fetchall()[0][0]
    implausible = con.execute("SELECT count(*) FROM llm_calls WHERE usage_implausible").fetchall()[0][0]
    counters = dict(con.execute("SELECT name, value FROM lumen_counters").fetchall())
    con.close()
    first = [m for t, m in rss if t <= 60]
    last_min = [m for t, m in rss if t >= duration - 60]
    rows = [
        ("minutes", f"{(time.monotonic() - started) / 60:.1f}"),
        ("good calls sent", good_sent),
        ("good calls stored", good_found),
        ("good calls lost", good_sent - good_found),
        ("good calls priced exactly ($0.0000135)", good_cost),
        ("hostile inputs sent", sum(hostile_sent.values())),
        *((f"  {kind}", n) for kind, n in sorted(hostile_sent.items())),
        ("rows flagged usage_implausible", implausible),
        ("ingest refused (agent status)", status.get("ingest", {}).get("refused")),
        ("refusals seen by the outsider uid", refused_seen),
        ("rows dead-lettered", counters.get("rows_dead_lettered", 0)),
        ("rows dropped", counters.get("rows_dropped", 0)),
        ("agent RSS first minute MiB (mean)", f"{sum(first) / max(len(first), 1):.0f}"),
        ("agent RSS last minute MiB (mean)", f"{sum(last_min) / max(len(last_min), 1):.0f}"),
        ("agent RSS max MiB", f"{max((m for _, m in rss), default=0):.0f}"),
        ("agent exit code on SIGTERM", exit_code),
    ]
    width = max(len(str(name)) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    print("RSS samples (s, MiB): " + " ".join(f"{t:.0f}:{m:.0f}" for t, m in rss))
    shutil.rmtree(folder, ignore_errors=True)
    return 0 if good_sent == good_found and exit_code == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
