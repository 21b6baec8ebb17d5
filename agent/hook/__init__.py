"""The user-space hook: capture a Python program's LLM calls without eBPF.

Where eBPF is not available (macOS, unprivileged containers) the hook is
loaded into the program itself, at startup, by ``lumen-agent exec -- CMD``
(a ``sitecustomize`` on PYTHONPATH) or by a ``.pth`` file in its venv
(``lumen-agent hook install-pth``).  It wraps Python's ssl layer
(``patch``), queues the plaintext as DataEvents (``buffer``) and a
background thread (``shipper``) hands them to the running agent's ingest
socket, or, with no agent, runs the pipeline and the store in-process
(``sinks``).  See docs/hook.md.

    import lumen_agent.hook
    lumen_agent.hook.install()      # same as LUMEN_HOOK=1 at startup
    lumen_agent.hook.stats()        # counters: events, dropped, faults, ...
"""

from __future__ import annotations

from typing import Any


def install(**settings: Any) -> bool:
    """Turn the hook on in this process (settings as in ``HookSettings``, else
    from the environment).  True when it is on; never raises."""
    from lumen_agent.hook import bootstrap
    from lumen_agent.hook.settings import HookSettings, from_env

    chosen = HookSettings(**settings) if settings else from_env()
    return bootstrap.activate("call", chosen)


def uninstall(timeout: float | None = None) -> None:
    """Put ssl back and ship (or write) what was recorded."""
    from lumen_agent.hook import bootstrap

    bootstrap.deactivate(timeout)


def stats() -> dict[str, Any] | None:
    """The hook's counters, or None when it is off."""
    from lumen_agent.hook import bootstrap

    shipper = bootstrap.shipper()
    return None if shipper is None else shipper.stats()
