"""Start lumen-agent's hook from outside the package: used by the
``sitecustomize`` beside this file and by the line of the .pth file that
``lumen-agent hook install-pth`` writes.  Standard library only, and it
never raises: a program must start whatever happens here.

When the interpreter cannot import ``lumen_agent`` itself (a venv of the
program's own), the package is loaded from the tree this file sits in;
without DuckDB there the hook can still ship events to a running agent.
"""

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
_OFF = ("0", "false", "no", "off")


def wanted(default):
    """LUMEN_HOOK decides; unset or empty means ``default``."""
    value = os.environ.get("LUMEN_HOOK", "").strip().lower()
    if not value:
        return default
    return value not in _OFF


def _bootstrap():
    try:
        from lumen_agent.hook import bootstrap

        return bootstrap
    except ImportError:
        pass
    import importlib.util

    package = os.path.dirname(os.path.dirname(HERE))  # .../lumen_agent
    spec = importlib.util.spec_from_file_location(
        "lumen_agent", os.path.join(package, "__init__.py"), submodule_search_locations=[package])
    module = importlib.util.module_from_spec(spec)
    sys.modules["lumen_agent"] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules["lumen_agent"]
        raise
    from lumen_agent.hook import bootstrap

    return bootstrap


def start(source, default=False):
    """Turn the hook on if LUMEN_HOOK (or ``default``) says so.  Never raises."""
    if not wanted(default):
        return False
    try:
        return _bootstrap().activate(source)
    except Exception as exc:  # noqa: BLE001
        if os.environ.get("LUMEN_HOOK_DEBUG"):
            sys.stderr.write("lumen hook: not loaded: {!r}\n".format(exc))
        return False
