"""Build and run the stdlib-only Go client (tests/support/go_client/main.go).

    exe = build(tmp_dir)                      # go build, GOCACHE under tmp_dir
    exe = build(tmp_dir, stripped=True)       # -ldflags="-s -w": no .symtab
    r = run(exe, server.url, certs, "openai.chat", http1=True, concurrency=20)

The client is configured like the Node one (FAKE_* variables, see clients.py)
and prints one JSON line per call.  Needs Debian's golang-go.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from support import clients

SOURCE = Path(__file__).parent / "go_client"
NAME = "lumen-goclient"  # 14 characters: /proc/PID/comm keeps all of it


def go_missing() -> str | None:
    return None if shutil.which("go") else "go missing (apt-get install golang-go)"


def build(out_dir: str | os.PathLike[str], *, stripped: bool = False, name: str = NAME) -> Path:
    out_dir = Path(out_dir)
    out = out_dir / name
    env = {**os.environ, "GOCACHE": str(out_dir / "gocache"), "GOPATH": str(out_dir / "gopath"),
           "GOFLAGS": "-mod=mod", "GOTOOLCHAIN": "local", "CGO_ENABLED": "0", "GOPROXY": "off"}
    argv = ["go", "build", "-o", str(out)]
    if stripped:
        argv += ["-ldflags=-s -w"]
    subprocess.run([*argv, "."], cwd=SOURCE, env=env, check=True, capture_output=True, timeout=300)
    return out


def start(exe: str | os.PathLike[str], url: str, certs: Any, scenario: str | None = "openai.chat", *,
          calls: int = 1, concurrency: int = 1, http1: bool = True, wait: float = 0,
          headers: Mapping[str, str] | None = None) -> clients.Running:
    req_headers: dict[str, str] = {}
    path, body = "/healthz", None
    if scenario is not None:
        path, body, req_headers = clients.request_for(scenario)
    req_headers.update(headers or {})
    extra = {
        "FAKE_URL": url.rstrip("/") + path,
        "FAKE_METHOD": "POST" if body is not None else "GET",
        "FAKE_HEADERS": json.dumps(req_headers),
        "FAKE_CALLS": str(calls),
        "FAKE_CONCURRENCY": str(concurrency),
        "FAKE_HTTP1": "1" if http1 else "0",
        "FAKE_WAIT_MS": str(int(wait * 1000)),
    }
    if body is not None:
        extra["FAKE_BODY"] = json.dumps(body)
    return clients._spawn(f"go {scenario}", [str(exe)], clients.client_env(certs, extra))


def run(exe: str | os.PathLike[str], url: str, certs: Any, scenario: str | None = "openai.chat",
        *, timeout: float = clients.DEFAULT_TIMEOUT, **kwargs: Any) -> clients.ClientResult:
    return start(exe, url, certs, scenario, **kwargs).finish(timeout)
