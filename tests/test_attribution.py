"""Who made a call: /proc facts, cgroup parsing, key hashing, process filters, configuration."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from lumen_agent import config as config_mod
from lumen_agent.pipeline.attribution import Attribution, ProcessInfo, _cgroup_facts
from lumen_agent.pipeline.filters import ProcessFilter
from lumen_agent.pipeline.keyhash import credential, hash_credential, load_or_create_salt


def test_own_process_is_attributed():
    info = Attribution().observe(os.getpid())
    assert info.process == Path("/proc/self/comm").read_text().strip()
    assert info.exe == os.path.realpath(sys.executable) or info.exe == os.readlink("/proc/self/exe")
    import pwd
    assert info.user == pwd.getpwuid(os.getuid()).pw_name


def test_exited_process_keeps_what_was_learnt():
    child = subprocess.Popen(["sleep", "5"])
    attribution = Attribution()
    assert attribution.observe(child.pid).process == "sleep"
    child.kill()
    child.wait()
    assert attribution.lookup(child.pid).process == "sleep"


def test_an_exec_read_as_the_process_exits_keeps_the_kernels_name(tmp_path):
    """The exec record named the program; the process then exits between
    psutil's start time (still there) and the /proc reads (gone): here a
    /proc with no entry for this live pid.  The kernel's comm fills in."""
    import pwd

    import psutil

    from lumen_agent.pipeline.attribution import ProcessIdentity

    me = os.getpid()
    attribution = Attribution(proc=tmp_path)
    attribution.remember(ProcessIdentity(me, 1000.0, ProcessInfo(process="curl")))
    attribution.forget(me)
    assert attribution.lookup(me) == ProcessInfo(process="curl", user=pwd.getpwuid(os.getuid()).pw_name)
    assert attribution.identify(me).start == psutil.Process(me).create_time()  # read anew, not the stand-in


def test_unknown_pid_is_unknown_not_an_error():
    assert Attribution().lookup(2**22 + 12345) == ProcessInfo()


@pytest.mark.parametrize("cgroup,unit,container", [
    ("0::/system.slice/api-gateway.service\n", "api-gateway.service", None),
    ("0::/user.slice/user-1000.slice/session-3.scope\n", "session-3.scope", None),
    ("0::/system.slice/docker-" + "a" * 64 + ".scope\n", None, "a" * 64),
    ("12:pids:/kubepods/besteffort/pod1/" + "b" * 64 + "\n", None, "b" * 64),
    ("0::/machine.slice/libpod-" + "c" * 64 + ".scope/container\n", None, "c" * 64),
    ("0::/\n", None, None),
])
def test_cgroup_facts(cgroup, unit, container):
    assert _cgroup_facts(cgroup) == (unit, container)


def test_credentials_from_every_provider_header():
    assert credential({"authorization": "Bearer sk-test-fake"}, "/") == "sk-test-fake"
    assert credential({"x-api-key": "sk-ant-test-fake"}, "/") == "sk-ant-test-fake"
    assert credential({"x-goog-api-key": "g-fake"}, "/") == "g-fake"
    assert credential({"api-key": "azure-fake"}, "/") == "azure-fake"
    assert credential({}, "/v1beta/models/x:generateContent?key=q-fake&alt=sse") == "q-fake"
    sigv4 = ("AWS4-HMAC-SHA256 Credential=AKIAFAKEFAKEFAKE/20251122/us-east-1/bedrock/aws4_request, "
             "SignedHeaders=host, Signature=abc")
    assert credential({"authorization": sigv4}, "/") == "AKIAFAKEFAKEFAKE"
    assert credential({}, "/v1/chat/completions") is None


def test_key_hash_is_salted_stable_and_never_the_key(tmp_path):
    salt = load_or_create_salt(tmp_path)
    assert load_or_create_salt(tmp_path) == salt
    assert (tmp_path / "key-salt").stat().st_mode & 0o777 == 0o600
    digest = hash_credential("sk-test-fake-0000", salt)
    assert len(digest) == 16 and "sk-test" not in digest
    assert digest == hash_credential("sk-test-fake-0000", salt)
    assert digest != hash_credential("sk-test-fake-0000", b"x" * 32)


def test_process_filters():
    curl = ProcessInfo("curl", "/usr/bin/curl", "alice", "batch.service", None)
    python = ProcessInfo("python3", "/opt/app/bin/python3", "svc", "api.service", "d" * 64)
    assert ProcessFilter().allows(curl)
    exclude_curl = ProcessFilter(exclude={"process": ("curl",)})
    assert not exclude_curl.allows(curl) and exclude_curl.allows(python)
    only_app = ProcessFilter(include={"exe": ("/opt/*",)})
    assert only_app.allows(python) and not only_app.allows(curl)
    both = ProcessFilter(include={"user": ("svc",)}, exclude={"container": ("d*",)})
    assert not both.allows(python)


