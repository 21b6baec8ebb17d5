"""``lumen-agent exec`` without an agent, for a program in its own virtualenv.

The program's interpreter holds only the ``openai`` SDK: it can load the
hook (standard library) but neither DuckDB nor the parsers.  ``exec`` hosts
the pipeline and the store in its own process and the program's hook ships
its events there over the ingest protocol, so the rows are exact with no
agent running.  Also: exit codes and signals pass through.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from decimal import Decimal
from pathlib import Path

import duckdb
import pytest
from support import clients
from support import fake_provider as fp

pytestmark = pytest.mark.slow

LUMEN = str(Path(sys.executable).parent / "lumen-agent")

# gpt-4o-mini, published USD per 1M tokens: input 0.15, cached input 0.075, output 0.60.
# openai.chat: 1300 input of which 1024 cached, 12 output:
#   276 * 0.15 + 1024 * 0.075 + 12 * 0.60 = 41.4 + 76.8 + 7.2 = 125.4 -> 0.00012540
# openai.chat.stream: 78 input, 9 output: 78 * 0.15 + 9 * 0.60 = 11.7 + 5.4 = 17.1 -> 0.00001710
EXPECTED = {
    "openai.chat": {"input_tokens": 1300, "cache_read_tokens": 1024, "output_tokens": 12,
                    "cost_usd": Decimal("0.00012540"), "streaming": False},
    "openai.chat.stream": {"input_tokens": 78, "cache_read_tokens": 0, "output_tokens": 9,
                           "cost_usd": Decimal("0.00001710"), "streaming": True},
}

CLIENT = textwrap.dedent('''
    import json, os, sys
    import openai
    url, calls = sys.argv[1], sys.argv[2].split(",")
    c = openai.OpenAI(api_key="sk-test-fake-0000", base_url=url + "/v1", max_retries=0)
    msgs = [{"role": "user", "content": "What is the capital of the UK?"}]
    for name in calls:
        if name == "openai.chat":
            r = c.chat.completions.create(model="gpt-4o-mini", messages=msgs)
            rid = r._request_id
        else:
            s = c.chat.completions.create(model="gpt-4o-mini", messages=msgs, stream=True,
                                          stream_options={"include_usage": True})
            for _ in s:
                pass
            rid = s.response.headers.get("x-request-id")
        print(json.dumps({"scenario": name, "request_id": rid, "pid": os.getpid()}), flush=True)
    try:
        import duckdb  # noqa: F401
        print("duckdb importable", flush=True)
    except ImportError:
        pass
''')


@pytest.fixture(scope="module")
def app_python(tmp_path_factory) -> str:
    """A virtualenv of the program's own, holding only the openai SDK (pip's cache makes this quick)."""
    venv = tmp_path_factory.mktemp("app") / "venv"
    base = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
    subprocess.run([base, "-m", "venv", str(venv)], check=True)
    py = str(venv / "bin" / "python")
    r = subprocess.run([py, "-m", "pip", "install", "-q", "--disable-pip-version-check", "openai>=1.40"],
                       capture_output=True, text=True, timeout=600)
    if r.returncode != 0:
        pytest.skip(f"cannot install openai into a fresh venv: {r.stderr.strip()[-300:]}")
    probe = subprocess.run([py, "-c", "import duckdb"], capture_output=True)
    assert probe.returncode != 0, "the program's venv must not have DuckDB"
    return py


def _env(tmp_path: Path, certs, **extra: str) -> dict[str, str]:
    env = clients.client_env(certs)
    for k in ("PYTHONPATH", "LUMEN_HOOK", "LUMEN_HOOK_MODE", "LUMEN_HOOK_DB", "LUMEN_HOOK_SOCKET"):
        env.pop(k, None)
    for name, var in (("state", "LUMEN_STATE_DIR"), ("run", "LUMEN_RUNTIME_DIR"), ("config", "LUMEN_CONFIG_DIR")):
        (tmp_path / name).mkdir(exist_ok=True)
        env[var] = str(tmp_path / name)
    env.update(extra)
    return env


def _rows(db: Path) -> dict[str, dict]:
    with duckdb.connect(str(db), read_only=True) as con:
        cur = con.execute("SELECT * EXCLUDE (ts_start, ts_end) FROM llm_calls")
        names = [d[0] for d in cur.description]
        return {r["request_id"]: r for r in (dict(zip(names, row, strict=False)) for row in cur.fetchall())}


def test_program_in_its_own_venv_gets_exact_rows_without_an_agent(tmp_path, certs, server, app_python) -> None:
    db = tmp_path / "x.duckdb"
    rep = tmp_path / "hook.jsonl"
    script = tmp_path / "client.py"
    script.write_text(CLIENT)
    env = _env(tmp_path, certs, LUMEN_HOOK_REPORT=str(rep))
    calls = ["openai.chat", "openai.chat.stream", "openai.chat"]
    proc = subprocess.run([LUMEN, "exec", "--db", str(db), "--", app_python, str(script), server.url, ",".join(calls)],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Events are dropped" not in proc.stderr and "lumen hook" not in proc.stderr, proc.stderr
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert "duckdb importable" not in proc.stdout
    assert [line["scenario"] for line in lines] == calls
    rows = _rows(db)
    assert len(rows) == 3
    for line in lines:
        row = rows[line["request_id"]]
        want = EXPECTED[line["scenario"]]
        assert {k: row[k] for k in want} == want
        assert (row["pid"], row["capture"], row["model"], row["provider"], row["outcome"], row["unpriced"]) == (
            line["pid"], "hook", fp.EXPECTED[line["scenario"]]["model"], fp.EXPECTED[line["scenario"]]["provider"],
            "success", False)
        assert row["process"] == "python"  # attributed to the program, not to exec
        assert row["exe"] == os.path.realpath(app_python)
    # 0.00012540 * 2 + 0.00001710
    with duckdb.connect(str(db), read_only=True) as con:
        assert con.execute("SELECT sum(cost_usd) FROM llm_calls").fetchone() == (Decimal("0.00026790"),)
    [stats] = [json.loads(line) for line in rep.read_text().splitlines()]
    assert stats["sink"] == "agent" and stats["shipped"] == stats["events"] > 0
    assert stats["lost"] == stats["dropped"] == stats["faults"] == 0


def test_exit_code_and_signals_pass_through(tmp_path, certs, app_python) -> None:
    env = _env(tmp_path, certs)
    db = tmp_path / "x.duckdb"
    r = subprocess.run([LUMEN, "exec", "--db", str(db), "--", app_python, "-c", "import sys; sys.exit(7)"],
                       env=env, timeout=120)
    assert r.returncode == 7
    # SIGTERM to exec reaches the program, whose death by SIGTERM is 128 + 15.
    p = subprocess.Popen([LUMEN, "exec", "--db", str(db), "--", app_python, "-c",
                          "import time; print('up', flush=True); time.sleep(60)"],
                         env=env, stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline() == "up\n"
    p.send_signal(signal.SIGTERM)
    assert p.wait(30) == 128 + signal.SIGTERM
