"""Turning the hook on in this process: once, from sitecustomize, a .pth
file, or a direct call, and making sure nothing it does can stop the
program from starting.

Startup cost: this module, ``patch``, ``buffer``, ``settings`` and
``shipper`` (standard library only: ssl, threading, json), and one sleeping
thread.  The sinks, the pipeline and DuckDB are imported by the shipper
thread when the first events arrive.
"""

from __future__ import annotations

import atexit
import logging
import os

from lumen_agent.hook import patch
from lumen_agent.hook.settings import HookSettings, from_env

log = logging.getLogger("lumen_agent.hook")

_shipper = None
_source: str | None = None


def activate(source: str = "call", settings: HookSettings | None = None) -> bool:
    """Patch ssl and start the shipper; True when the hook is on.  Never raises."""
    global _shipper, _source
    if _shipper is not None:
        return True
    try:
        from lumen_agent.hook.shipper import Shipper

        shipper = Shipper(settings or from_env())
        patch.install(shipper.buffer.put, shipper.on_fault)
        shipper.start()
        _shipper, _source = shipper, source
        atexit.register(_at_exit)
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=_after_fork_in_child)
        return True
    except Exception as exc:  # noqa: BLE001 - the program must start regardless
        try:
            patch.uninstall()
        except Exception:  # noqa: BLE001
            pass
        try:
            log.warning("lumen hook: could not start (%r); this program runs without it", exc)
        except Exception:  # noqa: BLE001
            pass
        return False


def deactivate(timeout: float | None = None) -> None:
    """Stop recording, ship what was recorded, put ssl back (tests, embedding)."""
    global _shipper
    shipper, _shipper = _shipper, None
    patch.uninstall()
    if shipper is not None:
        shipper.stop(timeout)


def shipper():
    return _shipper


def source() -> str | None:
    return _source


def _at_exit() -> None:
    shipper = _shipper
    if shipper is None:
        return
    try:
        shipper.stop()
    except Exception:  # noqa: BLE001
        pass


def _after_fork_in_child() -> None:
    shipper = _shipper
    if shipper is None:
        return
    try:
        shipper.after_fork_in_child()
    except Exception:  # noqa: BLE001
        pass