def test_config_file_then_flags(tmp_path):
    path = tmp_path / "config.toml"
    path.write_text('[agent]\ndb = "/data/x.duckdb"\nattach = "per-process"\n'
                    '[filters]\nexclude_process = ["nginx"]\n[attribution]\ntenant = "acme"\n')
    config = config_mod.load(path, {"db": Path("/flag.duckdb"), "attach": None})
    assert config.db == Path("/flag.duckdb")
    assert config.attach == "per-process"
    assert config.default_tenant == "acme"
    assert config.filters.exclude == {"process": ("nginx",)}
    again = config_mod.load(_write(tmp_path / "again.toml", config_mod.as_toml(config)))
    assert again == config


def _write(path, text):
    path.write_text(text)
    return path


@pytest.mark.parametrize("text,message", [
    ("[agent]\nattach = 'sometimes'\n", "[agent] attach must be one of global, per-process, not 'sometimes'"),
    ("[agent]\nflush_interval_s = 'soon'\n", "[agent] flush_interval_s must be a number, not 'soon'"),
    ("[agent]\nfrobnicate = 1\n", "unknown option [agent] frobnicate"),
    ("[filters]\ninclude_colour = ['red']\n", "unknown filter 'include_colour'"),
    ("not toml ==", "not valid TOML"),
])
def test_bad_config_is_one_clear_line(tmp_path, text, message):
    path = _write(tmp_path / "c.toml", text)
    with pytest.raises(config_mod.ConfigError) as err:
        config_mod.load(path)
    assert str(err.value).startswith(f"{path}: ")
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_ingest_socket_stamps_sender_pid_unless_trusted(tmp_path):
    """Any process may hand the agent events, but only for itself; root or the
    agent's user (the proxy) may name the client process."""
    import json as _json
    import socket as _socket
    import time as _time

    from lumen_agent.control import ControlServer
    from lumen_agent.pipeline.events import DataEvent, Direction
    from lumen_agent.recording import event_to_json

    control = ControlServer(tmp_path / "run")
    control.start()
    try:
        assert (tmp_path / "run" / "agent.sock").stat().st_mode & 0o777 == 0o600
        assert (tmp_path / "run" / "ingest.sock").stat().st_mode & 0o777 == 0o666
        for trusted in (False, True):
            with _socket.socket(_socket.AF_UNIX) as sock:
                sock.connect(str(control.ingest_path))
                sock.sendall(_json.dumps({"op": "events", "trusted_pids": trusted}).encode() + b"\n")
                sock.sendall(event_to_json(DataEvent(1, 4242, 4242, 7, Direction.SEND, b"x")).encode() + b"\n")
        got = []
        deadline = _time.monotonic() + 5
        while len(got) < 2 and _time.monotonic() < deadline:
            if not control.events.empty():
                got.append(control.events.get()[0])
            _time.sleep(0.01)
        assert sorted(e.pid for e in got) == sorted([os.getpid(), 4242])
    finally:
        control.close()


def test_capture_auto_off_linux_names_the_fallbacks(monkeypatch):
    """On macOS (no eBPF) `run` explains which fallback to use, in one line."""
    import platform

    from lumen_agent import agent_main
    from lumen_agent.config import Config

    monkeypatch.setattr(platform, "system", lambda: "Darwin")
    with pytest.raises(agent_main.CaptureUnavailable) as err:
        agent_main.choose_capture(Config(capture="auto"))
    message = str(err.value)
    assert message.startswith("eBPF capture needs Linux")
    assert "lumen-agent exec -- CMD" in message and "lumen-agent proxy" in message
    assert agent_main.choose_capture(Config(capture="hook")) == "hook"


def test_logs_for_journald_carry_a_priority_and_no_timestamp(monkeypatch, capsys):
    import logging

    from lumen_agent.logs import setup_logging

    logger = logging.getLogger("lumen_agent")
    saved = (logger.handlers[:], logger.level, logger.propagate)
    monkeypatch.setenv("JOURNAL_STREAM", "8:12345")
    try:
        _check_log_lines(monkeypatch, capsys, setup_logging)
    finally:
        logger.handlers[:], logger.level, logger.propagate = saved


def _check_log_lines(monkeypatch, capsys, setup_logging):
    import logging

    setup_logging("info")
    logging.getLogger("lumen_agent").warning("skipped %s count=%d", "response_body", 3)
    assert capsys.readouterr().err == "<4>WARNING skipped response_body count=3\n"
    monkeypatch.delenv("JOURNAL_STREAM")
    setup_logging("info")
    logging.getLogger("lumen_agent").info("capturing db=%s", "/x")
    line = capsys.readouterr().err
    assert line.endswith(" INFO capturing db=/x\n") and line[:4].isdigit()
