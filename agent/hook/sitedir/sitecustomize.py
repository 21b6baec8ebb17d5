"""lumen-agent's user-space hook, loaded by Python at startup.

Python imports ``sitecustomize`` from the first folder of sys.path that has
one; ``lumen-agent exec`` (or you, with the folder printed by
``lumen-agent hook path``) puts this folder first on PYTHONPATH.  Then:

1. with LUMEN_HOOK=1 (or true/yes/on) the hook is turned on; unset or 0
   leaves the program untouched;
2. the ``sitecustomize`` this one shadows, if any (Debian's, a venv's, the
   program's own), is run as if Python had found it first, and takes the
   name ``sitecustomize`` in sys.modules.
"""

import os as _os
import sys as _sys

_HERE = _os.path.dirname(_os.path.abspath(__file__))


def _activate():
    try:
        if _HERE not in _sys.path:
            _sys.path.append(_HERE)
        import lumen_hook_boot

        lumen_hook_boot.start("sitecustomize", default=False)
    except Exception:  # noqa: BLE001 - never stop the program
        pass


def _chain():
    """Run the sitecustomize this file shadows, under the same name."""
    import importlib.machinery
    import importlib.util

    def _same(entry):
        try:
            return _os.path.samefile(entry or _os.getcwd(), _HERE)
        except OSError:
            return False

    rest = [entry for entry in _sys.path if not _same(entry)]
    spec = importlib.machinery.PathFinder.find_spec("sitecustomize", rest)
    if spec is None or spec.loader is None:
        return
    module = importlib.util.module_from_spec(spec)
    ours = _sys.modules.get("sitecustomize")
    _sys.modules["sitecustomize"] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        if ours is not None:
            _sys.modules["sitecustomize"] = ours
        raise  # site.py reports it exactly as if it had been imported directly


_activate()
_chain()
