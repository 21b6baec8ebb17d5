"""Bun from npm, and clients run with it.

    bun = ensure_bun()                        # npm install of @oven/bun-linux-x64 into a cache folder
    r = run_script(bun, server.url, certs, "openai.chat.stream")     # `bun -e` with fetch
    exe = compile_script(bun, tmp_dir)        # `bun build --compile`: a standalone executable
    r = run_compiled(exe, server.url, certs, "openai.chat")

The platform package carries the Linux executable in its tarball; it is
installed with --ignore-scripts (the `bun` wrapper package's postinstall
would only move it), so nothing but the npm registry is contacted.  The
client is clients.NODE_SCRIPT (global fetch, FAKE_* variables); Bun trusts
the test CA through NODE_EXTRA_CA_CERTS, as Node does.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

from support import clients

BUN_VERSION = "1.4.5"
PACKAGE = "@oven/bun-linux-x64"


def cache_dir() -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "lumen-agent-tests" / f"bun-{BUN_VERSION}"


def bun_missing() -> str | None:
    return None if shutil.which("npm") else "npm missing (apt-get install nodejs)"


def ensure_bun() -> Path:
    """The bun executable, installed from npm once per machine."""
    prefix = cache_dir()
    exe = prefix / "node_modules" / PACKAGE / "bin" / "bun"
    if not exe.exists():
        prefix.mkdir(parents=True, exist_ok=True)
        subprocess.run(["npm", "install", "--prefix", str(prefix), "--ignore-scripts", "--no-audit", "--no-fund",
                        f"{PACKAGE}@{BUN_VERSION}"], check=True, capture_output=True, timeout=600)
    return exe


def _env(url: str, certs: Any, scenario: str, calls: int, wait: float) -> dict[str, str]:
    import json

    path, body, headers = clients.request_for(scenario)
    return clients.client_env(certs, {
        "FAKE_URL": url.rstrip("/") + path,
        "FAKE_METHOD": "POST",
        "FAKE_HEADERS": json.dumps(headers),
        "FAKE_BODY": json.dumps(body),
        "FAKE_CALLS": str(calls),
        "FAKE_WAIT_MS": str(int(wait * 1000)),
    })


def run_script(bun: Path, url: str, certs: Any, scenario: str, *, calls: int = 1, wait: float = 0,
               timeout: float = clients.DEFAULT_TIMEOUT) -> clients.ClientResult:
    env = _env(url, certs, scenario, calls, wait)
    return clients._spawn(f"bun {scenario}", [str(bun), "-e", clients.NODE_SCRIPT], env).finish(timeout)


def compile_script(bun: Path, out_dir: Path, name: str = "lumen-bunapp") -> Path:
    """A standalone executable of the fetch client (`bun build --compile`)."""
    src = out_dir / "client.js"
    src.write_text(clients.NODE_SCRIPT)
    exe = out_dir / name
    subprocess.run([str(bun), "build", "--compile", str(src), "--outfile", str(exe)], check=True,
                   capture_output=True, timeout=300, cwd=out_dir,
                   env={**os.environ, "BUN_INSTALL_CACHE_DIR": str(out_dir / "bun-cache")})
    return exe


def run_compiled(exe: Path, url: str, certs: Any, scenario: str, *, calls: int = 1, wait: float = 0,
                 timeout: float = clients.DEFAULT_TIMEOUT) -> clients.ClientResult:
    env = _env(url, certs, scenario, calls, wait)
    return clients._spawn(f"{exe.name} {scenario}", [str(exe)], env).finish(timeout)
