"""Wiring for ``lumen-agent run``: pick the capture, build the agent, run it."""

from __future__ import annotations

import logging
import os
import platform

from lumen_agent.config import Config
from lumen_agent.errors import LumenError
from lumen_agent.logs import setup_logging
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
    os.umask(AGENT_UMASK)
    setup_logging(config.log_level)
    capture = choose_capture(config)
    if capture == "ebpf":
        from lumen_agent.capture.ebpf import CaptureOptions, EbpfCapture

        options = CaptureOptions(attach_mode=config.attach, exclude_pids=set(exclude_pids),
                                 max_call_bytes=config.max_call_bytes)

        def make_capture(on_event, on_exec):
            return EbpfCapture(on_event, options, on_exec=on_exec)
    elif capture in ("hook", "proxy"):
        def make_capture(on_event, on_exec):
            return IngestOnly()
    else:
        raise CaptureUnavailable(f"unknown capture {capture!r}")
    agent = Agent(config, make_capture, capture_name=capture)
    agent.store.check()  # before any output reads the file: one line if it cannot be used
    install_extensions(agent, config)
    agent.run()


def install_extensions(agent: Agent, config: Config) -> None:
    """What rides along the run loop: live view for `top`, metrics, exporters, the service manager."""
    from lumen_agent import service
    from lumen_agent.outputs import live, metrics
    from lumen_agent.outputs.alerts import output as alerts
    from lumen_agent.outputs.exporters import build_exporters

    live.install(agent, config)
    server = metrics.install(agent, config)
    alerts.install(agent, config, metrics_server=server)
    for exporter in build_exporters(config):
        agent.add_output(exporter)
    service.install(agent, config)
