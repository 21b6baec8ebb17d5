"""Wiring for ``lumen-agent run``: pick the capture, build the agent, run it."""

from __future__ import annotations

import logging
import os
import platform

from lumen_agent.config import Config
from lumen_agent.errors import LumenError
from lumen_agent.logs import setup_logging
from lumen_agent.pipeline.attribution import ProcessIdentity
from lumen_agent.runner import Agent, IngestOnly

log = logging.getLogger("lumen_agent")


class CaptureUnavailable(LumenError):
    """No capture method can run here; the message says which to use instead."""


def choose_capture(config: Config) -> str:
    """``auto``: eBPF on Linux when its prerequisites hold, else say what to use."""
    if config.capture != "auto":
        return config.capture
    if platform.system() != "Linux":
        raise CaptureUnavailable(
            "eBPF capture needs Linux; on this system use `lumen-agent run --capture hook` with "
            "`lumen-agent exec -- CMD` (Python programs) or `lumen-agent proxy` (any language)")
    from lumen_agent.capture import kernel_setup

    failed = [c for c in kernel_setup.check_prerequisites() if not c.ok]
    if failed:
        first = failed[0]
        raise CaptureUnavailable(
            f"eBPF capture is not available ({first.name}: {first.detail}; fix: {first.fix}); "
            "or run `lumen-agent run --capture hook` and start programs with `lumen-agent exec -- CMD`, "
            "or use `lumen-agent proxy`")
    return "ebpf"


# Files the agent makes (database, recording, dead letters) are its own:
# the same as the unit's UMask=0077, for runs outside systemd.
AGENT_UMASK = 0o077


def run_agent(config: Config, *, exclude_pids: set[int] = frozenset()) -> None:
    from lumen_agent.heap import limit_arenas
    from lumen_agent.instance import InstanceLock
    from lumen_agent.outputs.dbcheck import check_folder

    limit_arenas()  # before the threads that would each take an arena start
    os.umask(AGENT_UMASK)
    setup_logging(config.log_level)
    # Before anything is built or bound: a second agent on this database
    # must neither record nor touch the first one's sockets and status file.
    check_folder(config.db)  # the lock lives beside the database: say first if that folder is unusable
    with InstanceLock(config.db, config.runtime_dir):
        _run_locked(config, exclude_pids)


def _run_locked(config: Config, exclude_pids: set[int]) -> None:
    capture = choose_capture(config)
    # The sniffer learns of a process (its socket's owner) before its first
    # bytes, mostly with what its SYN thread read of it the moment it
    # connected (a curl may have exited since); else attribution reads /proc
    # now.  The agent exists only after the capture is made.
    built: list[Agent] = []

    def observe(pid: int, identity: ProcessIdentity | None = None) -> None:
        if not built:
            return
        agent = built[0]
        if identity is None:
            agent.attribution.observe(pid)
        elif agent.attribution.remember(identity) and agent.gate.forget(pid):
            agent.capture.include_pid(pid)  # a new process on a reused pid: the filters decide afresh

    if capture == "ebpf":
        from lumen_agent.capture.ebpf import CaptureOptions, EbpfCapture

        options = CaptureOptions(attach_mode=config.attach, exclude_pids=set(exclude_pids),
                                 max_call_bytes=config.max_call_bytes)

        def identify(pid: int) -> ProcessIdentity | None:
            return built[0].attribution.identify(pid) if built else None

        def make_capture(on_event, on_exec):
            # The kernel names each process in its EXEC or first PROC record:
            # a curl gone before the loop reads its records keeps its name.
            return EbpfCapture(on_event, options, on_exec=on_exec, on_process=observe, identify=identify)
        if config.plain_http_ports:
            make_capture = _with_plain_http(make_capture, config, observe)
    elif capture == "plain":
        from lumen_agent.capture.sniff import PlainHttpCapture

        if not config.plain_http_ports:
            raise CaptureUnavailable("--capture plain has no ports to sniff",
                                     "set [capture] plain_http_ports in the configuration")

        def make_capture(on_event, on_exec):
            return PlainHttpCapture(on_event, config.plain_http_ports, on_process=observe)
    elif capture in ("hook", "proxy"):
        def make_capture(on_event, on_exec):
            return IngestOnly()
    else:
        raise CaptureUnavailable(f"unknown capture {capture!r}")
    agent = Agent(config, make_capture, capture_name=capture)
    built.append(agent)
    agent.store.check()  # before any output reads the file: one line if it cannot be used
    install_extensions(agent, config)
    agent.run()


def _with_plain_http(make_primary, config: Config, observe):
    """The primary capture and, beside it, the plain-HTTP sniffer on the configured ports."""
    from lumen_agent.capture.combined import CombinedCapture
    from lumen_agent.capture.connect_owner import ConnectOwners
    from lumen_agent.capture.conversations import is_sniffed_conn
    from lumen_agent.capture.sniff import PlainHttpCapture

    def make_capture(on_event, on_exec):
        # eBPF is allowed here: the kernel records who connects to the sniffed ports.
        sniffer = PlainHttpCapture(on_event, config.plain_http_ports, on_process=observe,
                                   connect_owners=ConnectOwners(config.plain_http_ports))
        return CombinedCapture(make_primary(on_event, on_exec), sniffer,
                               secondary_name="plain-HTTP", secondary_conn=is_sniffed_conn)

    return make_capture


def install_extensions(agent: Agent, config: Config) -> None:
    """What rides along the run loop: live view for `top`, metrics, exporters, the service manager."""
    from lumen_agent import service
    from lumen_agent.outputs import live
    from lumen_agent.outputs.alerts import output as alerts
    from lumen_agent.outputs.exporters import build_exporters

    live.install(agent, config)
    server = None
    if config.metrics_addr:
        # Only then: prometheus_client and http.server are ~1.1 MB of heap
        # that an agent not serving /metrics (the default) never uses.
        from lumen_agent.outputs import metrics

        server = metrics.install(agent, config)
    alerts.install(agent, config, metrics_server=server)
    for exporter in build_exporters(config):
        agent.add_output(exporter)
    service.install(agent, config)
